"""Ethernet ARP and IPv6 neighbour-discovery frames: strict parsing and building, pure and struct-based.

Addresses are kept as packed ``bytes`` (6 for MACs, 4 or 16 for IPs) because the responder compares
them on its hot path, where building ``ipaddress`` objects for every frame would cost more than the
rest of the work together. Parsing answers three ways: a dataclass for ARP and neighbour
solicitations/advertisements, ``None`` for well-formed frames that are none of our business, and
``MalformedFrame`` (naming the offending field) for frames that claim to be ours but break a rule.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
ETH_P_8021Q = 0x8100
IPPROTO_ICMPV6 = 58
ICMPV6_NS = 135
ICMPV6_NA = 136
ARP_REQUEST = 1
ARP_REPLY = 2
ND_OPT_SOURCE_LLADDR = 1
ND_OPT_TARGET_LLADDR = 2
NA_FLAG_ROUTER = 0x80
NA_FLAG_SOLICITED = 0x40
NA_FLAG_OVERRIDE = 0x20

BROADCAST_MAC = b"\xff" * 6
ZERO_MAC = b"\x00" * 6
ALL_NODES = bytes.fromhex("ff020000000000000000000000000001")
ALL_NODES_MAC = bytes.fromhex("333300000001")
UNSPECIFIED_V6 = b"\x00" * 16
# Switches and some drivers drop runt frames; padding ourselves costs nothing.
MIN_FRAME = 60

_ETH = struct.Struct("!6s6sH")
_ARP = struct.Struct("!HHBBH6s4s6s4s")
_IPV6 = struct.Struct("!IHBB16s16s")
_ICMP_HEAD = struct.Struct("!BBH")


class MalformedFrame(ValueError):
    """A frame that looks like ARP or neighbour discovery but breaks a length or field rule."""

    def __init__(self, field: str, detail: str = "") -> None:
        self.field = field
        super().__init__(f"{field}: {detail}" if detail else field)


@dataclass(frozen=True, slots=True)
class ArpPacket:
    """An Ethernet/IPv4 ARP request or reply."""

    eth_dst: bytes
    eth_src: bytes
    vlan: int | None
    op: int
    sender_mac: bytes
    sender_ip: bytes
    target_mac: bytes
    target_ip: bytes


@dataclass(frozen=True, slots=True)
class NeighborSolicitation:
    """An ICMPv6 neighbour solicitation; ``source_lladdr`` is the option, absent for DAD probes."""

    eth_dst: bytes
    eth_src: bytes
    vlan: int | None
    src_ip: bytes
    dst_ip: bytes
    target: bytes
    source_lladdr: bytes | None


@dataclass(frozen=True, slots=True)
class NeighborAdvertisement:
    """An ICMPv6 neighbour advertisement; parsed so another owner of our address can be noticed."""

    eth_dst: bytes
    eth_src: bytes
    vlan: int | None
    src_ip: bytes
    dst_ip: bytes
    target: bytes
    flags: int
    target_lladdr: bytes | None


Frame = ArpPacket | NeighborSolicitation | NeighborAdvertisement


def is_multicast_mac(mac: bytes) -> bool:
    return bool(mac[0] & 1)


def solicited_node(ip: bytes) -> tuple[bytes, bytes]:
    """The solicited-node multicast group of an IPv6 address and its Ethernet MAC."""
    group = bytes.fromhex("ff0200000000000000000001ff") + ip[13:]
    return group, b"\x33\x33" + group[12:]


def _is_solicited_node_group(ip: bytes) -> bool:
    return ip[:13] == bytes.fromhex("ff0200000000000000000001ff")


def _checksum_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def icmpv6_checksum(src: bytes, dst: bytes, icmp: bytes) -> int:
    """RFC 4443 checksum over the IPv6 pseudo-header and the ICMPv6 message (checksum field zeroed)."""
    pseudo = src + dst + struct.pack("!I3xB", len(icmp), IPPROTO_ICMPV6)
    return (~_checksum_sum(pseudo + icmp)) & 0xFFFF


def parse_frame(frame: bytes) -> Frame | None:
    """Parse one Ethernet frame (optionally with one 802.1Q tag).

    Returns None for frames that are not ARP/IPv4, neighbour solicitations or advertisements.
    Raises MalformedFrame for those that are but break a rule.
    """
    if len(frame) < _ETH.size:
        raise MalformedFrame("ethernet header", f"{len(frame)} bytes")
    eth_dst, eth_src, ethertype = _ETH.unpack_from(frame, 0)
    offset = _ETH.size
    vlan: int | None = None
    if ethertype == ETH_P_8021Q:
        if len(frame) < offset + 4:
            raise MalformedFrame("802.1Q tag", f"{len(frame)} bytes")
        tci, ethertype = struct.unpack_from("!HH", frame, offset)
        vlan = tci & 0x0FFF
        offset += 4
    if ethertype == ETH_P_ARP:
        return _parse_arp(frame, offset, eth_dst, eth_src, vlan)
    if ethertype == ETH_P_IPV6:
        return _parse_nd(frame, offset, eth_dst, eth_src, vlan)
    return None


def _parse_arp(frame: bytes, offset: int, eth_dst: bytes, eth_src: bytes, vlan: int | None) -> ArpPacket | None:
    if len(frame) < offset + _ARP.size:
        raise MalformedFrame("arp length", f"{len(frame) - offset} bytes, need {_ARP.size}")
    htype, ptype, hlen, plen, op, sha, spa, tha, tpa = _ARP.unpack_from(frame, offset)
    if htype != 1:
        raise MalformedFrame("arp hardware type", str(htype))
    if ptype != 0x0800:
        return None  # ARP for another protocol: not ours
    if hlen != 6:
        raise MalformedFrame("arp hardware length", str(hlen))
    if plen != 4:
        raise MalformedFrame("arp protocol length", str(plen))
    if op not in (ARP_REQUEST, ARP_REPLY):
        return None  # InARP and friends
    if is_multicast_mac(sha):
        raise MalformedFrame("arp sender mac", sha.hex(":"))
    if is_multicast_mac(eth_src):
        raise MalformedFrame("ethernet source", eth_src.hex(":"))
    return ArpPacket(eth_dst, eth_src, vlan, op, sha, spa, tha, tpa)


def _parse_options(icmp: bytes, start: int, wanted: int) -> bytes | None:
    """Walk the ND options; return the link-layer address of option type ``wanted`` if present."""
    found: bytes | None = None
    pos = start
    while pos < len(icmp):
        if pos + 2 > len(icmp):
            raise MalformedFrame("option header", f"{len(icmp) - pos} bytes left")
        otype, olen = icmp[pos], icmp[pos + 1]
        if olen == 0:
            raise MalformedFrame("option length", "zero")  # RFC 4861 4.6: must be discarded
        end = pos + olen * 8
        if end > len(icmp):
            raise MalformedFrame("option length", f"{olen * 8} bytes, {len(icmp) - pos} left")
        if otype == wanted:
            if olen != 1:
                name = "source" if wanted == ND_OPT_SOURCE_LLADDR else "target"
                raise MalformedFrame(f"{name} link-layer address option", f"length {olen * 8}")
            found = icmp[pos + 2 : pos + 8]
        pos = end
    return found


def _parse_nd(
    frame: bytes, offset: int, eth_dst: bytes, eth_src: bytes, vlan: int | None
) -> NeighborSolicitation | NeighborAdvertisement | None:
    if len(frame) < offset + _IPV6.size:
        raise MalformedFrame("ipv6 header", f"{len(frame) - offset} bytes")
    vtcfl, plen, next_header, hop_limit, src, dst = _IPV6.unpack_from(frame, offset)
    if vtcfl >> 28 != 6:
        raise MalformedFrame("ipv6 version", str(vtcfl >> 28))
    if next_header != IPPROTO_ICMPV6:
        return None
    start = offset + _IPV6.size
    if start + plen > len(frame):
        raise MalformedFrame("ipv6 payload length", f"{plen}, frame has {len(frame) - start}")
    icmp = frame[start : start + plen]
    if len(icmp) < _ICMP_HEAD.size:
        raise MalformedFrame("icmpv6 length", str(len(icmp)))
    itype, code, checksum = _ICMP_HEAD.unpack_from(icmp, 0)
    if itype not in (ICMPV6_NS, ICMPV6_NA):
        return None
    # RFC 4861 7.1: hop limit 255 proves the sender is on-link; anything else is forged or routed.
    if hop_limit != 255:
        raise MalformedFrame("ipv6 hop limit", str(hop_limit))
    if code != 0:
        raise MalformedFrame("icmpv6 code", str(code))
    if len(icmp) < 24:
        raise MalformedFrame("icmpv6 length", str(len(icmp)))
    zeroed = icmp[:2] + b"\x00\x00" + icmp[4:]
    if icmpv6_checksum(src, dst, zeroed) != checksum:
        raise MalformedFrame("icmpv6 checksum", f"{checksum:#06x}")
    if is_multicast_mac(eth_src):
        raise MalformedFrame("ethernet source", eth_src.hex(":"))
    if src[0] == 0xFF:
        raise MalformedFrame("ipv6 source", "multicast")
    target = icmp[8:24]
    if target[0] == 0xFF:
        raise MalformedFrame("target address", "multicast")
    if itype == ICMPV6_NS:
        lladdr = _parse_options(icmp, 24, ND_OPT_SOURCE_LLADDR)
        if src == UNSPECIFIED_V6:
            # RFC 4861 7.1.1: a DAD probe goes to a solicited-node group and carries no source address.
            if not _is_solicited_node_group(dst):
                raise MalformedFrame("ipv6 destination", "DAD probe not sent to a solicited-node group")
            if lladdr is not None:
                raise MalformedFrame("source link-layer address option", "present in a DAD probe")
        return NeighborSolicitation(eth_dst, eth_src, vlan, src, dst, target, lladdr)
    flags = icmp[4]
    if dst[0] == 0xFF and flags & NA_FLAG_SOLICITED:
        raise MalformedFrame("solicited flag", "set on a multicast advertisement")
    lladdr = _parse_options(icmp, 24, ND_OPT_TARGET_LLADDR)
    return NeighborAdvertisement(eth_dst, eth_src, vlan, src, dst, target, flags, lladdr)


def _pad(frame: bytes) -> bytes:
    return frame + b"\x00" * (MIN_FRAME - len(frame)) if len(frame) < MIN_FRAME else frame


def _arp(eth_dst: bytes, eth_src: bytes, op: int, sha: bytes, spa: bytes, tha: bytes, tpa: bytes) -> bytes:
    return _pad(_ETH.pack(eth_dst, eth_src, ETH_P_ARP) + _ARP.pack(1, 0x0800, 6, 4, op, sha, spa, tha, tpa))


def build_arp_reply(our_mac: bytes, our_ip: bytes, peer_mac: bytes, peer_ip: bytes) -> bytes:
    """Answer ``peer``'s request for ``our_ip``: unicast back to the requester."""
    return _arp(peer_mac, our_mac, ARP_REPLY, our_mac, our_ip, peer_mac, peer_ip)


