"""L2 announcements on the real kernel: a node namespace runs ``python -m lbspeaker.l2``, a client resolves.

What a client's kernel does with unsolicited announcements (why the takeover test first gives the
client a neighbour entry):
- ARP (net/ipv4/arp.c): a gratuitous ARP (sender IP == target IP; for the reply form also target
  MAC == sender MAC) only *updates an existing* entry, in any state, to the new MAC as STALE,
  overriding the 1 s locktime. With arp_accept=0 (the default) it never creates one.
- NDP (net/ipv6/ndisc.c): an unsolicited NA (S=0) with the Override flag updates an existing entry to
  the advertised MAC as STALE; without an entry it is ignored (unless accept_untracked_na is set).
A client that has no entry has not talked to the IP, and will ask when it does: answering covers it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import queue
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator

import pytest
from lbspeaker_testkit.netns import Host, Lab, in_netns, run

from lbspeaker.l2 import L2Announcer, packets

pytestmark = pytest.mark.skipif(
    any(shutil.which(tool) is None for tool in ("arping", "ndisc6", "ping")),
    reason="needs arping (iputils-arping), ndisc6 and ping",
)

VIP4 = "192.0.2.10"
VIP6 = "2001:db8::10"
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SO_TIMESTAMPNS = 35


def wait_for(what: str, check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll until ``check()``; bounded, and the failure says what was awaited."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


class Speaker:
    """A ``python -m lbspeaker.l2`` process in a host namespace, its logs collected as they come."""

    def __init__(self, lab: Lab, host: Host, *args: str) -> None:
        self.host = host
        self.proc = lab.popen(
            host,
            [sys.executable, "-m", "lbspeaker.l2", "--log-level", "DEBUG", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.stdout: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.stdout.put), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, self.log.append), daemon=True).start()
        try:
            line = self.stdout.get(timeout=20)
        except queue.Empty:
            raise AssertionError(f"announcer never became ready; log: {self.log[-20:]}") from None
        self.ready = json.loads(line)["ready"]

    @staticmethod
    def _pump(stream: Iterable[bytes], sink: Callable[[str], None]) -> None:
        for raw in stream:
            sink(raw.decode(errors="replace").rstrip("\n"))

    def logged(self, text: str) -> bool:
        return any(text in line for line in list(self.log))

    def stop(self) -> dict[str, int]:
        """SIGTERM, then the stats line it prints on the way out."""
        self.proc.terminate()
        self.proc.wait(timeout=10)
        line = self.stdout.get(timeout=5)
        stats: dict[str, int] = json.loads(line)["stats"]
        return stats


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab("l2") as made:
        yield made


@pytest.fixture
def hosts(lab: Lab) -> tuple[Host, Host, Host]:
    node1 = lab.add_host("n1", ipv4="192.0.2.1/24", ipv6="2001:db8::1/64")
    node2 = lab.add_host("n2", ipv4="192.0.2.2/24", ipv6="2001:db8::2/64")
    client = lab.add_host("c", ipv4="192.0.2.100/24", ipv6="2001:db8::100/64")
    for host in (node1, node2, client):
        # New namespaces inherit IPv4 forwarding from the root namespace; a forwarding node would answer
        # the client's traffic to a VIP with ICMP redirects (and ARP for the client to send them).
        host.run(["sysctl", "-qw", "net.ipv4.ip_forward=0"])
    return node1, node2, client


def arping(client: Host, ip: str, count: int = 3) -> list[str]:
    """MACs of the replies to ``count`` ARP requests (lower case)."""
    out = client.run(["arping", "-c", str(count), "-w", str(count + 2), "-I", "eth0", ip], check=False).stdout
    return [line.split("[", 1)[1].split("]", 1)[0].lower() for line in out.splitlines() if "reply from" in line]


def ndisc(client: Host, ip: str) -> str | None:
    out = client.run(["ndisc6", "-r", "3", "-w", "1000", ip, "eth0"], check=False).stdout
    for line in out.splitlines():
        if "link-layer address:" in line:
            return line.split(":", 1)[1].strip().lower()
    return None


def neighbour(client: Host, ip: str) -> tuple[str | None, list[str]]:
    """(lladdr, states) of the client's neighbour entry for ``ip``, (None, []) when there is none."""
    entries = json.loads(client.run(["ip", "-j", "neigh", "show", ip, "dev", "eth0"]).stdout or "[]")
    if not entries:
        return None, []
    return entries[0].get("lladdr"), entries[0].get("state", [])


def resolve(client: Host, ip: str) -> None:
    """Make the client's kernel resolve ``ip`` (the echo itself goes unanswered: nobody has the IP)."""
    client.run(["ping", "-6" if ":" in ip else "-4", "-c", "1", "-W", "1", ip], check=False)


