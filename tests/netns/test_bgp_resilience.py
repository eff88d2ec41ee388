"""BGP failure handling on the real kernel: reloads that touch one session, ExaBGP crashes, stop modes.

BIRD helps with graceful restart ("graceful restart on"): when a node's session drops without a
NOTIFICATION it keeps the node's routes as stale until the session returns and End-of-RIB arrives,
or the restart time (60 s here) runs out. ``show protocols all`` says "Neighbor graceful restart
active" meanwhile.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from lbspeaker_testkit.bird import BirdRouter, wait_until

from lbspeaker.bgp.model import Advertisement, BgpPeer
from tests.netns.bgp_lab import BgpLab, node_peer, paths_by_protocol, router_neighbor, skip_reason, wait_paths

SKIP = skip_reason()
pytestmark = [pytest.mark.netns, pytest.mark.skipif(SKIP is not None, reason=SKIP or "")]

GR_ACTIVE = "Neighbor graceful restart active"


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[BgpLab]:
    with BgpLab(tmp_path, nodes=2) as lab:
        yield lab


def gr_active(router: BirdRouter, protocol: str) -> bool:
    return GR_ACTIVE in router.protocol_detail(protocol)


def test_changing_one_peer_leaves_the_other_session_untouched(lab: BgpLab) -> None:
    router = lab.start_router([router_neighbor(1, hold_time=30), router_neighbor(1, v6=True, hold_time=30)])
    speaker = lab.start_speaker(1)
    routes = [Advertisement(prefix="203.0.113.60/32"), Advertisement(prefix="2001:db8:ff::60/128")]
    speaker.configure([node_peer(hold_time=30), node_peer(v6=True, hold_time=30)], routes)
    speaker.wait_session("192.0.2.1")
    speaker.wait_session("2001:db8:1::1")
    wait_paths(router, "203.0.113.60/32", {"n1"})
    wait_paths(router, "2001:db8:ff::60/128", {"n1v6"})
    before = router.protocols()

    speaker.configure([node_peer(hold_time=30), node_peer(v6=True, hold_time=20)], routes)

    def v6_reset() -> bool:
        now = router.protocols()["n1v6"]
        return now.since != before["n1v6"].since and now.established

    wait_until(v6_reset, 20, what="the IPv6 session to come back with the new hold time")
    # The negotiated hold time is the smaller of the two: ours now.
    assert router.protocol_detail("n1v6").split("Hold timer:")[1].split("\n")[0].strip().endswith("/20")
    after = router.protocols()
    assert after["n1"].since == before["n1"].since
    assert after["n1"].established
    # The IPv6 route survives the reset: ExaBGP resends it and our End-of-RIB ends the restart.
    wait_until(lambda: not gr_active(router, "n1v6"), 20, what="graceful restart of n1v6 to finish")
    assert set(paths_by_protocol(router, "2001:db8:ff::60/128")) == {"n1v6"}
    assert set(paths_by_protocol(router, "203.0.113.60/32")) == {"n1"}
    speaker.wait_stat("reloads", 1)
    assert speaker.stat("exabgp_starts") == 1


def test_killed_exabgp_routes_stay_stale_then_are_replayed(lab: BgpLab) -> None:
    router = lab.start_router([router_neighbor(1, hold_time=30)])
    # A 2 s restart delay leaves time to see the router hold the routes as stale.
    speaker = lab.start_speaker(1, extra_args=["--backoff-initial", "2"])
    routes = [
        Advertisement(prefix="203.0.113.70/32"),
        Advertisement(prefix="203.0.113.71/32", communities=("65000:7",)),
    ]
    speaker.configure([node_peer(hold_time=30)], routes)
    speaker.wait_session("192.0.2.1")
    wait_paths(router, "203.0.113.70/32", {"n1"})
    wait_paths(router, "203.0.113.71/32", {"n1"})
    pid = speaker.exabgp_pid()
    assert pid is not None

    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: gr_active(router, "n1"), 10, interval=0.05, what="BIRD to start helping the restart")
    assert not router.protocols()["n1"].established

    # Until the new ExaBGP has replayed and sent End-of-RIB, the routes must never leave the RIB.
    deadline = time.monotonic() + 30
    while True:
        routes_now = router.routes()
        assert "203.0.113.70/32" in routes_now and "203.0.113.71/32" in routes_now
        new_pid = speaker.exabgp_pid()
        if new_pid not in (None, pid) and router.protocols()["n1"].established and not gr_active(router, "n1"):
            break
        assert time.monotonic() < deadline, "ExaBGP was not restarted and replayed within 30 s"
        time.sleep(0.05)
    assert router.routes("203.0.113.71/32")["203.0.113.71/32"][0].communities == ("65000:7",)
    speaker.wait_session("192.0.2.1")
    speaker.wait_stat("prefixes/192.0.2.1", 2)
    assert speaker.stat("exabgp_starts") == 2


def test_graceful_stop_leaves_routes_stale_and_plain_stop_withdraws(lab: BgpLab) -> None:
    router = lab.start_router([router_neighbor(1, hold_time=30), router_neighbor(2, hold_time=30)])
    graceful = lab.start_speaker(1, extra_args=["--graceful-stop"])
    plain = lab.start_speaker(2)
    for speaker in (graceful, plain):
        speaker.configure([node_peer(hold_time=30)], [Advertisement(prefix="203.0.113.80/32")])
    for speaker in (graceful, plain):
        speaker.wait_session("192.0.2.1")
    wait_paths(router, "203.0.113.80/32", {"n1", "n2"})

    assert plain.stop() == 0
    wait_paths(router, "203.0.113.80/32", {"n1"}, timeout=5)

    assert graceful.stop() == 0
    wait_until(lambda: gr_active(router, "n1"), 10, what="graceful restart of n1")
    assert not router.protocols()["n1"].established
    assert set(paths_by_protocol(router, "203.0.113.80/32")) == {"n1"}


def test_reload_is_applied_while_another_peer_is_down(lab: BgpLab) -> None:
    # ExaBGP 5 skips a SIGUSR1 reload while any neighbour has routes queued, and routes queued for a
    # neighbour that never comes up stay queued. We only hand routes to established sessions, so the
    # dead peer below must not hold the reload up (nor force the restart fallback).
    router = lab.start_router([router_neighbor(1, hold_time=30)])
    speaker = lab.start_speaker(1)
    dead = BgpPeer(peer_address="192.0.2.99", peer_asn=64513, my_asn=64500, hold_time=30)
    routes = [Advertisement(prefix="203.0.113.90/32")]
    speaker.configure([node_peer(hold_time=30), dead], routes)
    speaker.wait_session("192.0.2.1")
    wait_paths(router, "203.0.113.90/32", {"n1"})
    assert speaker.session_state("192.0.2.99") != "established"
    before = router.protocols()["n1"].since

    speaker.configure([node_peer(hold_time=20), dead], routes)
    wait_until(
        lambda: router.protocols()["n1"].since != before and router.protocols()["n1"].established,
        20,
        what="the changed session to be re-established",
    )
    speaker.wait_stat("reloads", 1)
    assert speaker.stat("reload_signals") == 1  # applied at the first signal, no retry needed
    assert speaker.stat("exabgp_starts") == 1
    wait_until(lambda: not gr_active(router, "n1"), 20, what="graceful restart of n1 to finish")
    assert set(paths_by_protocol(router, "203.0.113.90/32")) == {"n1"}
