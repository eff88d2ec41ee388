"""An ARP prober for a client namespace: a request for one IP every ``period`` seconds from a raw socket,
and every reply recorded with its time and MAC. What the failover benchmark and the fault tests watch
(who answers, when, and whether two nodes ever do at once).

Bounded: it sends at most ``limit / period`` requests and stops after ``limit`` seconds whatever happens.
Only inside the lab's namespaces, only to documentation addresses the lab assigned.
"""

from __future__ import annotations

import ipaddress
import itertools
import socket
import struct
import threading
import time

from lbspeaker.l2 import packets
from lbspeaker_testkit.netns import Host, in_netns

ETH_P_ALL = 0x0003
ETH_P_ARP = 0x0806


def arp_request(src_mac: bytes, src_ip: bytes, target: bytes) -> bytes:
    eth = packets.BROADCAST_MAC + src_mac + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, packets.ARP_REQUEST, src_mac, src_ip,
                      packets.ZERO_MAC, target)
    return (eth + arp).ljust(packets.MIN_FRAME, b"\0")


def packet_socket(host: Host) -> socket.socket:
    with in_netns(host.name):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        sock.bind(("eth0", ETH_P_ALL))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 23)
    return sock


class Prober:
    """ARP requests for ``ip`` every ``period`` s from the client; records (time, replying MAC)."""

    def __init__(self, client: Host, ip: str, period: float = 0.01, limit: float = 20.0) -> None:
        self.sock = packet_socket(client)
        self.sock.settimeout(0.005)
        mac = bytes.fromhex(client.mac.replace(":", ""))
        assert client.ipv4 is not None
        self.frame = arp_request(mac, client.ipv4.ip.packed, ipaddress.IPv4Address(ip).packed)
        self.target = ipaddress.IPv4Address(ip).packed
        self.period = period
        self.limit = limit  # seconds: the sending loop never outlives this
        self.replies: list[tuple[float, str]] = []
        self.sent: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Prober:
        self._thread.start()
        return self

    def _run(self) -> None:
        started = time.monotonic()
        next_send = started
        while not self._stop.is_set() and time.monotonic() - started < self.limit \
                and len(self.sent) < self.limit / self.period:
            now = time.monotonic()
            if now >= next_send:
                try:
                    self.sock.send(self.frame)
                except OSError:
                    return
                self.sent.append(now)
                next_send += self.period
            try:
                frame = self.sock.recv(2048)
            except TimeoutError:
                continue
            except OSError:  # the lab is being torn down
                return
            try:
                parsed = packets.parse_frame(frame)
            except packets.MalformedFrame:
                continue
            if isinstance(parsed, packets.ArpPacket) and parsed.op == packets.ARP_REPLY \
                    and parsed.sender_ip == self.target:
                self.replies.append((time.monotonic(), parsed.sender_mac.hex(":")))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def gap(self, old: str, new: str, after: float) -> tuple[float, float] | None:
        """(gap between the last old reply and the first new one, time from ``after`` to the first new)."""
        first_new = next((t for t, mac in self.replies if mac == new and t >= after), None)
        if first_new is None:
            return None
        last_old = max((t for t, mac in self.replies if mac == old and t <= first_new), default=after)
        return first_new - last_old, first_new - after

    def overlap(self, after: float = 0.0) -> float:
        """The longest stretch in which two different MACs both kept answering: from the first reply of
        a MAC to the last reply of the MAC it replaced, when that last reply came later (0.0: never)."""
        worst = 0.0
        replies = [(t, mac) for t, mac in self.replies if t >= after]
        for i, (t, mac) in enumerate(replies):
            if i and replies[i - 1][1] != mac:
                previous = replies[i - 1][1]
                later = [u for u, m in replies[i:] if m == previous]
                if later:
                    worst = max(worst, max(later) - t)
        return worst

    def silence(self, after: float = 0.0, before: float = float("inf")) -> float:
        """The longest time without any reply between ``after`` and ``before`` (or the last reply)."""
        times = [after] + [t for t, _ in self.replies if after <= t <= before]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)
