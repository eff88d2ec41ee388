"""The BFD state machine and timers (RFC 5880 section 6), two sessions talking on a simulated clock."""

from __future__ import annotations

import itertools
import random
from dataclasses import replace

import pytest

from lbspeaker.bfd.packet import ControlPacket, Diag, State, decode
from lbspeaker.bfd.session import SLOW_TX_US, Session, Timers, Transition

FAST = Timers(desired_min_tx=300_000, required_min_rx=300_000, detect_mult=3)


class Wire:
    """Two sessions, a and b, joined by a link of ``delay`` seconds that can be cut, on one clock."""

    def __init__(self, a: Timers = FAST, b: Timers = FAST, delay: float = 0.001, seed: int = 1) -> None:
        self.now = 0.0
        self.a = Session(1111, a, self.now, random.Random(seed))
        self.b = Session(2222, b, self.now, random.Random(seed + 1))
        self.delay = delay
        self.cut = False
        self.in_flight: list[tuple[float, Session, ControlPacket]] = []
        self.sent: dict[int, list[tuple[float, ControlPacket]]] = {1111: [], 2222: []}
        self.transitions: list[tuple[float, str, Transition]] = []

    def other(self, session: Session) -> Session:
        return self.b if session is self.a else self.a

    def step(self) -> None:
        times = [t for t in (self.a.deadline(), self.b.deadline()) if t is not None]
        times += [t for t, _, _ in self.in_flight]
        self.now = max(self.now, min(times))
        for t, target, packet in sorted(self.in_flight, key=lambda item: item[0]):
            if t <= self.now:
                self.in_flight.remove((t, target, packet))
                self._note(target, target.receive(decode(packet.encode()), self.now))
        for session in (self.a, self.b):
            if session.detect_deadline is not None and self.now >= session.detect_deadline:
                self._note(session, session.expire(self.now))
            for packet in session.due(self.now):
                self.sent[session.local_discr].append((self.now, packet))
                if not self.cut:
                    self.in_flight.append((self.now + self.delay, self.other(session), packet))

    def run(self, seconds: float) -> None:
        end = self.now + seconds
        for _ in range(100_000):
            times = [t for t in (self.a.deadline(), self.b.deadline()) if t is not None]
            times += [t for t, _, _ in self.in_flight]
            if not times or min(times) > end:
                break
            self.step()
        self.now = end

    def _note(self, session: Session, transition: Transition | None) -> None:
        if transition is not None:
            self.transitions.append((self.now, "a" if session is self.a else "b", transition))

    def gaps(self, session: Session, since: float) -> list[float]:
        stamps = [t for t, p in self.sent[session.local_discr] if t >= since and not p.final]
        return [b - a for a, b in itertools.pairwise(stamps)]


def test_two_ends_come_up_then_run_at_the_configured_rate() -> None:
    wire = Wire()
    wire.run(3)
    assert wire.a.state == wire.b.state == State.UP
    # Both started Down and heard each other's Down: Down -> Init -> Up on one side at least (6.8.6).
    assert {(t.old, t.new) for _, _, t in wire.transitions} <= {
        (State.DOWN, State.INIT), (State.INIT, State.UP), (State.DOWN, State.UP)}
    assert (State.DOWN, State.INIT) in {(t.old, t.new) for _, _, t in wire.transitions}
    assert wire.a.tx_interval() == wire.b.tx_interval() == 300_000
    assert wire.a.detection_time() == 900_000
    assert not wire.a.poll_active and not wire.b.poll_active  # the switch to fast timers was confirmed
    wire.run(10)
    gaps = wire.gaps(wire.a, since=4)
    assert len(gaps) > 30
    assert all(0.225 - 1e-9 <= g <= 0.300 + 1e-9 for g in gaps), gaps  # 75-100 % of 300 ms (6.8.7)
    assert max(gaps) - min(gaps) > 0.03  # and really jittered


def test_not_up_means_no_faster_than_once_a_second() -> None:
    wire = Wire()
    wire.cut = True  # nobody answers: a stays Down
    wire.run(10)
    assert wire.a.state == State.DOWN
    gaps = wire.gaps(wire.a, since=0)
    assert all(0.75 - 1e-9 <= g <= 1.0 + 1e-9 for g in gaps), gaps
    assert wire.sent[1111][0][1].desired_min_tx == SLOW_TX_US  # advertised too (6.8.3)


