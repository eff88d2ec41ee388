"""Heartbeaters talking over loopback UDP: discovery, graceful leave, silent death, bad keys.

Only the final state is asserted; waits are bounded polls, never timing assertions.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from lbspeaker.membership import protocol
from lbspeaker.membership.heartbeat import Heartbeater
from lbspeaker.membership.tracker import Liveness

KEY = b"heartbeat-test-key-0123456789abc"
WAIT = 10.0  # generous upper bound for a loaded 2-core machine; the expected time is well under 1 s


def wait_for(predicate: Callable[[], bool], timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


class Node:
    def __init__(self, name: str, host: str, key: bytes = KEY) -> None:
        self.name = name
        self.tracker = Liveness(name, now=time.monotonic())
        self.changes = 0
        self._lock = threading.Lock()
        self.hb = Heartbeater(name, key, (host, 0), tracker=self.tracker, on_change=self._changed)

    def _changed(self) -> None:
        with self._lock:
            self.changes += 1

    def alive(self) -> frozenset[str]:
        return self.tracker.alive(time.monotonic())

    def state(self, node: str) -> str | None:
        return self.tracker.states(time.monotonic()).get(node)


def make_cluster(names: list[str], host: str = "127.0.0.1", keys: dict[str, bytes] | None = None) -> list[Node]:
    nodes = [Node(name, host, (keys or {}).get(name, KEY)) for name in names]
    for node in nodes:
        for other in nodes:
            h, port = other.hb.address
            addr = f"[{h}]:{port}" if ":" in h else f"{h}:{port}"
            node.tracker.lease_update(
                other.name, other.name, time.time(), 3600.0, addr, now=time.monotonic(), wall_now=time.time()
            )
        node.tracker.api_reachable(True, time.monotonic())
    return nodes


@pytest.fixture
def cluster() -> Iterator[list[Node]]:
    nodes = make_cluster(["node-a", "node-b", "node-c"])
    for node in nodes:
        node.hb.start()
    yield nodes
    for node in nodes:
        node.hb.stop(leaving=False)


def test_speakers_see_each_other_alive(cluster: list[Node]) -> None:
    everyone = {n.name for n in cluster}
    assert wait_for(lambda: all(n.alive() == everyone for n in cluster))
    for node in cluster:
        assert node.changes >= 1
        stats = node.hb.stats()
        assert stats["sent"] and stats["received"]
        assert stats["rejected"] == {}


def test_graceful_stop_is_seen_as_left(cluster: list[Node]) -> None:
    a, b, c = cluster
    everyone = {n.name for n in cluster}
    assert wait_for(lambda: all(n.alive() == everyone for n in cluster))
    c.hb.stop(leaving=True)
    assert "node-c" not in c.alive()
    assert wait_for(lambda: a.alive() == b.alive() == {"node-a", "node-b"})
    # "left", not "silent": the LEAVING datagram, not the timeout, removed it.
    assert a.state("node-c") == b.state("node-c") == "left"


def test_silent_death_is_noticed(cluster: list[Node]) -> None:
    a, b, c = cluster
    everyone = {n.name for n in cluster}
    assert wait_for(lambda: all(n.alive() == everyone for n in cluster))
    changes = a.changes
    c.hb.stop(leaving=False)
    assert wait_for(lambda: a.alive() == b.alive() == {"node-a", "node-b"})
    assert a.state("node-c") == b.state("node-c") == "silent"
    # Nothing but the timer noticed the death, and it told the speaker.
    assert wait_for(lambda: a.changes > changes)
    # The silenced node no longer sends, so it stops counting itself too.
    assert wait_for(lambda: c.state("node-c") == "not-sending")


def test_wrong_key_keeps_a_node_out_on_both_sides() -> None:
    nodes = make_cluster(["node-a", "node-b", "odd"], keys={"odd": b"a-different-key-0123456789abcdef"})
    a, b, odd = nodes
    for node in nodes:
        node.hb.start()
    try:
        assert wait_for(lambda: a.alive() == b.alive() == {"node-a", "node-b"} and odd.hb.rejected["mac"] > 0)
        # The odd node hears only datagrams it cannot verify, so it does not announce beside the others.
        assert wait_for(lambda: odd.state("odd") == "unverified")
        assert "odd" not in odd.alive()
        assert a.hb.rejected["mac"] > 0
    finally:
        for node in nodes:
            node.hb.stop(leaving=False)


def test_two_nodes_with_different_keys_fall_back_to_leases_alike() -> None:
    nodes = make_cluster(["node-a", "node-b"], keys={"node-b": b"a-different-key-0123456789abcdef"})
    a, b = nodes
    for node in nodes:
        node.hb.start()
    try:
        assert wait_for(lambda: a.hb.rejected["mac"] > 3 and b.hb.rejected["mac"] > 3)
        # Neither can tell who is misconfigured: both judge by Lease and so agree.
        assert wait_for(lambda: a.alive() == b.alive() == {"node-a", "node-b"})
        assert a.state("node-b") == b.state("node-a") == "lease-only"
    finally:
        for node in nodes:
            node.hb.stop(leaving=False)


def test_key_rotation_keeps_membership() -> None:
    new_key = b"the-next-heartbeat-key-abcdefghij"
    nodes = make_cluster(["node-a", "node-b"])
    a, b = nodes
    for node in nodes:
        node.hb.start()
    try:
        assert wait_for(lambda: a.alive() == b.alive() == {"node-a", "node-b"})
        # Step 1: both accept the new key; step 2: "a" signs with it first; step 3: old key dropped.
        a.hb.set_keys([KEY, new_key])
        b.hb.set_keys([KEY, new_key])
        a.hb.set_keys([new_key, KEY])
        b.hb.set_keys([new_key, KEY])
        a.hb.set_keys([new_key])
        b.hb.set_keys([new_key])
        received = b.hb.received
        assert wait_for(lambda: b.hb.received > received + 5)
        assert a.alive() == b.alive() == {"node-a", "node-b"}
    finally:
        for node in nodes:
            node.hb.stop(leaving=False)


def test_garbage_and_replays_are_counted_not_fatal(cluster: list[Node]) -> None:
    a = cluster[0]
    everyone = {n.name for n in cluster}
    assert wait_for(lambda: all(n.alive() == everyone for n in cluster))
    # Signed, but from a node without a Lease: accepted once, then refused as a replay.
    valid = protocol.encode(protocol.Heartbeat("node-x", 1, 1, time.time()), KEY)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for payload in (b"", b"LB", b"\xff" * 2000, valid, valid):
            sock.sendto(payload, a.hb.address)
    assert wait_for(lambda: a.hb.rejected["replay"] >= 1)
    assert a.hb.rejected["truncated"] >= 2 and a.hb.rejected["oversize"] >= 1
    assert a.state("node-x") == "no-lease"
    assert a.alive() == everyone


def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("Python built without IPv6 support")
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("::1 is not configured on this host (IPv6 disabled)")
    nodes = make_cluster(["v6-a", "v6-b"], host="::1")
    for node in nodes:
        node.hb.start()
    try:
        assert wait_for(lambda: all(n.alive() == {"v6-a", "v6-b"} for n in nodes))
    finally:
        for node in nodes:
            node.hb.stop(leaving=True)


def test_check_reports_a_deleted_lease_at_once(cluster: list[Node]) -> None:
    a = cluster[0]
    everyone = {n.name for n in cluster}
    assert wait_for(lambda: all(n.alive() == everyone for n in cluster))
    changes = a.changes
    a.tracker.lease_deleted("node-b")
    a.hb.check()
    assert a.changes > changes
    assert a.alive() == {"node-a", "node-c"}


def test_stop_before_start_and_twice_is_harmless() -> None:
    (node,) = make_cluster(["lonely"])
    node.hb.stop(leaving=True)
    node.hb.stop(leaving=True)
    assert "lonely" not in node.alive()
