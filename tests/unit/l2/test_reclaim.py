"""Announcing again after another MAC's claim: the pure timing on a fake clock, and the facade's wiring."""

from __future__ import annotations

import random
from collections.abc import Iterable

import pytest

from lbspeaker.l2 import L2Announcer, changes, reclaim
from lbspeaker.l2.reclaim import Reclaim
from lbspeaker.l2.responder import Port, pack_ip


def test_the_first_claim_is_answered_after_the_delay() -> None:
    rec: Reclaim[str] = Reclaim(delay=0.1, burst=3, interval=1.0)
    assert rec.claimed("a", 10.0) == pytest.approx(10.1)


def test_claims_until_it_went_out_are_answered_by_the_scheduled_one() -> None:
    rec: Reclaim[str] = Reclaim(delay=0.1, burst=3, interval=1.0)
    assert rec.claimed("a", 10.0) == pytest.approx(10.1)
    assert rec.claimed("a", 10.02) is None  # e.g. the reply form right after the request form
    assert rec.claimed("a", 10.105) is None  # due, about to go out: not pushed back
    rec.sent(["a"], 10.106)
    assert rec.claimed("a", 10.11) == pytest.approx(10.21)  # after it went out: a new one


def test_a_round_sent_before_the_scheduled_time_is_not_it() -> None:
    rec: Reclaim[str] = Reclaim(delay=0.1, burst=3, interval=1.0)
    assert rec.claimed("a", 10.0) == pytest.approx(10.1)
    rec.sent(["a"], 10.05)  # an earlier round (a repeat) fired meanwhile
    assert rec.claimed("a", 10.06) is None


def test_one_that_never_went_out_stops_holding_claims_back() -> None:
    rec: Reclaim[str] = Reclaim(delay=0.1, burst=3, interval=1.0)
    assert rec.claimed("a", 10.0) == pytest.approx(10.1)
    assert rec.claimed("a", 11.1) is None
    assert rec.claimed("a", 11.2) == pytest.approx(11.3)


def test_a_burst_at_the_delay_then_one_per_interval() -> None:
    rec: Reclaim[str] = Reclaim(delay=0.1, burst=3, interval=1.0)
    times = []
    now = 0.0
    for _ in range(6):
        when = rec.claimed("a", now)
        assert when is not None
        times.append(when)
        rec.sent(["a"], when)
        now = when + 0.001  # the next claim just after each re-announcement
    assert times == pytest.approx([0.1, 0.201, 0.302, 1.1, 2.1, 3.1])


def test_the_bucket_refills_when_claims_stop() -> None:
    rec: Reclaim[str] = Reclaim(delay=0.1, burst=2, interval=1.0)

    def answered(now: float) -> float | None:
        when = rec.claimed("a", now)
        if when is not None:
            rec.sent(["a"], when)
        return when

    assert answered(0.0) == pytest.approx(0.1)
    assert answered(0.2) == pytest.approx(0.3)
    assert answered(0.4) == pytest.approx(1.1)  # shaped
    assert answered(10.0) == pytest.approx(10.1)  # quiet for long: the whole burst again
    assert answered(10.2) == pytest.approx(10.3)


def _storm(rec: Reclaim[str], key: str, start: float, seconds: float, every: float) -> list[tuple[float, float]]:
    """Claims every ``every`` s, each scheduled round sent on time; (claim time, round time) per round."""
    out: list[tuple[float, float]] = []
    for i in range(int(seconds / every)):
        now = start + i * every
        if out and out[-1][1] <= now:
            rec.sent([key], out[-1][1])
        when = rec.claimed(key, now)
        if when is not None:
            out.append((now, when))
    return out


def test_a_storm_yields_a_bounded_number_and_the_last_word() -> None:
    rec: Reclaim[str] = Reclaim(delay=0.1, burst=3, interval=1.0)
    scheduled = _storm(rec, "a", 0.0, 10.0, 0.001)  # 10,000 claims
    sends = sorted(when for _, when in scheduled)
    # At most burst + t / interval in any window of t seconds (and not fewer than the rate allows).
    for first in range(len(sends)):
        for last in range(first, len(sends)):
            assert last - first + 1 <= 3 + (sends[last] - sends[first]) / 1.0 + 1e-9
    assert 3 + 9 <= len(sends) <= 3 + 10
    # The last claim (at 9.999 s) is followed by an announcement, within delay + interval.
    assert 9.999 <= sends[-1] <= 9.999 + 0.1 + 1.0


def test_every_claim_is_followed_by_an_announcement_soon_enough() -> None:
    rng = random.Random(7)
    rec: Reclaim[str] = Reclaim(delay=0.05, burst=2, interval=0.5)
    pending: list[float] = []
    now = 0.0
    for _ in range(5_000):
        now += rng.expovariate(20.0)
        if pending and pending[-1] <= now:
            rec.sent(["a"], pending[-1] + rng.uniform(0, 0.01))  # the sender is a little late at times
        when = rec.claimed("a", now)
        if when is not None:
            pending.append(when)
        assert now <= pending[-1] <= now + 0.05 + 0.5, f"claim at {now} left unanswered"


def test_keys_are_limited_independently() -> None:
    rec: Reclaim[str] = Reclaim(delay=0.1, burst=1, interval=5.0)
    assert rec.claimed("a", 0.0) == pytest.approx(0.1)
    rec.sent(["a", "b"], 0.1)
    assert rec.claimed("a", 0.2) == pytest.approx(5.1)
    assert rec.claimed("b", 0.2) == pytest.approx(0.3)