class Capture:
    """A packet socket on a host's eth0 that sees frames both ways; also used to inject frames.

    ``frames`` holds (frame, pkttype); ``stamps`` the kernel's receive time of each (ns, CLOCK_REALTIME).
    """

    def __init__(self, host: Host) -> None:
        with in_netns(host.name):
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            self.sock.bind(("eth0", ETH_P_ALL))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.setblocking(False)
        self.frames: list[tuple[bytes, int]] = []
        self.stamps: list[int] = []

    def drain(self) -> list[tuple[bytes, int]]:
        while True:
            try:
                frame, ancdata, _flags, addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(16))
            except BlockingIOError:
                return self.frames
            stamp = time.time_ns()
            for level, kind, raw in ancdata:
                if (level, kind) == (socket.SOL_SOCKET, SO_TIMESTAMPNS):
                    sec, nsec = struct.unpack("qq", raw[:16])
                    stamp = sec * 1_000_000_000 + nsec
            self.frames.append((frame, addr[2]))
            self.stamps.append(stamp)

    def clear(self) -> None:
        self.drain()
        self.frames.clear()
        self.stamps.clear()

    def received(self) -> list[tuple[int, packets.Frame]]:
        """(receive time in ns, parsed frame) of every ARP/ND frame that came in."""
        self.drain()
        out: list[tuple[int, packets.Frame]] = []
        for (frame, pkttype), stamp in zip(self.frames, self.stamps, strict=True):
            if pkttype == PACKET_OUTGOING:
                continue
            with contextlib.suppress(packets.MalformedFrame):
                parsed = packets.parse_frame(frame)
                if parsed is not None:
                    out.append((stamp, parsed))
        return out

    def parsed(self, outgoing: bool) -> list[packets.Frame]:
        out: list[packets.Frame] = []
        for frame, pkttype in self.drain():
            if (pkttype == PACKET_OUTGOING) != outgoing:
                continue
            with contextlib.suppress(packets.MalformedFrame):
                parsed = packets.parse_frame(frame)
                if parsed is not None:
                    out.append(parsed)
        return out

    def close(self) -> None:
        self.sock.close()


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


# --- answering -----------------------------------------------------------------------------------------


def test_arp_and_ndp_are_answered_by_the_node_mac(lab: Lab, hosts: tuple[Host, Host, Host]) -> None:
    node, _, client = hosts
    speaker = Speaker(lab, node, "--interface", "eth0", "--ip", VIP4, "--ip", VIP6)
    assert speaker.ready == {VIP4: {"eth0": node.mac}, VIP6: {"eth0": node.mac}}

    assert arping(client, VIP4) == [node.mac] * 3
    resolve(client, VIP4)
    assert neighbour(client, VIP4)[0] == node.mac

    assert ndisc(client, VIP6) == node.mac
    resolve(client, VIP6)
    assert neighbour(client, VIP6)[0] == node.mac

    # IPs nobody announces stay unanswered: the node's kernel does not answer for them either.
    assert arping(client, "192.0.2.11", count=1) == []
    stats = speaker.stop()
    assert stats["responses_sent"] >= 5 and stats["errors"] == 0


def test_solicited_node_group_is_joined_and_reported_to_a_snooping_switch(
    lab: Lab, hosts: tuple[Host, Host, Host]
) -> None:
    """The node joins ff02::1:ff00:10 for 2001:db8::10, so an MLD-snooping switch forwards its NS there.

    (The Linux bridge still floods solicited-node traffic for unknown groups, so the answer alone
    would not show the join; the bridge's learned group table does.)
    """
    node, _, client = hosts
    run(["ip", "-n", lab.switch, "link", "set", "br0", "type", "bridge", "mcast_snooping", "1", "mcast_querier", "1"])
    speaker = Speaker(lab, node, "--interface", "eth0", "--ip", VIP6)
    assert "ff02::1:ff00:10" in node.run(["ip", "-6", "maddr", "show", "dev", "eth0"]).stdout

    def learned() -> bool:
        groups = json.loads(run(["bridge", "-n", lab.switch, "-j", "mdb", "show"]).stdout or "[]")
        entries = [e for block in groups for e in block.get("mdb", [])]
        return any(e.get("grp") == "ff02::1:ff00:10" and e.get("port") == node.switch_port for e in entries)

    wait_for("the switch to learn the node's solicited-node group from its MLD report", learned, timeout=15)
    assert ndisc(client, VIP6) == node.mac
    speaker.stop()
    wait_for(
        "the group to be left after stopping",
        lambda: "ff02::1:ff00:10" not in node.run(["ip", "-6", "maddr", "show", "dev", "eth0"]).stdout,
    )


