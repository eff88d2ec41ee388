"""Classic BPF socket filters that let only ARP and neighbour solicitations/advertisements reach Python.

The kernel runs these for every frame of the socket's protocol on the interface; a frame that fails
costs no copy and no wake-up. The programs select, they do not validate: field checks stay in
``packets.parse_frame`` so there is one place that decides what is malformed (and counts it).

Frames whose VLAN tag the NIC stripped into metadata would otherwise look untagged here: the
ancillary load of "VLAN tag present" drops them, because they belong to the VLAN sub-interface,
which has its own socket when an IP is announced there.
"""

from __future__ import annotations

import ctypes
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass

SO_ATTACH_FILTER = 26

# Opcode pieces from linux/filter.h.
_LD_W_ABS = 0x20
_LD_H_ABS = 0x28
_LD_B_ABS = 0x30
_JEQ_K = 0x15
_RET_K = 0x06

_SKF_AD_OFF = -0x1000
_SKF_AD_PKTTYPE = 4
_SKF_AD_VLAN_TAG_PRESENT = 48
_PACKET_OUTGOING = 4

ACCEPT_BYTES = 0xFFFF


@dataclass(frozen=True)
class Insn:
    """One classic BPF instruction (struct sock_filter)."""

    code: int
    jt: int
    jf: int
    k: int

    def pack(self) -> bytes:
        return struct.pack("HBBI", self.code, self.jt, self.jf, self.k & 0xFFFFFFFF)


def _ancillary(offset: int) -> Insn:
    return Insn(_LD_W_ABS, 0, 0, _SKF_AD_OFF + offset)


def _program(ethertype: int, checks: Sequence[tuple[int, int, tuple[int, ...]]]) -> list[Insn]:
    """Assemble: not outgoing, not tagged, this ethertype, then each (load opcode, offset, accepted values).

    Every check falls through on a match and jumps to the final "drop" on a mismatch; the jump
    offsets are computed backwards from the end so the program stays correct when checks change.
    """
    body: list[tuple[Insn, tuple[int, ...], bool]] = [
        (_ancillary(_SKF_AD_PKTTYPE), (_PACKET_OUTGOING,), True),
        (_ancillary(_SKF_AD_VLAN_TAG_PRESENT), (0,), False),
        (Insn(_LD_H_ABS, 0, 0, 12), (ethertype,), False),
    ]
    body += [(Insn(code, 0, 0, offset), values, False) for code, offset, values in checks]
    out: list[Insn] = []
    # Lay the program out first with placeholder jumps, then patch: index of "accept" and "drop" known at the end.
    layout: list[tuple[Insn, int, bool, bool]] = []  # insn, value, is_last_value, negate
    for load, values, negate in body:
        layout.append((load, -1, False, negate))
        for i, value in enumerate(values):
            layout.append((Insn(_JEQ_K, 0, 0, value), value, i == len(values) - 1, negate))
    accept = len(layout)
    drop = accept + 1
    for pos, (insn, _value, last, negate) in enumerate(layout):
        if insn.code != _JEQ_K:
            out.append(insn)
            continue
        # Where "this check passed" continues: past the remaining alternatives of this check.
        nxt = pos + 1
        while nxt < len(layout) and layout[nxt][0].code == _JEQ_K:
            nxt += 1
        if negate:  # a single forbidden value: equal -> drop, else go on
            jt, jf = drop - pos - 1, nxt - pos - 1
        else:  # any of the values: equal -> go on, else try the next alternative or drop
            jt = nxt - pos - 1
            jf = (drop - pos - 1) if last else 0
        out.append(Insn(_JEQ_K, jt, jf, insn.k))
    out.append(Insn(_RET_K, 0, 0, ACCEPT_BYTES))
    out.append(Insn(_RET_K, 0, 0, 0))
    return out


def arp_program() -> list[Insn]:
    """ARP requests and replies (the replies and gratuitous frames of others reveal duplicate owners)."""
    return _program(0x0806, [(_LD_H_ABS, 20, (1, 2))])


def nd_program() -> list[Insn]:
    """IPv6 frames whose next header is ICMPv6 and whose type is neighbour solicitation or advertisement."""
    return _program(0x86DD, [(_LD_B_ABS, 20, (58,)), (_LD_B_ABS, 54, (135, 136))])


def attach(sock: socket.socket, program: Sequence[Insn]) -> None:
    """Attach a classic BPF program with SO_ATTACH_FILTER (the kernel copies it; the buffer may go after)."""
    code = b"".join(insn.pack() for insn in program)
    buf = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("HP", len(program), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
