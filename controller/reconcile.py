"""The controller's reconcile loop: cluster state in the caches -> IPs in Service statuses.

Level-triggered: watch events only put Service keys on a work queue; a worker reads the Service
from the cache, asks the (pure) allocator what it should hold, and writes the status when it
differs. ConfigMap changes reload the configuration and requeue every Service.

Safety rules carried out here:
- Nothing is assigned before every IP already present in a Service status has been adopted, so a
  restart changes no IP and never hands a held IP to another Service: the first configuration becomes
  visible to the workers only once adoption is done.
- Nothing is assigned before a valid configuration has been loaded. An invalid configuration keeps
  the last good one in force (Warning Event on the ConfigMap, ``config_stale`` = 1). A missing one
  is treated the same way: deleting the ConfigMap by mistake must not strip every Service of its IP.
  The deletion is told by a Warning Event ``ConfigDeleted`` on the deleted ConfigMap (the object the
  user acted on, where ``InvalidConfig`` and ``ConfigLoaded`` also go: ``kubectl get events -n
  <namespace> --field-selector involvedObject.name=config``).
- With leader election, status writes and Events happen only while the Lease is held.
- Status entries are written with ``ipMode: VIP`` (required by servers from 1.30 on whenever the
  write is not defaulted; a server older than 1.29 drops the field). Only the IPs are compared, so a
  stored status without ``ipMode`` is never rewritten. A write refused as stale (409, or a 422 while a
  newer version exists) is retried once, at once, from the fresh version the Service cache receives
  (no extra GET, so no extra RBAC); counted as a conflict, not a failure.

Readiness fails while a configuration parse has been running longer than ``parse_ready_limit``
seconds, and while the API server has not answered the caches for a while.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from controller import metrics
from controller.allocator import AllocationFailure, Allocator, Assignment, PoolSpec
from controller.service import BadAnnotation, service_request
from lbspeaker.config import Config
from lbspeaker.config.cluster import config_sources, load_config
from lbspeaker.kube.events import EventRecorder
from lbspeaker.kube.informer import Informer, object_key
from lbspeaker.kube.rest import JSON, MERGE_PATCH, ApiError, Rest, path_for
from lbspeaker.kube.workqueue import WorkQueue
from lbspeaker.objects import is_load_balancer, status_ips

log = logging.getLogger(__name__)

def pool_specs(cfg: Config) -> list[PoolSpec]:
    return [PoolSpec(name=p.name, ipset=p.ipset, auto_assign=p.auto_assign, avoid_buggy_ips=p.avoid_buggy_ips)
            for p in cfg.address_pools]


class Controller:
    def __init__(self, rest: Rest, *, namespace: str = "lbspeaker-system", config_name: str = "config",
                 lb_class: str | None = None, recorder: EventRecorder | None = None,
                 is_leader: Callable[[], bool] | None = None, workers: int = 4,
                 parse_ready_limit: float = 2.0, api_silence_limit: float = 180.0,
                 watch_idle_timeout: float = 90.0, stale_wait: float = 1.0) -> None:
        self.rest = rest
        self.namespace = namespace
        self.config_name = config_name
        self.lb_class = lb_class
        self.recorder = recorder
        self.is_leader = is_leader or (lambda: True)
        self.workers = workers
        self.allocator = Allocator()
        self.config: Config | None = None
        self.config_stale = False
        self.started = threading.Event()
        self.caught_up = threading.Event()  # the first pass over every Service is done
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.queue = WorkQueue()
        self.parse_ready_limit = parse_ready_limit
        self.stale_wait = stale_wait
        self.api_silence_limit = api_silence_limit
        self._parse_started: float | None = None  # monotonic start of the configuration parse running now
        self.services = Informer(rest, path_for("v1", "services"), name="services", handler=self._on_service,
                                 watch_idle_timeout=watch_idle_timeout)
        self.configmaps = Informer(rest, path_for("v1", "configmaps", namespace), name="configmaps",
                                   handler=self._on_configmap, watch_idle_timeout=watch_idle_timeout)
        self._deleted_config: JSON | None = None  # the main ConfigMap as last seen, once deleted
        self._threads: list[threading.Thread] = []
        # Services that could not get an IP: retried whenever an address is freed.
        self._waiting: set[str] = set()
        self._written: dict[str, tuple[str, ...]] = {}  # the last status IPs written per Service

    # -- event handlers: only enqueue ------------------------------------------------------------------
    def _on_service(self, old: JSON | None, new: JSON | None) -> None:
        obj = new or old
        if obj is None:
            return
        key = object_key(obj)
        if old is not None and new is not None and _same_inputs(old, new) \
                and status_ips(new) == self._written.get(key):
            return  # our own status write coming back: nothing to decide
        self.queue.add(key)

    def _on_configmap(self, old: JSON | None, new: JSON | None) -> None:
        if old is not None and new is None and old["metadata"].get("name") == self.config_name:
            self._deleted_config = old
        self.queue.add(_CONFIG_KEY)

    # -- lifecycle ---------------------------------------------------------------------------------------
    def start(self, sync_timeout: float | None = None) -> None:
        """Fill the caches, load the config, adopt existing IPs, then start the workers."""
        self.services.start()
        self.configmaps.start()
        deadline = None if sync_timeout is None else time.monotonic() + sync_timeout
        for inf in (self.configmaps, self.services):
            while not inf.wait_synced(1.0):
                if self._stop.is_set():
                    return
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"{inf.name} cache did not sync")
                log.info("waiting for the %s cache to sync", inf.name)
        self.reload_config()
        for i in range(self.workers):
            t = threading.Thread(target=self._work, name=f"worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        threading.Thread(target=self._gauges, name="gauges", daemon=True).start()
        self.started.set()
        log.info("started %d workers", self.workers)

    def stop(self) -> None:
        self._stop.set()
        self.queue.shutdown()
        self.services.stop()
        self.configmaps.stop()

    def ready(self) -> tuple[bool, str]:
        parse_started = self._parse_started
        if parse_started is not None and time.monotonic() - parse_started > self.parse_ready_limit:
            return False, f"configuration parse running for {time.monotonic() - parse_started:.1f}s"
        if not self.started.is_set():
            return False, "caches not synced yet"
        for inf in (self.services, self.configmaps):
            ok, why = inf.health(max_silence=self.api_silence_limit, grace=10.0)
            if not ok:
                return False, why
        if self.config is None:
            return False, "no valid configuration loaded"
        if not self.caught_up.is_set():
            return False, "first pass over the Services still running"
        return True, "ok"

    def healthy(self) -> tuple[bool, str]:
        dead = [t.name for t in self._threads if not t.is_alive()]
        return (not dead, f"dead threads: {dead}" if dead else "ok")

    # -- config ------------------------------------------------------------------------------------------
    def reload_config(self) -> None:
        sources = config_sources(self.configmaps.items(), self.config_name)
        if not sources:
            if self.config is not None:
                log.warning("no ConfigMap %s/%s any more: keeping the last good configuration",
                            self.namespace, self.config_name)
                self._set_stale(True)
                deleted, self._deleted_config = self._deleted_config, None
                if deleted is not None and self.recorder is not None:
                    pools = len(self.config.address_pools)
                    self.recorder.record(deleted, "Warning", "ConfigDeleted",
                                         f"ConfigMap {self.namespace}/{self.config_name} was deleted: the last "
                                         f"good configuration ({_count(pools, 'address pool')}) stays in force "
                                         "until it is created again")
            else:
                log.warning("no configuration yet: create ConfigMap %s/%s", self.namespace, self.config_name)
            return
        self._parse_started = time.monotonic()
        try:
            cfg, errors = load_config(sources)
        finally:
            self._parse_started = None
        if cfg is None:
            for cm, text in errors:
                log.error("invalid configuration in %s: %s", object_key(cm), text)
                if self.recorder is not None:
                    kept = "the last good configuration stays in force" if self.config else "nothing is assigned"
                    self.recorder.record(cm, "Warning", "InvalidConfig", f"{text}; {kept}")
            self._set_stale(True)
            return
        self._set_stale(False)
        metrics.CONFIG_LOADED.set(1)
        if cfg == self.config:
            return
        with self._lock:
            first = self.config is None
            self.allocator.set_pools(pool_specs(cfg))
            # Pools that left the config must not linger as metric series.
            metrics.ADDRESSES_TOTAL.clear()
            metrics.ADDRESSES_IN_USE.clear()
        if first:
            # Workers see no configuration until every IP in a status is recorded, so none of them can
            # hand out an address another Service holds.
            self.adopt_existing()
        with self._lock:
            self.config = cfg
        log.info("configuration loaded: %d pools", len(cfg.address_pools))
        if self.recorder is not None:
            self.recorder.record(sources[0], "Normal", "ConfigLoaded",
                                 f"loaded {_count(len(cfg.address_pools), 'address pool')} from "
                                 f"{_count(len(sources), 'ConfigMap')}")
        for key in self.services.all_keys():
            self.queue.add(key)

    def _set_stale(self, stale: bool) -> None:
        self.config_stale = stale
        metrics.CONFIG_STALE.set(1 if stale else 0)

    # -- start-up adoption -----------------------------------------------------------------------------
    def adopt_existing(self) -> int:
        """Record every IP already in a status, oldest Service first, before anything new is assigned.

        Runs when the first valid configuration is loaded (adopting needs the pools), before that
        configuration is published to the workers. Returns how many Services kept their IPs as they are.
        """
        svcs = sorted(self.services.items(),
                      key=lambda s: (s["metadata"].get("creationTimestamp") or "", object_key(s)))
        adopted = 0
        with self._lock:
            for svc in svcs:
                ips = status_ips(svc)
                if not ips or not is_load_balancer(svc, self.lb_class):
                    continue
                try:
                    req = service_request(svc)
                except BadAnnotation as exc:
                    log.warning("%s: %s; its IPs stay reserved until fixed", object_key(svc), exc)
                    req = service_request(_without_lb_annotations(svc))
                if isinstance(self.allocator.adopt(req, ips), Assignment):
                    adopted += 1
        log.info("adopted the IPs of %d Services", adopted)
        return adopted

    # -- workers -----------------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            key = self.queue.get()
            if key is None:
                return
            try:
                if key == _CONFIG_KEY:
                    self.reload_config()
                elif self.config is not None:
                    t0 = time.perf_counter()
                    self.reconcile(key)
                    metrics.RECONCILE_SECONDS.observe(time.perf_counter() - t0)
                self.queue.forget(key)
            except ApiError as exc:
                log.info("%s: %s; retrying", key, exc)
                self.queue.add_rate_limited(key)
            except Exception:
                log.exception("reconciling %s failed", key)
                self.queue.add_rate_limited(key)
            finally:
                self.queue.done(key)

    def reconcile(self, key: str) -> None:
        svc = self.services.get(key)
        if svc is None:
            self._release(key)
            return
        current = status_ips(svc)
        if not is_load_balancer(svc, self.lb_class):
            held = self._release(key)
            not_lb = (svc.get("spec") or {}).get("type") != "LoadBalancer"
            if current and (held is not None or not_lb):
                why = "no longer a LoadBalancer Service" if not_lb else "its loadBalancerClass is not handled here"
                self._write_status(svc, ())
                self._event(svc, "Normal", "ClearAssignment", f"Released {ips_text(current)}: {why}")
            return
        try:
            req = service_request(svc)
        except BadAnnotation as exc:
            # Keep what it has: bad input must never take an IP away.
            metrics.ALLOCATION_FAILURES.labels("bad-annotation").inc()
            self._event(svc, "Warning", "AllocationFailed", str(exc))
            return
        with self._lock:
            before = self.allocator.assignment(key)
            result = self.allocator.assign(req)
            if isinstance(result, AllocationFailure):
                self._waiting.add(key)
            else:
                self._waiting.discard(key)
        if before is not None and (isinstance(result, AllocationFailure) or set(before.ips) - set(result.ips)):
            self._retry_waiting()
        if isinstance(result, AllocationFailure):
            metrics.ALLOCATION_FAILURES.labels(result.reason).inc()
            self._event(svc, "Warning", "AllocationFailed", f"{result.reason.replace('-', ' ')}: {result.message}")
            if current:
                self._write_status(svc, ())
                self._event(svc, "Normal", "ClearAssignment", f"Released {ips_text(current)}: {result.message}")
            return
        if list(current) == list(result.ips):
            return
        self._write_status(svc, result.ips)
        metrics.ALLOCATIONS.labels(result.pool).inc()
        msg = f"Assigned {ips_text(result.ips)} from pool {result.pool}"
        if current and result.reason:
            msg += f" (was {', '.join(current)}: {result.reason})"
        self._event(svc, "Normal", "IPAllocated", msg)

    def _release(self, key: str) -> Assignment | None:
        """Forget ``key``'s IPs; Services waiting for an address get another try if any were freed."""
        with self._lock:
            held = self.allocator.assignment(key)
            self.allocator.release(key)
            self._waiting.discard(key)
            self._written.pop(key, None)
        if held is not None:
            self._retry_waiting()
        return held

    def _retry_waiting(self) -> None:
        with self._lock:
            waiting = list(self._waiting)
        for key in waiting:
            self.queue.add(key)

    def _write_status(self, svc: JSON, ips: tuple[str, ...]) -> None:
        """Write ``ips`` as the status; a write refused as stale is retried once from a fresh read."""
        if not self.is_leader():
            raise ApiError(0, "NotLeader", "not holding the controller lease; status not written")
        meta = svc["metadata"]
        try:
            self._patch_status(svc, meta.get("resourceVersion"), ips)
        except ApiError as exc:
            if not (exc.conflict or exc.invalid):
                metrics.STATUS_WRITES.labels("error").inc()
                raise
            fresh = self._newer_version(svc)
            if fresh is None:
                # no newer version: a 422 is refused for what it says, a 409 waits for the cache
                metrics.STATUS_WRITES.labels("conflict" if exc.conflict else "error").inc()
                raise
            metrics.STATUS_WRITES.labels("conflict").inc()
            if not _same_inputs(svc, fresh):
                raise  # the Service changed: its new version is queued and decides afresh
            fresh_rv = fresh["metadata"].get("resourceVersion")
            log.debug("%s: status write was stale; retrying at resourceVersion %s", object_key(svc), fresh_rv)
            self._patch_status(svc, fresh_rv, ips)
        metrics.STATUS_WRITES.labels("ok").inc()
        self._written[object_key(svc)] = ips

    def _newer_version(self, svc: JSON) -> JSON | None:
        """The cache's version of ``svc`` once it is newer than ``svc`` (the informer delivers the write
        that made ours stale within moments); None if none shows up within ``stale_wait`` seconds."""
        key, sent = object_key(svc), svc["metadata"].get("resourceVersion")
        deadline = time.monotonic() + self.stale_wait
        while True:
            cached = self.services.get(key)
            if cached is not None and cached["metadata"].get("resourceVersion") != sent:
                return cached
            if time.monotonic() >= deadline or self._stop.is_set():
                return None
            time.sleep(0.01)

    def _patch_status(self, svc: JSON, resource_version: str | None, ips: Sequence[str]) -> None:
        meta = svc["metadata"]
        ingress: list[dict[str, Any]] | None = [{"ip": ip, "ipMode": "VIP"} for ip in ips] or None
        body = {"metadata": {"resourceVersion": resource_version}, "status": {"loadBalancer": {"ingress": ingress}}}
        self.rest.request("PATCH", path_for("v1", "services", meta.get("namespace"), meta["name"], "status"),
                          body=body, content_type=MERGE_PATCH)

    def _event(self, svc: JSON, type_: str, reason: str, message: str) -> None:
        if self.recorder is not None and self.is_leader():
            self.recorder.record(svc, type_, reason, message)

    def _gauges(self) -> None:
        while not self._stop.is_set():
            if not self.caught_up.is_set() and self.queue.idle():
                self.caught_up.set()
                log.info("first pass over %d Services done", len(self.services))
            self._update_gauges()
            self._stop.wait(0.05 if not self.caught_up.is_set() else 1.0)

    def _update_gauges(self) -> None:
        with self._lock:
            usage = self.allocator.usage()
        for u in usage:
            family = f"IPv{u.family}"
            metrics.ADDRESSES_TOTAL.labels(u.pool, family).set(u.total)
            metrics.ADDRESSES_IN_USE.labels(u.pool, family).set(u.in_use)
        metrics.IS_LEADER.set(1 if self.is_leader() else 0)

    def wait_idle(self, timeout: float) -> bool:
        """True once the queue is drained (for tests and benchmarks)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.queue.idle():
                return True
            time.sleep(0.02)
        return False


_CONFIG_KEY = "\x00config"


def _count(n: int, noun: str) -> str:
    """``1 address pool``, ``2 address pools``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def ips_text(ips: Sequence[str]) -> str:
    """``IP 192.0.2.240`` or ``IPs 192.0.2.30, 2001:db8:5::`` for Event messages."""
    return f"IP {ips[0]}" if len(ips) == 1 else f"IPs {', '.join(ips)}"


def _same_inputs(old: JSON, new: JSON) -> bool:
    """True when nothing the allocation depends on differs between two versions of a Service."""
    mo, mn = old.get("metadata") or {}, new.get("metadata") or {}
    return (old.get("spec") == new.get("spec") and mo.get("annotations") == mn.get("annotations")
            and mo.get("deletionTimestamp") == mn.get("deletionTimestamp"))


def _without_lb_annotations(svc: JSON) -> JSON:
    """A copy of ``svc`` with our annotations removed, so a request can still be formed to adopt its IPs."""
    meta = dict(svc.get("metadata") or {})
    meta["annotations"] = {k: v for k, v in (meta.get("annotations") or {}).items()
                           if not k.startswith(("lbspeaker.io/", "metallb.universe.tf/"))}
    return {**svc, "metadata": meta}
