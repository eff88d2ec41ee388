"""The reconcile loop: recorded work is taken whole, a failing pass backs off exponentially and loses
nothing, a good pass resets the back-off."""

from __future__ import annotations

import itertools
import threading

from lbspeaker.speaker.reconcile import Loop, Pending, Work


def test_recorded_work_is_merged_and_taken_whole() -> None:
    pending = Pending()
    pending.service("a/x")
    pending.service("a/x")
    pending.node("n1")
    pending.lease("n2")
    pending.flag("liveness")
    work = pending.take()
    assert work == Work(services={"a/x"}, nodes={"n1"}, leases={"n2"}, liveness=True)
    assert not pending.take()


def test_a_failing_pass_backs_off_and_puts_its_work_back() -> None:
    pending = Pending()
    fail = {"count": 2}
    seen: list[Work] = []

    def step(work: Work) -> None:
        seen.append(work)
        if fail["count"]:
            fail["count"] -= 1
            raise RuntimeError("a bug in one Service's data")

    loop = Loop(pending, step, min_backoff=0.1, max_backoff=0.3)
    assert not loop.run_once(Work(services={"a/x"}))
    assert loop.backoff == 0.1
    pending.service("a/y")  # recorded meanwhile
    again = pending.take()
    assert again.services == {"a/x", "a/y"}  # nothing lost
    assert not loop.run_once(again)
    assert loop.backoff == 0.2
    assert loop.run_once(pending.take())
    assert loop.backoff == 0.0 and loop.failures == 2 and loop.passes == 1
    loop.backoff = 0.2
    assert loop.next_backoff() == 0.3  # capped


def test_the_thread_waits_out_the_back_off() -> None:
    pending = Pending()
    times: list[float] = []
    done = threading.Event()

    import time

    def step(work: Work) -> None:
        times.append(time.monotonic())
        if len(times) < 3:
            raise RuntimeError("failing")
        done.set()

    loop = Loop(pending, step, tick=5.0, min_backoff=0.1, max_backoff=1.0)
    loop.start()
    pending.flag("config")
    assert done.wait(5)
    loop.stop()
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[0] >= 0.09 and gaps[1] >= 0.19  # 0.1 s, then 0.2 s: never a busy retry