def build_gratuitous_arp(mac: bytes, ip: bytes, *, reply: bool) -> bytes:
    """A broadcast gratuitous ARP for ``ip`` at ``mac``.

    Both forms have sender IP == target IP, which is what receivers test for. The reply form also
    needs target MAC == sender MAC: Linux (arp_is_garp) only treats a reply as gratuitous then, and
    only a gratuitous one may override a recently confirmed neighbour entry.
    """
    if reply:
        return _arp(BROADCAST_MAC, mac, ARP_REPLY, mac, ip, mac, ip)
    return _arp(BROADCAST_MAC, mac, ARP_REQUEST, mac, ip, ZERO_MAC, ip)


def build_neighbor_advertisement(
    our_mac: bytes,
    target: bytes,
    eth_dst: bytes,
    dst_ip: bytes,
    *,
    solicited: bool,
    override: bool = True,
) -> bytes:
    """A neighbour advertisement for ``target`` from ``our_mac`` with the target link-layer address option."""
    flags = (NA_FLAG_SOLICITED if solicited else 0) | (NA_FLAG_OVERRIDE if override else 0)
    body = struct.pack("!B3x16sBB6s", flags, target, ND_OPT_TARGET_LLADDR, 1, our_mac)
    icmp = struct.pack("!BBH", ICMPV6_NA, 0, 0) + body
    checksum = icmpv6_checksum(target, dst_ip, icmp)
    icmp = struct.pack("!BBH", ICMPV6_NA, 0, checksum) + body
    # Source address: the target itself, which this node now answers for (no address of its own is needed).
    ipv6 = _IPV6.pack(6 << 28, len(icmp), IPPROTO_ICMPV6, 255, target, dst_ip)
    return _ETH.pack(eth_dst, our_mac, ETH_P_IPV6) + ipv6 + icmp


def build_unsolicited_na(mac: bytes, target: bytes) -> bytes:
    """An unsolicited advertisement to all nodes with the Override flag, so caches switch to ``mac``."""
    return build_neighbor_advertisement(mac, target, ALL_NODES_MAC, ALL_NODES, solicited=False, override=True)


def build_solicited_na(our_mac: bytes, ns: NeighborSolicitation) -> bytes:
    """Answer a solicitation: unicast with the S flag, or to all nodes without it for a DAD probe (RFC 4861 7.2.4)."""
    if ns.src_ip == UNSPECIFIED_V6:
        return build_neighbor_advertisement(our_mac, ns.target, ALL_NODES_MAC, ALL_NODES, solicited=False)
    dst_mac = ns.source_lladdr if ns.source_lladdr is not None else ns.eth_src
    return build_neighbor_advertisement(our_mac, ns.target, dst_mac, ns.src_ip, solicited=True)
