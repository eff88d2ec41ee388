"""The membership datagram format: round trips, authentication bound to the recipient, bounded decoding."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbspeaker.membership import wire
from lbspeaker.membership.wire import DEAD, STATE, VOTE, Item, Message, Rejected

KEY = b"k" * 32
OTHER_KEY = b"o" * 32


def message() -> Message:
    """A message with every field set (``dataclasses.replace`` changes one, type-checked)."""
    return Message(sender="node-a", boot=3, version=7, seq=42, flags=wire.FLAG_SERVING,
                   echo_boot=2, echo_seq=99, your_version=5, voted=4,
                   items=(Item(STATE, "node-c", 1, 2, flags=wire.FLAG_SERVING),
                          Item(VOTE, "node-d", 4, 9, voter="node-e"),
                          Item(DEAD, "node-f", 6, 1)))


def test_round_trip() -> None:
    msg = message()
    assert wire.decode(wire.encode(msg, KEY, "node-b"), (KEY,), "node-b") == msg


def test_the_mac_binds_the_recipient_and_the_key() -> None:
    data = wire.encode(message(), KEY, "node-b")
    assert wire.decode(data, (KEY,), "node-c") == Rejected("mac")  # replayed to another node
    assert wire.decode(data, (OTHER_KEY,), "node-b") == Rejected("mac")
    assert isinstance(wire.decode(data, (OTHER_KEY, KEY), "node-b"), Message)  # rotation: any key verifies
    flipped = bytearray(data)
    flipped[10] ^= 1
    assert wire.decode(bytes(flipped), (KEY,), "node-b") == Rejected("mac")


def test_rejections_name_the_reason() -> None:
    data = wire.encode(message(), KEY, "node-b")
    assert wire.decode(data[:20], (KEY,), "node-b") == Rejected("truncated")
    assert wire.decode(b"XX" + data[2:], (KEY,), "node-b") == Rejected("magic")
    assert wire.decode(data[:2] + b"\x09" + data[3:], (KEY,), "node-b") == Rejected("version")
    assert wire.decode(data + b"\0" * wire.MAX_SIZE, (KEY,), "node-b") == Rejected("oversize")


def test_a_well_signed_but_malformed_body_is_rejected_not_raised() -> None:
    # Sign a body whose item count promises more than it holds: the MAC passes, the parse must not.
    body = wire.encode(replace(message(), items=()), KEY, "node-b")[:-wire.MAC_SIZE]
    bad = body[:48] + bytes([3]) + body[49:]
    signed = bad + wire._mac(KEY, "node-b", bad)
    assert wire.decode(signed, (KEY,), "node-b") == Rejected("malformed")


def test_encode_refuses_what_decode_would_refuse() -> None:
    too_many = tuple(Item(DEAD, f"n{i}", 1, 1) for i in range(wire.MAX_ITEMS + 1))
    with pytest.raises(ValueError, match="items"):
        wire.encode(replace(message(), items=too_many), KEY, "b")
    with pytest.raises(ValueError, match="name"):
        wire.encode(replace(message(), sender="x" * 254), KEY, "b")
    big = tuple(Item(VOTE, "s" * 200, 1, 1, voter="v" * 200) for _ in range(10))
    with pytest.raises(ValueError, match="bytes"):
        wire.encode(replace(message(), items=big), KEY, "b")


def test_keys_must_be_long_enough() -> None:
    with pytest.raises(ValueError):
        wire.validate_keys(b"short")
    with pytest.raises(ValueError):
        wire.validate_keys(())
    assert wire.validate_keys([KEY, OTHER_KEY]) == (KEY, OTHER_KEY)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1400))
def test_decoding_random_bytes_never_raises(data: bytes) -> None:
    assert isinstance(wire.decode(data, (KEY,), "node-b"), Message | Rejected)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=300), st.integers(min_value=0, max_value=300))
def test_decoding_signed_garbage_never_raises(tail: bytes, cut: int) -> None:
    body = wire.encode(message(), KEY, "node-b")[:-wire.MAC_SIZE]
    mangled = body[:cut] + tail
    signed = mangled + wire._mac(KEY, "node-b", mangled)
    result = wire.decode(signed, (KEY,), "node-b")
    assert isinstance(result, Message | Rejected)
