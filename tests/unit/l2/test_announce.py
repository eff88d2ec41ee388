"""Announcement rounds: the pure schedule on a fake clock, and the thread's batching."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest

from lbspeaker.l2.announce import Announcer, Schedule


def test_rounds_at_once_then_repeats_at_the_interval() -> None:
    sched: Schedule[str] = Schedule(repeats=2, interval=0.5)
    sched.add(["a", "b"], now=10.0)
    assert sched.pop_due(10.0) == ["a", "b"]
    assert sched.pop_due(10.49) == []
    assert sched.next_due() == pytest.approx(10.5)
    assert sched.pop_due(10.5) == ["a", "b"]
    assert sched.pop_due(11.0) == ["a", "b"]
    assert sched.pop_due(100.0) == []
    assert sched.pending() == 0 and sched.next_due() is None


def test_cancel_drops_the_pending_repeats_of_only_those_keys() -> None:
    sched: Schedule[str] = Schedule(repeats=2, interval=0.5)
    sched.add(["a", "b"], now=0.0)
    assert sched.pop_due(0.0) == ["a", "b"]
    sched.cancel(["a"])
    assert sched.pop_due(0.5) == ["b"]
    assert sched.pop_due(1.0) == ["b"]
    assert sched.pending() == 0


def test_re_adding_restarts_the_rounds_once() -> None:
    sched: Schedule[str] = Schedule(repeats=1, interval=1.0)
    sched.add(["a"], now=0.0)
    assert sched.pop_due(0.0) == ["a"]
    sched.add(["a"], now=0.7)  # lost and won back: a fresh set of rounds, not two interleaved ones
    assert sched.pop_due(1.0) == ["a"]  # the restarted first round (due 0.7); the old repeat is gone
    assert sched.pop_due(1.9) == []
    assert sched.pop_due(2.0) == ["a"]
    assert sched.pop_due(5.0) == []


def test_a_late_wakeup_keeps_the_rounds_spaced() -> None:
    sched: Schedule[int] = Schedule(repeats=2, interval=0.5)
    sched.add(range(3), now=0.0)
    assert sorted(sched.pop_due(5.0)) == [0, 1, 2]  # one round per key, not all three bunched
    assert sched.pop_due(5.0) == []
    assert sched.next_due() == pytest.approx(5.5)
    assert sorted(sched.pop_due(5.5)) == [0, 1, 2]
    assert sorted(sched.pop_due(6.0)) == [0, 1, 2]
    assert sched.pop_due(60.0) == []


def test_invalid_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        Schedule(repeats=-1)
    with pytest.raises(ValueError):
        Schedule(interval=0)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_announcer_fires_a_thousand_keys_in_one_batch_and_stops_after_cancel() -> None:
    batches: list[list[int]] = []
    fired = threading.Event()

    def fire(batch: Sequence[int]) -> None:
        batches.append(list(batch))
        fired.set()

    clock = FakeClock()  # frozen: only the first round can ever be due
    announcer: Announcer[int] = Announcer(fire, repeats=2, interval=0.5, clock=clock)
    announcer.start()
    try:
        announcer.announce(range(1000))
        assert fired.wait(10), "first round never fired"
        assert announcer.pending() == 1000  # the repeats are still queued
        announcer.cancel(range(1000))
        assert announcer.pending() == 0
    finally:
        announcer.stop()
    assert batches == [list(range(1000))]


def test_announcer_survives_a_failing_round() -> None:
    calls: list[list[str]] = []
    first, second = threading.Event(), threading.Event()

    def fire(batch: Sequence[str]) -> None:
        calls.append(list(batch))
        if batch == ["a"]:
            first.set()
            raise OSError("transmit failed")
        second.set()

    announcer: Announcer[str] = Announcer(fire, repeats=0, interval=0.5)
    announcer.start()
    try:
        announcer.announce(["a"])
        assert first.wait(10), "first round never fired"
        announcer.announce(["b"])
        assert second.wait(10), "announcer stopped after a failing round"
    finally:
        announcer.stop()
    assert calls == [["a"], ["b"]]
