"""The BPF programs, run by the real kernel on an AF_UNIX datagram socket (no root needed).

A socket filter on a Unix datagram socket sees each message as the packet, starting at offset 0, so
sending whole Ethernet frames through a socketpair exercises the content checks the packet sockets
run. Ancillary loads read zero there (untagged, PACKET_HOST) and a message has no interface, so the
programs are built without the interface check; the arrival checks (pkttype, interface) are
exercised on packet sockets in tests/netns/test_l2_responder.py.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from scapy.layers.inet6 import ICMPv6EchoRequest, ICMPv6ND_NA, ICMPv6ND_NS, ICMPv6ND_RS, IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Packet

from lbspeaker.l2 import bpf


def _pair(program: list[bpf.Insn]) -> Iterator[tuple[socket.socket, socket.socket]]:
    tx, rx = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        bpf.attach(rx, program)
        rx.setblocking(False)
        yield tx, rx
    finally:
        tx.close()
        rx.close()


@pytest.fixture
def arp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    yield from _pair(bpf.arp_program(None))


@pytest.fixture
def nd_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    yield from _pair(bpf.nd_program(None))


def _passes(pair: tuple[socket.socket, socket.socket], frame: bytes) -> bool:
    tx, rx = pair
    tx.send(frame)
    try:
        got = rx.recv(4096)
    except BlockingIOError:
        return False
    assert got == frame  # accepted frames arrive whole (the program returns 0xffff bytes)
    return True


ETH = Ether(src="02:00:00:00:00:0b", dst="ff:ff:ff:ff:ff:ff")
V6 = IPv6(src="2001:db8::20", dst="ff02::1:ff00:10")


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (ETH / ARP(op=1), True),
        (ETH / ARP(op=2), True),
        (ETH / ARP(op=8), False),  # InARP
        (ETH / ARP(op=1, hwlen=8), True),  # selected; the parser decides it is malformed and counts it
        (ETH / Dot1Q(vlan=5) / ARP(op=1), False),  # in-band tag: the VLAN sub-interface's business
        (ETH / V6 / ICMPv6ND_NS(tgt="2001:db8::10"), False),
        (bytes(ETH / ARP(op=1))[:20], False),  # too short to hold the opcode: the kernel drops it
    ],
)
def test_arp_program(arp_pair: tuple[socket.socket, socket.socket], frame: Packet | bytes, expected: bool) -> None:
    assert _passes(arp_pair, bytes(frame)) is expected


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (ETH / V6 / ICMPv6ND_NS(tgt="2001:db8::10"), True),
        (ETH / V6 / ICMPv6ND_NA(tgt="2001:db8::10"), True),
        (ETH / V6 / ICMPv6ND_RS(), False),
        (ETH / V6 / ICMPv6EchoRequest(), False),
        (ETH / IPv6(src="2001:db8::20", dst="2001:db8::10", nh=17) / (b"\x87" * 60), False),  # UDP, 135 at [54]
        (ETH / ARP(op=1), False),
        (ETH / Dot1Q(vlan=5) / V6 / ICMPv6ND_NS(tgt="2001:db8::10"), False),
    ],
)
def test_nd_program(nd_pair: tuple[socket.socket, socket.socket], frame: Packet | bytes, expected: bool) -> None:
    assert _passes(nd_pair, bytes(frame)) is expected


def test_programs_end_in_accept_then_drop() -> None:
    for program in (bpf.arp_program(7), bpf.nd_program(7), bpf.arp_program(None)):
        assert program[-2] == bpf.Insn(0x06, 0, 0, bpf.ACCEPT_BYTES)
        assert program[-1] == bpf.Insn(0x06, 0, 0, 0)
        for pos, insn in enumerate(program):
            if insn.code == 0x15:  # every jump lands inside the program
                assert pos + 1 + max(insn.jt, insn.jf) < len(program)
