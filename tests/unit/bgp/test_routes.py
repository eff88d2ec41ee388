"""Desired-route computation and diffing."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lbspeaker.bgp.model import Advertisement, AdvSpec, BgpPeer
from lbspeaker.bgp.routes import apply_diff, diff_routes, merge_routes, routes_for, routes_for_peer

EBGP_V4 = BgpPeer(peer_address="192.0.2.1", peer_asn=64512, my_asn=64500)
IBGP_V4 = BgpPeer(peer_address="192.0.2.1", peer_asn=64500, my_asn=64500)
EBGP_V6 = BgpPeer(peer_address="2001:db8:1::1", peer_asn=64512, my_asn=64500)


def test_no_advertisement_gives_host_route_without_attributes() -> None:
    assert routes_for("203.0.113.5", []) == [Advertisement(prefix="203.0.113.5/32")]
    assert routes_for("2001:db8:ff::5", []) == [Advertisement(prefix="2001:db8:ff::5/128")]


def test_aggregation_gives_the_covering_prefix_per_family() -> None:
    spec = AdvSpec(aggregation_length=24, aggregation_length_v6=64, localpref=150, communities=("65000:1",))
    assert routes_for("203.0.113.77", [spec]) == [
        Advertisement(prefix="203.0.113.0/24", localpref=150, communities=("65000:1",))
    ]
    assert routes_for("2001:db8:ff::77", [spec]) == [
        Advertisement(prefix="2001:db8:ff::/64", localpref=150, communities=("65000:1",))
    ]


def test_several_advertisements_give_several_routes_sorted() -> None:
    routes = routes_for(
        "203.0.113.77",
        [AdvSpec(aggregation_length=32, communities=("65000:1",)), AdvSpec(aggregation_length=24, localpref=50)],
    )
    assert routes == [
        Advertisement(prefix="203.0.113.0/24", localpref=50),
        Advertisement(prefix="203.0.113.77/32", communities=("65000:1",)),
    ]


def test_advertisements_on_the_same_prefix_merge() -> None:
    routes = routes_for(
        "203.0.113.77",
        [
            AdvSpec(communities=("65000:1",), large_communities=("1:2:3",)),
            AdvSpec(localpref=200, communities=("65000:2",)),
        ],
    )
    assert routes == [
        Advertisement(
            prefix="203.0.113.77/32", localpref=200, communities=("65000:1", "65000:2"), large_communities=("1:2:3",)
        )
    ]


def test_aggregation_length_out_of_range_is_rejected() -> None:
    with pytest.raises(ValueError, match="aggregation length 33"):
        routes_for("203.0.113.5", [AdvSpec(aggregation_length=33)])


def test_services_aggregating_to_one_prefix_become_one_route() -> None:
    spec = AdvSpec(aggregation_length=24)
    all_routes = routes_for("203.0.113.5", [spec]) + routes_for("203.0.113.9", [spec])
    assert merge_routes(all_routes) == {"203.0.113.0/24": Advertisement(prefix="203.0.113.0/24")}


def test_merge_takes_union_of_communities_and_highest_localpref() -> None:
    merged = merge_routes(
        [
            Advertisement(prefix="203.0.113.0/24", localpref=100, communities=("65000:1",)),
            Advertisement(prefix="203.0.113.0/24", communities=("65000:2",), large_communities=("1:1:1",)),
            Advertisement(prefix="203.0.113.0/24", localpref=300),
        ]
    )
    assert merged["203.0.113.0/24"] == Advertisement(
        prefix="203.0.113.0/24", localpref=300, communities=("65000:1", "65000:2"), large_communities=("1:1:1",)
    )


_route = st.builds(
    Advertisement,
    prefix=st.sampled_from(["203.0.113.0/24", "203.0.113.5/32", "2001:db8:ff::/64"]),
    localpref=st.one_of(st.none(), st.integers(0, 1000)),
    communities=st.lists(st.sampled_from(["65000:1", "65000:2", "65535:65282"]), max_size=3).map(tuple),
    large_communities=st.lists(st.sampled_from(["1:2:3", "64500:0:1"]), max_size=2).map(tuple),
)


@given(st.lists(_route, max_size=8), st.randoms())
def test_merge_does_not_depend_on_order(routes: list[Advertisement], rnd: random.Random) -> None:
    shuffled = list(routes)
    rnd.shuffle(shuffled)
    assert merge_routes(routes) == merge_routes(shuffled)


def test_localpref_only_over_ibgp() -> None:
    routes = merge_routes([Advertisement(prefix="203.0.113.5/32", localpref=200, communities=("65000:1",))])
    assert routes_for_peer(EBGP_V4, routes)["203.0.113.5/32"] == Advertisement(
        prefix="203.0.113.5/32", communities=("65000:1",)
    )
    assert routes_for_peer(IBGP_V4, routes)["203.0.113.5/32"].localpref == 200


def test_routes_go_to_sessions_of_their_family() -> None:
    routes = merge_routes([Advertisement(prefix="203.0.113.5/32"), Advertisement(prefix="2001:db8:ff::5/128")])
    assert set(routes_for_peer(EBGP_V4, routes)) == {"203.0.113.5/32"}
    assert set(routes_for_peer(EBGP_V6, routes)) == {"2001:db8:ff::5/128"}


def test_diff_announces_new_withdraws_gone_and_only_reannounces_changed() -> None:
    current = {
        "203.0.113.5/32": Advertisement(prefix="203.0.113.5/32"),
        "203.0.113.6/32": Advertisement(prefix="203.0.113.6/32"),
        "203.0.113.7/32": Advertisement(prefix="203.0.113.7/32"),
    }
    desired = {
        "203.0.113.5/32": Advertisement(prefix="203.0.113.5/32"),
        "203.0.113.6/32": Advertisement(prefix="203.0.113.6/32", communities=("65000:1",)),
        "203.0.113.8/32": Advertisement(prefix="203.0.113.8/32"),
    }
    diff = diff_routes(desired, current)
    assert [r.prefix for r in diff.announce] == ["203.0.113.6/32", "203.0.113.8/32"]
    # A changed route is replaced by the new announcement (implicit withdraw), never withdrawn first.
    assert diff.withdraw == ("203.0.113.7/32",)
    apply_diff(current, diff)
    assert current == desired
    assert not diff_routes(desired, current)


def test_diff_is_empty_when_nothing_changed() -> None:
    routes = {"203.0.113.5/32": Advertisement(prefix="203.0.113.5/32")}
    diff = diff_routes(routes, dict(routes))
    assert not diff
    assert diff.announce == () and diff.withdraw == ()


@given(st.lists(_route, max_size=6), st.lists(_route, max_size=6))
def test_applying_a_diff_reaches_the_desired_state(
    desired_list: list[Advertisement], current_list: list[Advertisement]
) -> None:
    desired = merge_routes(desired_list)
    current = merge_routes(current_list)
    apply_diff(current, diff_routes(desired, current))
    assert current == desired
