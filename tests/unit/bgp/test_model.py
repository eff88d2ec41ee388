"""BGP data types: normalisation and validation at construction."""

from __future__ import annotations

from typing import Any

import pytest

from lbspeaker.bgp.model import Advertisement, BgpPeer, PeerId, ResolvedPeer, SessionState


def test_peer_normalises_addresses_and_knows_its_family() -> None:
    peer = BgpPeer(peer_address="2001:DB8:1:0::1", peer_asn=64512, my_asn=64500, source_address="2001:db8:1::0:11")
    assert peer.peer_address == "2001:db8:1::1"
    assert peer.source_address == "2001:db8:1::11"
    assert peer.family == 6
    assert not peer.ibgp
    assert BgpPeer(peer_address="192.0.2.1", peer_asn=64500, my_asn=64500).ibgp


def test_password_is_not_in_repr() -> None:
    peer = BgpPeer(peer_address="192.0.2.1", peer_asn=1, my_asn=2, password="s3cr3t-pw")
    assert "s3cr3t-pw" not in repr(peer)
    assert "s3cr3t-pw" not in str(peer)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"peer_address": "192.0.2.300"}, "does not appear to be an IPv4 or IPv6 address"),
        ({"peer_asn": 0}, "peer-asn"),
        ({"my_asn": 2**32}, "my-asn"),
        ({"hold_time": 2}, "hold-time"),
        ({"peer_port": 0}, "peer-port"),
        ({"router_id": "2001:db8::1"}, "router-id"),
        ({"source_address": "2001:db8::1"}, "source-address"),
        ({"password": "x" * 81}, "password"),
    ],
)
def test_peer_rejects_bad_values(kwargs: dict[str, Any], message: str) -> None:
    base: dict[str, Any] = {"peer_address": "192.0.2.1", "peer_asn": 64512, "my_asn": 64500}
    base.update(kwargs)
    with pytest.raises(ValueError, match=message):
        BgpPeer(**base)


def test_hold_time_zero_is_allowed() -> None:
    assert BgpPeer(peer_address="192.0.2.1", peer_asn=1, my_asn=2, hold_time=0).hold_time == 0


def test_advertisement_normalises_prefix_and_sorts_communities() -> None:
    a = Advertisement(prefix="203.0.113.5/24", communities=("65000:2", "65000:1", "65000:2"))
    assert a.prefix == "203.0.113.0/24"
    assert a.communities == ("65000:1", "65000:2")
    assert a == Advertisement(prefix="203.0.113.0/24", communities=("65000:1", "65000:2"))
    assert Advertisement(prefix="2001:db8:ff::5/128").family == 6


@pytest.mark.parametrize(
    "kwargs",
    [
        {"communities": ("65536:1",)},
        {"communities": ("no-export",)},
        {"large_communities": ("1:2",)},
        {"large_communities": ("4294967296:1:1",)},
        {"localpref": -1},
    ],
)
def test_advertisement_rejects_bad_attributes(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Advertisement(prefix="203.0.113.5/32", **kwargs)


def test_peer_id_selector_names_every_part_of_the_exabgp_neighbour_name() -> None:
    resolved = ResolvedPeer(
        peer=BgpPeer(peer_address="192.0.2.1", peer_asn=64512, my_asn=64500),
        local_address="192.0.2.11",
        router_id="192.0.2.11",
    )
    assert resolved.id == PeerId("192.0.2.1", "192.0.2.11", 64500, 64512, "192.0.2.11")
    assert resolved.id.selector() == (
        "neighbor 192.0.2.1 local-ip 192.0.2.11 local-as 64500 peer-as 64512 router-id 192.0.2.11"
    )


def test_session_state_established() -> None:
    assert SessionState(peer="192.0.2.1", state="established", since=1.0).established
    assert not SessionState(peer="192.0.2.1", state="connected", since=1.0).established
