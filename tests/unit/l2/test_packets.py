"""ARP/ND frame parsing and building, checked against scapy's dissection, and fuzzed."""

from __future__ import annotations

import contextlib
import ipaddress
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet6 import (
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
    in6_chksum,
)
from scapy.layers.l2 import ARP, Dot1Q, Ether

from lbspeaker.l2 import packets
from lbspeaker.l2.packets import ArpPacket, MalformedFrame, NeighborAdvertisement, NeighborSolicitation

MAC_A = "02:00:00:00:00:0a"
MAC_B = "02:00:00:00:00:0b"
A = bytes.fromhex("02000000000a")
B = bytes.fromhex("02000000000b")
V4 = ipaddress.IPv4Address("192.0.2.10").packed
V4_PEER = ipaddress.IPv4Address("192.0.2.20").packed
V6 = ipaddress.IPv6Address("2001:db8::10").packed
V6_PEER = ipaddress.IPv6Address("2001:db8::20").packed


def arp_request(**kw: Any) -> bytes:
    fields: dict[str, Any] = {"op": 1, "hwsrc": MAC_B, "psrc": "192.0.2.20", "pdst": "192.0.2.10"}
    fields.update(kw)
    return bytes(Ether(src=MAC_B, dst="ff:ff:ff:ff:ff:ff") / ARP(**fields))


def ns(*, src: str = "2001:db8::20", lladdr: bool = True, target: str = "2001:db8::10", hlim: int = 255) -> bytes:
    dst = "ff02::1:ff00:10"
    pkt = Ether(src=MAC_B, dst="33:33:ff:00:00:10") / IPv6(src=src, dst=dst, hlim=hlim) / ICMPv6ND_NS(tgt=target)
    if lladdr:
        pkt = pkt / ICMPv6NDOptSrcLLAddr(lladdr=MAC_B)
    return bytes(pkt)


def na(*, target: str = "2001:db8::10", flags: dict[str, int] | None = None) -> bytes:
    f: dict[str, Any] = {"R": 0, "S": 0, "O": 1, **(flags or {})}
    return bytes(
        Ether(src=MAC_B, dst="33:33:00:00:00:01")
        / IPv6(src="2001:db8::20", dst="ff02::1", hlim=255)
        / ICMPv6ND_NA(tgt=target, **f)
        / ICMPv6NDOptDstLLAddr(lladdr=MAC_B)
    )


# --- parsing valid frames --------------------------------------------------------------------------


def test_parses_arp_request() -> None:
    got = packets.parse_frame(arp_request())
    assert got == ArpPacket(
        eth_dst=packets.BROADCAST_MAC,
        eth_src=B,
        vlan=None,
        op=1,
        sender_mac=B,
        sender_ip=V4_PEER,
        target_mac=packets.ZERO_MAC,
        target_ip=V4,
    )


def test_parses_vlan_tagged_arp() -> None:
    frame = bytes(Ether(src=MAC_B, dst="ff:ff:ff:ff:ff:ff") / Dot1Q(vlan=123, prio=5) / ARP(psrc="192.0.2.20"))
    got = packets.parse_frame(frame)
    assert isinstance(got, ArpPacket)
    assert got.vlan == 123
    assert got.sender_ip == V4_PEER


def test_parses_ns_with_source_lladdr() -> None:
    got = packets.parse_frame(ns())
    assert got == NeighborSolicitation(
        eth_dst=bytes.fromhex("3333ff000010"),
        eth_src=B,
        vlan=None,
        src_ip=V6_PEER,
        dst_ip=ipaddress.IPv6Address("ff02::1:ff00:10").packed,
        target=V6,
        source_lladdr=B,
    )


def test_parses_ns_without_options_and_dad_probe() -> None:
    plain = packets.parse_frame(ns(lladdr=False))
    assert isinstance(plain, NeighborSolicitation)
    assert plain.source_lladdr is None
    dad = packets.parse_frame(ns(src="::", lladdr=False))
    assert isinstance(dad, NeighborSolicitation)
    assert dad.src_ip == packets.UNSPECIFIED_V6


def test_parses_vlan_tagged_ns_and_skips_unknown_options() -> None:
    inner = Ether(ns())
    tagged = Ether(src=MAC_B, dst="33:33:ff:00:00:10") / Dot1Q(vlan=7) / inner[IPv6]
    # A nonce option (type 14) before the source address option must be stepped over.
    raw = bytes(
        Ether(src=MAC_B, dst="33:33:ff:00:00:10")
        / Dot1Q(vlan=7)
        / IPv6(src="2001:db8::20", dst="ff02::1:ff00:10")
        / ICMPv6ND_NS(tgt="2001:db8::10")
        / bytes([14, 1, 1, 2, 3, 4, 5, 6])
        / ICMPv6NDOptSrcLLAddr(lladdr=MAC_B)
    )
    for frame in (bytes(tagged), raw):
        got = packets.parse_frame(frame)
        assert isinstance(got, NeighborSolicitation)
        assert got.vlan == 7
        assert got.source_lladdr == B


