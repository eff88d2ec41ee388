"""Gratuitous announcements on takeover: at once, then a few more times at a fixed interval.

``Schedule`` is the pure part: which (ip, interface) pairs are due at a given time, with cancellation
by generation so a lost IP's queued repeats are skipped without searching the heap. ``Announcer``
runs one thread over a Schedule and hands every due batch to a ``fire`` callback in one call, so
taking over a thousand IPs costs one wake-up and a burst of sends rather than a thousand timers.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)


class Schedule(Generic[K]):
    """Announcement rounds per key: ``1 + repeats`` rounds, ``interval`` seconds apart. Not thread-safe."""

    def __init__(self, repeats: int = 2, interval: float = 0.5) -> None:
        if repeats < 0 or interval <= 0:
            raise ValueError("repeats must be >= 0 and interval > 0")
        self.repeats = repeats
        self.interval = interval
        self._heap: list[tuple[float, int, K, int]] = []
        self._active: dict[K, tuple[int, int]] = {}  # key -> (generation, rounds left)
        self._generation = itertools.count(1)
        self._seq = itertools.count()

    def add(self, keys: Iterable[K], now: float) -> None:
        """Start (or restart) the rounds for ``keys``: the first is due at ``now``."""
        for key in keys:
            gen = next(self._generation)
            self._active[key] = (gen, 1 + self.repeats)
            heapq.heappush(self._heap, (now, next(self._seq), key, gen))

    def cancel(self, keys: Iterable[K]) -> None:
        for key in keys:
            self._active.pop(key, None)

    def pop_due(self, now: float) -> list[K]:
        """Keys whose next round is due at or before ``now``; later rounds are queued again."""
        due: list[K] = []
        while self._heap and self._heap[0][0] <= now:
            when, _, key, gen = heapq.heappop(self._heap)
            state = self._active.get(key)
            if state is None or state[0] != gen:
                continue  # cancelled or restarted since this entry was queued
            due.append(key)
            left = state[1] - 1
            if left > 0:
                self._active[key] = (gen, left)
                # From now, not from when it was due: after a stall the rounds stay spaced, not bunched.
                heapq.heappush(self._heap, (max(when, now) + self.interval, next(self._seq), key, gen))
            else:
                del self._active[key]
        if not self._active:
            self._heap.clear()  # only stale entries left
        return due

    def next_due(self) -> float | None:
        while self._heap:
            _, _, key, gen = self._heap[0]
            state = self._active.get(key)
            if state is not None and state[0] == gen:
                return self._heap[0][0]
            heapq.heappop(self._heap)
        return None

    def pending(self) -> int:
        return len(self._active)


class Announcer(Generic[K]):
    """A thread that calls ``fire(batch)`` with the keys due for an announcement round."""

    def __init__(
        self,
        fire: Callable[[Sequence[K]], None],
        *,
        repeats: int = 2,
        interval: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fire = fire
        self._clock = clock
        self._schedule: Schedule[K] = Schedule(repeats, interval)
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="l2-announce", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def announce(self, keys: Iterable[K], at: float | None = None) -> None:
        """Start the rounds for ``keys`` now, or at ``at`` (in the clock's time); restarts rounds under way."""
        with self._cond:
            self._schedule.add(keys, self._clock() if at is None else at)
            self._cond.notify()

    def cancel(self, keys: Iterable[K]) -> None:
        with self._cond:
            self._schedule.cancel(keys)

    def pending(self) -> int:
        with self._cond:
            return self._schedule.pending()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping:
                    now = self._clock()
                    due = self._schedule.pop_due(now)
                    if due:
                        break
                    nxt = self._schedule.next_due()
                    self._cond.wait(None if nxt is None else max(0.0, nxt - now))
                if self._stopping:
                    return
            try:
                self._fire(due)
            except Exception:  # one failed round must not end the announcements of every other IP
                log.exception("announcement round")
