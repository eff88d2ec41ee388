"""Supervisor and facade behaviour against a fake ExaBGP (no root, no network).

The fake reads the generated config, runs the real relay from its ``process`` section (so the relay,
the socket handshake and the command/ack flow are the real ones), reports every neighbour "up",
acks each command, reports announced/withdrawn prefixes as sent UPDATEs, re-reads its config on
SIGUSR1 and logs every command it receives. The network tests do the same against real ExaBGP and
BIRD; these tests cover restarts, reload retries and stop modes cheaply.
"""

from __future__ import annotations

import base64
import logging
import os
import signal
import socket
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lbspeaker.bgp import BgpSpeaker
from lbspeaker.bgp.model import Advertisement, BgpPeer, ResolvedPeer, SessionState
from lbspeaker.bgp.routes import routes_for_peer
from lbspeaker.bgp.supervisor import Backoff, Supervisor

FAKE_EXABGP = textwrap.dedent(
    r'''
    import json, os, re, select, signal, subprocess, sys, time

    conf = sys.argv[-1]
    log_path = os.environ["FAKE_LOG"]
    ignore_usr1 = os.environ.get("FAKE_IGNORE_USR1") == "1"

    def log(kind, text):
        with open(log_path, "a") as handle:
            handle.write(f"{os.getpid()} {kind} {text}\n")

    def parse(path):
        text = open(path).read()
        run = re.search(r"^\s*run (.*);$", text, re.M).group(1).split()
        neighbors = {}
        for match in re.finditer(r"^neighbor (\S+) \{(.*?)^\}", text, re.M | re.S):
            body = match.group(2)
            get = lambda key: re.search(rf"^\s*{key} (\S+);", body, re.M).group(1)
            password = re.search(r"md5-password (\S+);", body)
            neighbors[match.group(1)] = {
                "local": get("local-address"), "las": int(get("local-as")), "pas": int(get("peer-as")),
                "rid": get("router-id"), "hold": get("hold-time"), "pw": password.group(1) if password else None,
            }
        return run, neighbors

    def neighbor(peer, n, **extra):
        out = {"address": {"local": n["local"], "peer": peer}, "asn": {"local": n["las"], "peer": n["pas"]},
               "router-id": n["rid"]}
        out.update(extra)
        return out

    def state(peer, n, name, reason=""):
        return json.dumps({"exabgp": "5.0.0", "time": time.time(), "type": "state",
                           "neighbor": neighbor(peer, n, state=name, reason=reason)})

    def update(peer, n, action, prefix):
        if action == "announce":
            body = {"announce": {"ipv4 unicast": {n["local"]: [{"nlri": prefix}]}}}
        else:
            body = {"withdraw": {"ipv4 unicast": [{"nlri": prefix}]}}
        return json.dumps({"type": "update",
                           "neighbor": neighbor(peer, n, direction="send", message={"update": body})})

    run, neighbors = parse(conf)
    for n in neighbors.values():
        if n["pw"]:
            sys.stderr.write(f"network         md5 key is {n['pw']}\n")
    sys.stderr.write("reactor         loaded new configuration successfully\n")
    sys.stderr.flush()
    relay = subprocess.Popen(run, stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def send(line):
        relay.stdin.write((line + "\n").encode())
        relay.stdin.flush()

    reload = [False]
    signal.signal(signal.SIGUSR1, lambda *_: None if ignore_usr1 else reload.__setitem__(0, True))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    for peer, n in neighbors.items():
        send(state(peer, n, "up"))
    log("start", ",".join(sorted(neighbors)))
    log("relay", str(relay.pid))
    buf = b""
    control = os.environ.get("FAKE_CONTROL")
    handled = 0
    try:
        while True:
            ready, _, _ = select.select([relay.stdout], [], [], 0.05)
            if control and os.path.exists(control):
                # "down PEER" lines in the control file: that session drops (the router went away).
                orders = open(control).read().splitlines()
                for order in orders[handled:]:
                    verb, peer = order.split()
                    if verb == "down" and peer in neighbors:
                        send(state(peer, neighbors[peer], "down", "peer unreachable"))
                handled = len(orders)
            if reload[0]:
                reload[0] = False
                _, new = parse(conf)
                for peer in sorted(neighbors.keys() - new.keys()):
                    send(state(peer, neighbors[peer], "down", "removed"))
                for peer, n in sorted(new.items()):
                    if neighbors.get(peer) != n:
                        if peer in neighbors:
                            send(state(peer, neighbors[peer], "down", "changed"))
                        send(state(peer, n, "up"))
                neighbors = new
                log("reload", ",".join(sorted(new)))
                sys.stderr.write("reactor         loaded new configuration successfully\n")
                sys.stderr.flush()
            if not ready:
                continue
            data = os.read(relay.stdout.fileno(), 65536)
            if not data:
                break
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                text = line.decode()
                log("cmd", text)
                send("done")
                match = re.match(r"neighbor (\S+) .*? (announce|withdraw) (route|attributes) (.*)$", text)
                if match and match.group(1) in neighbors:
                    peer, action, form, rest = match.groups()
                    prefixes = [rest.split()[0]] if form == "route" else rest.split(" nlri ")[1].split()
                    for prefix in prefixes:
                        send(update(peer, neighbors[peer], action, prefix))
    finally:
        relay.kill()
    '''
)

