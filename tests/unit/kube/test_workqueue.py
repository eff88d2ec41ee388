"""The work queue: de-duplication, one holder per key, re-queue on done, delayed retries."""

from __future__ import annotations

import threading

from lbspeaker.kube.workqueue import WorkQueue


def test_duplicates_are_queued_once() -> None:
    q = WorkQueue()
    for key in ["a", "b", "a", "a", "c", "b"]:
        q.add(key)
    got = [q.get(0), q.get(0), q.get(0), q.get(0)]
    assert got == ["a", "b", "c", None]


def test_key_added_while_processing_comes_back_after_done() -> None:
    q = WorkQueue()
    q.add("a")
    assert q.get(0) == "a"
    q.add("a")  # a change arrives while a worker holds the key
    assert q.get(0) is None, "the same key must not be handed to a second worker"
    q.done("a")
    assert q.get(0) == "a"
    q.done("a")
    assert q.idle()


def test_add_after_and_rate_limit() -> None:
    q = WorkQueue(base_delay=0.01, max_delay=0.05)
    q.add_after("late", 0.05)
    assert q.get(0) is None
    assert q.get(2.0) == "late"
    q.done("late")
    q.add_rate_limited("x")
    q.add_rate_limited("x")
    assert q.get(2.0) == "x"
    q.forget("x")
    q.done("x")


def test_shutdown_wakes_waiting_workers() -> None:
    q = WorkQueue()
    results: list[str | None] = []
    t = threading.Thread(target=lambda: results.append(q.get()))
    t.start()
    q.shutdown()
    t.join(5)
    assert results == [None]
    q.add("after")
    assert q.get(0) is None


def test_rate_limited_retries_back_off_exponentially_up_to_the_cap() -> None:
    """A key that keeps failing waits base, 2 base, 4 base... never more than max_delay, and forget resets it."""
    q = WorkQueue(base_delay=0.04, max_delay=0.1)
    q.add_rate_limited("x")
    assert q.get(0) is None, "a retry is delayed, not immediate"
    assert q.get(0.2) == "x"
    q.done("x")
    q.add_rate_limited("x")  # second failure: twice as long
    assert q.get(0.05) is None
    assert q.get(0.2) == "x"
    q.done("x")
    for _ in range(5):  # 0.04, 0.08, then capped at 0.1: each within 0.3 s (uncapped, the fifth is 0.64 s)
        q.add_rate_limited("y")
        assert q.get(0.3) == "y"
        q.done("y")
    q.forget("x")
    q.add_rate_limited("x")
    assert q.get(0.02) is None  # back to base_delay (0.04), not immediate
    assert q.get(0.2) == "x"
