"""Classic BPF socket filters that let only ARP and neighbour solicitations/advertisements reach Python.

The kernel runs these for every frame of the socket's protocol on the interface; a frame that fails
costs no copy and no wake-up. The programs select, they do not validate: field checks stay in
``packets.parse_frame`` so there is one place that decides what is malformed (and counts it).

Each program first checks the frame's content (ethertype, then the ARP opcode or the ICMPv6 type, so
the bulk of a node's IPv6 traffic is rejected after a few instructions), then how the frame arrived,
from the kernel's ancillary fields. By the time a protocol-bound packet socket sees a frame the
kernel has already taken any 802.1Q tag off it, so the bytes alone say nothing about VLANs (and
PACKET_AUXDATA carries no tag either: the kernel clears it before delivering to these sockets):
- pkttype below PACKET_OTHERHOST (host, broadcast, multicast). A tagged frame for a VLAN this node has
  no sub-interface for arrives untagged as OTHERHOST, as does a frame unicast to another MAC; looped
  back (LOOPBACK) and outgoing copies are above it too.
- the socket's own interface index. A frame that another device stacked on the interface claims (a
  VLAN sub-interface for its tag, a macvlan for its MAC) is also handed to the lower interface's
  protocol sockets, with the upper device as its interface.
- no VLAN tag in the metadata: where the kernel keeps it (DSA conduit interfaces) the frame belongs to
  a VLAN too.
A program is about ten instructions, run by the kernel's BPF JIT where it has one.
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
_JGE_K = 0x35
_RET_K = 0x06

_SKF_AD_OFF = -0x1000
_SKF_AD_PKTTYPE = 4
_SKF_AD_IFINDEX = 8
_SKF_AD_VLAN_TAG_PRESENT = 48
PACKET_OTHERHOST = 3  # pkttypes: HOST 0, BROADCAST 1, MULTICAST 2, OTHERHOST 3, OUTGOING 4, LOOPBACK 5

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


@dataclass(frozen=True)
class _Check:
    """Load a value, then pass when it is one of ``any_of``, or when it is below ``below``."""

    load: Insn
    any_of: tuple[int, ...] = ()
    below: int | None = None

    def jumps(self) -> int:
        return 1 if self.below is not None else len(self.any_of)


def _ancillary(offset: int) -> Insn:
    return Insn(_LD_W_ABS, 0, 0, _SKF_AD_OFF + offset)


def _assemble(checks: Sequence[_Check]) -> list[Insn]:
    """Every check falls through to the next on a pass and jumps to the final "drop" otherwise.

    Jump offsets are relative to the next instruction and computed from the layout, so the program
    stays correct when checks are added or reordered.
    """
    drop = sum(1 + check.jumps() for check in checks) + 1  # index of "drop"; "accept" is just before it
    out: list[Insn] = []
    for check in checks:
        out.append(check.load)
        after = len(out) + check.jumps()  # index of the next check's load (or of "accept")
        if check.below is not None:
            pos = len(out)
            out.append(Insn(_JGE_K, drop - pos - 1, 0, check.below))
            continue
        for i, value in enumerate(check.any_of):
            pos = len(out)
            last = i == len(check.any_of) - 1
            out.append(Insn(_JEQ_K, after - pos - 1, drop - pos - 1 if last else 0, value))
    out.append(Insn(_RET_K, 0, 0, ACCEPT_BYTES))
    out.append(Insn(_RET_K, 0, 0, 0))
    return out


def _program(ethertype: int, content: Sequence[_Check], ifindex: int | None) -> list[Insn]:
    checks = [_Check(Insn(_LD_H_ABS, 0, 0, 12), any_of=(ethertype,)), *content]
    checks.append(_Check(_ancillary(_SKF_AD_PKTTYPE), below=PACKET_OTHERHOST))
    checks.append(_Check(_ancillary(_SKF_AD_VLAN_TAG_PRESENT), any_of=(0,)))
    if ifindex is not None:
        checks.append(_Check(_ancillary(_SKF_AD_IFINDEX), any_of=(ifindex,)))
    return _assemble(checks)


def arp_program(ifindex: int | None) -> list[Insn]:
    """ARP requests and replies (the replies and gratuitous frames of others reveal duplicate owners).

    ``ifindex`` is the interface the socket is bound to; None leaves that check out, for a socket whose
    frames have no device (an AF_UNIX pair: there the kernel ends the program at the index load).
    """
    return _program(0x0806, [_Check(Insn(_LD_H_ABS, 0, 0, 20), any_of=(1, 2))], ifindex)


def nd_program(ifindex: int | None) -> list[Insn]:
    """IPv6 frames whose next header is ICMPv6 and whose type is neighbour solicitation or advertisement."""
    content = [_Check(Insn(_LD_B_ABS, 0, 0, 20), any_of=(58,)), _Check(Insn(_LD_B_ABS, 0, 0, 54), any_of=(135, 136))]
    return _program(0x86DD, content, ifindex)


def attach(sock: socket.socket, program: Sequence[Insn]) -> None:
    """Attach a classic BPF program with SO_ATTACH_FILTER (the kernel copies it; the buffer may go after)."""
    code = b"".join(insn.pack() for insn in program)
    buf = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("HP", len(program), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
