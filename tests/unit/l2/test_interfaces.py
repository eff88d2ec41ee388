"""Interface choice (pure), rtnetlink message parsing on hand-made bytes, and a live dump."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbspeaker.l2 import netlink
from lbspeaker.l2.interfaces import Interface, choose_interfaces, from_dump, list_interfaces

MAC = bytes.fromhex("02000000000a")


def iface(name: str, *addrs: str, up: bool = True, broadcast: bool = True, index: int = 2) -> Interface:
    return Interface(
        name=name,
        index=index,
        mac=MAC,
        admin_up=True,
        oper_up=up,
        broadcast=broadcast,
        loopback=name == "lo",
        noarp=False,
        addresses=tuple(ipaddress.ip_interface(a) for a in addrs),
    )


NODE = [
    Interface("lo", 1, b"\x00" * 6, True, True, False, True, False, (ipaddress.ip_interface("127.0.0.1/8"),)),
    iface("eth0", "192.0.2.5/24", "2001:db8:1::5/64"),
    iface("eth1", "198.51.100.5/24"),
    iface("eth2", "203.0.113.5/24", up=False),
    iface("veth1234"),
    iface("cni0", "203.0.113.129/25"),
    iface("docker0"),
    iface("bond0"),
    iface("wg0", "203.0.113.64/29", broadcast=False),
]


@pytest.mark.parametrize(
    ("ip", "pattern", "expected"),
    [
        ("192.0.2.77", None, ["eth0"]),
        ("2001:db8:1::77", None, ["eth0"]),
        ("198.51.100.9", None, ["eth1"]),
        # The subnet's interface is down: fall back to every up broadcast non-virtual interface.
        ("203.0.113.7", None, ["eth0", "eth1", "bond0"]),
        # An address on a virtual interface's subnet is honoured: someone configured it.
        ("203.0.113.130", None, ["cni0"]),
        # No broadcast (wireguard): never, even when its subnet matches.
        ("203.0.113.65", None, ["eth0", "eth1", "bond0"]),
        ("2001:db8:2::1", None, ["eth0", "eth1", "bond0"]),
        # A pattern restricts both steps, matches whole names, and may pick virtual interfaces on purpose.
        ("192.0.2.77", "eth1", ["eth1"]),
        ("203.0.113.7", "eth.*", ["eth0", "eth1"]),
        ("203.0.113.7", "veth.*", ["veth1234"]),
        ("203.0.113.7", "eth", []),
    ],
)
def test_choose_interfaces(ip: str, pattern: str | None, expected: list[str]) -> None:
    assert choose_interfaces(ip, NODE, pattern) == expected


def test_choose_never_picks_loopback() -> None:
    assert "lo" not in choose_interfaces("127.0.0.5", NODE, ".*")


# --- netlink parsing ---------------------------------------------------------------------------------


def _attr(atype: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), atype) + payload
    return raw + b"\x00" * (-len(raw) % 4)


def _msg(mtype: int, body: bytes, seq: int = 1, flags: int = netlink.NLM_F_MULTI) -> bytes:
    raw = struct.pack("=IHHII", 16 + len(body), mtype, flags, seq, 0) + body
    return raw + b"\x00" * (-len(raw) % 4)


def _link(index: int, name: str, flags: int, mac: bytes) -> bytes:
    body = struct.pack("=BxHiII", 0, 1, index, flags, 0)
    body += _attr(netlink.IFLA_IFNAME, name.encode() + b"\x00") + _attr(netlink.IFLA_ADDRESS, mac)
    body += _attr(netlink.IFLA_OPERSTATE, b"\x06")
    return _msg(netlink.RTM_NEWLINK, body)


def _addr(index: int, family: int, prefix: int, raw: bytes, local: bytes | None = None) -> bytes:
    body = struct.pack("=BBBBI", family, prefix, 0, 0, index) + _attr(netlink.IFA_ADDRESS, raw)
    if local is not None:
        body += _attr(netlink.IFA_LOCAL, local)
    return _msg(netlink.RTM_NEWADDR, body)


UP = netlink.IFF_UP | netlink.IFF_RUNNING | netlink.IFF_BROADCAST


def test_parse_dump_joins_links_and_addresses() -> None:
    chunk = (
        _link(2, "eth0", UP, MAC)
        + _link(3, "eth1", netlink.IFF_UP | netlink.IFF_BROADCAST, MAC)  # no carrier: not running
        + _addr(2, socket.AF_INET, 24, bytes([198, 51, 100, 1]), local=bytes([192, 0, 2, 5]))
        + _addr(2, socket.AF_INET6, 64, ipaddress.IPv6Address("2001:db8::5").packed)
        + _addr(2, 17, 0, b"")  # another family: ignored
    )
    dump, done = netlink.parse_dump([chunk, _msg(netlink.NLMSG_DONE, b"\x00" * 4)], seq=1)
    assert done
    got = from_dump(dump)
    assert [(i.name, i.admin_up, i.oper_up, i.up, i.mac) for i in got] == [
        ("eth0", True, True, True, MAC),
        ("eth1", True, False, False, MAC),
    ]
    # IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on point-to-point links.
    assert got[0].addresses == (ipaddress.ip_interface("192.0.2.5/24"), ipaddress.ip_interface("2001:db8::5/64"))


def test_parse_dump_ignores_other_sequences_and_reports_errors() -> None:
    other = _link(9, "x", UP, MAC)
    other = other[:8] + struct.pack("=I", 99) + other[12:]
    dump, done = netlink.parse_dump([other], seq=1)
    assert dump.links == [] and not done
    error = _msg(netlink.NLMSG_ERROR, struct.pack("=i", -1) + b"\x00" * 16)
    with pytest.raises(netlink.NetlinkError, match="kernel error"):
        netlink.parse_dump([error], seq=1)


@pytest.mark.parametrize(
    "chunk",
    [
        struct.pack("=IHHII", 100, netlink.RTM_NEWLINK, 0, 1, 0),  # length past the datagram
        _msg(netlink.RTM_NEWLINK, b"\x00" * 8),  # ifinfomsg truncated
        _msg(netlink.RTM_NEWLINK, struct.pack("=BxHiII", 0, 1, 2, 0, 0) + struct.pack("=HH", 40, 3)),  # rtattr overrun
        _msg(netlink.RTM_NEWLINK, struct.pack("=BxHiII", 0, 1, 2, 0, 0)),  # no name
        _addr(2, socket.AF_INET, 33, bytes(4)),  # prefix too long
        _addr(2, socket.AF_INET6, 64, bytes(4)),  # wrong address size
    ],
)
def test_bad_netlink_messages_raise_netlink_error(chunk: bytes) -> None:
    with pytest.raises(netlink.NetlinkError):
        netlink.parse_dump([chunk], seq=1)


@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_fuzz_netlink_parser(data: bytes) -> None:
    with contextlib.suppress(netlink.NetlinkError):
        netlink.parse_dump([data], seq=int.from_bytes(data[8:12] or b"\x00", "little"))


def test_live_dump_lists_loopback() -> None:
    # Dumping links and addresses needs no privilege; every namespace has lo with 127.0.0.1/8.
    lo = [i for i in list_interfaces() if i.name == "lo"]
    assert len(lo) == 1
    assert lo[0].loopback and not lo[0].can_announce
    assert ipaddress.ip_interface("127.0.0.1/8") in lo[0].addresses
