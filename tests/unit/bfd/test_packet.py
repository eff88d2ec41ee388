"""BFD Control packet encoding and the reception checks of RFC 5880 6.8.6."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lbspeaker.bfd.packet import ControlPacket, Diag, PacketError, State, decode

UP = ControlPacket(state=State.UP, diag=Diag.NONE, detect_mult=3, my_discr=0x11223344, your_discr=0x55667788,
                   desired_min_tx=300_000, required_min_rx=300_000)


def test_wire_layout_of_an_up_packet() -> None:
    # Version 1 diag 0, state Up (3 << 6), mult 3, length 24, discriminators, intervals (RFC 5880 4.1).
    assert UP.encode().hex() == "20c003181122334455667788000493e0000493e000000000"


def test_flags_round_trip_and_the_c_bit_is_clear_by_default() -> None:
    packet = ControlPacket(state=State.DOWN, diag=Diag.DETECTION_TIME_EXPIRED, detect_mult=5, my_discr=1,
                           your_discr=0, desired_min_tx=1_000_000, required_min_rx=10_000, poll=True)
    data = packet.encode()
    assert data[1] & 0x08 == 0  # C: the control plane is not independent (RFC 5882 4.3)
    assert decode(data) == packet
    assert decode(UP.encode() + b"trailing bytes the length field leaves out") == UP


def corrupt(offset: int, value: int, data: bytes | None = None) -> bytes:
    raw = bytearray(data or UP.encode())
    raw[offset] = value
    return bytes(raw)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (UP.encode()[:23], "short"),
        (corrupt(0, 0x40), "version"),  # version 2
        (corrupt(1, 0xC4), "auth"),  # A bit: no authentication configured
        (corrupt(3, 23), "length"),
        (corrupt(3, 200), "length"),  # longer than what arrived
        (corrupt(2, 0), "multiplier"),
        (corrupt(1, 0xC1), "multipoint"),
        (UP.encode()[:4] + b"\0\0\0\0" + UP.encode()[8:], "discriminator"),  # my discriminator 0
        (UP.encode()[:8] + b"\0\0\0\0" + UP.encode()[12:], "discriminator"),  # your discr 0 while Up
        (corrupt(1, 0xF0), "flags"),  # poll and final together
    ],
)
def test_refused_packets_name_the_check(data: bytes, reason: str) -> None:
    with pytest.raises(PacketError) as err:
        decode(data)
    assert err.value.reason == reason


def test_your_discriminator_zero_is_fine_while_down() -> None:
    down = ControlPacket(state=State.DOWN, diag=Diag.NONE, detect_mult=3, my_discr=7, your_discr=0,
                         desired_min_tx=1_000_000, required_min_rx=300_000)
    assert decode(down.encode()).your_discr == 0


@given(st.binary(max_size=300))
def test_any_bytes_decode_or_raise_packet_error(data: bytes) -> None:
    try:
        packet = decode(data)
    except PacketError:
        return
    assert packet.detect_mult > 0 and packet.my_discr != 0


@given(st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF))
def test_intervals_are_unsigned_32_bit_microseconds(tx: int, rx: int, echo: int) -> None:
    data = UP.encode()[:12] + struct.pack("!III", tx, rx, echo)
    packet = decode(data)
    assert (packet.desired_min_tx, packet.required_min_rx, packet.required_min_echo_rx) == (tx, rx, echo)
