"""The speaker: caches, membership, our Lease, and the reconcile loop that drives layer2 and BGP.

Threads and what they may do:

* informers (one per watched kind) keep caches and only *record* changes (``reconcile.Pending``); the
  configmap handler also parses the configuration there, so a slow parse never delays a failover;
* ``membership`` (``membership.transport``) exchanges datagrams with our neighbours; when we must stop
  answering it withdraws our IPs itself, at once, then records a liveness change;
* ``lease-keeper`` renews our Lease every ``lease_renew`` seconds and when what it publishes changes;
* ``witness`` (two-member clusters only) writes our Lease while our peer cannot be heard, and writes
  our vote into the peer's Lease (``membership.detector``: the API server is the tie-breaker);
* ``speaker-reconcile`` takes the recorded changes, updates the typed views key by key and calls the
  protocols with a ``Snapshot`` and ``Changes`` (``speaker.protocol``). It makes no API call.

While the API server is unreachable (refusing, hanging or rewound) the caches keep their last state
(rewound: the informers relist and the views follow the server), nobody's Lease counts as expired,
membership keeps deciding who is alive, and the announcements stay.

Without the memberlist key (Secret ``lbspeaker-memberlist``) the speaker runs degraded: alive is "a
current Lease", failover takes a Lease duration and a partition can make two nodes answer; ``/readyz``
says so.
"""

from __future__ import annotations

import base64
import binascii
import logging
import socket
import threading
import time
from collections.abc import Mapping
from typing import Any

from lbspeaker.config import Config
from lbspeaker.config.cluster import config_sources, load_config
from lbspeaker.hostport import format_hostport
from lbspeaker.kube.events import EventRecorder
from lbspeaker.kube.informer import Informer, object_key
from lbspeaker.kube.rest import JSON, Rest, path_for
from lbspeaker.l2 import Interface, L2Announcer
from lbspeaker.membership import wire
from lbspeaker.membership.detector import Detector, Member
from lbspeaker.membership.transport import Transport
from lbspeaker.objects import (
    NodeView,
    ServiceView,
    internal_ip,
    is_load_balancer,
    node_view,
    service_view,
    slice_service,
)
from lbspeaker.speaker import eligibility, metrics
from lbspeaker.speaker.bgp import BgpProtocol, secret_values
from lbspeaker.speaker.bgp_announcer import BgpAnnouncer
from lbspeaker.speaker.layer2 import Layer2Protocol, local_link
from lbspeaker.speaker.lease import (
    HEARTBEAT_ANNOTATION,
    INTERFACES_UP_ANNOTATION,
    STATE_ANNOTATION,
    SUBNETS_ANNOTATION,
    LeaseKeeper,
    Link,
    SpeakerLease,
    format_subnets,
    lease_name,
    node_of,
    speaker_lease,
    state_text,
)
from lbspeaker.speaker.protocol import Changes, Snapshot
from lbspeaker.speaker.reconcile import Loop, Pending, Work
from lbspeaker.speaker.settings import SpeakerSettings

log = logging.getLogger(__name__)

MEMBERLIST_SECRET = "lbspeaker-memberlist"
MEMBERLIST_KEY = "secretkey"
STUCK_PARSE_SECONDS = 5.0
API_SILENCE_SECONDS = 120.0  # a real server sends a watch bookmark every minute
API_GRACE_SECONDS = 10.0  # a watch being re-opened is not an outage


def decode_key(secret: Mapping[str, Any] | None) -> tuple[bytes | None, str]:
    """The membership key from the memberlist Secret, or None and why (never the key itself)."""
    if secret is None:
        return None, f"Secret {MEMBERLIST_SECRET} not found"
    raw = (secret.get("data") or {}).get(MEMBERLIST_KEY)
    if not raw:
        text = (secret.get("stringData") or {}).get(MEMBERLIST_KEY)
        if not text:
            return None, f"Secret {MEMBERLIST_SECRET} has no key {MEMBERLIST_KEY!r}"
        key = str(text).encode()
    else:
        try:
            key = base64.b64decode(str(raw), validate=True)
        except (binascii.Error, ValueError):
            return None, f"Secret {MEMBERLIST_SECRET} key {MEMBERLIST_KEY!r} is not valid base64"
    try:
        wire.validate_keys(key)
    except ValueError as exc:
        return None, f"Secret {MEMBERLIST_SECRET}: {exc}"
    return key, "ok"