def test_forgotten_keys_start_afresh() -> None:
    rec: Reclaim[str] = Reclaim(delay=0.1, burst=1, interval=5.0)
    assert rec.claimed("a", 0.0) == pytest.approx(0.1)
    rec.forget(["a"])
    assert rec.tracked() == 0
    assert rec.claimed("a", 0.2) == pytest.approx(0.3)


def test_pruning_changes_no_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(3)
    claims = []
    now = 0.0
    for _ in range(20_000):
        now += rng.expovariate(200.0)
        base = int(now * 10)  # a sliding set of 30 keys: old ones go quiet, new ones appear
        claims.append((f"k{rng.randrange(base, base + 30)}", now))

    def run(rec: Reclaim[str]) -> list[float | None]:
        out: list[float | None] = []
        due: dict[str, float] = {}
        for key, t in claims:
            gone = [k for k, when in due.items() if when <= t]
            for k in gone:
                rec.sent([k], due.pop(k))
            when = rec.claimed(key, t)
            if when is not None:
                due[key] = when
            out.append(when)
        return out

    reference: Reclaim[str] = Reclaim(delay=0.1, burst=2, interval=1.0)
    expected = run(reference)
    monkeypatch.setattr(reclaim, "_PRUNE_AT", 8)
    pruned: Reclaim[str] = Reclaim(delay=0.1, burst=2, interval=1.0)
    assert run(pruned) == expected
    assert pruned.tracked() < reference.tracked()  # it did prune


def test_invalid_parameters_are_refused() -> None:
    for kwargs in ({"delay": -1.0}, {"burst": 0}, {"interval": 0.0}):
        with pytest.raises(ValueError):
            Reclaim(**kwargs)


# --- the facade ---------------------------------------------------------------------------------------------

PORT = Port("eth0", 2, bytes.fromhex("02000000000a"))
OTHER = Port("eth1", 3, bytes.fromhex("02000000000c"))
V4 = pack_ip("192.0.2.10")
V6 = pack_ip("2001:db8::10")
PEER = bytes.fromhex("02000000000b")


def test_a_lost_and_regained_pair_is_gained_again() -> None:
    active = {(V4, "eth0"): PORT, (V6, "eth0"): PORT}
    lost, gained = changes(active, {(V6, "eth0"): PORT})
    assert (lost, gained) == ([(V4, "eth0")], [])
    assert changes({(V6, "eth0"): PORT}, active) == ([], [(V4, "eth0")])
    assert changes(active, dict(active)) == ([], [])
    remade = Port("eth0", 9, PORT.mac)  # same name, new index: the interface was re-created
    assert changes(active, {(V4, "eth0"): remade}) == ([(V4, "eth0"), (V6, "eth0")], [(V4, "eth0")])


class FakeAnnouncer:
    def __init__(self) -> None:
        self.calls: list[tuple[list[tuple[bytes, str]], float | None]] = []
        self.cancelled: list[tuple[bytes, str]] = []

    def cancel(self, keys: Iterable[tuple[bytes, str]]) -> None:
        self.cancelled.extend(keys)

    def announce(self, keys: Iterable[tuple[bytes, str]], at: float | None = None) -> None:
        self.calls.append((list(keys), at))

    def pending(self) -> int:
        return len(self.calls)


def test_a_claim_schedules_announcing_that_pair_again_and_only_a_pair_we_announce() -> None:
    announcer = L2Announcer(reclaim_delay=0.0, reclaim_burst=2, reclaim_interval=60.0)
    fake = FakeAnnouncer()
    announcer._announcer = fake  # type: ignore[assignment]  # a recording stand-in for the Announcer
    announcer._active = {(V4, "eth0"): PORT, (V6, "eth1"): OTHER}
    try:
        announcer._claimed(V4, PEER, "eth0")
        announcer._claimed(V6, PEER, "eth0")  # announced on eth1 only: nothing to defend on eth0
        announcer._claimed(pack_ip("192.0.2.99"), PEER, "eth0")  # not ours
        assert [keys for keys, _ in fake.calls] == [[(V4, "eth0")]]
        assert fake.calls[0][1] is not None
        announcer._claimed(V4, PEER, "eth0")  # not sent yet: answered by the one scheduled
        assert len(fake.calls) == 1
        announcer._fire([(V4, "eth0")])  # the round goes out (no sockets here: nothing is sent)
        announcer._claimed(V4, PEER, "eth0")
        assert len(fake.calls) == 2
        assert announcer.stats()["reannouncements"] == 2
    finally:
        announcer._responder.stop()


def test_a_lost_pair_is_no_longer_defended_and_its_history_is_dropped() -> None:
    announcer = L2Announcer(reclaim_delay=0.5)
    fake = FakeAnnouncer()
    announcer._announcer = fake  # type: ignore[assignment]  # a recording stand-in for the Announcer
    announcer._started = True
    announcer._active = {(V4, "eth0"): PORT}
    try:
        announcer._claimed(V4, PEER, "eth0")
        assert announcer._reclaim.tracked() == 1 and len(fake.calls) == 1
        announcer.update({})  # lost (no sockets needed to answer for nothing)
        assert fake.cancelled == [(V4, "eth0")]  # the pending re-announcement with the rest
        assert announcer._reclaim.tracked() == 0
        announcer._claimed(V4, PEER, "eth0")
        assert len(fake.calls) == 1
    finally:
        announcer._responder.stop()