def test_parses_na() -> None:
    got = packets.parse_frame(na())
    assert isinstance(got, NeighborAdvertisement)
    assert got.target == V6
    assert got.target_lladdr == B
    assert got.flags == packets.NA_FLAG_OVERRIDE


@pytest.mark.parametrize(
    "frame",
    [
        bytes(Ether(src=MAC_B) / IPv6(src="2001:db8::1", dst="2001:db8::2", nh=17) / (b"x" * 20)),  # UDP
        bytes(Ether(src=MAC_B, type=0x0800) / (b"\x45" + b"\x00" * 40)),  # IPv4
        arp_request(op=8),  # InARP
        arp_request(ptype=0x86DD, plen=4),  # ARP for another protocol
    ],
)
def test_frames_that_are_not_ours_give_none(frame: bytes) -> None:
    assert packets.parse_frame(frame) is None


def test_icmp_echo_is_not_ours() -> None:
    from scapy.layers.inet6 import ICMPv6EchoRequest

    frame = bytes(Ether(src=MAC_B) / IPv6(src="2001:db8::1", dst="2001:db8::2") / ICMPv6EchoRequest())
    assert packets.parse_frame(frame) is None


# --- malformed frames name the field ---------------------------------------------------------------


def _corrupt_checksum(frame: bytes) -> bytes:
    pos = 14 + 40 + 2
    return frame[:pos] + bytes([frame[pos] ^ 0xFF]) + frame[pos + 1 :]


@pytest.mark.parametrize(
    ("frame", "field"),
    [
        (b"\x00" * 13, "ethernet header"),
        (arp_request()[:14 + 27], "arp length"),
        (bytes(Ether(src=MAC_B) / Dot1Q(vlan=1))[:16], "802.1Q tag"),
        (arp_request(hwtype=6), "arp hardware type"),
        (arp_request(hwlen=8), "arp hardware length"),
        (arp_request(plen=16), "arp protocol length"),
        (arp_request(hwsrc="01:00:5e:00:00:01"), "arp sender mac"),
        (ns()[: 14 + 39], "ipv6 header"),
        (ns()[:-1], "ipv6 payload length"),
        (ns(hlim=64), "ipv6 hop limit"),
        (_corrupt_checksum(ns()), "icmpv6 checksum"),
        (ns(target="ff02::1"), "target address"),
        (ns(src="::", lladdr=True), "source link-layer address option"),
        (na(flags={"S": 1}), "solicited flag"),
    ],
)
def test_malformed_frames_name_the_field(frame: bytes, field: str) -> None:
    with pytest.raises(MalformedFrame) as info:
        packets.parse_frame(frame)
    assert info.value.field == field


def _ns_with_options(options: bytes) -> bytes:
    """A solicitation with raw option bytes and a correct checksum, so only the options are wrong."""
    body = bytes([135, 0, 0, 0]) + b"\x00" * 4 + V6 + options
    dst = ipaddress.IPv6Address("ff02::1:ff00:10").packed
    csum = packets.icmpv6_checksum(V6_PEER, dst, body)
    body = body[:2] + csum.to_bytes(2, "big") + body[4:]
    ipv6 = bytes([0x60, 0, 0, 0]) + len(body).to_bytes(2, "big") + bytes([58, 255]) + V6_PEER + dst
    return bytes.fromhex("3333ff000010") + B + b"\x86\xdd" + ipv6 + body


@pytest.mark.parametrize(
    ("options", "field"),
    [
        (bytes([1, 0, 0, 0, 0, 0, 0, 0]), "option length"),  # zero length would loop forever
        (bytes([1, 2]) + B, "option length"),  # claims 16 bytes, has 8
        (bytes([1, 2]) + B + b"\x00" * 8, "source link-layer address option"),  # not an Ethernet address
        (bytes([1]), "option header"),
    ],
)
def test_malformed_options(options: bytes, field: str) -> None:
    with pytest.raises(MalformedFrame) as info:
        packets.parse_frame(_ns_with_options(options))
    assert info.value.field == field


# --- builders agree with scapy ----------------------------------------------------------------------


def test_arp_reply_matches_scapy() -> None:
    frame = packets.build_arp_reply(A, V4, B, V4_PEER)
    pkt = Ether(frame)
    assert (pkt.dst, pkt.src, pkt.type) == (MAC_B, MAC_A, 0x0806)
    arp = pkt[ARP]
    assert (arp.hwtype, arp.ptype, arp.hwlen, arp.plen, arp.op) == (1, 0x0800, 6, 4, 2)
    assert (arp.hwsrc, arp.psrc, arp.hwdst, arp.pdst) == (MAC_A, "192.0.2.10", MAC_B, "192.0.2.20")
    assert len(frame) == packets.MIN_FRAME