def _check_raw_sockets() -> None:
    """Fail at start, not later and silently: answering ARP/NDP needs packet sockets (CAP_NET_RAW)."""
    try:
        probe = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    except PermissionError as exc:
        raise RuntimeError(f"cannot open a packet socket ({exc}): the speaker needs CAP_NET_RAW") from None
    probe.close()


class Speaker:
    """Everything a node's speaker runs, minus the process plumbing (see ``speaker.main``)."""

    def __init__(self, rest: Rest, node: str, *, settings: SpeakerSettings | None = None,
                 recorder: EventRecorder | None = None, bgp: BgpAnnouncer | None = None,
                 announcer: L2Announcer | None = None) -> None:
        self.rest = rest
        self.node = node
        self.settings = s = settings or SpeakerSettings()
        self.namespace = s.namespace
        self.recorder = recorder
        self.clock = time.monotonic
        self.pending = Pending()
        self._stop = threading.Event()
        self._announce_lock = threading.Lock()

        # Typed views, owned by the loop thread.
        self.config: Config | None = None
        self.node_views: dict[str, NodeView] = {}
        self.service_views: dict[str, ServiceView] = {}
        self.lease_views: dict[str, SpeakerLease] = {}
        self.secrets_decoded: dict[str, dict[str, str]] = {}
        self.alive: frozenset[str] = frozenset()
        self.members: dict[str, Member] = {}
        self._link = Link()
        # Written by handler threads.
        self._parsed: Config | None = None
        self._config_inputs: tuple[tuple[str, str], ...] | None = None
        self._parsing_since: float | None = None
        self._slices: dict[str, dict[str, JSON]] = {}  # Service key -> slice key -> EndpointSlice
        self._slices_lock = threading.Lock()
        self._observed: dict[str, tuple[str, float]] = {}  # node -> (Lease resourceVersion, first seen)
        self._leases_ok = True  # the Lease cache was current at the last pass
        self._members_dirty = True
        self._members_due = 0.0

        self.announcer = announcer or L2Announcer(s.interfaces_regex, on_duplicate=self._on_duplicate,
                                                  on_interfaces_changed=self._on_interfaces, guard=self._guard)
        self.layer2 = Layer2Protocol(node, self.announcer, answering=self._answering, recorder=recorder,
                                     lock=self._announce_lock)
        self.bgp = BgpProtocol(node, bgp, recorder=recorder) if bgp is not None else None

        self.services = Informer(rest, path_for("v1", "services"), name="services", handler=self._on_service)
        self.slices = Informer(rest, path_for("discovery.k8s.io/v1", "endpointslices"), name="endpointslices",
                               handler=self._on_slice)
        self.nodes = Informer(rest, path_for("v1", "nodes"), name="nodes", handler=self._on_node)
        self.configmaps = Informer(rest, path_for("v1", "configmaps", s.namespace), name="configmaps",
                                   handler=self._on_configmap)
        self.leases = Informer(rest, path_for("coordination.k8s.io/v1", "leases", s.namespace), name="leases",
                               handler=self._on_lease)
        # Every Secret of our namespace: the membership key and the BGP passwords the config names (the
        # names come from the config, so no field selector can narrow this down).
        self.secrets = Informer(rest, path_for("v1", "secrets", s.namespace), name="secrets",
                                handler=lambda _o, _n: self.pending.flag("secrets"))
        self.informers = [self.services, self.slices, self.nodes, self.configmaps, self.leases, self.secrets]

        self.lease = LeaseKeeper(rest, s.namespace, node, annotations=self._lease_annotations,
                                 owner=self._owner_reference, on_voted_dead=self._voted_dead,
                                 duration=s.lease_duration, renew_every=s.lease_renew)
        self.detector: Detector | None = None
        self.transport: Transport | None = None
        self.key_problem: str | None = "membership key not read yet"
        self._key: bytes | None = None
        self.loop = Loop(self.pending, self._step)
        self._witness_thread: threading.Thread | None = None
        self._started = False

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> None:
        """Caches, announcer, our Lease (boot number), membership, then the loop. Blocks until the caches
        have synced (``/readyz`` says what is missing meanwhile)."""
        _check_raw_sockets()
        for inf in self.informers:
            inf.start()
        self.announcer.start()
        self._link = local_link(self.announcer.interfaces(), self.settings.interfaces_regex)
        for inf in self.informers:
            waited = 0
            while not inf.wait_synced(0.5):
                if self._stop.is_set():
                    return
                waited += 1
                if waited % 20 == 0:
                    log.info("waiting for the %s cache to sync", inf.name)
        self._apply_key()
        self.lease.acquire(self._stop)
        self.lease.start()
        self._start_membership()
        self._started = True
        self.pending.flag("everything")
        self.loop.start()

    def stop(self, graceful: bool = True) -> None:
        """Graceful: stop answering, tell our neighbours, release our Lease, then close the sockets."""
        self._stop.set()
        self.loop.stop()
        self.layer2.stop(graceful)
        if self.transport is not None:
            self.transport.stop(leaving=graceful)
        if self.bgp is not None:
            # Graceful: ExaBGP goes without withdrawing, and the routers keep our routes (stale, under
            # graceful restart) until the restarted speaker announces them again.
            self.bgp.stop(graceful)
        self.lease.stop(release=graceful)
        self.announcer.stop()
        for inf in self.informers:
            inf.stop()

    def healthy(self) -> tuple[bool, str]:
        if self._started and not self.loop.alive() and not self._stop.is_set():
            return False, "reconcile thread died"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        unsynced = [inf.name for inf in self.informers if not inf.synced.is_set()]
        if unsynced:
            return False, f"caches not synced: {', '.join(unsynced)}"
        if self._parsing_since is not None and self.clock() - self._parsing_since > STUCK_PARSE_SECONDS:
            return False, f"configuration parse running for {self.clock() - self._parsing_since:.0f}s"
        if self.config is None:
            return False, "no valid configuration loaded"
        if self.detector is not None and self.node in self.members:
            state = self.detector.states().get(self.node, "")
            if state != "answering":
                return False, f"membership: {state}"
        for inf in self.informers:
            ok, why = inf.health(max_silence=API_SILENCE_SECONDS, grace=API_GRACE_SECONDS)
            if not ok:
                return False, f"caches out of date, announcements kept as they are: {why}"
        if self.key_problem is not None:
            return True, f"ok, degraded: no membership ({self.key_problem}); liveness from Leases only"
        return True, "ok"

    def stats(self) -> dict[str, Mapping[str, object]]:
        out: dict[str, Mapping[str, object]] = {"l2": self.announcer.stats()}
        if self.transport is not None:
            out["heartbeat"] = self.transport.stats()
        return out

    # -- handlers: only record work --------------------------------------------------------------------

    def _on_service(self, old: JSON | None, new: JSON | None) -> None:
        obj = new or old
        if obj is not None:
            self.pending.service(object_key(obj))

    def _on_slice(self, old: JSON | None, new: JSON | None) -> None:
        with self._slices_lock:
            for obj, keep in ((old, False), (new, True)):
                if obj is None:
                    continue
                owner = slice_service(obj)
                if owner is None:
                    continue
                if keep:
                    self._slices.setdefault(owner, {})[object_key(obj)] = obj
                else:
                    held = self._slices.get(owner)
                    if held is not None:
                        held.pop(object_key(obj), None)
                        if not held:
                            del self._slices[owner]
                self.pending.service(owner)

    def _on_node(self, old: JSON | None, new: JSON | None) -> None:
        obj = new or old
        if obj is None:
            return
        name = str((obj.get("metadata") or {}).get("name"))
        if name == self.node:
            self.lease.poke()  # our InternalIP (the heartbeat address) or uid may have changed
        self.pending.node(name)

    def _on_lease(self, old: JSON | None, new: JSON | None) -> None:
        obj = new or old
        node = node_of(obj) if obj is not None else None
        if node is None:
            return
        if new is not None:
            rv = str((new.get("metadata") or {}).get("resourceVersion") or "")
            seen = self._observed.get(node)
            if seen is None or seen[0] != rv:
                self._observed[node] = (rv, self.clock())
        else:
            self._observed.pop(node, None)
        self.pending.lease(node)

    def _on_configmap(self, _old: JSON | None, _new: JSON | None) -> None:
        """Parse here, on the informer's thread: the loop (and so failover) never waits for a parse."""
        sources = config_sources(self.configmaps.items(), self.settings.config_name)
        inputs = tuple((object_key(cm), str((cm.get("metadata") or {}).get("resourceVersion"))) for cm in sources)
        if inputs == self._config_inputs:
            return
        self._config_inputs = inputs
        if not sources:
            log.warning("no ConfigMap %s/%s: %s", self.namespace, self.settings.config_name,
                        "keeping the last good configuration" if self._parsed else "nothing to announce")
            return
        self._parsing_since = self.clock()
        try:
            cfg, errors = load_config(sources)
        finally:
            self._parsing_since = None
        if cfg is None:
            for cm, text in errors:
                log.error("invalid configuration in %s: %s; %s", object_key(cm), text,
                          "keeping the last good one" if self._parsed else "nothing announced")
            return
        self._parsed = cfg
        self.pending.flag("config")

    def _on_interfaces(self, interfaces: list[Interface] | Any) -> None:
        self.pending.flag("interfaces")

    def _on_duplicate(self, ip: str, mac: str, ifname: str) -> None:
        log.warning("another MAC %s answers for %s on %s", mac, ip, ifname)
        rec = self.layer2.election.ips.get(ip)
        if self.recorder is None or rec is None:
            return
        for key in rec.services:
            svc = self.services.get(key)
            if svc is not None:
                self.recorder.record(svc, "Warning", "DuplicateAnswer",
                                     f"{mac} also answers for {ip} on {ifname} of node {self.node}")

    def _on_membership(self, answering: bool, _alive: frozenset[str]) -> None:
        """From the membership thread: stop answering at once when we must, then let the loop catch up."""
        if not answering:
            self.layer2.withdraw()
        self.lease.poke()  # our membership state is the baseline a joining speaker reads from our Lease
        self.pending.flag("liveness")

    def _voted_dead(self, boot: int, version: int) -> None:
        if self.transport is not None:
            self.transport.call(lambda d, now: d.told_dead(boot, version, now))

    def _guard(self) -> bool:
        """Asked by the responder before each answer: membership's last safe instant has not passed.

        ``valid_until`` is moved forward only by the membership thread; if that thread stalls, answers
        stop on their own at the instant our neighbours may start voting us dead.
        """
        det = self.detector
        return det is None or self.clock() < det.valid_until

    def _answering(self) -> bool:
        if self.detector is None:
            return True  # degraded, Lease-only: nothing can tell us to stop
        return self.detector.answering

    # -- membership key and the transport ------------------------------------------------------------

    def _apply_key(self) -> None:
        key, why = decode_key(self.secrets.get(f"{self.namespace}/{MEMBERLIST_SECRET}"))
        if key is None:
            if self.transport is None and self.key_problem != why:
                log.error("%s: running without membership, liveness from Leases only", why)
            elif self.transport is not None and self.key_problem is None:
                log.warning("%s: keeping the key in use", why)
            if self.transport is None:
                self.key_problem = why
            return
        if self.transport is None:
            self.detector = Detector(self.node, self.settings.timing, now=self.clock())
            host, port = self.settings.heartbeat_bind
            for candidate in ([host] if host else ["::", "0.0.0.0"]):
                try:
                    self.transport = Transport(self.detector, key, (candidate, port), on_change=self._on_membership)
                    break
                except OSError as exc:
                    log.warning("membership socket on %s:%d: %s", candidate, port, exc)
            if self.transport is None:
                self.detector = None
                self.key_problem = "membership socket could not be bound"
                log.error("%s: liveness from Leases only", self.key_problem)
                return
            self.key_problem = None
            self._key = key
            if self._started:
                # The Secret was created after the speakers (the usual order of an install): switch
                # from Lease-only liveness to membership now, no restart needed.
                log.info("membership key found: joining membership")
                self._start_membership()
                self._members_dirty = True
                self.lease.poke()  # publish our membership address
        elif key != self._key:
            self.transport.set_keys(key)
            self._key = key
            log.info("membership key rotated")

    def _start_membership(self) -> None:
        if self.transport is None or self.lease.boot == 0:
            return
        self.transport.call(lambda d, now: d.start(self.lease.boot, now))
        self.transport.start()
        self._witness_thread = threading.Thread(target=self._witness_loop, name="witness", daemon=True)
        self._witness_thread.start()

    def _witness_loop(self) -> None:
        """Two-member clusters: the API server as the third vote (see ``membership.detector``)."""
        t = self.settings.timing
        while not self._stop.wait(t.fence_after / 4):
            transport = self.transport
            if transport is None:
                continue
            def look(d: Detector, now: float) -> tuple[bool, set[tuple[str, int, int]]]:
                return d.wants_witness(now), set(d.witness_votes)

            wants, votes = transport.peek(look)
            if wants:
                ok, sent_at = self.lease.witness()
                if ok:
                    def ack(d: Detector, _now: float, at: float = sent_at) -> None:
                        d.witness_ack(at)

                    transport.call(ack)
            for peer, boot, version in votes:
                obj = self.leases.get(f"{self.namespace}/{lease_name(peer)}")
                seen = self._observed.get(peer)
                if obj is None or seen is None or self.clock() - seen[1] < t.dead_after:
                    continue  # the peer wrote its Lease lately: it is alive somewhere, do not vote
                if self.lease.vote_dead(obj, boot, version):
                    def done(d: Detector, now: float, p: str = peer, b: int = boot, v: int = version) -> None:
                        d.witness_vote_done(p, b, v, now)

                    transport.call(done)

    # -- our Lease -------------------------------------------------------------------------------------

    def _lease_annotations(self) -> dict[str, str]:
        out = {
            SUBNETS_ANNOTATION: format_subnets(self._link.subnets),
            INTERFACES_UP_ANNOTATION: "true" if self._link.any_up else "false",
        }
        det = self.detector
        if det is not None:
            out[STATE_ANNOTATION] = state_text(det.version, det.claim)
        addr = self._heartbeat_addr()
        if addr:
            out[HEARTBEAT_ANNOTATION] = addr
        if self.bgp is not None:
            out.update(self.bgp.announcer.lease_annotations())  # BFD session states, for `lbspeaker status`
        return out

    def _heartbeat_addr(self) -> str | None:
        if self.transport is None:
            return None
        node = self.nodes.get(self.node)
        ip = internal_ip(node) if node is not None else None
        return format_hostport(ip, self.transport.address[1]) if ip is not None else None

    def _owner_reference(self) -> dict[str, Any] | None:
        node = self.nodes.get(self.node)
        uid = ((node or {}).get("metadata") or {}).get("uid")
        if not uid:
            return None
        return {"apiVersion": "v1", "kind": "Node", "name": self.node, "uid": str(uid)}

    # -- the loop --------------------------------------------------------------------------------------

    def _step(self, work: Work) -> None:
        started = time.perf_counter()
        if work.everything:
            work.config = work.secrets = work.liveness = work.interfaces = True
            work.services.update(self.services.all_keys())
            work.services.update(self.service_views)
            work.nodes.update(n.split("/")[-1] for n in self.nodes.all_keys())
            work.leases.update(n for n in map(node_of, self.leases.items()) if n)
            work.leases.update(self.lease_views)
        # 1. Liveness first, alone, over the views as they were: failover never waits for other work.
        alive = self._alive_now()
        if alive != self.alive and self.config is not None:
            gone_or_came = alive ^ self.alive
            self.alive = alive
            self._protocols(Changes(liveness=frozenset(gone_or_came)))
        # 2. Everything else.
        everything = work.everything
        if (work.config or everything) and self._parsed is not self.config:
            self.config = self._parsed
            everything = True
        secrets = False
        if work.secrets:
            self.secrets_decoded = {str((obj.get("metadata") or {}).get("name")): secret_values(obj)
                                    for obj in self.secrets.items()}
            self._apply_key()
            secrets = True
        nodes_changed = self._update_nodes(work.nodes) | self._update_leases(work.leases)
        if work.interfaces:
            link = local_link(self.announcer.interfaces(), self.settings.interfaces_regex)
            self.layer2.interfaces_changed()
            if link != self._link:
                self._link = link
                log.info("up-interface subnets now %s", format_subnets(link.subnets) or "none")
                self.lease.poke()
                nodes_changed.add(self.node)
        services_changed = self._update_services(work.services)
        self._update_members(everything or bool(nodes_changed))
        alive = self._alive_now()
        liveness = alive ^ self.alive
        self.alive = alive
        changes = Changes(everything=everything, services=frozenset(services_changed),
                          nodes=frozenset(nodes_changed), liveness=frozenset(liveness), secrets=secrets)
        if not changes.empty or work.interfaces or work.liveness:
            self._protocols(changes)
        metrics.ANNOUNCED.labels("layer2").set(len(self.layer2.announced))
        metrics.LIVE_MEMBERS.set(len(self.alive))
        metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)

    def _protocols(self, changes: Changes) -> None:
        snap = self._snapshot()
        self.layer2.reconcile(snap, changes)
        if self.bgp is not None and not self._stop.is_set():
            self.bgp.reconcile(snap, changes)

    def _snapshot(self) -> Snapshot:
        links = {node: lease.link for node, lease in self.lease_views.items()}
        # Ourselves: what peers see (the Lease) and what is true now must both allow it, so that a
        # dropped interface takes us out before the Lease says so, and a returning one not before.
        published = links.get(self.node, Link())
        own = self._link
        links[self.node] = Link(tuple(n for n in published.subnets if n in own.subnets),
                                published.any_up and own.any_up)
        return Snapshot(node=self.node, config=self.config, nodes=self.node_views, services=self.service_views,
                        links=links, alive=self.alive, secrets=self.secrets_decoded, raw_service=self.services.get,
                        config_map=self.configmaps.get(f"{self.namespace}/{self.settings.config_name}"))

    def _update_nodes(self, names: set[str]) -> set[str]:
        changed: set[str] = set()
        for name in names:
            raw = self.nodes.get(name)
            view = node_view(raw) if raw is not None else None
            if view != self.node_views.get(name):
                if view is None:
                    self.node_views.pop(name, None)
                else:
                    self.node_views[name] = view
                changed.add(name)
        return changed

    def _update_leases(self, nodes: set[str]) -> set[str]:
        """Lease views; returns the nodes whose published link changed. A renewal alone changes nothing
        (only a change of ``SpeakerLease.content`` makes the member list be looked at again)."""
        changed: set[str] = set()
        for node in nodes:
            raw = self.leases.get(f"{self.namespace}/{lease_name(node)}")
            view = speaker_lease(raw) if raw is not None else None
            old = self.lease_views.get(node)
            if view is None:
                if old is not None:
                    del self.lease_views[node]
                    changed.add(node)
                    self._members_dirty = True
                continue
            self.lease_views[node] = view
            if old is None or old.content != view.content:
                self._members_dirty = True
            if old is None or old.link != view.link:
                changed.add(node)
        return changed

    def _update_services(self, keys: set[str]) -> set[str]:
        changed: set[str] = set()
        for key in keys:
            raw = self.services.get(key)
            view: ServiceView | None = None
            if raw is not None and is_load_balancer(raw, self.settings.lb_class):
                with self._slices_lock:
                    slices = list(self._slices.get(key, {}).values())
                view = service_view(raw, slices)
                if not view.ips:
                    view = None
            if view != self.service_views.get(key):
                if view is None:
                    self.service_views.pop(key, None)
                else:
                    self.service_views[key] = view
                changed.add(key)
        return changed

    def _update_members(self, force: bool) -> None:
        """The layer2 members (eligible nodes with a held Lease), handed to the detector when they change.

        Looked at again when a Lease's content, a Node or the configuration changed, and once a second
        for Lease expiry; never for a renewal alone (O(members) each time).
        """
        now = self.clock()
        if not (force or self._members_dirty or now >= self._members_due):
            return
        self._members_dirty = False
        self._members_due = now + 1.0
        pools = self.config.address_pools if self.config is not None else []
        api_ok = self.leases.healthy
        if api_ok and not self._leases_ok:
            # Back from an outage: nobody could renew meanwhile, so every Lease gets a fresh duration
            # from now before it can count as expired.
            self._observed = {node: (rv, now) for node, (rv, _) in self._observed.items()}
        self._leases_ok = api_ok
        members: dict[str, Member] = {}
        for node, lease in self.lease_views.items():
            if lease.holder is None or lease.left or (lease.heartbeat_addr is None and self.detector is not None):
                continue
            view = self.node_views.get(node)
            if view is None or not eligibility.layer2_member(view, pools):
                continue
            seen = self._observed.get(node)
            expired = api_ok and seen is not None and now - seen[1] > lease.duration > 0
            members[node] = Member(addr=lease.heartbeat_addr, boot=lease.boot, version=lease.version,
                                   serving=lease.serving, expired=expired)
        if members != self.members or force:
            self.members = members
            if self.transport is not None:
                def give(d: Detector, now: float) -> None:
                    d.set_members(members, now)
                    d.set_ready(True)

                self.transport.call(give)

    def _alive_now(self) -> frozenset[str]:
        if self.transport is not None:
            return self.transport.peek(lambda d, _now: d.alive())
        # Degraded: a member is alive while its Lease is current (and always ourselves); while the API
        # server is unreachable nobody's Lease can move, so nobody counts as expired.
        now = self.clock()
        api_ok = self.leases.healthy
        return frozenset(n for n, m in self.members.items()
                         if n == self.node or not api_ok or (not m.expired and (seen := self._observed.get(n))
                                                             is not None
                                                             and now - seen[1] <= self.lease_views[n].duration))


__all__ = ["MEMBERLIST_KEY", "MEMBERLIST_SECRET", "Speaker", "decode_key"]
