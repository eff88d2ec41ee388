"""Recording Kubernetes Events without slowing the reconcile loop.

``record`` only queues; a background thread writes. Repeats of the same (object, type, reason,
message) within ten minutes bump the existing Event's count instead of creating a new object, as
client-go's recorder does, so a flapping Service cannot flood etcd. When the queue is full, new
events are dropped and counted rather than blocking the caller.

Events are informational; status writes are what users wait for. While ``busy()`` says the owner
has work queued, an event is held back for up to ``max_defer`` seconds so that the API server's
capacity goes to the status writes first.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from lbspeaker.kube.rest import MERGE_PATCH, ApiError, Rest, path_for
from lbspeaker.kube.timefmt import now_time

log = logging.getLogger(__name__)

REPEAT_WINDOW = 600.0


@dataclass(frozen=True)
class _Pending:
    involved: dict[str, Any]
    type: str
    reason: str
    message: str
    queued_at: float


class EventRecorder:
    def __init__(self, rest: Rest, component: str, host: str | None = None, *, max_queue: int = 5000,
                 gate: Callable[[], bool] | None = None, busy: Callable[[], bool] | None = None,
                 max_defer: float = 5.0) -> None:
        self.rest = rest
        self.component = component
        self.host = host
        self.gate = gate
        self.busy = busy
        self.max_defer = max_defer
        self._queue: queue.Queue[_Pending | None] = queue.Queue(maxsize=max_queue)
        self._seen: dict[tuple[str, str, str, str], tuple[str, str, int, float]] = {}
        self.dropped = 0
        self.written = 0
        self._thread: threading.Thread | None = None

    def record(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """Queue an Event about ``obj`` (a Kubernetes object as a dict). Never blocks, never raises."""
        meta = obj.get("metadata") or {}
        involved = {
            "apiVersion": obj.get("apiVersion", "v1"),
            "kind": obj.get("kind", ""),
            "namespace": meta.get("namespace"),
            "name": meta.get("name"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        }
        log.log(logging.WARNING if type_ == "Warning" else logging.INFO, "event %s %s/%s %s: %s",
                type_, involved["namespace"], involved["name"], reason, message)
        try:
            self._queue.put_nowait(_Pending({k: v for k, v in involved.items() if v}, type_, reason, message,
                                              time.monotonic()))
        except queue.Full:
            self.dropped += 1

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="event-recorder", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Write what is queued (for up to ``timeout`` seconds), then stop."""
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return
        if self._thread is not None:
            self._thread.join(timeout)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued event is written; for tests and shutdown."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.unfinished_tasks == 0:
                return True
            time.sleep(0.01)
        return False

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                while self.busy is not None and self.busy() and time.monotonic() - item.queued_at < self.max_defer:
                    time.sleep(0.05)
                if self.gate is None or self.gate():
                    self._write(item)
            except ApiError as exc:
                log.warning("could not write event %s: %s", item.reason if item else "", exc)
            except Exception:
                log.exception("event recorder failed")
            finally:
                self._queue.task_done()

    def _write(self, ev: _Pending) -> None:
        ns = ev.involved.get("namespace") or "default"
        key = (str(ev.involved.get("uid", ev.involved.get("name"))), ev.type, ev.reason, ev.message)
        now = time.monotonic()
        seen = self._seen.get(key)
        if seen is not None and now - seen[3] < REPEAT_WINDOW:
            name, ens, count, _ = seen
            try:
                self.rest.request("PATCH", path_for("v1", "events", ens, name), content_type=MERGE_PATCH,
                                  body={"count": count + 1, "lastTimestamp": now_time()})
                self._seen[key] = (name, ens, count + 1, now)
                self.written += 1
                return
            except ApiError as exc:
                if not exc.not_found:
                    raise
        stamp = now_time()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{ev.involved.get('name', 'object')}.{time.time_ns():x}", "namespace": ns},
            "involvedObject": ev.involved,
            "reason": ev.reason,
            "message": ev.message,
            "type": ev.type,
            "source": {"component": self.component, **({"host": self.host} if self.host else {})},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "eventTime": None,
            "count": 1,
            "reportingComponent": self.component,
            "reportingInstance": self.host or self.component,
        }
        created = self.rest.request("POST", path_for("v1", "events", ns), body=body)
        self._seen[key] = (created.get("metadata", {}).get("name", body["metadata"]["name"]), ns, 1, now)  # type: ignore[index]
        self.written += 1
        if len(self._seen) > 10000:
            cutoff = now - REPEAT_WINDOW
            self._seen = {k: v for k, v in self._seen.items() if v[3] >= cutoff}

