"""BGP session lifecycle against a real BIRD 2 router: peers that leave and come back, keepalives,
route refresh, password changes.

What the router does is what is asserted: its RIB, its protocol state and what arrives on its link.
BIRD helps with graceful restart here (60 s restart time), so a session closed without a NOTIFICATION
would leave our paths in its RIB as stale for a minute: the tests below would see them.
Each test builds its own lab (prefix "bgp") and deletes it afterwards, also on failure.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from lbspeaker_testkit.bird import BirdRouter, render_bird_config, wait_until

from lbspeaker.bgp.model import Advertisement
from tests.netns.bgp_lab import (
    ROUTER_ASN,
    ROUTER_V4,
    BgpLab,
    bgp_message_times,
    node_peer,
    node_v4,
    paths_by_protocol,
    router_neighbor,
    skip_reason,
    wait_paths,
)

SKIP = skip_reason()
pytestmark = [pytest.mark.netns, pytest.mark.skipif(SKIP is not None, reason=SKIP or "")]

ROUTES = [Advertisement(prefix="203.0.113.50/32"), Advertisement(prefix="203.0.113.51/32")]
GR_ACTIVE = "Neighbor graceful restart active"


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[BgpLab]:
    with BgpLab(tmp_path, nodes=2) as lab:
        yield lab


def both_paths(router: BirdRouter, protocols: set[str], timeout: float = 20.0) -> None:
    for route in ROUTES:
        wait_paths(router, route.prefix, protocols, timeout=timeout)


def test_removed_peer_is_withdrawn_at_once_and_gets_every_route_when_it_returns(lab: BgpLab) -> None:
    router = lab.start_router([router_neighbor(1, hold_time=30), router_neighbor(2, hold_time=30)])
    one, two = lab.start_speaker(1), lab.start_speaker(2)
    one.configure([node_peer(hold_time=30)], ROUTES)
    two.configure([node_peer(hold_time=30)], ROUTES)
    both_paths(router, {"n1", "n2"})

    # Without the peer: the paths go at once (withdrawn first), not after the restart time. BIRD
    # then helps with a restart of a session that holds nothing.
    one.configure([], ROUTES)
    both_paths(router, {"n2"}, timeout=3)

    # Back again: ExaBGP re-created the neighbour with an empty RIB; every route must be sent again.
    one.configure([node_peer(hold_time=30)], ROUTES)
    both_paths(router, {"n1", "n2"})
    time.sleep(1.5)  # bounded: they stay (a withdraw would show here)
    both_paths(router, {"n1", "n2"}, timeout=0.5)
    one.wait_stat("prefixes/192.0.2.1", 2)


def test_peer_removed_while_its_session_is_down_gets_every_route_when_it_returns(lab: BgpLab) -> None:
    # Nothing can be withdrawn from a session that is down, yet the reload that removes the peer still
    # deletes ExaBGP's RIB for it: when it returns, every route must be sent, not only End-of-RIB.
    router = lab.start_router([router_neighbor(1, hold_time=30)])
    speaker = lab.start_speaker(1)
    speaker.configure([node_peer(hold_time=30)], ROUTES)
    both_paths(router, {"n1"})
    router.birdc("disable", "n1")
    speaker.wait_session(ROUTER_V4, "down", timeout=10)
    speaker.configure([], ROUTES)
    speaker.wait_stat("reloads", 1)
    router.birdc("enable", "n1")
    speaker.configure([node_peer(hold_time=30)], ROUTES)
    speaker.wait_session(ROUTER_V4, timeout=20)
    both_paths(router, {"n1"}, timeout=10)


def test_my_asn_changed_and_changed_back_keeps_no_stale_path_and_loses_no_route(lab: BgpLab) -> None:
    # The router expects AS 64500: as 64501 the session cannot come up (BIRD refuses the OPEN).
    router = lab.start_router([router_neighbor(1, hold_time=30)])
    speaker = lab.start_speaker(1)
    speaker.configure([node_peer(hold_time=30)], ROUTES)
    both_paths(router, {"n1"})
    speaker.configure([node_peer(hold_time=30, my_asn=64501)], ROUTES)
    both_paths(router, set(), timeout=3)
    wait_until(lambda: "Bad peer AS" in router.protocol_detail("n1"), 20, what="the router refusing AS 64501")
    speaker.configure([node_peer(hold_time=30)], ROUTES)
    both_paths(router, {"n1"})
    wait_until(lambda: GR_ACTIVE not in router.protocol_detail("n1"), 20, what="no restart pending")
    both_paths(router, {"n1"}, timeout=0.5)


def test_keepalives_arrive_at_the_configured_rate(lab: BgpLab) -> None:
    router = lab.start_router([router_neighbor(1, hold_time=30)])
    speaker = lab.start_speaker(1)
    speaker.configure([node_peer(hold_time=9, keepalive_time=1)], ROUTES)
    wait_until(lambda: router.protocols()["n1"].established, 20, what="session")
    keepalives = [t for t, kind in bgp_message_times(lab.router_host, node_v4(1), 5.5) if kind == 4]
    # ExaBGP alone would send one every 3 s (hold time / 3): one or two in the window.
    assert len(keepalives) >= 4, keepalives
    gaps = [b - a for a, b in itertools.pairwise(keepalives)]
    assert max(gaps) < 1.6, gaps


def test_route_refresh_lets_the_router_reload_its_import_policy_without_a_reset(lab: BgpLab) -> None:
    hidden = ROUTES[1].prefix
    neighbor = router_neighbor(1, hold_time=30, import_filter=f"where net != {hidden}")
    router = lab.start_router([neighbor])
    speaker = lab.start_speaker(1)
    speaker.configure([node_peer(hold_time=30)], ROUTES)
    wait_paths(router, ROUTES[0].prefix, {"n1"})
    assert not paths_by_protocol(router, hidden)
    assert "Route refresh" in router.protocol_detail("n1").split("Neighbor capabilities")[1]
    before = router.protocols()["n1"].since

    # A new import policy: BIRD asks for our routes again (ROUTE-REFRESH) instead of resetting the
    # session, which it would have to do for a peer without the capability.
    router.reconfigure(render_bird_config(ROUTER_V4, ROUTER_ASN, [replace(neighbor, import_filter="all")]))
    wait_paths(router, hidden, {"n1"}, timeout=10)
    assert router.protocols()["n1"].since == before
    assert router.protocols()["n1"].established


def test_corrected_password_brings_the_session_back_within_two_seconds(lab: BgpLab) -> None:
    router = lab.start_router([router_neighbor(1, hold_time=30, password="right-one")])
    speaker = lab.start_speaker(1)
    speaker.configure([node_peer(hold_time=30, password="wrong-one")], ROUTES)
    time.sleep(6)  # several refused attempts: ExaBGP's retry delay has grown
    assert not router.protocols()["n1"].established
    started = time.monotonic()
    speaker.configure([node_peer(hold_time=30, password="right-one")], ROUTES)
    wait_until(lambda: router.protocols()["n1"].established, 10, interval=0.05, what="the session")
    assert time.monotonic() - started < 2.0
    both_paths(router, {"n1"}, timeout=5)
