"""The speaker's reconcile loop: changes in, typed views updated key by key, protocols called.

Informer handlers and membership only *record* what changed (``Pending.add``: a Service key, a Node
name, "the config", "liveness"...), from their own threads; one loop thread takes everything recorded
since the last pass and works through it. Liveness goes first and alone: a pass that only learned a
node died recomputes just the IPs that node held, and never waits behind a batch of Service changes.
Nothing in a pass blocks on the API server: the caches, the parsed configuration (parsed by the
configmap handler, off this thread) and the Secrets are already in memory.

A pass that fails is logged and retried with an exponential back-off (0.1 s doubling to 5 s), so a
bug in one Service's data cannot spin a core; the changes it carried are put back, not lost.

Cost per pass: O(changed keys) to update the views, plus what the protocols do with the changes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass
class Work:
    """Everything recorded since the last pass."""

    services: set[str] = field(default_factory=set)  # Service keys (an EndpointSlice records its Service)
    nodes: set[str] = field(default_factory=set)  # Node objects
    leases: set[str] = field(default_factory=set)  # nodes whose speaker Lease changed
    config: bool = False
    secrets: bool = False
    liveness: bool = False
    interfaces: bool = False
    everything: bool = False

    def __bool__(self) -> bool:
        return bool(self.services or self.nodes or self.leases or self.config or self.secrets or self.liveness
                    or self.interfaces or self.everything)

    def merge(self, other: Work) -> None:
        self.services |= other.services
        self.nodes |= other.nodes
        self.leases |= other.leases
        self.config |= other.config
        self.secrets |= other.secrets
        self.liveness |= other.liveness
        self.interfaces |= other.interfaces
        self.everything |= other.everything


class Pending:
    """Changes recorded by other threads, taken by the loop; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._work = Work()
        self._event = threading.Event()

    def service(self, key: str) -> None:
        with self._lock:
            self._work.services.add(key)
        self._event.set()

    def node(self, name: str) -> None:
        with self._lock:
            self._work.nodes.add(name)
        self._event.set()

    def lease(self, node: str) -> None:
        with self._lock:
            self._work.leases.add(node)
        self._event.set()

    def flag(self, name: str) -> None:
        """``config``, ``secrets``, ``liveness``, ``interfaces`` or ``everything``."""
        with self._lock:
            setattr(self._work, name, True)
        self._event.set()

    def put_back(self, work: Work) -> None:
        with self._lock:
            work.merge(self._work)
            self._work = work
        self._event.set()

    def take(self) -> Work:
        with self._lock:
            work, self._work = self._work, Work()
            self._event.clear()
        return work

    def wait(self, timeout: float) -> bool:
        return self._event.wait(timeout)


class Loop:
    """The thread running ``step(work)`` for each batch of work, with back-off on failures."""

    def __init__(self, pending: Pending, step: Callable[[Work], None], *, name: str = "speaker-reconcile",
                 tick: float = 1.0, min_backoff: float = 0.1, max_backoff: float = 5.0) -> None:
        self.pending = pending
        self.step = step
        self.name = name
        self.tick = tick  # a pass at least this often (timers: Lease expiry, witness)
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.backoff = 0.0
        self.passes = 0
        self.failures = 0
        self.last_duration = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.pending.flag("everything")  # wake it
        if self._thread is not None:
            self._thread.join(timeout=10)

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def next_backoff(self) -> float:
        """After a failure: the first wait, then double it, up to ``max_backoff``."""
        self.backoff = self.min_backoff if self.backoff == 0 else min(self.backoff * 2, self.max_backoff)
        return self.backoff

    def run_once(self, work: Work) -> bool:
        """One pass; False (and the work put back) if it failed."""
        started = time.perf_counter()
        try:
            self.step(work)
        except Exception:
            self.failures += 1
            log.exception("reconcile pass failed; retrying in %.1fs", self.next_backoff())
            self.pending.put_back(work)
            return False
        finally:
            self.last_duration = time.perf_counter() - started
        self.backoff = 0.0
        self.passes += 1
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            self.pending.wait(self.tick)
            if self._stop.is_set():
                return
            work = self.pending.take()
            if not self.run_once(work):
                self._stop.wait(self.backoff)