def test_every_solicited_node_group_is_joined_beyond_one_sockets_option_memory(
    lab: Lab, hosts: tuple[Host, Host, Host]
) -> None:
    node, _, client = hosts
    # A small net.core.optmem_max (per namespace) caps the IPv6 memberships one socket can hold.
    node.run(["sysctl", "-qw", "net.core.optmem_max=10240"])
    vips = [str(ipaddress.ip_address("2001:db8::1:0") + i) for i in range(600)]
    speaker = Speaker(lab, node, "--interface", "eth0", *[arg for ip in vips for arg in ("--ip", ip)])
    joined = node.run(["ip", "-6", "maddr", "show", "dev", "eth0"]).stdout
    groups = {str(ipaddress.ip_address(packets.solicited_node(ipaddress.ip_address(ip).packed)[0])) for ip in vips}
    assert len(groups) == 600
    assert [group for group in sorted(groups) if f"inet6 {group}\n" not in joined] == []
    assert ndisc(client, vips[-1]) == node.mac
    assert speaker.stop()["errors"] == 0


# --- takeover --------------------------------------------------------------------------------------------


def test_takeover_flips_the_client_by_announcements_alone(lab: Lab, hosts: tuple[Host, Host, Host]) -> None:
    node1, node2, client = hosts
    # node1 is not told it lost the IPs (the speaker core would); it must not defend them within the test.
    first = Speaker(lab, node1, "--interface", "eth0", "--ip", VIP4, "--ip", VIP6, "--reclaim-delay", "60")
    resolve(client, VIP4)
    resolve(client, VIP6)
    assert neighbour(client, VIP4)[0] == node1.mac
    assert neighbour(client, VIP6)[0] == node1.mac

    capture = Capture(client)
    try:
        capture.drain()
        capture.frames.clear()
        second = Speaker(lab, node2, "--interface", "eth0", "--ip", VIP4, "--ip", VIP6)
        wait_for("the client's IPv4 entry to move to node2", lambda: neighbour(client, VIP4)[0] == node2.mac)
        wait_for("the client's IPv6 entry to move to node2", lambda: neighbour(client, VIP6)[0] == node2.mac)
        # Announcements set STALE; a resolution (request + unicast answer) would have set REACHABLE.
        assert neighbour(client, VIP4)[1] == ["STALE"]
        assert neighbour(client, VIP6)[1] == ["STALE"]
        asked = [
            f
            for f in capture.parsed(outgoing=True)
            if isinstance(f, packets.ArpPacket | packets.NeighborSolicitation)
        ]
        assert asked == [], "the client asked, so the flip may not be the announcements' doing"
        heard = capture.parsed(outgoing=False)
        garps = {
            f.op
            for f in heard
            if isinstance(f, packets.ArpPacket) and f.sender_ip == f.target_ip == ipaddress.ip_address(VIP4).packed
        }
        assert garps == {packets.ARP_REQUEST, packets.ARP_REPLY}
        unsolicited = [
            f for f in heard if isinstance(f, packets.NeighborAdvertisement) and f.dst_ip == packets.ALL_NODES
        ]
        assert unsolicited and all(f.flags & packets.NA_FLAG_OVERRIDE for f in unsolicited)
    finally:
        capture.close()

    # node1 heard node2 claim its IPs: reported (once per IP and interface within the rate limit).
    wait_for("node1 to report the duplicate", lambda: first.logged(f"duplicate: {VIP4} is also claimed by {node2.mac}"))
    stats1 = first.stop()
    assert stats1["duplicates_seen"] >= 1
    assert arping(client, VIP4) == [node2.mac] * 3
    assert second.stop()["gratuitous_sent"] == 3 * 3  # per round: ARP request + reply + NA, three rounds


def test_announcements_create_no_entry_without_arp_accept(lab: Lab, hosts: tuple[Host, Host, Host]) -> None:
    """The rule the takeover test relies on, shown: no entry before, none after, unless arp_accept=1."""
    node, _, client = hosts
    capture = Capture(client)
    try:
        speaker = Speaker(lab, node, "--interface", "eth0", "--ip", VIP4, "--repeats", "0")
        wait_for(
            "the gratuitous ARP to reach the client",
            lambda: any(isinstance(f, packets.ArpPacket) and f.op == 2 for f in capture.parsed(outgoing=False)),
        )
        assert neighbour(client, VIP4) == (None, [])
        speaker.stop()
        client.run(["sysctl", "-qw", "net.ipv4.conf.eth0.arp_accept=1"])
        capture.frames.clear()
        speaker = Speaker(lab, node, "--interface", "eth0", "--ip", VIP4, "--repeats", "0")
        wait_for("arp_accept=1 to create the entry", lambda: neighbour(client, VIP4)[0] == node.mac)
        speaker.stop()
    finally:
        capture.close()


# --- robustness --------------------------------------------------------------------------------------------


