"""Leader election on a coordination.k8s.io/v1 Lease, for running two controller replicas safely.

The rules follow client-go's leaderelection: a candidate takes the Lease when it is free or its
holder has not renewed it for ``lease_duration`` as observed on *our* clock (remote timestamps are
never compared with local time, so clock skew cannot cause two leaders). The leader renews every
``retry_period``; if it cannot renew for ``renew_deadline`` (< lease_duration), ``is_leader`` turns
false at once, before any other candidate may take over, and the writes it guards stop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from lbspeaker.kube.rest import ApiError, Rest, path_for
from lbspeaker.kube.timefmt import now_micro

log = logging.getLogger(__name__)


class LeaderElector:
    def __init__(self, rest: Rest, namespace: str, name: str, identity: str, *,
                 lease_duration: float = 15.0, renew_deadline: float = 10.0, retry_period: float = 2.0,
                 on_started: Callable[[], None] | None = None, on_stopped: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not retry_period < renew_deadline < lease_duration:
            raise ValueError("leader election needs retry_period < renew_deadline < lease_duration")
        self.rest = rest
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.on_started = on_started
        self.on_stopped = on_stopped
        self.clock = clock
        self._leading = False
        self._last_renew = float("-inf")
        self._observed: tuple[str, str, int] | None = None  # (holder, renewTime, transitions)
        self._observed_at = float("-inf")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def path(self) -> str:
        return path_for("coordination.k8s.io/v1", "leases", self.namespace, self.name)

    def is_leader(self) -> bool:
        return self._leading and self.clock() - self._last_renew < self.renew_deadline

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="leader-elector", daemon=True)
        self._thread.start()

    def stop(self, release: bool = True) -> None:
        """Stop campaigning; when leading and ``release``, hand the Lease back so a peer takes over now."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.retry_period + 5)
        if release and self._leading:
            try:
                lease = self.rest.get(self.path)
                if lease.get("spec", {}).get("holderIdentity") == self.identity:
                    lease["spec"]["holderIdentity"] = None
                    lease["spec"]["leaseDurationSeconds"] = 1
                    self.rest.request("PUT", self.path, body=lease)
            except ApiError as exc:
                log.warning("could not release lease %s: %s", self.name, exc)
        self._set_leading(False)

    def _set_leading(self, leading: bool) -> None:
        if leading == self._leading:
            return
        self._leading = leading
        log.info("%s %s leadership of lease %s/%s", self.identity, "acquired" if leading else "lost",
                 self.namespace, self.name)
        callback = self.on_started if leading else self.on_stopped
        if callback is not None:
            callback()

    def _run(self) -> None:
        while not self._stop.is_set():
            # Count the renewal from before the request: the server may have applied it long before we heard.
            started = self.clock()
            try:
                ok = self.try_acquire_or_renew()
            except ApiError as exc:
                log.warning("lease %s: %s", self.name, exc)
                ok = False
            if ok:
                self._last_renew = started
                self._set_leading(True)
            elif self._leading and not self.is_leader():
                self._set_leading(False)
            self._stop.wait(self.retry_period)

    def try_acquire_or_renew(self) -> bool:
        """One round: True when we hold the Lease afterwards."""
        now_s = now_micro()
        try:
            lease = self.rest.get(self.path)
        except ApiError as exc:
            if not exc.not_found:
                raise
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(now_s, now_s, 0),
            }
            try:
                self.rest.request("POST", path_for("coordination.k8s.io/v1", "leases", self.namespace), body=body)
            except ApiError as create_exc:
                if create_exc.conflict:
                    return False
                raise
            return True
        spec: dict[str, Any] = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        record = (holder, str(spec.get("renewTime", "")), int(spec.get("leaseTransitions") or 0))
        now = self.clock()
        if record != self._observed:
            self._observed = record
            self._observed_at = now
        duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
        if holder and holder != self.identity and now - self._observed_at < duration:
            return False
        transitions = record[2] if holder == self.identity else record[2] + 1
        acquire = spec.get("acquireTime") if holder == self.identity else now_s
        lease["spec"] = self._spec(acquire or now_s, now_s, transitions)
        try:
            self.rest.request("PUT", self.path, body=lease)
        except ApiError as exc:
            if exc.conflict:
                return False
            raise
        return True

    def _spec(self, acquire: str, renew: str, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.lease_duration),
            "acquireTime": acquire,
            "renewTime": renew,
            "leaseTransitions": transitions,
        }
