"""Layer 2: who announces each IP of a layer2 pool (kept up to date incrementally), and announcing it.

``Election`` is pure (no I/O, no clock): given the configuration, the Service and Node views, every
node's published data path (``Link``) and the live members, it keeps the owner of every layer2 IP in a
Service status. The rules are ``speaker.eligibility``'s; per IP the eligible nodes are those alive, not
excluded, selected by the pool, allowed by the endpoints of every Service on the IP (Services sharing
an IP make one election), with an up interface on the IP's subnet — or, when no live selected node has
one, any live allowed node with an up interface (the IP is then announced off-subnet, as MetalLB does).
The owner is the eligible node with the highest rendezvous score (``lbspeaker.election``).

Incremental, by the rendezvous property: when a node stops being alive only the IPs it owned are
recomputed; when one becomes alive each IP it may win costs one hash to compare with the owner's;
a Service change recomputes that Service's IPs; a Node or Lease change compares or recomputes only
where that node's eligibility changed. IPs sharing their pool, subnet and endpoint rule form a group
whose candidate sets are computed once. A configuration change (or the first pass) recomputes all.

Cost: full build O(IPs x candidates) hashes (1,000 nodes x 10,000 IPs: see hack/bench/reconcile.py);
a death O(IPs it owned x candidates); a join O(IPs); memory O(IPs + groups x nodes).

``Layer2Protocol`` runs the election on each reconcile pass and hands this node's IPs to the
``L2Announcer``, which answers ARP/NDP for them and sends gratuitous announcements on takeover.
``plan`` is the one-shot form ``lbspeaker status`` uses.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from lbspeaker.config import Config
from lbspeaker.config.models import AddressPool
from lbspeaker.election import Scorer, ip_key
from lbspeaker.kube.events import EventRecorder
from lbspeaker.l2 import Interface
from lbspeaker.l2.interfaces import is_virtual_name
from lbspeaker.objects import NodeView, ServiceView
from lbspeaker.speaker import eligibility
from lbspeaker.speaker.lease import Link
from lbspeaker.speaker.protocol import Changes, Snapshot

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# An endpoint constraint: None = every node allowed; otherwise the allowed nodes (empty: nobody).
Allowed = frozenset[str] | None


@dataclass(frozen=True)
class Decision:
    """The election's answer for one IP."""

    ip: str
    pool: str
    protocol: str
    services: tuple[str, ...]
    eligible: frozenset[str]
    owner: str | None


@dataclass
class Plan:
    l2: dict[str, Decision] = field(default_factory=dict)  # ip -> decision (layer2 pools)
    bgp: dict[str, Decision] = field(default_factory=dict)  # ip -> decision, owner unused: every node may
    unknown: dict[str, tuple[str, ...]] = field(default_factory=dict)  # ips in no pool -> services

    def owned_by(self, node: str) -> dict[str, Decision]:
        return {ip: d for ip, d in self.l2.items() if d.owner == node}


@dataclass
class _Group:
    """IPs with the same pool, subnets and endpoint rule: one set of candidates for all of them."""

    pool: AddressPool
    subnets: tuple[Network, ...]
    allowed: Allowed
    ips: set[str] = field(default_factory=set)
    selected: frozenset[str] = frozenset()  # not excluded, selected by the pool
    on_subnet: frozenset[str] = frozenset()  # selected and on the subnet (endpoints not considered)
    primary: frozenset[str] = frozenset()  # on_subnet and allowed by the endpoints
    fallback: frozenset[str] = frozenset()  # selected, allowed, any interface up
    mode: str = ""  # "primary", "none" or "fallback" under the current alive set
    eligible: frozenset[str] = frozenset()


@dataclass
class _Ip:
    ip: str
    key: bytes
    addr: Address
    services: tuple[str, ...]
    pool: str
    protocol: str
    group: tuple[object, ...] | None = None  # layer2 only
    owner: str | None = None
    digest: bytes = b""