def _bad_frames(client_mac: bytes, node_mac: bytes) -> list[bytes]:
    eth_arp = packets.BROADCAST_MAC + client_mac + b"\x08\x06"
    good_arp = packets.build_gratuitous_arp(client_mac, ipaddress.ip_address("192.0.2.100").packed, reply=False)
    good_arp = good_arp[:32] + b"\x00" * 6 + ipaddress.ip_address(VIP4).packed + good_arp[42:]
    target = ipaddress.ip_address(VIP6).packed
    src = ipaddress.ip_address("2001:db8::100").packed
    group, group_mac = packets.solicited_node(target)

    def ns(options: bytes, *, checksum_ok: bool = True, cut: int = 0) -> bytes:
        dst, dst_mac = (target, node_mac) if cut else (group, group_mac)  # NUD-style unicast for one of them
        body = bytes([135, 0, 0, 0, 0, 0, 0, 0]) + target + options
        csum = packets.icmpv6_checksum(src, dst, body) ^ (0 if checksum_ok else 0x5555)
        body = body[:2] + csum.to_bytes(2, "big") + body[4:]
        ipv6 = bytes([0x60, 0, 0, 0]) + len(body).to_bytes(2, "big") + bytes([58, 255]) + src + dst
        frame = dst_mac + client_mac + b"\x86\xdd" + ipv6 + body
        return frame[: len(frame) - cut]

    return [
        eth_arp + bytes([0, 1, 8, 0, 6, 4, 0, 1]),  # ARP cut after the opcode
        good_arp[:14] + bytes([0, 1, 8, 0, 8, 4]) + good_arp[20:],  # hardware length 8
        good_arp[:22] + b"\x01\x00\x5e\x00\x00\x01" + good_arp[28:],  # multicast sender MAC
        ns(bytes([1, 1]) + client_mac, checksum_ok=False),  # bad checksum
        ns(bytes([1, 0]) + b"\x00" * 6),  # zero-length option: a parser that loops here never returns
        ns(bytes([1, 3]) + client_mac),  # option longer than the packet
        ns(bytes([1, 1]) + client_mac, cut=10),  # payload length says more than the frame has
        eth_arp + bytes(range(256)) * 5,  # oversized garbage
    ]


def test_garbage_does_not_stop_the_responder(lab: Lab, hosts: tuple[Host, Host, Host]) -> None:
    node, _, client = hosts
    plain_switch(lab)
    speaker = Speaker(lab, node, "--interface", "eth0", "--ip", VIP4, "--ip", VIP6)
    capture = Capture(client)
    bad = _bad_frames(mac_bytes(client.mac), mac_bytes(node.mac))
    try:
        for _ in range(20):  # bounded: 20 rounds of a handful of frames
            for frame in bad:
                capture.sock.send(frame[:1514])
    finally:
        capture.close()
    assert arping(client, VIP4) == [node.mac] * 3
    assert ndisc(client, VIP6) == node.mac
    stats = speaker.stop()
    # All but the oversized garbage (its "opcode" is neither request nor reply) pass the kernel filter.
    assert stats["malformed_frames"] == 20 * 7
    assert stats["errors"] == 0
    assert not any("Traceback" in line for line in speaker.log)


def test_interface_down_stops_answering_and_up_resumes_with_announcements(
    lab: Lab, hosts: tuple[Host, Host, Host]
) -> None:
    node, _, client = hosts
    speaker = Speaker(lab, node, "--interface", "eth0", "--ip", VIP4)
    assert arping(client, VIP4) == [node.mac] * 3
    resolve(client, VIP4)

    lab.set_port(node, False)
    wait_for("the announcer to notice eth0 went down", lambda: speaker.logged("interface eth0 down"), timeout=5)
    assert arping(client, VIP4, count=2) == []

    capture = Capture(client)
    try:
        lab.set_port(node, True)
        wait_for("the announcer to notice eth0 came back", lambda: speaker.logged("interface eth0 up"), timeout=5)
        # Coming back, the node announces again: switches may have forgotten where its MAC lives.
        wait_for(
            "gratuitous ARP after the link came back",
            lambda: any(
                isinstance(f, packets.ArpPacket) and f.sender_ip == f.target_ip and f.sender_mac == mac_bytes(node.mac)
                for f in capture.parsed(outgoing=False)
            ),
        )
    finally:
        capture.close()
    assert arping(client, VIP4) == [node.mac] * 3
    assert speaker.stop()["errors"] == 0


# --- frames that must not be answered --------------------------------------------------------------------

FOREIGN_MAC = "02:00:5e:00:99:99"  # no host has it, so the switch floods frames sent to it
MACVLAN_MAC = "02:00:5e:00:77:77"
SOL_PACKET = 263
PACKET_AUXDATA = 8
TP_STATUS_VLAN_VALID = 0x10
PACKET_OTHERHOST = 3


