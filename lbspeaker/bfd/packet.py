"""BFD Control packets (RFC 5880 section 4.1): encoding and bounded, validating decoding. Pure.

A Control packet is 24 bytes without authentication: version and diagnostic, state and the P F C A D M
flags, detect multiplier, length, my and your discriminators, and three intervals in microseconds.
``decode`` applies the reception checks of RFC 5880 6.8.6 that need no session (version, lengths,
multiplier, multipoint bit, discriminators) and refuses authenticated packets: no authentication is
configured (as in MetalLB), and 6.8.6 says to discard a packet whose A bit disagrees with that. Every
refusal raises ``PacketError`` whose ``reason`` is a short fixed word, fit for a metric label; nothing
in a packet is trusted beyond its 24 bytes. Cost: one ``struct`` call each way.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

VERSION = 1
LENGTH = 24  # without an authentication section
MAX_LENGTH = 255  # the length field is one byte
_FORMAT = struct.Struct("!BBBBIIIII")


class State(enum.IntEnum):
    ADMIN_DOWN = 0
    DOWN = 1
    INIT = 2
    UP = 3

    @property
    def label(self) -> str:
        return {0: "admin-down", 1: "down", 2: "init", 3: "up"}[int(self)]


class Diag(enum.IntEnum):
    """Why the sender's session last left Up (RFC 5880 4.1)."""

    NONE = 0
    DETECTION_TIME_EXPIRED = 1
    ECHO_FAILED = 2
    NEIGHBOR_DOWN = 3
    FORWARDING_RESET = 4
    PATH_DOWN = 5
    CONCATENATED_PATH_DOWN = 6
    ADMIN_DOWN = 7
    REVERSE_CONCATENATED_PATH_DOWN = 8


class PacketError(ValueError):
    """A packet to discard; ``reason`` names the failed check in one word."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class ControlPacket:
    """One BFD Control packet. Intervals are in microseconds."""

    state: State
    diag: Diag
    detect_mult: int
    my_discr: int
    your_discr: int
    desired_min_tx: int
    required_min_rx: int
    required_min_echo_rx: int = 0
    poll: bool = False
    final: bool = False
    control_plane_independent: bool = False  # the C bit: we share fate with the control plane
    demand: bool = False

    def encode(self) -> bytes:
        flags = (
            (int(self.state) << 6)
            | (0x20 if self.poll else 0)
            | (0x10 if self.final else 0)
            | (0x08 if self.control_plane_independent else 0)
            | (0x02 if self.demand else 0)
        )
        return _FORMAT.pack(
            (VERSION << 5) | int(self.diag),
            flags,
            self.detect_mult,
            LENGTH,
            self.my_discr,
            self.your_discr,
            self.desired_min_tx,
            self.required_min_rx,
            self.required_min_echo_rx,
        )


def decode(data: bytes) -> ControlPacket:
    """Parse and check a received Control packet; ``PacketError`` when it must be discarded."""
    if len(data) < LENGTH:
        raise PacketError("short", f"{len(data)} bytes, a Control packet has at least {LENGTH}")
    first, flags, mult, length, my_discr, your_discr, min_tx, min_rx, min_echo = _FORMAT.unpack_from(data)
    version = first >> 5
    if version != VERSION:
        raise PacketError("version", f"version {version}, expected {VERSION}")
    if flags & 0x04:  # A: authentication present
        raise PacketError("auth", "authenticated packet, but no authentication is configured")
    if length < LENGTH:
        raise PacketError("length", f"length field {length} is below {LENGTH}")
    if length > len(data):
        raise PacketError("length", f"length field {length} exceeds the {len(data)} bytes received")
    if mult == 0:
        raise PacketError("multiplier", "detect multiplier 0")
    if flags & 0x01:  # M: multipoint, reserved
        raise PacketError("multipoint", "multipoint bit set")
    if my_discr == 0:
        raise PacketError("discriminator", "my discriminator 0")
    state = State(flags >> 6)
    if your_discr == 0 and state not in (State.DOWN, State.ADMIN_DOWN):
        raise PacketError("discriminator", f"your discriminator 0 in state {state.label}")
    diag_value = first & 0x1F
    diag = Diag(diag_value) if diag_value in Diag._value2member_map_ else Diag.NONE
    poll, final = bool(flags & 0x20), bool(flags & 0x10)
    if poll and final:
        raise PacketError("flags", "poll and final both set")
    return ControlPacket(
        state=state,
        diag=diag,
        detect_mult=mult,
        my_discr=my_discr,
        your_discr=your_discr,
        desired_min_tx=min_tx,
        required_min_rx=min_rx,
        required_min_echo_rx=min_echo,
        poll=poll,
        final=final,
        control_plane_independent=bool(flags & 0x08),
        demand=bool(flags & 0x02),
    )
