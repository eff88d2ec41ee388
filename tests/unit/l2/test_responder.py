"""The responder's pure decision: which frames get an answer, which reveal another owner."""

from __future__ import annotations

import ipaddress

from scapy.layers.inet6 import ICMPv6ND_NA, IPv6
from scapy.layers.l2 import ARP, Ether

from lbspeaker.l2 import packets
from lbspeaker.l2.packets import ArpPacket, NeighborAdvertisement, NeighborSolicitation
from lbspeaker.l2.responder import Responder, decide, pack_ip

OURS = bytes.fromhex("02000000000a")
OTHER_LOCAL = bytes.fromhex("02000000000c")
PEER = bytes.fromhex("02000000000b")
LOCAL = frozenset({OURS, OTHER_LOCAL})
V4 = pack_ip("192.0.2.10")
V4_PEER = pack_ip("192.0.2.20")
V6 = pack_ip("2001:db8::10")
V6_PEER = pack_ip("2001:db8::20")
OWNED = frozenset({V4, V6})


def arp(op: int, sha: bytes, spa: bytes, tpa: bytes, vlan: int | None = None) -> ArpPacket:
    return ArpPacket(packets.BROADCAST_MAC, sha, vlan, op, sha, spa, packets.ZERO_MAC, tpa)


def test_request_for_owned_ip_is_answered_to_the_requester() -> None:
    verdict = decide(arp(1, PEER, V4_PEER, V4), OURS, OWNED, LOCAL)
    assert verdict.is_request and verdict.duplicate is None
    assert verdict.reply is not None
    reply = Ether(verdict.reply)
    assert reply.dst == PEER.hex(":") and reply.src == OURS.hex(":")
    assert (reply[ARP].op, reply[ARP].psrc, reply[ARP].pdst) == (2, "192.0.2.10", "192.0.2.20")
    assert reply[ARP].hwsrc == OURS.hex(":")


def test_request_for_other_ip_is_counted_not_answered() -> None:
    verdict = decide(arp(1, PEER, V4_PEER, pack_ip("192.0.2.99")), OURS, OWNED, LOCAL)
    assert verdict.is_request and verdict.reply is None and verdict.duplicate is None


def test_arp_probe_is_answered() -> None:
    # RFC 5227 probe: sender IP 0.0.0.0; answering tells the prober the address is taken.
    verdict = decide(arp(1, PEER, b"\x00" * 4, V4), OURS, OWNED, LOCAL)
    assert verdict.reply is not None and Ether(verdict.reply)[ARP].pdst == "0.0.0.0"


def test_gratuitous_arp_from_another_mac_is_a_duplicate_and_not_answered() -> None:
    for op in (1, 2):
        verdict = decide(arp(op, PEER, V4, V4), OURS, OWNED, LOCAL)
        assert verdict.reply is None
        assert verdict.duplicate == (V4, PEER)


def test_our_own_frames_are_ignored_even_from_another_local_interface() -> None:
    for mac in (OURS, OTHER_LOCAL):
        verdict = decide(arp(2, mac, V4, V4), OURS, OWNED, LOCAL)
        assert verdict == (False, None, None)


def test_tagged_frames_are_left_to_the_vlan_interface() -> None:
    assert decide(arp(1, PEER, V4_PEER, V4, vlan=10), OURS, OWNED, LOCAL).reply is None


def test_nothing_is_answered_when_nothing_is_owned() -> None:
    assert decide(arp(1, PEER, V4_PEER, V4), OURS, frozenset(), LOCAL).reply is None


def _ns(src: bytes, lladdr: bytes | None) -> NeighborSolicitation:
    group, mac = packets.solicited_node(V6)
    return NeighborSolicitation(mac, PEER, None, src, group, V6, lladdr)


def test_solicitation_for_owned_ip_gets_a_solicited_advertisement() -> None:
    verdict = decide(_ns(V6_PEER, PEER), OURS, OWNED, LOCAL)
    assert verdict.is_request and verdict.reply is not None
    pkt = Ether(verdict.reply)
    assert pkt.dst == PEER.hex(":")
    assert pkt[IPv6].dst == "2001:db8::20"
    assert pkt[ICMPv6ND_NA].S == 1 and pkt[ICMPv6ND_NA].tgt == "2001:db8::10"


def test_solicitation_without_lladdr_is_answered_to_the_ethernet_source() -> None:
    verdict = decide(_ns(V6_PEER, None), OURS, OWNED, LOCAL)
    assert verdict.reply is not None and Ether(verdict.reply).dst == PEER.hex(":")


def test_solicitation_from_our_ip_by_another_mac_is_a_duplicate() -> None:
    verdict = decide(_ns(V6, PEER), OURS, OWNED, LOCAL)
    assert verdict.duplicate == (V6, PEER)


def test_advertisement_for_owned_ip_from_another_mac_is_a_duplicate() -> None:
    na = NeighborAdvertisement(packets.ALL_NODES_MAC, PEER, None, V6, packets.ALL_NODES, V6, 0x20, PEER)
    assert decide(na, OURS, OWNED, LOCAL) == (False, None, (V6, PEER))
    ours = NeighborAdvertisement(packets.ALL_NODES_MAC, PEER, None, V6, packets.ALL_NODES, V6, 0x20, OTHER_LOCAL)
    assert decide(ours, OURS, OWNED, LOCAL).duplicate is None
    unowned = NeighborAdvertisement(packets.ALL_NODES_MAC, PEER, None, V6_PEER, packets.ALL_NODES, V6_PEER, 0, PEER)
    assert decide(unowned, OURS, OWNED, LOCAL).duplicate is None


def test_duplicate_callback_is_rate_limited_per_ip_and_interface() -> None:
    calls: list[tuple[str, str, str]] = []
    responder = Responder(on_duplicate=lambda ip, mac, ifname: calls.append((ip, mac, ifname)), duplicate_interval=3600)
    try:
        for _ in range(5):
            responder._report_duplicate(V4, PEER, "eth0")
        responder._report_duplicate(V4, PEER, "eth1")
        responder._report_duplicate(V6, PEER, "eth0")
    finally:
        responder.stop()
    assert calls == [
        ("192.0.2.10", "02:00:00:00:00:0b", "eth0"),
        ("192.0.2.10", "02:00:00:00:00:0b", "eth1"),
        ("2001:db8::10", "02:00:00:00:00:0b", "eth0"),
    ]


def test_a_failing_duplicate_callback_does_not_escape() -> None:
    def boom(ip: str, mac: str, ifname: str) -> None:
        raise RuntimeError("callback bug")

    responder = Responder(on_duplicate=boom)
    try:
        responder._report_duplicate(V4, PEER, "eth0")  # must not raise
    finally:
        responder.stop()
    assert responder.counters()["errors"] == 0


def test_pack_ip_accepts_text_objects_and_packed() -> None:
    assert pack_ip("192.0.2.1") == pack_ip(ipaddress.IPv4Address("192.0.2.1")) == pack_ip(b"\xc0\x00\x02\x01")