def add_macvlan(node: Host) -> None:
    """A macvlan (no address) on the node's eth0, as container networking makes them."""
    cmd = ["ip", "link", "add", "link", "eth0", "name", "mv0", "address", MACVLAN_MAC]
    made = node.run([*cmd, "type", "macvlan", "mode", "bridge"], check=False)
    if made.returncode != 0:
        pytest.skip(f"this kernel cannot make a macvlan: {made.stderr.strip()}")
    node.run(["ip", "link", "set", "mv0", "up"])


def probes(client: Host, node: Host) -> list[tuple[str, bytes, bool]]:
    """(requester IP, frame, answered?) — each request asks for a VIP from its own requester address.

    Answered: broadcast/multicast and unicast to the node, also 802.1p priority-tagged (VLAN 0 is the
    untagged VLAN; the kernel itself answers those). Not answered: tagged for VLAN 10, unicast to
    another MAC, unicast to a macvlan stacked on the node's eth0.
    """
    from scapy.layers.inet6 import ICMPv6ND_NS, ICMPv6NDOptSrcLLAddr, IPv6
    from scapy.layers.l2 import ARP, Dot1Q, Ether

    group_mac = packets.solicited_node(ipaddress.ip_address(VIP6).packed)[1].hex(":")

    def arp(host: int, dst: str, vlan: int | None = None) -> tuple[str, bytes]:
        spa = f"192.0.2.{host}"
        eth = Ether(src=client.mac, dst=dst)
        body = ARP(op=1, hwsrc=client.mac, psrc=spa, hwdst="00:00:00:00:00:00", pdst=VIP4)
        return spa, bytes(eth / Dot1Q(vlan=vlan, prio=3) / body if vlan is not None else eth / body)

    def ns(host: int, dst: str, vlan: int | None = None) -> tuple[str, bytes]:
        src = f"2001:db8::{host:x}"
        multicast = dst == group_mac
        ipv6 = IPv6(src=src, dst="ff02::1:ff00:10" if multicast else VIP6, hlim=255)
        body = ipv6 / ICMPv6ND_NS(tgt=VIP6) / ICMPv6NDOptSrcLLAddr(lladdr=client.mac)
        eth = Ether(src=client.mac, dst=dst)
        return src, bytes(eth / Dot1Q(vlan=vlan) / body if vlan is not None else eth / body)

    bcast = "ff:ff:ff:ff:ff:ff"
    return [
        (*arp(101, bcast), True),
        (*arp(102, node.mac), True),
        (*arp(103, bcast, vlan=0), True),
        (*arp(111, bcast, vlan=10), False),
        (*arp(112, node.mac, vlan=10), False),
        (*arp(113, FOREIGN_MAC), False),
        (*arp(114, MACVLAN_MAC), False),
        (*ns(0x101, group_mac), True),
        (*ns(0x102, node.mac), True),
        (*ns(0x111, group_mac, vlan=10), False),
        (*ns(0x112, node.mac, vlan=10), False),
        (*ns(0x113, FOREIGN_MAC), False),
        (*ns(0x114, MACVLAN_MAC), False),
    ]


def requester(frame: bytes) -> str | None:
    """The requester address of an ARP request or NS for a VIP (None: another frame, e.g. the macvlan's DAD)."""
    parsed = packets.parse_frame(frame)
    if isinstance(parsed, packets.ArpPacket) and parsed.target_ip == ipaddress.ip_address(VIP4).packed:
        return str(ipaddress.ip_address(parsed.sender_ip))
    if isinstance(parsed, packets.NeighborSolicitation) and parsed.target == ipaddress.ip_address(VIP6).packed:
        return str(ipaddress.ip_address(parsed.src_ip))
    return None


