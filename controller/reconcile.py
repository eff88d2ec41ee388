"""The controller's reconcile loop: cluster state in the caches -> IPs in Service statuses.

Level-triggered: watch events only put Service keys on a work queue; a worker reads the Service
from the cache, asks the (pure) allocator what it should hold, and writes the status when it
differs. ConfigMap changes reload the configuration and requeue every Service.

Safety rules carried out here:
- Nothing is assigned before every IP already present in a Service status has been adopted, so a
  restart changes no IP and never hands a held IP to another Service.
- Nothing is assigned before a valid configuration has been loaded. An invalid configuration keeps
  the last good one in force (Warning Event on the ConfigMap, ``config_stale`` = 1). A missing one
  is treated the same way: deleting the ConfigMap by mistake must not strip every Service of its IP.
- With leader election, status writes and Events happen only while the Lease is held.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
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
                 is_leader: Callable[[], bool] | None = None, workers: int = 4) -> None:
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
        self.services = Informer(rest, path_for("v1", "services"), name="services", handler=self._on_service)
        self.configmaps = Informer(rest, path_for("v1", "configmaps", namespace), name="configmaps",
                                   handler=self._on_configmap)
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
        if not self.started.is_set():
            return False, "caches not synced yet"
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
            else:
                log.warning("no configuration yet: create ConfigMap %s/%s", self.namespace, self.config_name)
            return
        cfg, errors = load_config(sources)
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
            self.config = cfg
            self.allocator.set_pools(pool_specs(cfg))
            # Pools that left the config must not linger as metric series.
            metrics.ADDRESSES_TOTAL.clear()
            metrics.ADDRESSES_IN_USE.clear()
        log.info("configuration loaded: %d pools", len(cfg.address_pools))
        if self.recorder is not None:
            self.recorder.record(sources[0], "Normal", "ConfigLoaded",
                                 f"loaded {len(cfg.address_pools)} address pools from {len(sources)} ConfigMap(s)")
        if first:
            self.adopt_existing()
        else:
            for key in self.services.all_keys():
                self.queue.add(key)

    def _set_stale(self, stale: bool) -> None:
        self.config_stale = stale
        metrics.CONFIG_STALE.set(1 if stale else 0)

    # -- start-up adoption -----------------------------------------------------------------------------
    def adopt_existing(self) -> None:
        """Record every IP already in a status, oldest Service first, before anything new is assigned.

        Runs when the first valid configuration is loaded: adopting needs the pools.
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
        for svc in svcs:
            self.queue.add(object_key(svc))
        log.info("adopted the IPs of %d Services; %d Services queued", adopted, len(svcs))

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
                self._event(svc, "Normal", "ClearAssignment", f"released {', '.join(current)}: {why}")
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
                self._event(svc, "Normal", "ClearAssignment", f"released {', '.join(current)}: {result.message}")
            return
        if list(current) == list(result.ips):
            return
        self._write_status(svc, result.ips)
        metrics.ALLOCATIONS.labels(result.pool).inc()
        msg = f"Assigned IP {list(result.ips)} from pool {result.pool}"
        if current and result.reason:
            msg += f" (was {list(current)}: {result.reason})"
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
        if not self.is_leader():
            raise ApiError(0, "NotLeader", "not holding the controller lease; status not written")
        meta = svc["metadata"]
        ingress: list[dict[str, Any]] | None = [{"ip": ip} for ip in ips] or None
        body = {"metadata": {"resourceVersion": meta.get("resourceVersion")},
                "status": {"loadBalancer": {"ingress": ingress}}}
        try:
            self.rest.request("PATCH", path_for("v1", "services", meta.get("namespace"), meta["name"], "status"),
                              body=body, content_type=MERGE_PATCH)
        except ApiError as exc:
            metrics.STATUS_WRITES.labels("conflict" if exc.conflict else "error").inc()
            raise
        metrics.STATUS_WRITES.labels("ok").inc()
        self._written[object_key(svc)] = ips

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
