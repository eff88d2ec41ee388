"""Two BFD engines on loopback (127.0.0.1 and 127.0.0.2, ports apart): sessions come up over real UDP,
TTL and address checks drop what they must, a removed session says AdminDown, silence takes it down."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from lbspeaker.bfd.engine import Engine, SessionKey, SessionSpec, SessionStatus
from lbspeaker.bfd.packet import ControlPacket, Diag, State
from lbspeaker.bfd.session import Timers

T = TypeVar("T")

FAST = Timers(desired_min_tx=50_000, required_min_rx=50_000, detect_mult=3)


def free_ports(count: int) -> list[int]:
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(count)]
    for sock in socks:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in socks]
    for sock in socks:
        sock.close()
    return ports


class Runner:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                self.engine.run_once(max_wait=0.01)

    def call(self, fn: Callable[..., T], *args: object) -> T:
        with self.lock:
            return fn(*args)


@pytest.fixture
def pair() -> Iterator[tuple[Runner, Runner, list[tuple[str, SessionKey, str]], tuple[int, int, int, int]]]:
    ports = free_ports(4)
    events: list[tuple[str, SessionKey, str]] = []

    def recorder(name: str):  # type: ignore[no-untyped-def]
        def on(key: SessionKey, transition, status: SessionStatus) -> None:  # type: ignore[no-untyped-def]
            events.append((name, key, transition.new.label))
        return on

    a = Runner(Engine(recorder("a"), ports=(ports[0], ports[1]), peer_ports=(ports[2], ports[3])))
    b = Runner(Engine(recorder("b"), ports=(ports[2], ports[3]), peer_ports=(ports[0], ports[1])))
    a.thread.start()
    b.thread.start()
    yield a, b, events, (ports[0], ports[1], ports[2], ports[3])
    for runner in (a, b):
        runner.stop.set()
        runner.thread.join(5)
        runner.engine.close()


def wait(probe, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


A_TO_B = SessionKey(peer="127.0.0.2", local="127.0.0.1")
B_TO_A = SessionKey(peer="127.0.0.1", local="127.0.0.2")


def state(runner: Runner, key: SessionKey) -> str | None:
    status = runner.call(runner.engine.sessions).get(key)
    return status.state if status else None


def test_sessions_come_up_and_go_down_on_silence(pair) -> None:  # type: ignore[no-untyped-def]
    a, b, events, _ = pair
    a.call(a.engine.configure, [SessionSpec(A_TO_B, FAST)])
    b.call(b.engine.configure, [SessionSpec(B_TO_A, FAST)])
    wait(lambda: state(a, A_TO_B) == "up" and state(b, B_TO_A) == "up")
    status = a.call(a.engine.sessions)[A_TO_B]
    wait(lambda: a.call(a.engine.sessions)[A_TO_B].tx_interval_ms == 50.0)
    assert status.remote_state in ("init", "up")
    # b's session removed: AdminDown first, so a goes down "neighbor signaled", not by timeout.
    b.call(b.engine.configure, [])
    wait(lambda: state(a, A_TO_B) == "down", timeout=2)
    assert a.call(a.engine.sessions)[A_TO_B].diag == "neighbor-down"
    # b back, then b's process gone without a word (closed sockets): a times out.
    b.call(b.engine.configure, [SessionSpec(B_TO_A, FAST)])
    wait(lambda: state(a, A_TO_B) == "up")
    # b's fast timers in force at a (the Poll Sequence after Up is over): a's detection time is 150 ms.
    wait(lambda: a.call(a.engine.sessions)[A_TO_B].detection_time_ms == 150.0)
    b.stop.set()
    b.thread.join(5)
    stopped = time.monotonic()
    wait(lambda: state(a, A_TO_B) == "down", timeout=2)
    assert time.monotonic() - stopped < 1.0  # 3 x 50 ms detection, plus scheduling on a busy machine
    assert a.call(a.engine.sessions)[A_TO_B].diag == "detection-time-expired"
    assert ("a", A_TO_B, "up") in events


def test_ttl_below_255_and_foreign_sources_are_dropped(pair) -> None:  # type: ignore[no-untyped-def]
    a, _b, _events, ports = pair
    a.call(a.engine.configure, [SessionSpec(A_TO_B, FAST)])
    down = ControlPacket(state=State.DOWN, diag=Diag.NONE, detect_mult=3, my_discr=99, your_discr=0,
                         desired_min_tx=1_000_000, required_min_rx=50_000).encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as forged:
        forged.bind(("127.0.0.2", 0))
        forged.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 254)  # one router hop away
        forged.sendto(down, ("127.0.0.1", ports[0]))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        stranger.bind(("127.0.0.3", 0))
        stranger.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 255)
        stranger.sendto(down, ("127.0.0.1", ports[0]))
        stranger.sendto(b"\x20\xc0garbage", ("127.0.0.1", ports[0]))
    wait(lambda: sum(v for k, v in a.call(a.engine.stats).items() if k.startswith("dropped_")) >= 3)
    stats = a.call(a.engine.stats)
    assert stats["dropped_ttl"] == 1
    assert stats["dropped_no_session"] == 1
    assert stats["dropped_short"] == 1
    assert state(a, A_TO_B) == "down"  # none of them moved the session


def test_multihop_accepts_the_minimum_ttl(pair) -> None:  # type: ignore[no-untyped-def]
    a, _b, _events, ports = pair
    key = SessionKey(peer="127.0.0.2", local="127.0.0.1", multihop=True)
    a.call(a.engine.configure, [SessionSpec(key, FAST, minimum_ttl=250)])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as remote:
        remote.bind(("127.0.0.2", 0))
        for ttl in (249, 250):
            remote.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
            remote.sendto(ControlPacket(state=State.DOWN, diag=Diag.NONE, detect_mult=3, my_discr=77, your_discr=0,
                                        desired_min_tx=1_000_000, required_min_rx=50_000).encode(),
                          ("127.0.0.1", ports[1]))
    wait(lambda: state(a, key) == "init")
    assert a.call(a.engine.stats)["dropped_ttl"] == 1


def test_a_session_added_back_replaces_its_retiring_predecessor() -> None:
    # Otherwise the old one's AdminDown packets would take the remote down under the new session.
    engine = Engine(ports=tuple(free_ports(2)))  # type: ignore[arg-type]
    try:
        engine.configure([SessionSpec(A_TO_B, FAST)])
        first = engine._entries[A_TO_B].session.local_discr
        engine.configure([])
        assert [e.spec.key for e in engine._retired] == [A_TO_B]
        engine.configure([SessionSpec(A_TO_B, FAST)])
        assert engine._retired == []
        assert first not in engine._by_discr
        assert engine._entries[A_TO_B].session.local_discr != first
    finally:
        engine.close()