def test_kernel_filter_passes_only_frames_that_arrive_for_this_interface(
    lab: Lab, hosts: tuple[Host, Host, Host]
) -> None:
    """The filters on real packet sockets, and the kernel facts they rest on (seen on an unfiltered socket)."""
    from lbspeaker.l2 import bpf

    node, _, client = hosts
    add_macvlan(node)
    eth0_index = int(node.run(["cat", "/sys/class/net/eth0/ifindex"]).stdout)
    socks: list[socket.socket] = []
    with in_netns(node.name):
        for proto, program in ((0x0806, bpf.arp_program(eth0_index)), (0x86DD, bpf.nd_program(eth0_index))):
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(proto))
            bpf.attach(sock, program)
            sock.bind(("eth0", proto))
            socks.append(sock)
        bare = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
        bare.bind(("eth0", 0x0806))
    bare.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
    for sock in (*socks, bare):
        sock.setblocking(False)
    sender = Capture(client)
    sent = probes(client, node)
    try:
        for _, frame, _ in sent:
            sender.sock.send(frame)
        time.sleep(0.3)
        passed: set[str] = set()
        for sock in socks:
            while True:
                try:
                    if (key := requester(sock.recv(2048))) is not None:
                        passed.add(key)
                except BlockingIOError:
                    break
        seen: dict[str, tuple[str, int, int, int]] = {}  # requester -> (interface, pkttype, aux status, aux tci)
        while True:
            try:
                data, ancdata, _flags, addr = bare.recvmsg(2048, socket.CMSG_SPACE(20))
            except BlockingIOError:
                break
            aux = next(raw for level, kind, raw in ancdata if (level, kind) == (SOL_PACKET, PACKET_AUXDATA))
            status, _len, _snap, _mac, _net, tci, _tpid = struct.unpack("IIIHHHH", aux[:20])
            assert data[12:14] == b"\x08\x06", "the kernel hands protocol sockets untagged frames"
            seen[requester(data) or "?"] = (addr[0], addr[2], status, tci)
    finally:
        sender.close()
        for sock in (*socks, bare):
            sock.close()
    assert passed == {key for key, _, answered in sent if answered}
    # Why the filter looks at pkttype and the interface, not at the bytes or the aux data:
    for tagged in ("192.0.2.111", "192.0.2.112"):
        _ifname, pkttype, status, tci = seen[tagged]
        assert (pkttype, status & TP_STATUS_VLAN_VALID, tci) == (PACKET_OTHERHOST, 0, 0), "tag gone, OTHERHOST"
    assert seen["192.0.2.113"][1] == PACKET_OTHERHOST
    assert seen["192.0.2.114"][:2] == ("mv0", 0), "for the macvlan: PACKET_HOST, on the macvlan's index"
    assert seen["192.0.2.101"][:2] == ("eth0", 1)


def plain_switch(lab: Lab) -> None:
    """Make the lab bridge forward frames a real switch forwards but the Linux bridge would check.

    It drops IPv6 whose payload length disagrees with the frame, both in MLD snooping and in
    br_netfilter's header check; a plain switch does not, so the node must cope.
    """
    run(["ip", "-n", lab.switch, "link", "set", "br0", "type", "bridge", "mcast_snooping", "0"])
    # check=False: without br_netfilter loaded the sysctl does not exist and there is nothing to turn off.
    run(["ip", "netns", "exec", lab.switch, "sysctl", "-qw", "net.bridge.bridge-nf-call-ip6tables=0"], check=False)


def test_tagged_and_foreign_unicast_requests_are_not_answered(lab: Lab, hosts: tuple[Host, Host, Host]) -> None:
    node, _, client = hosts
    add_macvlan(node)
    plain_switch(lab)
    speaker = Speaker(lab, node, "--interface", "eth0", "--ip", VIP4, "--ip", VIP6)
    bad = _bad_frames(mac_bytes(client.mac), mac_bytes(node.mac))
    tagged_bad = [frame[:12] + b"\x81\x00\x00\x0a" + frame[12:] for frame in bad]  # VLAN 10
    sent = probes(client, node)
    capture = Capture(client)
    try:
        capture.drain()
        capture.frames.clear()
        for _, frame, _ in sent:  # garbage before every request: it must not stop the next answer
            for junk in bad + tagged_bad:
                capture.sock.send(junk[:1514])
            capture.sock.send(frame)
        wanted = {key for key, _, answered in sent if answered}

        def answered() -> set[str]:
            out = set()
            for f in capture.parsed(outgoing=False):
                if isinstance(f, packets.ArpPacket) and f.op == packets.ARP_REPLY and f.eth_src == mac_bytes(node.mac):
                    out.add(str(ipaddress.ip_address(f.target_ip)))
                elif isinstance(f, packets.NeighborAdvertisement) and f.flags & packets.NA_FLAG_SOLICITED:
                    out.add(str(ipaddress.ip_address(f.dst_ip)))
            return out

        wait_for("the answers to the requests that deserve one", lambda: answered() >= wanted)
        time.sleep(0.3)  # time for any wrong answer to arrive too
        assert answered() == wanted
    finally:
        capture.close()
    assert arping(client, VIP4, count=1) == [node.mac]  # still answering afterwards
    stats = speaker.stop()
    assert stats["responses_sent"] == len(wanted) + 1
    # Untagged garbage reaches the parser and is counted; tagged garbage never leaves the kernel.
    assert stats["malformed_frames"] == len(sent) * 7
    assert stats["errors"] == 0
    assert not any("Traceback" in line for line in speaker.log)


# --- another MAC claims an IP we announce ------------------------------------------------------------------


def announcement_of(frame: packets.Frame, mac: bytes) -> str | None:
    """The VIP that ``frame`` announces at ``mac`` (gratuitous ARP, either form, or unsolicited NA), else None."""
    if isinstance(frame, packets.ArpPacket) and frame.sender_mac == mac and frame.sender_ip == frame.target_ip:
        return str(ipaddress.ip_address(frame.sender_ip))
    if (
        isinstance(frame, packets.NeighborAdvertisement)
        and frame.eth_src == mac
        and frame.dst_ip == packets.ALL_NODES
        and not frame.flags & packets.NA_FLAG_SOLICITED
    ):
        return str(ipaddress.ip_address(frame.target))
    return None


