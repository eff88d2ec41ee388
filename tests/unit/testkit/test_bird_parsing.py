"""Parsing BIRD 2 output (lbspeaker_testkit.bird), against text captured from BIRD 2.0.12 in the lab
(two nodes announcing 203.0.113.5/32, one with communities, and an IPv6 route over an IPv6 session)."""

from __future__ import annotations

from pathlib import Path

import pytest
from lbspeaker_testkit.bird import BirdNeighbor, parse_show_protocols, parse_show_route, render_bird_config

HERE = Path(__file__).parent
SHOW_ROUTE_ALL = (HERE / "test_bgp_bird_show_route_all.txt").read_text()
SHOW_PROTOCOLS = (HERE / "test_bgp_bird_show_protocols.txt").read_text()


def test_show_route_all_lists_every_path_with_its_attributes() -> None:
    routes = parse_show_route(SHOW_ROUTE_ALL)
    assert set(routes) == {"192.0.2.0/24", "203.0.113.5/32", "2001:db8:ff::5/128", "2001:db8:1::/64"}
    first, second = routes["203.0.113.5/32"]
    assert (first.protocol, first.primary, first.next_hop) == ("n1", True, "192.0.2.11")
    assert (second.protocol, second.primary, second.next_hop) == ("n2", False, "192.0.2.12")
    assert first.since == "2026-11-22 11:35:34.220"
    assert first.communities == ("65000:1", "65000:2")
    assert first.large_communities == ("64500:1:2",)
    assert first.local_pref == 100
    assert second.communities == ()
    (v6,) = routes["2001:db8:ff::5/128"]
    assert (v6.protocol, v6.gateway) == ("n1v6", "2001:db8:1::11")
    (direct,) = routes["192.0.2.0/24"]
    assert direct.gateway is None and direct.next_hop is None


def test_show_protocols() -> None:
    protocols = parse_show_protocols(SHOW_PROTOCOLS)
    assert protocols["n1"].established
    assert protocols["n1"].since == "2026-11-22 11:35:34.183"
    assert protocols["kernel4"].table == "master4"
    assert not protocols["kernel4"].established
    assert set(protocols) == {"device1", "direct1", "kernel4", "kernel6", "n1", "n2", "n1v6"}


def test_bird_config_for_ebgp_ibgp_and_password() -> None:
    config = render_bird_config(
        "192.0.2.1",
        64512,
        [
            BirdNeighbor(name="n1", address="192.0.2.11", asn=64500, local_address="192.0.2.1", password="pa ss"),
            BirdNeighbor(name="n2", address="2001:db8:1::12", asn=64512, local_address="2001:db8:1::1"),
        ],
    )
    assert 'password "pa ss";' in config
    assert "ipv6 { import all; export none; };" in config
    assert "direct;" in config.split("protocol bgp n2")[1]
    assert "merge paths on" in config
    with pytest.raises(ValueError):
        render_bird_config(
            "192.0.2.1",
            64512,
            [BirdNeighbor(name="n1", address="192.0.2.11", asn=1, local_address="192.0.2.1", password='a"b')],
        )
