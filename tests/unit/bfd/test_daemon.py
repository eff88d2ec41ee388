"""The speaker's handle on the BFD process: a real ``python -m lbspeaker.bfd`` child on loopback, its peer
an ``Engine`` in the test. States reach the speaker, a killed process is restarted with its sessions,
and a stopped one goes silent (no AdminDown: its peer times out, "BFD Down wins")."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from lbspeaker.bfd.daemon import BfdDaemon
from lbspeaker.bfd.engine import Engine, SessionKey, SessionSpec, SessionStatus
from lbspeaker.bfd.session import Timers
from tests.unit.bfd.test_engine import free_ports

FAST = Timers(desired_min_tx=50_000, required_min_rx=50_000, detect_mult=3)
OURS = SessionKey(peer="127.0.0.2", local="127.0.0.1")
THEIRS = SessionKey(peer="127.0.0.1", local="127.0.0.2")


def wait(probe, timeout: float = 15.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.fixture
def peer_and_daemon() -> Iterator[tuple[Engine, BfdDaemon, list[SessionStatus], threading.Lock]]:
    ports = free_ports(4)
    lock = threading.Lock()
    peer = Engine(ports=(ports[2], ports[3]), peer_ports=(ports[0], ports[1]))
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            with lock:
                peer.run_once(max_wait=0.01)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    changes: list[SessionStatus] = []
    argv = [sys.executable, "-m", "lbspeaker.bfd", "--ports", f"{ports[0]},{ports[1]}",
            "--peer-ports", f"{ports[2]},{ports[3]}"]
    daemon = BfdDaemon(changes.append, argv=argv, backoff_initial=0.1)
    yield peer, daemon, changes, lock
    daemon.stop()
    stop.set()
    thread.join(5)
    peer.close()


def test_states_restart_and_a_silent_stop(peer_and_daemon) -> None:  # type: ignore[no-untyped-def]
    peer, daemon, changes, lock = peer_and_daemon
    daemon.set_sessions([])
    assert daemon.pid() is None  # nothing to run, no process
    with lock:
        peer.configure([SessionSpec(THEIRS, FAST)])
    daemon.set_sessions([SessionSpec(OURS, FAST)])
    wait(lambda: daemon.sessions().get(OURS) is not None and daemon.sessions()[OURS].state == "up", what="up")
    assert [c.state for c in changes][-1] == "up"
    daemon.set_sessions([SessionSpec(OURS, FAST)])  # the same set again: nothing written

    first = daemon.pid()
    assert first is not None
    os.kill(first, signal.SIGKILL)
    wait(lambda: daemon.sessions()[OURS].state == "down", what="down after the kill")
    wait(lambda: daemon.pid() not in (None, first) and daemon.sessions()[OURS].state == "up", what="restarted")
    assert daemon.starts == 2

    # The fast timers in force on both ends (the Poll Sequence after Up is over): detection is 150 ms.
    def fast() -> bool:
        with lock:
            return bool(peer.sessions()[THEIRS].detection_time_ms == 150.0)

    wait(fast, what="fast timers at the peer")
    daemon.stop()
    with lock:
        theirs = peer.sessions()[THEIRS]

    def peer_down() -> bool:
        with lock:
            return bool(peer.sessions()[THEIRS].state == "down")

    wait(peer_down, timeout=2, what="peer down")
    with lock:
        assert peer.sessions()[THEIRS].diag == "detection-time-expired"  # no AdminDown was sent
    assert theirs.state == "up"
