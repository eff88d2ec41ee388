"""The speaker's reconcile: cluster caches + live members -> the IPs this node announces -> the L2 announcer.

Level-triggered: informers on Services, EndpointSlices, Nodes, the pool ConfigMaps, the speaker Leases
and the memberlist Secret fill caches; their handlers (and the heartbeater's on_change) only set a
dirty flag. One reconcile thread computes the whole desired state from the caches with the pure
``speaker.layer2.plan`` and hands the owned IPs to ``L2Announcer.update``, which sends the gratuitous
announcements on takeover and stops answering lost IPs at once.

Membership: our Lease (``speaker.lease.LeaseKeeper``) publishes our heartbeat address and the
subnets of our up interfaces; every speaker Lease in the cache is fed to the tracker, followed by
``Heartbeater.check()``. While the API server is unreachable the caches keep their last state, the
announcer keeps answering, and heartbeats keep deciding who is alive, so failover still works.

BGP pools: after the layer2 step, ``BgpProtocol`` computes this node's peers (``speaker.bgp.peers_for_node``,
passwords from the Secret cache) and routes (``speaker.bgp.node_routes``) from the same
caches and hands them to the ``BgpAnnouncer``, which starts ExaBGP only once this node has a peer. A
failing BGP step is logged and never stops the layer2 one.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from lbspeaker.config import Config
from lbspeaker.config.cluster import config_sources, load_config
from lbspeaker.kube.events import EventRecorder
from lbspeaker.kube.informer import Informer, object_key
from lbspeaker.kube.rest import JSON, Rest, path_for
from lbspeaker.l2 import Interface, L2Announcer
from lbspeaker.membership import protocol
from lbspeaker.membership.heartbeat import Heartbeater
from lbspeaker.membership.tracker import Liveness
from lbspeaker.objects import NodeView, ServiceView, internal_ip, node_view, services_from_cache
from lbspeaker.speaker import layer2, metrics
from lbspeaker.speaker.bgp import BgpProtocol, secret_values
from lbspeaker.speaker.bgp_announcer import BgpAnnouncer
from lbspeaker.speaker.layer2 import local_link
from lbspeaker.speaker.lease import (
    HEARTBEAT_ANNOTATION,
    INTERFACES_UP_ANNOTATION,
    SUBNETS_ANNOTATION,
    LeaseKeeper,
    Link,
    format_subnets,
    lease_inputs,
    node_of,
    parse_link,
)
from lbspeaker.speaker.protocol import Changes, Snapshot

log = logging.getLogger(__name__)

MEMBERLIST_SECRET = "lbspeaker-memberlist"
MEMBERLIST_KEY = "secretkey"



def decode_key(secret: Mapping[str, Any] | None) -> tuple[bytes | None, str]:
    """The heartbeat key from the memberlist Secret, or None and why (never the key itself)."""
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
        protocol.validate_keys(key)
    except ValueError as exc:
        return None, f"Secret {MEMBERLIST_SECRET}: {exc}"
    return key, "ok"


class Speaker:
    """Everything a node's speaker runs, minus the process plumbing (see ``speaker.main``)."""

    def __init__(self, rest: Rest, node: str, *, namespace: str = "lbspeaker-system", config_name: str = "config",
                 lb_class: str | None = None, interfaces_regex: str | None = None,
                 heartbeat_bind: tuple[str, int] = ("", 7946), recorder: EventRecorder | None = None,
                 lease_duration: int = 10, lease_renew: float = 2.0, heartbeat_interval: float = 0.1,
                 dead_after: float = 0.7, warmup: float = 1.0, bgp: BgpAnnouncer | None = None) -> None:
        self.rest = rest
        self.node = node
        self.namespace = namespace
        self.config_name = config_name
        self.lb_class = lb_class
        self.regex = interfaces_regex
        self.heartbeat_bind = heartbeat_bind
        self.recorder = recorder
        self.heartbeat_interval = heartbeat_interval
        self.clock = time.monotonic
        self.bgp = BgpProtocol(node, bgp, recorder=recorder) if bgp is not None else None
        self.tracker = Liveness(node, now=self.clock(), suspect_after=min(0.3, dead_after), dead_after=dead_after,
                                warmup=warmup)
        self.heartbeater: Heartbeater | None = None
        self.key_problem: str | None = "heartbeat key not read yet"
        self._key: bytes | None = None

        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.RLock()  # guards the last plan and what we announce
        self.config: Config | None = None
        self._config_inputs: tuple[tuple[str, str], ...] | None = None
        self.plan = layer2.Plan()
        self.announced: dict[str, list[str]] = {}  # ip -> interfaces handed to the announcer
        self._announced_services: set[str] = set()
        self._last_alive: frozenset[str] = frozenset()
        self._link = Link()
        self._thread: threading.Thread | None = None
        self.reconciles = 0
        self._last_duration = 0.0  # seconds the last reconcile took

        self.announcer = L2Announcer(interfaces_regex, on_duplicate=self._on_duplicate,
                                     on_interfaces_changed=self._on_interfaces)
        self.services = Informer(rest, path_for("v1", "services"), name="services", handler=self._kick)
        self.slices = Informer(rest, path_for("discovery.k8s.io/v1", "endpointslices"), name="endpointslices",
                               handler=self._kick)
        self.nodes = Informer(rest, path_for("v1", "nodes"), name="nodes", handler=self._on_node)
        self.configmaps = Informer(rest, path_for("v1", "configmaps", namespace), name="configmaps",
                                   handler=self._kick)
        self.leases = Informer(rest, path_for("coordination.k8s.io/v1", "leases", namespace), name="leases",
                               handler=self._on_lease)
        # Every Secret of our namespace: the memberlist key and the BGP passwords the config names (the
        # names come from the config, so no field selector can narrow this down).
        self.secrets = Informer(rest, path_for("v1", "secrets", namespace), name="secrets", handler=self._on_secret)
        self.informers = [self.services, self.slices, self.nodes, self.configmaps, self.leases, self.secrets]
        self.lease = LeaseKeeper(rest, namespace, node, annotations=self._lease_annotations,
                                 duration=lease_duration, renew_every=lease_renew)

    # -- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start caches, announcer, heartbeats and our Lease, then the reconcile thread.

        Waits for every cache to sync first (for as long as it takes: /readyz says what is missing).
        """
        for inf in self.informers:
            inf.start()
        self.announcer.start()
        self._link = local_link(self.announcer.interfaces(), self.regex)
        for inf in self.informers:
            waited = 0
            while not inf.wait_synced(0.5):
                if self._stop.is_set():
                    return
                waited += 1
                if waited % 20 == 0:
                    log.info("waiting for the %s cache to sync", inf.name)
        self._apply_key()
        self.lease.start()
        self._thread = threading.Thread(target=self._loop, name="speaker-reconcile", daemon=True)
        self._thread.start()
        self._kick()

    def stop(self, graceful: bool = True) -> None:
        """Graceful: stop answering, send LEAVING, delete our Lease, then close the sockets."""
        self._stop.set()
        self._dirty.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.tracker.leave()
        with self._lock:
            with contextlib.suppress(RuntimeError):  # never started
                self.announcer.update({})
            self.announced = {}
        if self.bgp is not None:
            # Graceful: ExaBGP goes without withdrawing, and the routers keep our routes (stale, under
            # graceful restart) until the restarted speaker announces them again, so a speaker restart
            # or upgrade does not drop traffic. Otherwise the routes are withdrawn first.
            self.bgp.stop(graceful)
        if self.heartbeater is not None:
            self.heartbeater.stop(leaving=graceful)
        self.lease.stop(delete=graceful)
        self.announcer.stop()
        for inf in self.informers:
            inf.stop()

    def healthy(self) -> tuple[bool, str]:
        if self._thread is not None and not self._thread.is_alive() and not self._stop.is_set():
            return False, "reconcile thread died"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        unsynced = [inf.name for inf in self.informers if not inf.synced.is_set()]
        if unsynced:
            return False, f"caches not synced: {', '.join(unsynced)}"
        if self.config is None:
            return False, "no valid configuration loaded"
        if not self.tracker.warmed_up(self.clock()):
            return False, "membership warming up"
        if self.key_problem is not None:
            return True, f"ok, degraded: no heartbeats ({self.key_problem}); liveness from Leases only"
        return True, "ok"

    def stats(self) -> dict[str, Mapping[str, object]]:
        out: dict[str, Mapping[str, object]] = {"l2": self.announcer.stats()}
        if self.heartbeater is not None:
            out["heartbeat"] = self.heartbeater.stats()
        return out

    # -- handlers: only queue work -----------------------------------------------------------------------
    def _kick(self, _old: JSON | None = None, _new: JSON | None = None) -> None:
        self._dirty.set()

    def _on_node(self, old: JSON | None, new: JSON | None) -> None:
        obj = new or old
        if obj is not None and (obj.get("metadata") or {}).get("name") == self.node:
            self.lease.poke()  # our InternalIP may have changed: the heartbeat address goes in the Lease
        self._dirty.set()

    def _on_lease(self, old: JSON | None, new: JSON | None) -> None:
        obj = new or old
        if obj is None:
            return
        node = node_of(obj)
        if node is None:
            return
        self._feed_lease(node, object_key(obj))
        if self.heartbeater is not None:
            self.heartbeater.check()
        self._dirty.set()

    def _on_secret(self, _old: JSON | None, _new: JSON | None) -> None:
        self._dirty.set()

    def _on_interfaces(self, interfaces: Sequence[Interface]) -> None:
        link = local_link(interfaces, self.regex)
        if link != self._link:
            self._link = link
            log.info("up-interface subnets now %s", format_subnets(link.subnets) or "none")
            self.lease.poke()
        self._dirty.set()

    def _on_duplicate(self, ip: str, mac: str, ifname: str) -> None:
        with self._lock:
            decision = self.plan.l2.get(ip)
        log.warning("another MAC %s answers for %s on %s", mac, ip, ifname)
        if self.recorder is None or decision is None:
            return
        for key in decision.services:
            svc = self.services.get(key)
            if svc is not None:
                self.recorder.record(svc, "Warning", "DuplicateAnswer",
                                     f"{mac} also answers for {ip} on {ifname} of node {self.node}")

    # -- lease feeding -------------------------------------------------------------------------------------
    def _feed_lease(self, node: str, key: str) -> None:
        cached = self.leases.get(key)
        if cached is None:
            self.tracker.lease_deleted(node)
            return
        inputs = lease_inputs(cached, HEARTBEAT_ANNOTATION)
        self.tracker.lease_update(node, inputs.holder, inputs.renew_time, inputs.duration, inputs.heartbeat_addr,
                                  now=self.clock(), wall_now=time.time())

    def _lease_annotations(self) -> dict[str, str]:
        out = {
            SUBNETS_ANNOTATION: format_subnets(self._link.subnets),
            INTERFACES_UP_ANNOTATION: "true" if self._link.any_up else "false",
        }
        addr = self._heartbeat_addr()
        if addr:
            out[HEARTBEAT_ANNOTATION] = addr
        if self.bgp is not None:
            out.update(self.bgp.announcer.lease_annotations())  # BFD session states, for `lbspeaker status`
        return out

    def _heartbeat_addr(self) -> str | None:
        hb = self.heartbeater
        if hb is None:
            return None
        node = self.nodes.get(self.node)
        ip = internal_ip(node) if node is not None else None
        if ip is None:
            return None
        port = hb.address[1]
        return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"

    # -- heartbeat key -------------------------------------------------------------------------------------
    def _apply_key(self) -> None:
        key, why = decode_key(self.secrets.get(f"{self.namespace}/{MEMBERLIST_SECRET}"))
        if key is None:
            if self.heartbeater is None and self.key_problem != why:
                log.error("%s: running without heartbeats, liveness from Leases only", why)
            elif self.heartbeater is not None and self.key_problem is None:
                log.warning("%s: keeping the key in use", why)
            if self.heartbeater is None:
                self.key_problem = why
            return
        if self.heartbeater is None:
            self.heartbeater = self._make_heartbeater(key)
            if self.heartbeater is not None:
                self.heartbeater.start()
                self.key_problem = None
                self._key = key
                self.lease.poke()
        elif key != self._key:
            self.heartbeater.set_keys(key)
            self._key = key
            log.info("heartbeat key rotated")

    def _make_heartbeater(self, key: bytes) -> Heartbeater | None:
        host, port = self.heartbeat_bind
        hosts = [host] if host else ["::", "0.0.0.0"]
        for candidate in hosts:
            try:
                return Heartbeater(self.node, key, (candidate, port), tracker=self.tracker, on_change=self._kick,
                                   interval=self.heartbeat_interval)
            except OSError as exc:
                log.warning("heartbeat socket on %s:%d: %s", candidate, port, exc)
        self.key_problem = "heartbeat socket could not be bound"
        log.error("%s: liveness from Leases only", self.key_problem)
        return None

    # -- reconcile -----------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            woke = self._dirty.wait(0.2)
            if self._stop.is_set():
                return
            now = self.clock()
            self.tracker.api_reachable(self.leases.healthy and self.leases.synced.is_set(), now)
            if self.heartbeater is None:
                # No heartbeats to say we are alive: we are, as far as this process can tell.
                self.tracker.sent(now)
            if not woke and self.tracker.alive(now) == self._last_alive:
                continue
            # Under a burst of changes, give the rest of the node (and the API server) at least as much
            # time as the last pass took: at most half a core, while a quiet cluster sees no delay.
            self._stop.wait(min(self._last_duration, 0.5))
            self._dirty.clear()
            started = time.perf_counter()
            try:
                self.reconcile()
            except Exception:
                log.exception("reconcile failed; retrying")
                self._stop.wait(0.2)
                self._dirty.set()
            finally:
                self._last_duration = time.perf_counter() - started

    def _load_config(self) -> None:
        sources = config_sources(self.configmaps.items(), self.config_name)
        inputs = tuple((object_key(cm), str((cm.get("metadata") or {}).get("resourceVersion"))) for cm in sources)
        if inputs == self._config_inputs:
            return
        self._config_inputs = inputs
        if not sources:
            log.warning("no ConfigMap %s/%s: %s", self.namespace, self.config_name,
                        "keeping the last good configuration" if self.config else "nothing to announce")
            return
        cfg, errors = load_config(sources)
        if cfg is None:
            for cm, text in errors:
                log.error("invalid configuration in %s: %s; %s", object_key(cm), text,
                          "keeping the last good one" if self.config else "nothing announced")
            return
        self.config = cfg

    def reconcile(self) -> None:
        started = time.perf_counter()
        self._apply_key()
        self._load_config()
        now = self.clock()
        alive = self.tracker.alive(now)
        self._last_alive = alive
        services = services_from_cache(self.services.items(), self.slices.items(), self.lb_class)
        nodes = {n.name: n for n in (node_view(obj) for obj in self.nodes.items())}
        links: dict[str, Link] = {}
        for lease in self.leases.items():
            name = node_of(lease)
            if name is not None:
                links[name] = parse_link((lease.get("metadata") or {}).get("annotations") or {})
        # Ourselves: what peers see (the Lease) and what is true now must both allow it, so that a
        # dropped interface takes us out before the Lease says so, and a returning one not before.
        published = links.get(self.node, Link())
        own = self._link
        links[self.node] = Link(tuple(n for n in published.subnets if n in own.subnets),
                                         published.any_up and own.any_up)
        new_plan = layer2.plan(self.config, services, nodes, links, alive)
        owned = new_plan.owned_by(self.node)
        desired: dict[str, list[str]] = {}
        for ip in owned:
            names = self.announcer.interfaces_for(ip)
            if names:
                desired[ip] = names
        with self._lock:
            if self._stop.is_set():
                return
            self.announcer.update(desired)
            previous = self.announced
            self.announced = desired
            self.plan = new_plan
        self._record_assignments(new_plan, desired)
        if self.bgp is not None and not self._stop.is_set():
            self.bgp.reconcile(self._snapshot(services, nodes, links, alive), Changes(everything=True))
        self.reconciles += 1
        metrics.ANNOUNCED.labels("layer2").set(len(desired))
        metrics.LIVE_MEMBERS.set(len(alive))
        metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)
        if desired.keys() != previous.keys():
            log.info("announcing %d IPs (%d live members: %s)", len(desired), len(alive), ",".join(sorted(alive)))

    def _snapshot(self, services: Sequence[ServiceView], nodes: Mapping[str, NodeView], links: Mapping[str, Link],
                  alive: frozenset[str]) -> Snapshot:
        secrets = {str((obj.get("metadata") or {}).get("name")): secret_values(obj) for obj in self.secrets.items()}
        return Snapshot(node=self.node, config=self.config, nodes=nodes, services={v.key: v for v in services},
                        links=links, alive=alive, secrets=secrets, raw_service=self.services.get,
                        config_map=self.configmaps.get(f"{self.namespace}/{self.config_name}"))

    def _record_assignments(self, new_plan: layer2.Plan, desired: Mapping[str, list[str]]) -> None:
        """Event nodeAssigned on a Service once per takeover: when its first IP starts being announced here."""
        now_services: dict[str, list[str]] = {}
        for ip in desired:
            for key in new_plan.l2[ip].services:
                now_services.setdefault(key, []).append(ip)
        for key in sorted(now_services.keys() - self._announced_services):
            svc = self.services.get(key)
            if svc is None or self.recorder is None:
                continue
            ips = now_services[key]
            ifaces = sorted({name for ip in ips for name in desired[ip]})
            self.recorder.record(svc, "Normal", "nodeAssigned",
                                 f"announcing from node {self.node!r}, layer2, interface {','.join(ifaces)}")
        self._announced_services = set(now_services)

