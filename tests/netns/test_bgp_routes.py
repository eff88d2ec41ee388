"""BGP on the real kernel: lbspeaker nodes (ExaBGP) announcing to a BIRD 2 router, whose RIB we read.

Each test builds its own lab (prefix "bgp") and deletes it afterwards, also on failure.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from lbspeaker_testkit.bird import wait_until

from lbspeaker.bgp.model import Advertisement, AdvSpec
from lbspeaker.bgp.routes import routes_for
from tests.netns.bgp_lab import (
    ROUTER_ASN,
    BgpLab,
    node_peer,
    node_v4,
    node_v6,
    paths_by_protocol,
    router_neighbor,
    skip_reason,
    wait_paths,
)

SKIP = skip_reason()
pytestmark = [pytest.mark.netns, pytest.mark.skipif(SKIP is not None, reason=SKIP or "")]

SERVICE = "203.0.113.10/32"


@pytest.fixture
def lab3(tmp_path: Path) -> Iterator[BgpLab]:
    with BgpLab(tmp_path, nodes=3) as lab:
        yield lab


def test_every_node_becomes_an_ecmp_next_hop_and_a_withdraw_removes_only_its_own(lab3: BgpLab) -> None:
    router = lab3.start_router([router_neighbor(i, hold_time=30) for i in (1, 2, 3)])
    speakers = [lab3.start_speaker(i) for i in (1, 2, 3)]
    for speaker in speakers:
        speaker.configure([node_peer(hold_time=30)], [Advertisement(prefix=SERVICE)])
    for speaker in speakers:
        speaker.wait_session("192.0.2.1")
    assert all(router.protocols()[f"n{i}"].established for i in (1, 2, 3))

    paths = wait_paths(router, SERVICE, {"n1", "n2", "n3"})
    assert {name: p.next_hop for name, p in paths.items()} == {f"n{i}": node_v4(i) for i in (1, 2, 3)}
    assert sum(p.primary for p in paths.values()) == 1
    # The kernel protocol merges the equal paths into one multipath route.
    kernel = wait_until(
        lambda: (lambda out: out if out.count("nexthop via") == 3 else None)(router.kernel_route(SERVICE)),
        10,
        what="ECMP kernel route",
    )
    assert all(f"via {node_v4(i)} " in kernel for i in (1, 2, 3))

    speakers[1].configure([node_peer(hold_time=30)], [])
    paths = wait_paths(router, SERVICE, {"n1", "n3"})
    assert {p.next_hop for p in paths.values()} == {node_v4(1), node_v4(3)}
    wait_until(lambda: router.kernel_route(SERVICE).count("nexthop via") == 2, 10, what="two next hops")
    speakers[1].wait_stat("prefixes/192.0.2.1", 0)


def test_communities_localpref_only_over_ibgp_and_aggregation(lab3: BgpLab) -> None:
    # n1 is an iBGP peer of the router (same AS), n2 an eBGP one.
    router = lab3.start_router([router_neighbor(1, asn=ROUTER_ASN), router_neighbor(2)])
    ibgp, ebgp = lab3.start_speaker(1), lab3.start_speaker(2)
    spec = AdvSpec(localpref=250, communities=("65000:1", "65535:65281"), large_communities=("64500:7:9",))
    host_routes = routes_for("203.0.113.20", [spec])
    aggregate = routes_for("203.0.113.77", [AdvSpec(aggregation_length=28, communities=("65000:2",))])
    ibgp.configure([node_peer(my_asn=ROUTER_ASN)], host_routes)
    ebgp.configure([node_peer()], host_routes + aggregate)
    ibgp.wait_session("192.0.2.1")
    ebgp.wait_session("192.0.2.1")

    paths = wait_paths(router, "203.0.113.20/32", {"n1", "n2"})
    assert paths["n1"].local_pref == 250
    assert paths["n2"].local_pref == 100  # eBGP: we do not send it, the router applies its default
    for path in paths.values():
        assert path.communities == ("65000:1", "65535:65281")
        assert path.large_communities == ("64500:7:9",)
    # The iBGP path wins on local preference.
    assert paths["n1"].primary

    agg = wait_paths(router, "203.0.113.64/28", {"n2"})
    assert agg["n2"].communities == ("65000:2",)
    assert not paths_by_protocol(router, "203.0.113.77/32")


def test_ipv6_routes_go_over_the_ipv6_session_only(lab3: BgpLab) -> None:
    router = lab3.start_router([router_neighbor(1), router_neighbor(1, v6=True)])
    speaker = lab3.start_speaker(1)
    speaker.configure(
        [node_peer(), node_peer(v6=True)],
        [
            Advertisement(prefix="203.0.113.30/32"),
            Advertisement(prefix="2001:db8:ff::30/128", communities=("65000:6",)),
        ],
    )
    speaker.wait_session("192.0.2.1")
    speaker.wait_session("2001:db8:1::1")
    v6 = wait_paths(router, "2001:db8:ff::30/128", {"n1v6"})
    assert v6["n1v6"].next_hop == node_v6(1)
    assert v6["n1v6"].communities == ("65000:6",)
    v4 = wait_paths(router, "203.0.113.30/32", {"n1"})
    assert v4["n1"].next_hop == node_v4(1)
    wait_until(lambda: "via 2001:db8:1::11" in router.kernel_route("2001:db8:ff::30/128"), 10, what="v6 kernel route")
    speaker.wait_stat("prefixes/192.0.2.1", 1)
    speaker.wait_stat("prefixes/2001:db8:1::1", 1)


def test_md5_password_session_and_a_wrong_password_is_refused(lab3: BgpLab) -> None:
    password = "pa$$ w0rd;{x}"
    router = lab3.start_router([router_neighbor(1, password=password), router_neighbor(2, password=password)])
    good, bad = lab3.start_speaker(1), lab3.start_speaker(2)
    good.configure([node_peer(password=password)], [Advertisement(prefix="203.0.113.40/32")])
    bad.configure([node_peer(password="not-the-password")], [Advertisement(prefix="203.0.113.40/32")])
    good.wait_session("192.0.2.1")
    wait_paths(router, "203.0.113.40/32", {"n1"})
    # Give the wrong key several connection attempts (BIRD retries every second, ExaBGP too).
    for _ in range(30):
        assert not router.protocols()["n2"].established
        assert bad.session_state("192.0.2.1") != "established"
        time.sleep(0.2)
    assert set(paths_by_protocol(router, "203.0.113.40/32")) == {"n1"}
    for speaker in (good, bad):
        log = speaker.log_tail(200_000)
        assert password not in log
        assert "not-the-password" not in log