@pytest.mark.parametrize("reply", [False, True])
def test_gratuitous_arp_matches_scapy(reply: bool) -> None:
    pkt = Ether(packets.build_gratuitous_arp(A, V4, reply=reply))
    assert (pkt.dst, pkt.src) == ("ff:ff:ff:ff:ff:ff", MAC_A)
    arp = pkt[ARP]
    assert arp.op == (2 if reply else 1)
    assert arp.psrc == arp.pdst == "192.0.2.10"
    assert arp.hwsrc == MAC_A
    # Linux only takes a reply as gratuitous when target MAC == sender MAC (arp_is_garp).
    assert arp.hwdst == (MAC_A if reply else "00:00:00:00:00:00")


def _check_na(frame: bytes) -> Ether:
    pkt = Ether(frame)
    ip6 = pkt[IPv6]
    assert ip6.hlim == 255 and ip6.nh == 58 and ip6.plen == len(bytes(ip6.payload))
    icmp = pkt[ICMPv6ND_NA]
    # scapy recomputes the checksum over the same bytes; it must match what we put in.
    raw = bytes(icmp)
    zeroed = raw[:2] + b"\x00\x00" + raw[4:]
    assert in6_chksum(58, ip6, zeroed) == icmp.cksum
    assert icmp.code == 0 and icmp.tgt == "2001:db8::10" and icmp.R == 0
    assert icmp[ICMPv6NDOptDstLLAddr].lladdr == MAC_A
    assert icmp[ICMPv6NDOptDstLLAddr].len == 1
    return pkt


def test_unsolicited_na_matches_scapy() -> None:
    pkt = _check_na(packets.build_unsolicited_na(A, V6))
    assert (pkt.dst, pkt.src) == ("33:33:00:00:00:01", MAC_A)
    assert (pkt[IPv6].src, pkt[IPv6].dst) == ("2001:db8::10", "ff02::1")
    assert (pkt[ICMPv6ND_NA].S, pkt[ICMPv6ND_NA].O) == (0, 1)


def test_solicited_na_answers_the_soliciter() -> None:
    request = packets.parse_frame(ns())
    assert isinstance(request, NeighborSolicitation)
    pkt = _check_na(packets.build_solicited_na(A, request))
    assert (pkt.dst, pkt.src) == (MAC_B, MAC_A)
    assert (pkt[IPv6].src, pkt[IPv6].dst) == ("2001:db8::10", "2001:db8::20")
    assert (pkt[ICMPv6ND_NA].S, pkt[ICMPv6ND_NA].O) == (1, 1)


def test_dad_probe_is_answered_to_all_nodes_without_s_flag() -> None:
    probe = packets.parse_frame(ns(src="::", lladdr=False))
    assert isinstance(probe, NeighborSolicitation)
    pkt = _check_na(packets.build_solicited_na(A, probe))
    assert pkt[IPv6].dst == "ff02::1" and pkt.dst == "33:33:00:00:00:01"
    assert pkt[ICMPv6ND_NA].S == 0


def test_builders_round_trip_through_parser() -> None:
    na_frame = packets.parse_frame(packets.build_unsolicited_na(A, V6))
    assert isinstance(na_frame, NeighborAdvertisement)
    assert (na_frame.target, na_frame.target_lladdr) == (V6, A)
    reply = packets.parse_frame(packets.build_arp_reply(A, V4, B, V4_PEER))
    assert isinstance(reply, ArpPacket)
    assert (reply.op, reply.sender_ip, reply.sender_mac) == (2, V4, A)


def test_solicited_node_group() -> None:
    group, mac = packets.solicited_node(ipaddress.IPv6Address("2001:db8::12:3456").packed)
    assert ipaddress.IPv6Address(group) == ipaddress.IPv6Address("ff02::1:ff12:3456")
    assert mac == bytes.fromhex("3333ff123456")


# --- fuzzing: only a result, None or MalformedFrame -------------------------------------------------

VALID = [arp_request(), ns(), ns(lladdr=False), na(), bytes(Ether(arp_request()) / b"")]
VALID.append(bytes(Ether(src=MAC_B, dst="ff:ff:ff:ff:ff:ff") / Dot1Q(vlan=5) / ARP(psrc="192.0.2.20")))


def _parse_or_malformed(frame: bytes) -> None:
    with contextlib.suppress(MalformedFrame):
        packets.parse_frame(frame)


@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(frame: bytes) -> None:
    _parse_or_malformed(frame)


@settings(max_examples=500)
@given(st.binary(max_size=120))
def test_fuzz_random_payload_behind_our_ethertypes(payload: bytes) -> None:
    for ethertype in (b"\x08\x06", b"\x86\xdd", b"\x81\x00\x00\x05\x86\xdd"):
        _parse_or_malformed(B + A + ethertype + payload)


@settings(max_examples=1000)
@given(
    st.sampled_from(VALID),
    st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=6),
    st.integers(0, 200),
)
def test_fuzz_mutated_valid_frames(frame: bytes, flips: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(frame)
    for pos, value in flips:
        if pos < len(data):
            data[pos] = value
    _parse_or_malformed(bytes(data[: max(0, len(data) - cut)] if cut % 3 == 0 else data))