class Election:
    """Owners of every layer2 IP, kept up to date from changes (see the module docstring)."""

    def __init__(self) -> None:
        self.scorer = Scorer()
        self.config: Config | None = None
        self.ips: dict[str, _Ip] = {}
        self.unknown: dict[str, tuple[str, ...]] = {}  # IPs in no pool
        self.by_service: dict[str, tuple[str, ...]] = {}
        self.by_owner: dict[str, set[str]] = {}
        self.groups: dict[tuple[object, ...], _Group] = {}
        self.alive: frozenset[str] = frozenset()
        self._services: Mapping[str, ServiceView] = {}
        self._nodes: Mapping[str, NodeView] = {}
        self._links: Mapping[str, Link] = {}
        self._subnets: tuple[Network, ...] = ()
        self._selected: dict[str, frozenset[str]] = {}  # pool -> selected nodes
        self.recomputed = 0  # IPs recomputed from scratch (for tests and benchmarks)

    # -- public --------------------------------------------------------------------------------------

    def owner(self, ip: str) -> str | None:
        rec = self.ips.get(ip)
        return rec.owner if rec is not None else None

    def owned_by(self, node: str) -> set[str]:
        return set(self.by_owner.get(node, ()))

    def decision(self, ip: str) -> Decision | None:
        rec = self.ips.get(ip)
        if rec is None:
            return None
        eligible = self.groups[rec.group].eligible if rec.group is not None else frozenset()
        return Decision(rec.ip, rec.pool, rec.protocol, rec.services, eligible, rec.owner)

    def bgp_eligible(self, ip: str) -> frozenset[str]:
        """A bgp IP's announcers: every live node its pool selects and its endpoints allow (no owner)."""
        rec = self.ips.get(ip)
        pool = next((p for p in self.config.address_pools if p.name == rec.pool), None) \
            if rec is not None and self.config is not None else None
        if rec is None or pool is None:
            return frozenset()
        allowed = self._allowed(rec)
        eligible = self._selected_by(pool) & self.alive
        return eligible if allowed is None else eligible & allowed

    def update(self, config: Config | None, services: Mapping[str, ServiceView], nodes: Mapping[str, NodeView],
               links: Mapping[str, Link], alive: frozenset[str], changes: Changes) -> set[str]:
        """Bring the owners up to date; returns the IPs whose owner changed (or that came or went)."""
        self._services, self._nodes, self._links = services, nodes, links
        if changes.everything or config is not self.config:
            return self._rebuild(config, alive)
        changed: set[str] = set()
        if changes.nodes:
            changed |= self._nodes_changed(changes.nodes, alive)
        if changes.services:
            changed |= self._services_changed(changes.services, alive)
        if alive != self.alive:
            changed |= self._alive_changed(alive)
        return changed

    # -- full build ----------------------------------------------------------------------------------

    def _rebuild(self, config: Config | None, alive: frozenset[str]) -> set[str]:
        before = {ip: rec.owner for ip, rec in self.ips.items()}
        self.config = config
        self.alive = alive
        self.ips, self.unknown, self.by_service, self.by_owner, self.groups = {}, {}, {}, {}, {}
        self._selected = {}
        self._subnets = self._all_subnets()
        if config is not None:
            for svc in self._services.values():
                self._add_service(svc)
            for key in self.groups:
                self._refresh_group(key)
            for rec in self.ips.values():
                self._compute(rec)
        after = {ip: rec.owner for ip, rec in self.ips.items()}
        return {ip for ip in before.keys() | after.keys() if before.get(ip, "?") != after.get(ip, "?")}

    def _all_subnets(self) -> tuple[Network, ...]:
        nets = {n for link in self._links.values() for n in link.subnets}
        return tuple(sorted(nets, key=lambda n: (n.version, n)))

    def _add_service(self, svc: ServiceView) -> None:
        assert self.config is not None
        ips = tuple(dict.fromkeys(svc.ips))
        self.by_service[svc.key] = ips
        for ip in ips:
            rec = self.ips.get(ip)
            if rec is None:
                addr = ipaddress.ip_address(ip)
                pool = next((p for p in self.config.address_pools if addr in p.ipset), None)
                if pool is None:
                    self.unknown[ip] = tuple(sorted({*self.unknown.get(ip, ()), svc.key}))
                    continue
                rec = self.ips[ip] = _Ip(ip, ip_key(ip), addr, (svc.key,), pool.name, pool.protocol)
            elif svc.key not in rec.services:
                rec.services = tuple(sorted((*rec.services, svc.key)))
            self._regroup(rec)

    def _allowed(self, rec: _Ip) -> Allowed:
        allowed: Allowed = None
        for key in rec.services:
            svc = self._services.get(key)
            if svc is None:
                continue
            if svc.local:
                allowed = svc.ready_nodes if allowed is None else allowed & svc.ready_nodes
            elif not svc.any_ready:
                allowed = frozenset()
        return allowed

    def _regroup(self, rec: _Ip) -> None:
        """Put ``rec`` in the group its pool, subnets and endpoint rule give it (layer2 IPs only)."""
        if rec.protocol != "layer2":
            return
        old = rec.group
        subnets = tuple(n for n in self._subnets if n.version == rec.addr.version and rec.addr in n)
        key: tuple[object, ...] = (rec.pool, subnets, self._allowed(rec))
        if key == old:
            return
        if old is not None and old in self.groups:
            self.groups[old].ips.discard(rec.ip)
        group = self.groups.get(key)
        if group is None:
            assert self.config is not None
            pool = next(p for p in self.config.address_pools if p.name == rec.pool)
            group = self.groups[key] = _Group(pool, subnets, self._allowed(rec))
            self._refresh_group(key)
        group.ips.add(rec.ip)
        rec.group = key

    def _selected_by(self, pool: AddressPool) -> frozenset[str]:
        got = self._selected.get(pool.name)
        if got is None:
            got = self._selected[pool.name] = frozenset(
                n for n, view in self._nodes.items()
                if eligibility.excluded(view) is None and eligibility.pool_selects(pool, view.labels))
        return got

    def _refresh_group(self, key: tuple[object, ...]) -> None:
        """Recompute a group's candidate sets from the node views and links (not its owners)."""
        g = self.groups[key]
        g.selected = self._selected_by(g.pool)
        g.on_subnet = frozenset(n for n in g.selected if self._links.get(n) is not None
                                and any(net in self._links[n].subnets for net in g.subnets))
        allowed = g.selected if g.allowed is None else g.selected & g.allowed
        g.primary = g.on_subnet & allowed
        g.fallback = frozenset(n for n in allowed if (link := self._links.get(n)) is not None and link.any_up)
        self._set_mode(g)

    def _set_mode(self, g: _Group) -> bool:
        """Eligible nodes under the alive set; returns whether the group's mode changed."""
        alive = self.alive
        if g.primary & alive:
            mode, eligible = "primary", g.primary & alive
        elif g.on_subnet & alive:
            # Live nodes of the pool have the subnet but the endpoints rule them out: do not move the IP
            # to a node its clients cannot reach.
            mode, eligible = "none", frozenset()
        else:
            mode, eligible = "fallback", g.fallback & alive
        changed = mode != g.mode
        g.mode, g.eligible = mode, eligible
        return changed

    def _compute(self, rec: _Ip) -> None:
        """The owner of ``rec`` from scratch: one hash per eligible node."""
        self.recomputed += 1
        owner: str | None = None
        digest = b""
        if rec.group is not None:
            owner, digest = self.scorer.best(rec.key, self.groups[rec.group].eligible)
        self._set_owner(rec, owner, digest)

    def _set_owner(self, rec: _Ip, owner: str | None, digest: bytes) -> None:
        if rec.owner is not None and rec.owner != owner:
            held = self.by_owner.get(rec.owner)
            if held is not None:
                held.discard(rec.ip)
        rec.owner, rec.digest = owner, digest
        if owner is not None:
            self.by_owner.setdefault(owner, set()).add(rec.ip)

    # -- incremental ---------------------------------------------------------------------------------

    def _alive_changed(self, alive: frozenset[str]) -> set[str]:
        gone, came = self.alive - alive, alive - self.alive
        self.alive = alive
        changed: set[str] = set()
        redo: set[str] = set()
        moved = gone | came
        for g in self.groups.values():
            if not (moved & g.on_subnet or moved & g.fallback):
                continue
            was = g.eligible
            if self._set_mode(g):
                redo |= g.ips
                continue
            if came & g.eligible - was:
                for node in came & g.eligible:
                    for ip in g.ips - redo:
                        member = self.ips[ip]
                        digest = self.scorer.digest(node, member.key)
                        if self.scorer.beats(node, digest, member.owner, member.digest):
                            self._set_owner(member, node, digest)
                            changed.add(ip)
        for node in gone:
            redo |= self.by_owner.get(node, set())
        for ip in redo:
            rec = self.ips.get(ip)
            if rec is not None:
                before = rec.owner
                self._compute(rec)
                if rec.owner != before:
                    changed.add(ip)
        return changed

    def _nodes_changed(self, names: frozenset[str], alive: frozenset[str]) -> set[str]:
        """Node views or links of ``names`` changed: refresh candidate sets, then act where they moved."""
        subnets = self._all_subnets()
        if subnets != self._subnets:
            # New subnets can move IPs between groups: regroup everything (cheap), recompute what moved.
            self._subnets = subnets
            self._selected = {}
            before = {ip: rec.group for ip, rec in self.ips.items()}
            for rec in self.ips.values():
                self._regroup(rec)
            for key in list(self.groups):
                self._refresh_group(key)
            moved = {ip for ip, rec in self.ips.items() if rec.group != before[ip]}
            changed = self._recompute(moved)
            return changed | self._recompute_where(names)
        self._selected = {}
        return self._recompute_where(names)

    def _recompute_where(self, names: frozenset[str]) -> set[str]:
        redo: set[str] = set()
        for key, g in self.groups.items():
            before = (g.eligible, g.mode)
            self._refresh_group(key)
            if (g.eligible, g.mode) != before:
                if g.mode != before[1]:
                    redo |= g.ips
                    continue
                for ip in g.ips:
                    rec = self.ips[ip]
                    if rec.owner is not None and rec.owner not in g.eligible:
                        redo.add(ip)
                    elif rec.ip not in redo:
                        for node in (g.eligible - before[0]) & names:
                            digest = self.scorer.digest(node, rec.key)
                            if self.scorer.beats(node, digest, rec.owner, rec.digest):
                                redo.add(ip)
        return self._recompute(redo)

    def _services_changed(self, keys: frozenset[str], alive: frozenset[str]) -> set[str]:
        touched: set[str] = set()
        for key in keys:
            for ip in self.by_service.pop(key, ()):
                rec = self.ips.get(ip)
                if rec is not None:
                    rec.services = tuple(s for s in rec.services if s != key)
                    touched.add(ip)
                elif ip in self.unknown:
                    rest = tuple(s for s in self.unknown[ip] if s != key)
                    if rest:
                        self.unknown[ip] = rest
                    else:
                        del self.unknown[ip]
                    touched.add(ip)
        for key in keys:
            svc = self._services.get(key)
            if svc is not None and self.config is not None:
                self._add_service(svc)
                touched.update(svc.ips)
        for ip in list(touched):
            rec = self.ips.get(ip)
            if rec is not None and not rec.services:
                self._set_owner(rec, None, b"")
                if rec.group is not None and rec.group in self.groups:
                    self.groups[rec.group].ips.discard(ip)
                del self.ips[ip]
            elif rec is not None:
                self._regroup(rec)
        for empty in [k for k, g in self.groups.items() if not g.ips]:
            del self.groups[empty]
        return self._recompute({ip for ip in touched if ip in self.ips}) | {ip for ip in touched if ip not in self.ips}

    def _recompute(self, ips: Iterable[str]) -> set[str]:
        changed: set[str] = set()
        for ip in ips:
            rec = self.ips[ip]
            before = rec.owner
            self._compute(rec)
            if rec.owner != before:
                changed.add(ip)
        return changed