V4_PEER = BgpPeer(peer_address="192.0.2.1", peer_asn=64512, my_asn=64500, hold_time=30)
V4_PEER_2 = BgpPeer(peer_address="192.0.2.2", peer_asn=64512, my_asn=64500, hold_time=30)
ROUTE_A = Advertisement(prefix="203.0.113.5/32")
ROUTE_B = Advertisement(prefix="203.0.113.6/32", communities=("65000:1",))


def local_address(peer: BgpPeer) -> str:
    return "192.0.2.11" if peer.family == 4 else "2001:db8:1::11"


def wait_for(probe: Callable[[], object], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class FakeLog:
    def __init__(self, path: Path) -> None:
        self.path = path

    def entries(self) -> list[tuple[int, str, str]]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            pid, kind, text = [*line.split(" ", 2), ""][:3]
            out.append((int(pid), kind, text))
        return out

    def commands(self, pid: int | None = None) -> list[str]:
        return [t for p, k, t in self.entries() if k == "cmd" and (pid is None or p == pid)]

    def starts(self) -> list[int]:
        return [p for p, k, _ in self.entries() if k == "start"]

    def relays(self) -> list[int]:
        return [int(t) for _, k, t in self.entries() if k == "relay"]

    def reloads(self) -> list[str]:
        """The neighbours of each reload, in order."""
        return [t for _, k, t in self.entries() if k == "reload"]


def serving(make: Callable[..., BgpSpeaker], peers: list[BgpPeer], routes: list[Advertisement]) -> BgpSpeaker:
    speaker = make()
    speaker.set_peers(peers)
    speaker.set_routes(routes)
    speaker.start()
    return speaker


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], FakeLog]:
    script = tmp_path / "fake_exabgp.py"
    script.write_text(FAKE_EXABGP)
    log_path = tmp_path / "fake.log"
    monkeypatch.setenv("FAKE_LOG", str(log_path))
    monkeypatch.setenv("FAKE_CONTROL", str(tmp_path / "fake.control"))
    return [sys.executable, str(script)], FakeLog(log_path)


@pytest.fixture
def speaker_factory(tmp_path: Path, fake: tuple[list[str], FakeLog]) -> Iterator[Callable[..., BgpSpeaker]]:
    made: list[BgpSpeaker] = []

    def make(events: list[SessionState] | None = None) -> BgpSpeaker:
        speaker = BgpSpeaker(
            "node-1",
            "192.0.2.11",
            tmp_path / "work",
            events.append if events is not None else None,
            exabgp_argv=fake[0],
            resolve_local_address=local_address,
            backoff_initial=0.05,
        )
        made.append(speaker)
        return speaker

    yield make
    for speaker in made:
        speaker.stop(graceful=True)


def prefixes(commands: list[str], action: str) -> list[str]:
    """The prefixes of the announce (or withdraw) commands, single or batched."""
    out: list[str] = []
    for command in commands:
        if f" {action} route " in command:
            out.append(command.split(f" {action} route ")[1].split(" ")[0])
        elif f" {action} attributes " in command:
            out.extend(command.split(" nlri ")[1].split())
    return out


def announced(commands: list[str]) -> list[str]:
    return prefixes(commands, "announce")


