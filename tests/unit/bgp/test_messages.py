"""Parsing ExaBGP 5 API messages, against lines captured from a real ExaBGP 5.0.15 run.

The fixture (test_bgp_exabgp5_messages.jsonl) is the API traffic of one node with an IPv4 and an
IPv6 session to BIRD: sessions coming up, three routes with attributes announced, two withdrawn,
End-of-RIB, the IPv4 session reset by the router and re-established, and a shutdown. It was taken
from the speaker's debug log ("from ExaBGP: ...").
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lbspeaker.bgp.messages import Ack, MessageError, Other, StateChange, UpdateSent, parse_line, reload_outcome
from lbspeaker.bgp.model import PeerId

FIXTURE = Path(__file__).with_name("test_bgp_exabgp5_messages.jsonl")
V4 = PeerId("192.0.2.1", "192.0.2.11", 64500, 64512, "192.0.2.11")
V6 = PeerId("2001:db8:1::1", "2001:db8:1::11", 64500, 64512, "192.0.2.11")


@pytest.fixture(scope="module")
def messages() -> list[object]:
    return [parse_line(line) for line in FIXTURE.read_text().splitlines() if line.strip()]


def test_every_captured_line_parses(messages: list[object]) -> None:
    kinds = {type(m).__name__ for m in messages}
    assert kinds == {"Ack", "StateChange", "UpdateSent", "Other"}


def test_state_changes(messages: list[object]) -> None:
    states = [(m.peer, m.state) for m in messages if isinstance(m, StateChange)]
    assert states[:4] == [(V4, "connected"), (V6, "connected"), (V4, "up"), (V6, "up")]
    downs = [m for m in messages if isinstance(m, StateChange) and m.state == "down"]
    assert downs[0].peer == V4
    assert downs[0].reason == "notification received (6,2)"
    assert all(m.time > 1.7e9 for m in messages if isinstance(m, StateChange))


def test_updates_sent(messages: list[object]) -> None:
    updates = [m for m in messages if isinstance(m, UpdateSent)]
    announced = [(u.peer, p) for u in updates for p in u.announced]
    withdrawn = [(u.peer, p) for u in updates for p in u.withdrawn]
    assert announced[:3] == [(V4, "203.0.113.5/32"), (V4, "203.0.113.6/32"), (V6, "2001:db8:ff::5/128")]
    assert withdrawn[:2] == [(V4, "203.0.113.6/32"), (V6, "2001:db8:ff::5/128")]
    eors = [u.peer for u in updates if u.eor]
    assert eors[:2] == [V4, V6]
    assert all(not (u.announced or u.withdrawn) for u in updates if u.eor)


def test_acks_and_shutdown(messages: list[object]) -> None:
    assert Ack(ok=True) in messages
    assert messages[-1] == Other(kind="notification")


def test_plain_acks_and_bad_lines() -> None:
    assert parse_line("done\n") == Ack(ok=True)
    assert parse_line("error") == Ack(ok=False)
    with pytest.raises(MessageError):
        parse_line("route added")
    with pytest.raises(MessageError):
        parse_line("[1, 2]")
    with pytest.raises(MessageError):
        parse_line('{"type": "state", "neighbor": {"address": {}}}')


def test_received_updates_are_not_reported_as_sent() -> None:
    line = (
        '{"type": "update", "neighbor": {"address": {"local": "192.0.2.11", "peer": "192.0.2.1"},'
        ' "asn": {"local": 64500, "peer": 64512}, "direction": "receive", "message": {"update": {}}}}'
    )
    assert parse_line(line) == Other(kind="update")


def test_reload_outcome() -> None:
    assert reload_outcome("reactor         loaded new configuration successfully") is True
    assert reload_outcome("configuration   could not load/reload configuration") is False
    assert reload_outcome("reactor         connected to peer-1") is None