def plan(config: Config | None, services: Sequence[ServiceView], nodes: Mapping[str, NodeView],
         links: Mapping[str, Link], alive: Iterable[str]) -> Plan:
    """Who announces each IP, computed once from scratch (``lbspeaker status``)."""
    election = Election()
    election.update(config, {s.key: s for s in services}, nodes, links, frozenset(alive), Changes(everything=True))
    out = Plan(unknown=dict(election.unknown))
    for ip in sorted(election.ips):
        rec = election.ips[ip]
        if rec.protocol == "layer2":
            decision = election.decision(ip)
            assert decision is not None
            out.l2[ip] = decision
        else:
            out.bgp[ip] = Decision(ip, rec.pool, rec.protocol, rec.services, election.bgp_eligible(ip), None)
    return out


# -- announcing --------------------------------------------------------------------------------------


class Announcer(Protocol):
    """What the protocol uses of ``lbspeaker.l2.L2Announcer``."""

    def update(self, desired: Mapping[str, Sequence[str]]) -> None: ...

    def interfaces_for(self, ip: str) -> list[str]: ...


class Layer2Protocol:
    """The layer2 part of the speaker: the election on each pass, this node's IPs to the announcer.

    ``answering()`` says whether membership lets us answer at all (fenced: no); ``lock`` is held while
    the announcer is updated, and by ``withdraw`` (called from the membership thread the moment we
    must stop), so that a pass never re-announces after a withdrawal.
    """

    name = "layer2"

    def __init__(self, node: str, announcer: Announcer, *, answering: Callable[[], bool],
                 recorder: EventRecorder | None = None, lock: threading.Lock | None = None) -> None:
        self.node = node
        self.announcer = announcer
        self.answering = answering
        self.recorder = recorder
        self.lock = lock or threading.Lock()
        self.election = Election()
        self.announced: dict[str, list[str]] = {}  # ip -> interfaces handed to the announcer
        self._interfaces: dict[str, list[str]] = {}  # ip -> interfaces it would go out on
        self._services_announced: set[str] = set()
        self._stopped = False

    def reconcile(self, snap: Snapshot, changes: Changes) -> None:
        changed = self.election.update(snap.config, snap.services, snap.nodes, snap.links, snap.alive, changes)
        for ip in changed:
            self._interfaces.pop(ip, None)
        self.apply(snap)

    def interfaces_changed(self) -> None:
        """Interfaces went up, down or changed address: choose them again for every owned IP."""
        self._interfaces.clear()

    def apply(self, snap: Snapshot) -> None:
        owned = self.election.owned_by(self.node) if self.node in snap.alive else set()
        desired: dict[str, list[str]] = {}
        for ip in owned:
            names = self._interfaces.get(ip)
            if names is None:
                names = self._interfaces[ip] = self.announcer.interfaces_for(ip)
            if names:
                desired[ip] = names
        with self.lock:
            if self._stopped:
                return
            if not self.answering():
                desired = {}
            if desired != self.announced:
                self.announcer.update(desired)
                if desired.keys() != self.announced.keys():
                    log.info("announcing %d IPs (%d live members)", len(desired), len(snap.alive))
                self.announced = desired
        self._record(snap, desired)

    def withdraw(self) -> None:
        """Stop answering for everything now (we were fenced); a later pass brings the IPs back."""
        with self.lock:
            if self.announced:
                self.announcer.update({})
                self.announced = {}

    def stop(self, graceful: bool) -> None:
        with self.lock:
            self._stopped = True
            with contextlib.suppress(RuntimeError):  # never started
                self.announcer.update({})
            self.announced = {}

    def _record(self, snap: Snapshot, desired: Mapping[str, list[str]]) -> None:
        """Event nodeAssigned on a Service once per takeover: when its first IP starts being announced here."""
        now_services: dict[str, list[str]] = {}
        for ip in desired:
            rec = self.election.ips.get(ip)
            for key in rec.services if rec is not None else ():
                now_services.setdefault(key, []).append(ip)
        for key in sorted(now_services.keys() - self._services_announced):
            svc = snap.raw_service(key)
            if svc is None or self.recorder is None:
                continue
            ifaces = sorted({name for ip in now_services[key] for name in desired[ip]})
            self.recorder.record(svc, "Normal", "nodeAssigned",
                                 f"announcing from node {self.node}, layer2, interface {','.join(ifaces)}")
        self._services_announced = set(now_services)


def local_link(interfaces: Sequence[Interface], regex: str | None) -> Link:
    """Our data path as we publish it: subnets of up interfaces we may announce on (link-local left out)."""
    pattern = re.compile(regex) if regex else None
    usable = [i for i in interfaces if i.can_announce and (pattern is None or pattern.fullmatch(i.name))]
    if pattern is None:
        usable = [i for i in usable if not is_virtual_name(i.name) or i.addresses]
    subnets = {a.network for i in usable for a in i.addresses if not a.ip.is_link_local}
    return Link(tuple(sorted(subnets, key=lambda n: (n.version, n))), bool(usable))