def test_routes_are_announced_once_the_session_is_up_then_end_of_rib(
    speaker_factory: Callable[..., BgpSpeaker], fake: tuple[list[str], FakeLog]
) -> None:
    events: list[SessionState] = []
    speaker = speaker_factory(events)
    speaker.set_peers([V4_PEER])
    speaker.set_routes([ROUTE_A, ROUTE_B, Advertisement(prefix="2001:db8:ff::5/128")])
    speaker.start()
    log = fake[1]
    wait_for(lambda: any("announce eor" in c for c in log.commands()), what="end-of-rib")
    commands = log.commands()
    selector = "neighbor 192.0.2.1 local-ip 192.0.2.11 local-as 64500 peer-as 64512 router-id 192.0.2.11"
    assert commands == [
        f"{selector} announce route 203.0.113.5/32 next-hop self",
        f"{selector} announce route 203.0.113.6/32 next-hop self community [65000:1]",
        f"{selector} announce eor ipv4 unicast",
    ]
    wait_for(lambda: speaker.stats().get("prefixes/192.0.2.1") == 2, what="updates reported")
    assert speaker.sessions()["192.0.2.1"].state == "established"
    assert [e.state for e in events] == ["established"]
    assert speaker.stats().get("command_errors", 0) == 0


def test_route_changes_are_sent_as_a_diff(
    speaker_factory: Callable[..., BgpSpeaker], fake: tuple[list[str], FakeLog]
) -> None:
    speaker = speaker_factory()
    speaker.set_peers([V4_PEER])
    speaker.set_routes([ROUTE_A, ROUTE_B])
    speaker.start()
    log = fake[1]
    wait_for(lambda: len(log.commands()) == 3, what="initial announcements")
    changed_b = Advertisement(prefix="203.0.113.6/32", communities=("65000:2",))
    speaker.set_routes([changed_b, Advertisement(prefix="203.0.113.7/32")])
    wait_for(lambda: len(log.commands()) == 6, what="diff")
    tail = [c.split(" ", 10)[-1] for c in log.commands()[3:]]
    assert tail == [
        "announce route 203.0.113.6/32 next-hop self community [65000:2]",
        "announce route 203.0.113.7/32 next-hop self",
        "withdraw route 203.0.113.5/32 next-hop self",
    ]
    wait_for(lambda: speaker.stats().get("prefixes/192.0.2.1") == 2, what="prefix count")
    assert speaker.stats()["routes_withdrawn"] == 1


def test_killed_exabgp_is_restarted_and_every_route_replayed(
    speaker_factory: Callable[..., BgpSpeaker], fake: tuple[list[str], FakeLog]
) -> None:
    events: list[SessionState] = []
    speaker = speaker_factory(events)
    speaker.set_peers([V4_PEER])
    speaker.set_routes([ROUTE_A, ROUTE_B])
    speaker.start()
    log = fake[1]
    wait_for(lambda: len(log.commands()) == 3, what="first announcements")
    first = speaker.exabgp_pid()
    assert first is not None
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: len(log.starts()) == 2 and len(log.commands(log.starts()[1])) == 3, what="replay")
    second = log.starts()[1]
    assert second != first
    assert announced(log.commands(second)) == ["203.0.113.5/32", "203.0.113.6/32"]
    assert log.commands(second)[-1].endswith("announce eor ipv4 unicast")
    stats = speaker.stats()
    assert stats["exabgp_starts"] == 2
    assert stats["exabgp_exits"] == 1
    assert [e.state for e in events] == ["established", "down", "established"]
    assert events[1].reason == "exabgp exited"


def test_peer_change_reloads_exabgp_without_restarting_it(
    speaker_factory: Callable[..., BgpSpeaker], fake: tuple[list[str], FakeLog]
) -> None:
    speaker = speaker_factory()
    speaker.set_peers([V4_PEER])
    speaker.set_routes([ROUTE_A])
    speaker.start()
    log = fake[1]
    wait_for(lambda: len(log.commands()) == 2, what="first peer served")
    speaker.set_peers([V4_PEER, V4_PEER_2])
    wait_for(lambda: any(c.startswith("neighbor 192.0.2.2 ") for c in log.commands()), what="second peer served")
    assert len(log.starts()) == 1
    assert [t for _, k, t in log.entries() if k == "reload"] == ["192.0.2.1,192.0.2.2"]
    new = [c for c in log.commands() if c.startswith("neighbor 192.0.2.2 ")]
    assert announced(new) == ["203.0.113.5/32"]
    assert new[-1].endswith("announce eor ipv4 unicast")
    # The unchanged peer got nothing again: ExaBGP kept its routes.
    assert len([c for c in log.commands() if c.startswith("neighbor 192.0.2.1 ")]) == 2
    wait_for(lambda: speaker.stats().get("reloads") == 1, what="reload counted")
    assert set(speaker.sessions()) == {"192.0.2.1", "192.0.2.2"}