def test_silence_takes_the_session_down_after_the_detection_time() -> None:
    wire = Wire()
    wire.run(5)
    assert wire.a.state == State.UP
    last_from_b = max(t for t, _ in wire.sent[2222])
    wire.cut = True
    wire.run(3)
    downs = [(t, side, tr) for t, side, tr in wire.transitions if tr.new == State.DOWN]
    at, side, transition = downs[0]
    assert side == "a"
    assert transition.diag == Diag.DETECTION_TIME_EXPIRED
    assert 0.9 - 1e-6 <= at - (last_from_b + wire.delay) <= 0.9 + 1e-6  # 3 x 300 ms after the last packet
    assert wire.a.remote_discr == 0  # forgotten (6.8.1)


def test_remote_down_and_admin_down_take_an_up_session_down() -> None:
    wire = Wire()
    wire.run(3)
    wire.b.shutdown(wire.now)
    wire.run(0.5)
    assert wire.b.state == State.ADMIN_DOWN
    assert wire.a.state == State.DOWN and wire.a.local_diag == Diag.NEIGHBOR_DOWN
    # A Down peer that is still talking (no AdminDown): Up -> Down too.
    again = Wire()
    again.run(3)
    again.a.receive(replace(again.sent[2222][-1][1], state=State.DOWN), again.now)
    assert again.a.state == State.DOWN and again.a.local_diag == Diag.NEIGHBOR_DOWN


def test_admin_down_is_told_for_one_detection_time_then_the_session_is_finished() -> None:
    wire = Wire()
    wire.run(3)
    start = wire.now
    wire.a.shutdown(start)
    wire.run(3)
    told = [t for t, p in wire.sent[1111] if p.state == State.ADMIN_DOWN]
    assert told and told[0] == start
    assert max(told) - start <= 0.9 + 1e-6
    assert wire.a.finished
    assert wire.a.deadline() is None or wire.a.next_tx is None


def test_passive_end_waits_for_the_remote() -> None:
    wire = Wire(a=replace(FAST, passive=True), b=replace(FAST, passive=True))
    wire.run(5)
    assert wire.sent[1111] == [] and wire.sent[2222] == []  # two passive ends: nobody starts
    wire = Wire(a=replace(FAST, passive=True))
    wire.run(4)
    assert wire.a.state == wire.b.state == State.UP
    assert wire.sent[1111][0][0] > wire.sent[2222][0][0]  # a spoke only after b


def test_poll_is_answered_at_once_with_final() -> None:
    wire = Wire()
    wire.run(3)
    poll = replace(wire.sent[2222][-1][1], poll=True)
    wire.a.receive(poll, wire.now)
    assert wire.a.deadline() == 0.0
    answer = wire.a.due(wire.now)
    assert answer[0].final and not answer[0].poll


def test_a_longer_transmit_interval_waits_for_the_poll_sequence() -> None:
    wire = Wire()
    wire.run(3)
    wire.a.reconfigure(replace(FAST, desired_min_tx=600_000), wire.now)
    assert wire.a.poll_active
    assert wire.a.tx_interval() == 300_000  # not yet: b still expects 300 ms packets
    wire.run(1)
    assert not wire.a.poll_active
    assert wire.a.tx_interval() == 600_000
    assert wire.b.detection_time() == 1_800_000  # b now allows 3 x 600 ms
    assert wire.a.state == wire.b.state == State.UP


def test_a_remote_asking_for_nothing_gets_no_periodic_packets() -> None:
    wire = Wire(b=replace(FAST, required_min_rx=0))
    wire.run(3)
    count = len(wire.sent[1111])
    wire.run(5)
    assert len(wire.sent[1111]) == count


def test_multiplier_one_transmits_at_most_at_90_percent() -> None:
    wire = Wire(a=replace(FAST, detect_mult=1), b=FAST)
    wire.run(15)
    gaps = wire.gaps(wire.a, since=5)
    assert gaps and all(0.225 - 1e-9 <= g <= 0.270 + 1e-9 for g in gaps), gaps


def test_timers_validation() -> None:
    with pytest.raises(ValueError):
        Timers(desired_min_tx=0)
    with pytest.raises(ValueError):
        Timers(detect_mult=0)
    with pytest.raises(ValueError):
        Session(0, FAST, 0.0)
