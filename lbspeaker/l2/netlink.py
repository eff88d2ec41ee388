"""Minimal rtnetlink client: dump links and addresses, and wake on link/address changes.

Netlink rather than ``/sys/class/net`` or ``ip -j``: a netlink socket belongs to the network namespace
of the thread that made it, while sysfs shows the namespace it was mounted in, and the change
notifications (RTMGRP_LINK, RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR) arrive within milliseconds with no
polling. The parsing half is pure and checks every length, so it is tested on hand-made bytes.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

NETLINK_ROUTE = 0
RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV6_IFADDR = 0x100

NLMSG_ERROR = 2
NLMSG_DONE = 3
RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTM_NEWADDR = 20
RTM_DELADDR = 21
RTM_GETADDR = 22
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_DUMP = 0x300

IFLA_ADDRESS = 1
IFLA_IFNAME = 3
IFLA_OPERSTATE = 16
IFA_ADDRESS = 1
IFA_LOCAL = 2

IFF_UP = 0x1
IFF_BROADCAST = 0x2
IFF_LOOPBACK = 0x8
IFF_RUNNING = 0x40
IFF_NOARP = 0x80

_NLMSGHDR = struct.Struct("=IHHII")
_IFINFOMSG = struct.Struct("=BxHiII")
_IFADDRMSG = struct.Struct("=BBBBI")
_RTATTR = struct.Struct("=HH")


class NetlinkError(Exception):
    """A netlink message that is truncated or inconsistent, or an error reply from the kernel."""


@dataclass(frozen=True)
class Link:
    """One interface as RTM_NEWLINK describes it."""

    index: int
    name: str
    flags: int
    mac: bytes
    operstate: int = 0  # IF_OPER_*; IFF_RUNNING in flags already folds it into "operationally up"


@dataclass(frozen=True)
class Address:
    """One interface address as RTM_NEWADDR describes it."""

    index: int
    interface: ipaddress.IPv4Interface | ipaddress.IPv6Interface


@dataclass
class Dump:
    links: list[Link] = field(default_factory=list)
    addresses: list[Address] = field(default_factory=list)


def _align(n: int) -> int:
    return (n + 3) & ~3


def parse_attrs(data: bytes, start: int, end: int) -> dict[int, bytes]:
    """rtattr TLVs between ``start`` and ``end``; the last one of a type wins."""
    attrs: dict[int, bytes] = {}
    pos = start
    while pos + _RTATTR.size <= end:
        length, atype = _RTATTR.unpack_from(data, pos)
        if length < _RTATTR.size or pos + length > end:
            raise NetlinkError(f"rtattr at {pos}: length {length} overruns message end {end}")
        attrs[atype & 0x3FFF] = data[pos + _RTATTR.size : pos + length]  # strip NLA_F_NESTED/NET_BYTEORDER
        pos += _align(length)
    return attrs


def iter_messages(data: bytes) -> Iterator[tuple[int, int, int, bytes, int]]:
    """(type, flags, seq, data, payload start) for each netlink message in a datagram."""
    pos = 0
    while pos + _NLMSGHDR.size <= len(data):
        length, mtype, flags, seq, _pid = _NLMSGHDR.unpack_from(data, pos)
        if length < _NLMSGHDR.size or pos + length > len(data):
            raise NetlinkError(f"nlmsghdr at {pos}: length {length} overruns datagram of {len(data)}")
        yield mtype, flags, seq, data[pos : pos + length], _NLMSGHDR.size
        pos += _align(length)


def parse_link(msg: bytes, start: int) -> Link:
    if len(msg) < start + _IFINFOMSG.size:
        raise NetlinkError("ifinfomsg truncated")
    _family, _type, index, flags, _change = _IFINFOMSG.unpack_from(msg, start)
    attrs = parse_attrs(msg, start + _IFINFOMSG.size, len(msg))
    name_raw = attrs.get(IFLA_IFNAME)
    if name_raw is None:
        raise NetlinkError(f"link {index} has no IFLA_IFNAME")
    name = name_raw.split(b"\x00", 1)[0].decode("utf-8", "replace")
    oper = attrs.get(IFLA_OPERSTATE, b"\x00")
    return Link(index=index, name=name, flags=flags, mac=attrs.get(IFLA_ADDRESS, b""), operstate=oper[0] if oper else 0)


def parse_address(msg: bytes, start: int) -> Address | None:
    """An IPv4 or IPv6 address, or None for other families."""
    if len(msg) < start + _IFADDRMSG.size:
        raise NetlinkError("ifaddrmsg truncated")
    family, prefixlen, _flags, _scope, index = _IFADDRMSG.unpack_from(msg, start)
    attrs = parse_attrs(msg, start + _IFADDRMSG.size, len(msg))
    # IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on point-to-point links.
    raw = attrs.get(IFA_LOCAL, attrs.get(IFA_ADDRESS))
    if family == socket.AF_INET:
        if raw is None or len(raw) != 4 or prefixlen > 32:
            raise NetlinkError(f"bad IPv4 address on index {index}")
        return Address(index, ipaddress.IPv4Interface((raw, prefixlen)))
    if family == socket.AF_INET6:
        if raw is None or len(raw) != 16 or prefixlen > 128:
            raise NetlinkError(f"bad IPv6 address on index {index}")
        return Address(index, ipaddress.IPv6Interface((raw, prefixlen)))
    return None


def parse_dump(chunks: list[bytes], seq: int) -> tuple[Dump, bool]:
    """Fold datagrams of a dump answer into a Dump; the flag says whether NLMSG_DONE was seen."""
    dump = Dump()
    for chunk in chunks:
        for mtype, _flags, mseq, msg, start in iter_messages(chunk):
            if mseq != seq:
                continue
            if mtype == NLMSG_DONE:
                return dump, True
            if mtype == NLMSG_ERROR:
                if len(msg) < start + 4:
                    raise NetlinkError("truncated NLMSG_ERROR")
                (err,) = struct.unpack_from("=i", msg, start)
                if err:
                    raise NetlinkError(f"kernel error: {os.strerror(-err)}")
                continue
            if mtype == RTM_NEWLINK:
                dump.links.append(parse_link(msg, start))
            elif mtype == RTM_NEWADDR:
                addr = parse_address(msg, start)
                if addr is not None:
                    dump.addresses.append(addr)
    return dump, False


def _request(mtype: int, seq: int, body: bytes) -> bytes:
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), mtype, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


def dump(timeout: float = 2.0) -> Dump:
    """Dump all links and addresses of the calling thread's network namespace."""
    result = Dump()
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE) as sock:
        sock.settimeout(timeout)
        sock.bind((0, 0))
        for seq, (mtype, body) in enumerate(
            [(RTM_GETLINK, _IFINFOMSG.pack(0, 0, 0, 0, 0)), (RTM_GETADDR, _IFADDRMSG.pack(0, 0, 0, 0, 0))], start=1
        ):
            sock.send(_request(mtype, seq, body))
            chunks: list[bytes] = []
            while True:
                chunks.append(sock.recv(1 << 16))
                part, done = parse_dump(chunks[-1:], seq)
                result.links += part.links
                result.addresses += part.addresses
                if done:
                    break
    return result


def open_monitor() -> socket.socket:
    """A socket that becomes readable when any link or address changes in the caller's namespace."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))
    except BaseException:
        sock.close()
        raise
    return sock
