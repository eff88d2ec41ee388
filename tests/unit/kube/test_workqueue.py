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
