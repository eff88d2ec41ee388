"""ExaBGP API command formatting."""

from __future__ import annotations

import pytest

from lbspeaker.bgp.commands import announce_command, diff_commands, encode_batch, eor_command, withdraw_command
from lbspeaker.bgp.model import Advertisement, PeerId
from lbspeaker.bgp.routes import RouteDiff

PEER = PeerId("192.0.2.1", "192.0.2.11", 64500, 64512, "192.0.2.11")
PEER6 = PeerId("2001:db8:1::1", "2001:db8:1::11", 64500, 64512, "192.0.2.11")
SELECTOR = "neighbor 192.0.2.1 local-ip 192.0.2.11 local-as 64500 peer-as 64512 router-id 192.0.2.11"


def test_announce_plain_route() -> None:
    assert announce_command(PEER, Advertisement(prefix="203.0.113.5/32")) == (
        f"{SELECTOR} announce route 203.0.113.5/32 next-hop self"
    )


def test_announce_with_every_attribute() -> None:
    route = Advertisement(
        prefix="203.0.113.0/24",
        localpref=200,
        communities=("65000:2", "65000:1"),
        large_communities=("64500:1:2",),
    )
    assert announce_command(PEER, route) == (
        f"{SELECTOR} announce route 203.0.113.0/24 next-hop self local-preference 200"
        " community [65000:1 65000:2] large-community [64500:1:2]"
    )


def test_withdraw_and_eor() -> None:
    assert withdraw_command(PEER, "203.0.113.5/32") == f"{SELECTOR} withdraw route 203.0.113.5/32 next-hop self"
    assert eor_command(PEER, 4) == f"{SELECTOR} announce eor ipv4 unicast"
    assert eor_command(PEER6, 6).endswith("announce eor ipv6 unicast")
    assert eor_command(PEER6, 6).startswith("neighbor 2001:db8:1::1 local-ip 2001:db8:1::11 ")


def test_diff_commands_keep_announcements_before_withdrawals() -> None:
    diff = RouteDiff(announce=(Advertisement(prefix="203.0.113.0/24"),), withdraw=("203.0.113.5/32",))
    lines = diff_commands(PEER, diff)
    assert [line.split(" ")[-5:-2] for line in lines] == [
        ["announce", "route", "203.0.113.0/24"],
        ["withdraw", "route", "203.0.113.5/32"],
    ]


def test_encode_batch_is_newline_terminated_ascii() -> None:
    assert encode_batch(["a", "b"]) == b"a\nb\n"
    assert encode_batch([]) == b""
    with pytest.raises(ValueError):
        encode_batch(["a\rb"])


def test_routes_with_the_same_attributes_are_batched() -> None:
    tagged = [Advertisement(prefix=f"203.0.113.{i}/32", communities=("65000:1",)) for i in range(1, 6)]
    plain = [Advertisement(prefix=f"2001:db8:ff::{i}/128") for i in range(1, 3)]
    lone = Advertisement(prefix="203.0.113.9/32")
    diff = RouteDiff(
        announce=(*tagged, *plain, lone),
        withdraw=("203.0.113.20/32", "203.0.113.21/32", "2001:db8:ff::20/128"),
    )
    lines = [line.removeprefix(SELECTOR + " ") for line in diff_commands(PEER, diff, batch=3)]
    assert lines == [
        "announce attributes next-hop self community [65000:1] nlri 203.0.113.1/32 203.0.113.2/32 203.0.113.3/32",
        "announce attributes next-hop self community [65000:1] nlri 203.0.113.4/32 203.0.113.5/32",
        "announce attributes next-hop self nlri 2001:db8:ff::1/128 2001:db8:ff::2/128",
        "announce route 203.0.113.9/32 next-hop self",
        "withdraw attributes next-hop self nlri 203.0.113.20/32 203.0.113.21/32",
        "withdraw route 2001:db8:ff::20/128 next-hop self",
    ]
