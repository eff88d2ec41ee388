"""When to announce an IP again after another MAC claimed it: pure, per key, bounded.

A gratuitous ARP or neighbour advertisement from another MAC for an IP this node announces points
every client that hears it at that MAC, and nothing points them back: answering requests does not
help a client that no longer asks. So the owner announces again — not at once but ``delay`` seconds
later, so that a node which really took the IP over (and whose news has not reached this one yet)
is not fought while the news travels; an announcement for an IP lost meanwhile is never sent.

Two stubborn claimants (a misconfigured device, a split brain) must not make a storm: the
re-announcements of one key are shaped like a token bucket (a generic cell rate algorithm) of
``burst`` at once and one per ``interval`` after that — at most ``burst + t / interval`` in any ``t``
seconds, however many claims arrive. Shaping delays instead of dropping, and a claim that arrives
while a re-announcement is scheduled and not yet ``sent`` is answered by that one, so the last claim
of a storm is always followed by an announcement of ours, at most ``delay + interval`` later (and a
claim arriving just as one goes out does not push it back). Cost: O(1) and one small record per key
claimed recently.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

_PRUNE_AT = 4096  # records before those that no longer limit anything are dropped (then: twice what is kept)


@dataclass
class _State:
    tat: float  # theoretical arrival time of the next re-announcement (GCRA)
    due: float  # when the last scheduled one goes out
    pending: bool  # scheduled and not sent yet


class Reclaim(Generic[K]):
    """Re-announcement times for claimed keys. Not thread-safe."""

    def __init__(self, delay: float = 0.1, burst: int = 3, interval: float = 1.0) -> None:
        if delay < 0 or burst < 1 or interval <= 0:
            raise ValueError("reclaim delay must be >= 0, burst >= 1 and interval > 0")
        self.delay = delay
        self.burst = burst
        self.interval = interval
        self._tolerance = (burst - 1) * interval
        self._state: dict[K, _State] = {}
        self._prune_at = _PRUNE_AT

    def claimed(self, key: K, now: float) -> float | None:
        """Another MAC claimed ``key`` at ``now``: when to announce it again, or None when one is coming."""
        state = self._state.get(key)
        # A re-announcement still to come answers this claim too. One that never went out (the sender
        # stalled for an interval past its time) no longer holds new ones back.
        if state is not None and state.pending and now <= state.due + self.interval:
            return None
        earliest = now + self.delay
        tat = earliest if state is None else max(state.tat, earliest)
        when = max(earliest, tat - self._tolerance)
        if state is None:
            if len(self._state) >= self._prune_at:
                self._prune(now)
            self._state[key] = _State(tat + self.interval, when, True)
        else:
            state.tat, state.due, state.pending = tat + self.interval, when, True
        return when

    def sent(self, keys: Iterable[K], now: float) -> None:
        """An announcement round for ``keys`` went out at ``now``; it is the scheduled one from its time on."""
        for key in keys:
            state = self._state.get(key)
            if state is not None and now >= state.due:
                state.pending = False

    def forget(self, keys: Iterable[K]) -> None:
        """Keys no longer announced: their history no longer limits anything."""
        for key in keys:
            self._state.pop(key, None)

    def tracked(self) -> int:
        return len(self._state)

    def _prune(self, now: float) -> None:
        # A record with nothing due whose bucket has refilled limits nothing: dropping it changes no answer.
        self._state = {
            key: state for key, state in self._state.items() if state.pending or state.tat > now + self.delay
        }
        self._prune_at = max(_PRUNE_AT, 2 * len(self._state))  # amortised O(1) even when all are kept