def claims(claimant: Host) -> list[bytes]:
    """What a node that wrongly took both VIPs over sends: gratuitous ARP (both forms) and an unsolicited NA."""
    mac = mac_bytes(claimant.mac)
    v4, v6 = ipaddress.ip_address(VIP4).packed, ipaddress.ip_address(VIP6).packed
    return [
        packets.build_gratuitous_arp(mac, v4, reply=False),
        packets.build_gratuitous_arp(mac, v4, reply=True),
        packets.build_unsolicited_na(mac, v6),
    ]


def test_a_claim_by_another_mac_is_answered_by_announcing_again(lab: Lab, hosts: tuple[Host, Host, Host]) -> None:
    """The client follows the claimant, then — ``--reclaim-delay`` later — us again (delay long enough to see it)."""
    node, claimant, client = hosts
    delay = 1.0
    speaker = Speaker(lab, node, "--interface", "eth0", "--ip", VIP4, "--ip", VIP6, "--reclaim-delay", str(delay))
    resolve(client, VIP4)
    resolve(client, VIP6)
    assert neighbour(client, VIP4)[0] == neighbour(client, VIP6)[0] == node.mac
    time.sleep(1.2)  # the start's own announcement rounds are over
    sender = Capture(claimant)
    try:
        sent = time.monotonic()
        for frame in claims(claimant):
            sender.sock.send(frame)
    finally:
        sender.close()

    def both(mac: str) -> bool:
        return neighbour(client, VIP4)[0] == mac and neighbour(client, VIP6)[0] == mac

    wait_for("the claim to move the client's entries to the claimant", lambda: both(claimant.mac), timeout=delay * 0.8)
    wait_for("our announcements to move them back", lambda: both(node.mac), timeout=delay + 2.0)
    took = time.monotonic() - sent
    assert took >= delay * 0.9, f"announced again after {took:.2f} s, before the delay"
    assert neighbour(client, VIP4)[1] == neighbour(client, VIP6)[1] == ["STALE"]  # announced, not resolved
    assert speaker.logged(f"duplicate: {VIP4} is also claimed by {claimant.mac} on eth0")  # the callback's path
    assert speaker.logged(f"duplicate: {VIP6} is also claimed by {claimant.mac} on eth0")
    time.sleep(1.2)  # the re-announcement's repeat rounds
    stats = speaker.stop()
    # The reply form came right after the request form: one re-announcement answers both claims.
    assert stats["reannouncements"] == 2 and stats["duplicates_seen"] == 3
    assert stats["gratuitous_sent"] == 2 * 3 * 3  # the start's rounds and the re-announcement's: 3 frames, 3 rounds


def test_a_storm_of_claims_yields_a_bounded_number_of_announcements(lab: Lab, hosts: tuple[Host, Host, Host]) -> None:
    """Default timings (delay 0.1 s, burst 3, then 1 per s; 3 rounds each): prompt, bounded, and ours the last word."""
    node, claimant, client = hosts
    delay, burst, interval, rounds = 0.1, 3, 1.0, 3
    speaker = Speaker(lab, node, "--interface", "eth0", "--ip", VIP4, "--ip", VIP6)
    resolve(client, VIP4)
    resolve(client, VIP6)
    time.sleep(1.2)  # the start's own announcement rounds are over
    capture = Capture(client)
    sender = Capture(claimant)
    storm = 2.0
    try:
        capture.clear()
        frames = claims(claimant)
        start = time.monotonic()
        sent = 0
        for i in range(200):  # bounded: 200 x 3 claims over 2 s
            if time.monotonic() - start > storm * 2:
                break
            for frame in frames:
                sender.sock.send(frame)
            sent += len(frames)
            capture.drain()
            time.sleep(max(0.0, start + (i + 1) * storm / 200 - time.monotonic()))
        length = time.monotonic() - start
        wait_for("the client's entries to point at us after the storm",
                 lambda: neighbour(client, VIP4)[0] == neighbour(client, VIP6)[0] == node.mac,
                 timeout=delay + interval + 1.0)
        time.sleep(delay + interval + rounds * 0.5)  # any announcement still due has gone out
        heard = capture.received()
    finally:
        capture.close()
        sender.close()
    ours = mac_bytes(node.mac)
    claim_times = [t for t, f in heard if announcement_of(f, mac_bytes(claimant.mac)) is not None]
    assert len(claim_times) == sent >= 3 * 100
    for vip in (VIP4, VIP6):
        # One round is one gratuitous ARP request (+ reply) or one unsolicited NA.
        mine = [t for t, f in heard if announcement_of(f, ours) == vip
                and not (isinstance(f, packets.ArpPacket) and f.op == packets.ARP_REPLY)]
        bound = (burst + 1 + length / interval) * rounds  # any window of t s holds at most burst + t/interval
        assert burst <= len(mine) <= bound, f"{vip}: {len(mine)} rounds for 200 claims, bound {bound:.0f}"
        first = (mine[0] - claim_times[0]) / 1e9
        assert first <= delay + 0.4, f"{vip}: first re-announcement {first * 1e3:.0f} ms after the first claim"
        assert mine[-1] > claim_times[-1], f"{vip}: the claimant had the last word"
    stats = speaker.stop()
    assert 2 * burst <= stats["reannouncements"] <= 2 * (burst + 1 + length / interval)
    assert stats["errors"] == 0


