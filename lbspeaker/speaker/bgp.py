"""Pure BGP desired state of one node: which peers it keeps and which routes it announces.

``peers_for_node`` and ``node_routes`` are pure; ``BgpProtocol`` runs them on each reconcile pass's
snapshot (config, this Node's view, Secret values, Service views) and hands the results to
``lbspeaker.speaker.bgp_announcer``.

Peers (``peers_for_node``): the config peers whose ``node-selectors`` match this node (no selectors:
every node), as ``BgpPeer``. The router id defaults to the node's IPv4 address; the password comes
from ``password`` or from the Secret key ``password-secret`` names. When that password cannot be had
(Secret or key missing, unusable value), the peer keeps its last good definition, so a Secret
deleted and recreated, or a typo in a Secret name, leaves a working session alone (as a broken
ConfigMap leaves the last good configuration); it is reported either way. A peer that never had a
good definition is left out: a session opened without the password it was configured with would be
refused by the router or, worse, accepted unauthenticated.

Routes (``node_routes``): for each Service we handle (same ``loadBalancerClass`` rule as the
controller), each status IP that lies in a ``bgp`` pool is announced from this node when

* the node may announce at all: ``node_eligible``, which the caller computes (speaker alive, Node
  known, not labelled ``node.kubernetes.io/exclude-from-external-load-balancers``, no
  ``NetworkUnavailable=True`` condition — ``speaker.eligibility.excluded``);
* the pool's ``node-selectors`` select the node's labels (``node_labels``);
* ``externalTrafficPolicy: Local``: a ready endpoint of the Service runs on this node;
  ``Cluster``: a ready endpoint runs anywhere (otherwise nobody announces the Service).

Services sharing an IP announce it only when every one of them may be announced from this node, the
same intersection rule the layer2 election uses (``speaker.layer2``). IPs of layer2 pools, and
IPs in no pool, are not this module's business and are skipped.

BFD (``bfd_sessions_for_node``): one session per peer this node keeps whose config names a
``bfd-profile``, from the same local address as the BGP session (so the router pairs the two), with
the profile's timers (MetalLB's defaults for what it leaves out: 300 ms, 300 ms, x3, minimum TTL
254), single hop, or multihop for ``ebgp-multihop`` peers. Echo mode is not supported: such a profile
runs asynchronous mode, and that is reported.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import ipaddress
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from lbspeaker.bfd import SessionKey, SessionSpec, Timers
from lbspeaker.bgp import WorkdirBusy
from lbspeaker.bgp.addressing import local_address_for
from lbspeaker.bgp.model import Advertisement, AdvSpec, BgpPeer, normalize_ip
from lbspeaker.bgp.routes import merge_routes, routes_for
from lbspeaker.config import Config
from lbspeaker.config.models import (
    BFD_DEFAULT_INTERVAL_MS,
    BFD_DEFAULT_MINIMUM_TTL,
    BFD_DEFAULT_MULTIPLIER,
    AddressPool,
    BgpAdvertisement,
    Peer,
    selects,
)
from lbspeaker.kube.events import EventRecorder
from lbspeaker.objects import NodeView, ServiceView
from lbspeaker.speaker import eligibility
from lbspeaker.speaker.bgp_announcer import BgpAnnouncer
from lbspeaker.speaker.protocol import Changes, Snapshot

log = logging.getLogger(__name__)

JSON = Mapping[str, Any]

SecretValues = Mapping[tuple[str, str], str]


# -- peers -------------------------------------------------------------------------------------------


def peers_for_node(
    cfg: Config,
    node_name: str,
    node_labels: Mapping[str, str],
    secrets: SecretValues,
    node_ipv4: str | None,
    last_good: Mapping[str, BgpPeer] | None = None,
) -> tuple[list[BgpPeer], list[str]]:
    """The peers this node keeps sessions with, and the problems met on the way (with what was done).

    ``secrets`` maps (Secret name, key) to the decoded value, for Secrets in the lbspeaker namespace.
    ``node_ipv4`` is the node's IPv4 address, the router id of peers without ``router-id``; None (or
    not an IPv4 address) leaves the choice to the BGP layer (the session's local IPv4 address).
    ``last_good`` (peer address -> the peer as last used) stands in for a peer whose Secret cannot
    supply its password; without an entry, that peer is left out.
    Problem messages name the peer, the Secret and the key, never the password. ``node_name`` is not
    needed for the selection (labels decide) and is accepted for symmetry with ``node_routes``.
    """
    default_router_id = _ipv4_or_none(node_ipv4)
    peers: list[BgpPeer] = []
    problems: list[str] = []
    for peer in cfg.peers:
        if not selects(peer.node_selectors, node_labels):
            continue
        password, problem = _password(peer, secrets)
        if problem is not None:
            kept = (last_good or {}).get(normalize_ip(peer.peer_address))
            if kept is not None:
                peers.append(kept)
                problems.append(f"peer {peer.peer_address}: {problem}; {KEPT}")
            else:
                problems.append(f"peer {peer.peer_address}: {problem}; {LEFT_OUT}")
            continue
        try:
            peers.append(
                BgpPeer(
                    peer_address=peer.peer_address,
                    peer_asn=peer.peer_asn,
                    my_asn=peer.my_asn,
                    peer_port=peer.peer_port,
                    hold_time=peer.hold_time,
                    keepalive_time=peer.keepalive_time,
                    router_id=peer.router_id or default_router_id,
                    source_address=peer.source_address,
                    password=password,
                    ebgp_multihop=peer.ebgp_multihop,
                )
            )
        except ValueError as exc:
            # BgpPeer's messages never include the password (its length check names only the peer).
            problems.append(f"peer {peer.peer_address}: {exc}; {LEFT_OUT}")
    return peers, problems


LEFT_OUT = "that peer is left out"
KEPT = "keeping its session with the last good password"


# -- BFD ---------------------------------------------------------------------------------------------


def bfd_sessions_for_node(
    cfg: Config,
    node_labels: Mapping[str, str],
    peers: Sequence[BgpPeer],
    resolve_local: Callable[[BgpPeer], str] = local_address_for,
) -> tuple[list[SessionSpec], list[str]]:
    """The BFD sessions this node runs for its BGP ``peers`` (as ``peers_for_node`` gave them), and the
    problems met (profile asks for echo mode; no local address towards a peer).

    The config entry of a peer is the first one for its address that selects this node, the one the
    BGP layer uses too. ``resolve_local`` picks the local address the BGP session uses (source-address,
    else the kernel's choice towards the peer).
    """
    profiles = {p.name: p for p in cfg.bfd_profiles}
    entries: dict[str, Peer] = {}
    for entry in cfg.peers:
        if selects(entry.node_selectors, node_labels):
            entries.setdefault(normalize_ip(entry.peer_address), entry)
    specs: list[SessionSpec] = []
    problems: list[str] = []
    for peer in peers:
        conf = entries.get(peer.peer_address)
        profile = profiles.get(conf.bfd_profile) if conf is not None and conf.bfd_profile else None
        if profile is None:
            continue
        if profile.echo_mode:
            problems.append(f"bfd profile {profile.name} of peer {peer.peer_address}: echo-mode is not supported; "
                            "running asynchronous mode only")
        try:
            local = resolve_local(peer)
        except OSError as exc:
            problems.append(f"peer {peer.peer_address}: no BFD session, no local address towards it: "
                            f"{exc.strerror or exc}")
            continue
        timers = Timers(
            desired_min_tx=(profile.transmit_interval or BFD_DEFAULT_INTERVAL_MS) * 1000,
            required_min_rx=(profile.receive_interval or BFD_DEFAULT_INTERVAL_MS) * 1000,
            detect_mult=profile.detect_multiplier or BFD_DEFAULT_MULTIPLIER,
            passive=profile.passive_mode,
        )
        key = SessionKey(peer=peer.peer_address, local=local, multihop=peer.ebgp_multihop)
        specs.append(SessionSpec(key=key, timers=timers, minimum_ttl=profile.minimum_ttl or BFD_DEFAULT_MINIMUM_TTL))
    return specs, problems


def _password(peer: Peer, secrets: SecretValues) -> tuple[str | None, str | None]:
    """(password, None), or (None, problem) when the peer's Secret cannot supply one."""
    ref = peer.password_secret
    if ref is None:
        return peer.password, None
    value = secrets.get((ref.name, ref.key))
    if value is None:
        if any(name == ref.name for name, _ in secrets):
            return None, f"Secret {ref.name} has no key {ref.key}"
        return None, f"Secret {ref.name} not found (needed for key {ref.key})"
    if not value:
        return None, f"Secret {ref.name} key {ref.key} is empty"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        # A trailing newline from `kubectl create secret --from-file` is the usual culprit.
        return None, f"Secret {ref.name} key {ref.key} contains a line break or control character (value not shown)"
    return value, None


def _ipv4_or_none(text: str | None) -> str | None:
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    return str(address) if address.version == 4 else None


# -- routes ------------------------------------------------------------------------------------------


def node_routes(
    cfg: Config | None,
    node_name: str,
    services: Iterable[ServiceView],
    node_eligible: bool,
    *,
    node_labels: Mapping[str, str] | None = None,
) -> tuple[list[Advertisement], dict[str, list[str]]]:
    """The routes this node announces (merged, sorted by prefix) and, per Service key "ns/name", the
    prefixes announced for it (sorted; only Services announced from this node appear).

    ``services`` are the views of the Services we handle (``lbspeaker.objects.services_from_cache``).

    ``node_labels`` (this node's labels) are matched against the pools' ``node-selectors``; None is
    taken as no labels, so a pool with selectors is then only announced if they select an unlabelled
    node. Localpref stays in the routes: the BGP layer drops it for eBGP peers (``routes_for_peer``).
    """
    if cfg is None or not node_eligible:
        return [], {}
    labels: Mapping[str, str] = node_labels or {}

    # IP -> [(service key, may be announced from here)]: sharing Services decide together.
    by_ip: dict[str, list[tuple[str, bool]]] = {}
    for view in services:
        ok = eligibility.endpoints_allow(view, node_name)
        for ip in set(view.ips):
            by_ip.setdefault(ip, []).append((view.key, ok))

    routes: list[Advertisement] = []
    per_service: dict[str, set[str]] = {}
    pool_selected: dict[str, bool] = {}
    for ip, sharing in sorted(by_ip.items()):
        pool = _pool_of(cfg, ip)
        if pool is None or pool.protocol != "bgp":
            continue
        if pool.name not in pool_selected:
            pool_selected[pool.name] = eligibility.pool_selects(pool, labels)
        if not pool_selected[pool.name] or not all(ok for _, ok in sharing):
            continue
        ip_routes = _ip_routes(ip, tuple(_adv_spec(a) for a in pool.bgp_advertisements))
        routes.extend(ip_routes)
        for key, _ in sharing:
            per_service.setdefault(key, set()).update(r.prefix for r in ip_routes)

    merged = sorted(merge_routes(routes).values(), key=lambda r: _prefix_key(r.prefix))
    return merged, {key: sorted(prefixes, key=_prefix_key) for key, prefixes in sorted(per_service.items())}


def _pool_of(cfg: Config, ip: str) -> AddressPool | None:
    address = _address(ip)
    return next((p for p in cfg.address_pools if address in p.ipset), None)


# A reconcile walks every Service IP; parsing the same strings again each time dominated its cost, so
# the pure per-string helpers below are memoised (bounded: a cluster has far fewer distinct IPs).
@functools.lru_cache(maxsize=1 << 17)
def _address(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(ip)


@functools.lru_cache(maxsize=1 << 17)
def _ip_routes(ip: str, specs: tuple[AdvSpec, ...]) -> tuple[Advertisement, ...]:
    return tuple(routes_for(ip, specs))


def _adv_spec(adv: BgpAdvertisement) -> AdvSpec:
    return AdvSpec(
        aggregation_length=adv.aggregation_length,
        aggregation_length_v6=adv.aggregation_length_v6,
        localpref=adv.localpref,
        communities=tuple(adv.communities),
        large_communities=tuple(adv.large_communities),
    )


@functools.lru_cache(maxsize=1 << 17)
def _prefix_key(prefix: str) -> tuple[int, int, int]:
    network = ipaddress.ip_network(prefix)
    return network.version, int(network.network_address), network.prefixlen


# -- the BGP protocol of the reconcile loop ---------------------------------------------------------


def node_ipv4(node: NodeView | None) -> str | None:
    """The node's first IPv4 InternalIP: the default BGP router id."""
    ip = node.internal_ips[0] if node is not None and node.internal_ips else None  # IPv4 first
    return ip if ip is not None and ":" not in ip else None


def secret_values(secret: Mapping[str, Any]) -> dict[str, str]:
    """key -> value of every key of ``secret`` usable as text (``data`` base64, ``stringData``).

    A key whose value is not base64 of UTF-8 text is left out (and so reported missing by ``peers_for_node``).
    """
    out: dict[str, str] = {}
    for key, text in (secret.get("stringData") or {}).items():
        out[str(key)] = str(text)
    for key, raw in (secret.get("data") or {}).items():
        try:
            out[str(key)] = base64.b64decode(str(raw), validate=True).decode()
        except (binascii.Error, ValueError):
            continue
    return out


class BgpProtocol:
    """The BGP part of the speaker: snapshot -> peers and routes of this node -> ``BgpAnnouncer``.

    Passwords named by ``password-secret`` come from the snapshot (the loop's Secret cache: nothing is
    read from the API here). Peer problems (missing Secret or key, unusable value) are logged and
    recorded as a Warning Event on the config ConfigMap once per change; passwords are never logged.
    Liveness changes do not concern BGP (every eligible node announces its own routes), so a pass that
    changed only liveness does nothing.
    """

    name = "bgp"

    def __init__(self, node: str, announcer: BgpAnnouncer, *, recorder: EventRecorder | None = None) -> None:
        self.node = node
        self.announcer = announcer
        self.recorder = recorder
        self._problems: tuple[tuple[str, str], ...] = ()
        self._error: str | None = None
        self._good: dict[str, BgpPeer] = {}  # peer address -> the peer as last handed to the BGP layer

    def reconcile(self, snap: Snapshot, changes: Changes) -> None:
        """One BGP pass; never raises (BGP trouble must not stop layer2)."""
        if not (changes.everything or changes.services or changes.nodes or changes.secrets):
            return
        try:
            self._run(snap)
            if self._error is not None:
                log.info("BGP step working again")
                self._error = None
        except Exception as exc:
            if str(exc) != self._error:
                log.exception("BGP step failed; layer2 goes on, BGP is retried on the next change")
                self._error = str(exc)

    def _run(self, snap: Snapshot) -> None:
        own = snap.own
        labels: Mapping[str, str] = own.labels if own is not None else {}
        peers: list[BgpPeer] = []
        problems: list[tuple[str, str]] = []  # (Event reason, message)
        bfd: list[SessionSpec] = []
        cfg = snap.config
        if cfg is not None:
            secrets = {(name, key): value for name, values in snap.secrets.items() for key, value in values.items()}
            peers, peer_problems = peers_for_node(cfg, self.node, labels, secrets, node_ipv4(own), self._good)
            problems += [("BGPPeerKept" if p.endswith(KEPT) else "BGPPeerSkipped", p) for p in peer_problems]
            bfd, bfd_problems = bfd_sessions_for_node(cfg, labels, peers)
            problems += [("BFDProblem", p) for p in bfd_problems]
        self._good = {p.peer_address: p for p in peers}
        # Liveness is trivially true for ourselves; an unknown or excluded Node announces nothing.
        eligible = own is not None and eligibility.excluded(own) is None
        routes, per_service = node_routes(cfg, self.node, snap.services.values(), eligible, node_labels=labels)
        try:
            started = self.announcer.update(peers, routes, per_service)
            self.announcer.set_bfd(bfd)
        except WorkdirBusy as exc:
            # Another speaker works in our --bgp-workdir: no BGP here until it is free (tried again on
            # every change); layer2 goes on.
            started = []
            problems.append(("BGPWorkdirBusy", f"{exc}; BGP does not run on this node until it is free"))
        self._report(problems, snap.config_map)
        for key, message in started:
            svc = snap.raw_service(key)
            if svc is not None and self.recorder is not None:
                self.recorder.record(svc, "Normal", "nodeAssigned", message)
        self.announcer.refresh_metrics()

    def _report(self, problems: Sequence[tuple[str, str]], config_map: JSON | None) -> None:
        current = tuple(sorted(problems))
        if current == self._problems:
            return
        for reason, problem in current:
            if (reason, problem) in self._problems:
                continue
            error = reason in ("BGPPeerSkipped", "BGPWorkdirBusy")
            log.log(logging.ERROR if error else logging.WARNING, "BGP %s", problem)
            if self.recorder is not None and config_map is not None:
                self.recorder.record(config_map, "Warning", reason, f"node {self.node}: {problem}")
        self._problems = current

    def stop(self, graceful: bool) -> None:
        with contextlib.suppress(Exception):
            self.announcer.stop(graceful)