def test_ignored_reload_signals_end_in_a_restart(
    tmp_path: Path, fake: tuple[list[str], FakeLog], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_IGNORE_USR1", "1")
    supervisor = Supervisor(
        tmp_path / "work", exabgp_argv=fake[0], backoff_initial=0.05, reload_timeout=0.1, reload_attempts=3
    )
    one = ResolvedPeer(peer=V4_PEER, local_address="192.0.2.11", router_id="192.0.2.11")
    two = ResolvedPeer(peer=V4_PEER_2, local_address="192.0.2.11", router_id="192.0.2.11")
    routes = {"203.0.113.5/32": ROUTE_A}
    supervisor.update([one], {one.id: routes_for_peer(V4_PEER, routes)})
    supervisor.start()
    try:
        log = fake[1]
        wait_for(lambda: len(log.commands()) == 2, what="first peer served")
        supervisor.update([one, two], {p.id: routes_for_peer(p.peer, routes) for p in (one, two)})
        wait_for(lambda: len(log.starts()) == 2, what="restart after ignored reloads")
        second = log.starts()[1]
        wait_for(lambda: len(log.commands(second)) == 4, what="both peers served by the new ExaBGP")
        assert supervisor.stats()["reload_timeouts"] == 1
    finally:
        supervisor.stop(graceful=True)


def test_stop_not_graceful_withdraws_before_exabgp_goes(
    speaker_factory: Callable[..., BgpSpeaker], fake: tuple[list[str], FakeLog]
) -> None:
    speaker = speaker_factory()
    speaker.set_peers([V4_PEER])
    speaker.set_routes([ROUTE_A, ROUTE_B])
    speaker.start()
    log = fake[1]
    wait_for(lambda: speaker.stats().get("prefixes/192.0.2.1") == 2, what="routes on the wire")
    speaker.stop(graceful=False)
    assert prefixes(log.commands(), "withdraw") == ["203.0.113.5/32", "203.0.113.6/32"]
    assert speaker.exabgp_pid() is None
    assert speaker.sessions()["192.0.2.1"].state == "down"


def test_stop_graceful_leaves_routes_to_graceful_restart(
    speaker_factory: Callable[..., BgpSpeaker], fake: tuple[list[str], FakeLog]
) -> None:
    speaker = speaker_factory()
    speaker.set_peers([V4_PEER])
    speaker.set_routes([ROUTE_A])
    speaker.start()
    log = fake[1]
    wait_for(lambda: speaker.stats().get("prefixes/192.0.2.1") == 1, what="route on the wire")
    speaker.stop(graceful=True)
    assert prefixes(log.commands(), "withdraw") == []
    assert speaker.exabgp_pid() is None


def test_password_never_reaches_the_logs(
    speaker_factory: Callable[..., BgpSpeaker], fake: tuple[list[str], FakeLog], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    speaker = speaker_factory()
    peer = BgpPeer(peer_address="192.0.2.1", peer_asn=64512, my_asn=64500, password="Very$ecret")
    speaker.set_peers([peer])
    speaker.start()
    wait_for(lambda: "md5 key is" in caplog.text, what="the fake's md5 log line")
    assert "<redacted>" in caplog.text
    assert "Very$ecret" not in caplog.text
    assert base64.b64encode(b"Very$ecret").decode() not in caplog.text
    assert "Very$ecret" not in repr(speaker.sessions())


def test_unreachable_peer_is_reported_idle_with_the_reason(tmp_path: Path) -> None:
    def unreachable(peer: BgpPeer) -> str:
        raise OSError(101, "Network is unreachable")

    speaker = BgpSpeaker("node-1", "192.0.2.11", tmp_path / "work", resolve_local_address=unreachable)
    speaker.set_peers([V4_PEER])
    state = speaker.sessions()["192.0.2.1"]
    assert state.state == "idle"
    assert "Network is unreachable" in state.reason


def test_peer_without_router_id_is_left_out(tmp_path: Path) -> None:
    speaker = BgpSpeaker("node-1", None, tmp_path / "work", resolve_local_address=local_address)
    speaker.set_peers([BgpPeer(peer_address="2001:db8:1::1", peer_asn=64512, my_asn=64500)])
    assert "router id" in speaker.sessions()["2001:db8:1::1"].reason


def test_backoff_doubles_to_the_cap_and_resets_after_a_stable_run() -> None:
    backoff = Backoff(initial=0.5, maximum=30.0, stable_after=60.0)
    delays = [backoff.delay(ran=1.0) for _ in range(9)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert backoff.delay(ran=61.0) == 0.5
    assert backoff.delay(ran=1.0) == 1.0


def test_no_exabgp_without_peers(speaker_factory: Callable[..., BgpSpeaker], fake: tuple[list[str], FakeLog]) -> None:
    speaker = speaker_factory()
    speaker.set_routes([ROUTE_A])
    speaker.start()
    time.sleep(0.5)  # bounded look for a start that must not happen
    assert speaker.exabgp_pid() is None
    assert fake[1].starts() == []
    speaker.set_peers([V4_PEER])
    wait_for(lambda: len(fake[1].commands()) == 2, what="ExaBGP started once peers exist")
    assert len(fake[1].starts()) == 1


def test_lost_api_connection_restarts_exabgp(
    speaker_factory: Callable[..., BgpSpeaker], fake: tuple[list[str], FakeLog]
) -> None:
    speaker = speaker_factory()
    speaker.set_peers([V4_PEER])
    speaker.set_routes([ROUTE_A])
    speaker.start()
    log = fake[1]
    wait_for(lambda: len(log.commands()) == 2, what="first ExaBGP served")
    os.kill(log.relays()[0], signal.SIGKILL)
    wait_for(lambda: len(log.starts()) == 2 and len(log.commands(log.starts()[1])) == 2, what="restart and replay")
    assert speaker.stats()["exabgp_starts"] == 2


def test_api_socket_refuses_a_stranger(tmp_path: Path, fake: tuple[list[str], FakeLog]) -> None:
    supervisor = Supervisor(tmp_path / "work", exabgp_argv=fake[0])
    one = ResolvedPeer(peer=V4_PEER, local_address="192.0.2.11", router_id="192.0.2.11")
    supervisor.update([one], {one.id: {}})
    supervisor.start()
    try:
        log = fake[1]
        wait_for(lambda: len(log.commands()) == 1, what="end-of-rib from the genuine relay")
        path = supervisor.api_socket_path
        assert path is not None
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stranger:
            stranger.settimeout(5)
            stranger.connect(str(path))
            stranger.sendall(
                b"lbspeaker-relay not-the-token\nneighbor 192.0.2.1 announce route 203.0.113.99/32 next-hop self\n"
            )
            try:
                closed = stranger.recv(100) == b""
            except ConnectionResetError:  # closed with our bytes unread
                closed = True
            assert closed
        supervisor.update([one], {one.id: {"203.0.113.5/32": ROUTE_A}})
        wait_for(lambda: len(log.commands()) == 2, what="the genuine relay still in charge")
        assert announced(log.commands()) == ["203.0.113.5/32"]
        assert len(log.starts()) == 1
    finally:
        supervisor.stop(graceful=True)


def test_new_asn_is_a_new_session_that_gets_every_route(
    speaker_factory: Callable[..., BgpSpeaker], fake: tuple[list[str], FakeLog]
) -> None:
    speaker = speaker_factory()
    speaker.set_peers([V4_PEER])
    speaker.set_routes([ROUTE_A])
    speaker.start()
    log = fake[1]
    wait_for(lambda: len(log.commands()) == 2, what="first definition served")
    renumbered = BgpPeer(peer_address="192.0.2.1", peer_asn=64999, my_asn=64500, hold_time=30)
    speaker.set_peers([renumbered])
    wait_for(lambda: any("peer-as 64999 " in c and "eor" in c for c in log.commands()), what="new definition served")
    new = [c for c in log.commands() if "peer-as 64999 " in c]
    assert announced(new) == ["203.0.113.5/32"]
    assert speaker.sessions()["192.0.2.1"].state == "established"
    assert len(log.starts()) == 1


def test_peer_removed_then_added_back_gets_every_route_again(
    speaker_factory: Callable[..., BgpSpeaker], fake: tuple[list[str], FakeLog]
) -> None:
    # ExaBGP deletes the RIB of a neighbour a reload drops: when it comes back, it starts empty.
    speaker = serving(speaker_factory, [V4_PEER, V4_PEER_2], [ROUTE_A, ROUTE_B])
    log = fake[1]
    wait_for(lambda: len(log.commands()) == 6, what="both peers served")
    speaker.set_peers([V4_PEER])
    wait_for(lambda: log.reloads() == ["192.0.2.1"], what="peer 2 removed")
    speaker.set_peers([V4_PEER, V4_PEER_2])
    wait_for(lambda: len(log.reloads()) == 2, what="peer 2 back")
    wait_for(lambda: log.commands()[-1].startswith("neighbor 192.0.2.2 ") and "eor" in log.commands()[-1],
             what="end-of-rib to the returning peer")
    withdrawal = next(i for i, c in enumerate(log.commands()) if " withdraw " in c)
    assert announced(log.commands()[withdrawal + 1 :]) == ["203.0.113.5/32", "203.0.113.6/32"]
    wait_for(lambda: speaker.stats().get("prefixes/192.0.2.2") == 2, what="routes on the wire again")


def test_removing_an_established_peer_withdraws_its_routes_before_the_reload(
    speaker_factory: Callable[..., BgpSpeaker], fake: tuple[list[str], FakeLog]
) -> None:
    speaker = serving(speaker_factory, [V4_PEER, V4_PEER_2], [ROUTE_A, ROUTE_B])
    log = fake[1]
    wait_for(lambda: speaker.stats().get("prefixes/192.0.2.2") == 2, what="routes on the wire")
    started = time.monotonic()
    speaker.set_peers([V4_PEER])
    wait_for(lambda: log.reloads(), what="the reload")
    assert time.monotonic() - started < 1.0  # the withdrawals confirmed, not a timeout
    kinds = [(k, t) for _, k, t in log.entries() if k in ("cmd", "reload")]
    tail = kinds[kinds.index(next(e for e in kinds if e[0] == "cmd" and "withdraw" in e[1])) :]
    selector = "neighbor 192.0.2.2 local-ip 192.0.2.11 local-as 64500 peer-as 64512 router-id 192.0.2.11"
    assert tail == [
        ("cmd", f"{selector} withdraw attributes next-hop self nlri 203.0.113.5/32 203.0.113.6/32"),
        ("reload", "192.0.2.1"),
    ]
    assert prefixes([c for c in log.commands() if c.startswith("neighbor 192.0.2.1 ")], "withdraw") == []


def test_asn_changed_and_changed_back_gets_every_route_again(
    speaker_factory: Callable[..., BgpSpeaker], fake: tuple[list[str], FakeLog]
) -> None:
    speaker = serving(speaker_factory, [V4_PEER], [ROUTE_A])
    log = fake[1]
    wait_for(lambda: len(log.commands()) == 2, what="first definition served")
    speaker.set_peers([BgpPeer(peer_address="192.0.2.1", peer_asn=64512, my_asn=64501, hold_time=30)])
    wait_for(lambda: any("local-as 64501 " in c and "eor" in c for c in log.commands()), what="renumbered")
    speaker.set_peers([V4_PEER])
    wait_for(lambda: len(log.reloads()) == 2, what="numbered back")
    wait_for(lambda: log.commands()[-1].endswith("local-as 64500 peer-as 64512 router-id 192.0.2.11 announce eor"
                                                 " ipv4 unicast"), what="end-of-rib after the way back")
    assert log.commands()[-2].endswith("local-as 64500 peer-as 64512 router-id 192.0.2.11 announce route "
                                       "203.0.113.5/32 next-hop self")


def test_peer_removed_while_its_session_is_down_gets_every_route_when_it_returns(
    tmp_path: Path, speaker_factory: Callable[..., BgpSpeaker], fake: tuple[list[str], FakeLog]
) -> None:
    # Nothing to withdraw from a session that is down, but the reload still deletes ExaBGP's RIB for it.
    speaker = serving(speaker_factory, [V4_PEER, V4_PEER_2], [ROUTE_A])
    log = fake[1]
    wait_for(lambda: speaker.stats().get("prefixes/192.0.2.2") == 1, what="route on the wire")
    (tmp_path / "fake.control").write_text("down 192.0.2.2\n")
    wait_for(lambda: speaker.sessions()["192.0.2.2"].state == "down", what="session down")
    speaker.set_peers([V4_PEER])
    wait_for(lambda: len(log.reloads()) == 1, what="peer 2 removed")
    before = len(log.commands())
    speaker.set_peers([V4_PEER, V4_PEER_2])
    wait_for(lambda: any("eor" in c for c in log.commands()[before:]), what="peer 2 served again")
    assert announced(log.commands()[before:]) == ["203.0.113.5/32"]
    assert prefixes(log.commands(), "withdraw") == []  # it was down: nothing to withdraw