# --- the facade in-process -------------------------------------------------------------------------------


def test_facade_update_starts_and_stops_answering(lab: Lab, hosts: tuple[Host, Host, Host]) -> None:
    node, _, client = hosts
    changes: list[int] = []
    duplicates: list[tuple[str, str, str]] = []
    with in_netns(node.name):
        # Threads started here inherit the namespace; every call that opens sockets is made from here too.
        announcer = L2Announcer(
            on_duplicate=lambda *args: duplicates.append(args),
            on_interfaces_changed=lambda interfaces: changes.append(len(interfaces)),
        )
        announcer.start()
    try:
        assert announcer.interfaces_for(VIP4) == ["eth0"]
        assert announcer.interfaces_for("203.0.113.9") == ["eth0"]  # no subnet match: fallback, lo skipped
        with in_netns(node.name):
            announcer.update({VIP4: ["eth0"], VIP6: ["eth0"], "192.0.2.11": ["eth0"]})
        assert announcer.announced() == {VIP4: ["eth0"], VIP6: ["eth0"], "192.0.2.11": ["eth0"]}
        assert arping(client, "192.0.2.11") == [node.mac] * 3
        with in_netns(node.name):
            announcer.update({VIP4: ["eth0"], VIP6: ["eth0"]})
        # Loss takes effect for the very next request.
        assert arping(client, "192.0.2.11", count=2) == []
        assert arping(client, VIP4, count=1) == [node.mac]

        lab.set_port(node, False)
        wait_for("eth0 to leave the announced set", lambda: announcer.announced() == {})
        assert changes, "the interface listener was not called"
        lab.set_port(node, True)
        wait_for("eth0 to come back", lambda: announcer.announced() == {VIP4: ["eth0"], VIP6: ["eth0"]})
        assert ndisc(client, VIP6) == node.mac
        stats = announcer.stats()
        assert stats["pairs_active"] == 2 and stats["responses_sent"] >= 5 and stats["errors"] == 0
        assert duplicates == []
    finally:
        announcer.stop()
    # A call from another namespace is refused rather than binding to that namespace's same-named
    # interface. The "wrong" namespace here is the client's, so even a broken guard sends nothing outside the lab.
    with in_netns(node.name):
        announcer = L2Announcer()
        announcer.start()
    try:
        with in_netns(client.name), pytest.raises(RuntimeError, match="another network namespace"):
            announcer.update({VIP4: ["eth0"]})
    finally:
        announcer.stop()


def test_an_ip_lost_and_regained_is_announced_again(lab: Lab, hosts: tuple[Host, Host, Host]) -> None:
    """The owner gives the IPs up, another node announces them meanwhile, the owner gets them back."""
    node, interim, client = hosts
    with in_netns(node.name):
        announcer = L2Announcer(repeats=0)
        announcer.start()
    sender = Capture(interim)
    try:
        with in_netns(node.name):
            announcer.update({VIP4: ["eth0"], VIP6: ["eth0"]})
        resolve(client, VIP4)
        resolve(client, VIP6)
        assert neighbour(client, VIP4)[0] == neighbour(client, VIP6)[0] == node.mac
        with in_netns(node.name):
            announcer.update({})
        for frame in claims(interim):
            sender.sock.send(frame)
        wait_for("the interim owner's announcements to move the client",
                 lambda: neighbour(client, VIP4)[0] == neighbour(client, VIP6)[0] == interim.mac)
        time.sleep(0.3)
        assert announcer.stats()["reannouncements"] == 0, "an IP it no longer had was defended"
        assert neighbour(client, VIP4)[0] == interim.mac
        with in_netns(node.name):
            announcer.update({VIP4: ["eth0"], VIP6: ["eth0"]})
        wait_for("the regained IPs' announcements to move the client back",
                 lambda: neighbour(client, VIP4)[0] == neighbour(client, VIP6)[0] == node.mac, timeout=2.0)
        assert neighbour(client, VIP4)[1] == neighbour(client, VIP6)[1] == ["STALE"]  # announced, not resolved
        assert announcer.stats()["gratuitous_sent"] == 2 * 3  # one round (repeats=0) per gain, 3 frames each
    finally:
        sender.close()
        announcer.stop()
