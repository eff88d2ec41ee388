"""Answer ARP requests and neighbour solicitations for owned IPs from raw AF_PACKET sockets.

Each interface with owned IPs gets two packet sockets, one bound to ETH_P_ARP and one to ETH_P_IPV6,
each with a BPF filter. Not one ETH_P_ALL socket: a packet tap on ETH_P_ALL makes the kernel clone
every frame the node transmits on that interface just to run our filter over it, a cost paid by all
Service traffic; protocol-bound sockets only see received frames of their protocol.

For IPv6 the node must also *receive* solicitations sent to the solicited-node multicast group of an
address it has not configured. Two memberships do that: PACKET_ADD_MEMBERSHIP puts the group's
33:33:ff:xx:xx:xx MAC into the NIC's receive filter, and IPV6_JOIN_GROUP on a UDP socket makes the
kernel send MLD reports, without which an MLD-snooping switch (with a querier on the segment) never
forwards the group to this port. Joining a group does not make the kernel answer for the address.

A frame in which another MAC claims an owned IP (any ARP or NS sent from that IP, gratuitous ARP
included, or an NA for it) goes to ``on_claim`` each time, so the owner can announce again, and to
``on_duplicate`` at most once per interval per IP and interface, for the operator.

One thread serves all sockets. The owned set is an immutable mapping swapped in one assignment, so
``set_owned`` takes effect for the very next frame; sockets of interfaces no longer used are closed by
the serving thread itself, so it never reads from a closed (or reused) descriptor.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from lbspeaker.l2 import bpf, packets
from lbspeaker.l2.packets import ArpPacket, Frame, NeighborAdvertisement, NeighborSolicitation

log = logging.getLogger(__name__)

SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_DROP_MEMBERSHIP = 2
PACKET_MR_MULTICAST = 0
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
_BATCH = 64  # frames read per wake-up and socket before looking at the others again

DuplicateCallback = Callable[[str, str, str], None]
"""on_duplicate(ip, mac, ifname): another MAC claims an IP we answer for on ifname."""

ClaimCallback = Callable[[bytes, bytes, str], None]
"""on_claim(packed ip, mac, ifname): the same, for every such frame, from the serving thread (keep it quick)."""

IPLike = str | bytes | ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Port:
    """An interface to answer on, as identified when its sockets were opened."""

    name: str
    index: int
    mac: bytes


class Verdict(NamedTuple):
    """What to do about one parsed frame."""

    is_request: bool
    reply: bytes | None
    duplicate: tuple[bytes, bytes] | None  # (ip, mac) of another claimant


_NOTHING = Verdict(False, None, None)


def decide(frame: Frame, mac: bytes, owned: Collection[bytes], local_macs: Collection[bytes]) -> Verdict:
    """Pure: the reply (if any) to ``frame`` received on an interface with ``mac`` that answers for ``owned``.

    ``local_macs`` are all of this node's interface MACs: our own gratuitous frames seen on a second
    interface on the same segment are not another owner.
    """
    if frame.vlan is not None:
        return _NOTHING  # the VLAN sub-interface answers for its own segment
    if frame.eth_src in local_macs:
        return _NOTHING
    if isinstance(frame, ArpPacket):
        if frame.sender_mac in local_macs:
            return _NOTHING
        is_request = frame.op == packets.ARP_REQUEST
        duplicate = (frame.sender_ip, frame.sender_mac) if frame.sender_ip in owned else None
        reply = None
        # A gratuitous request (sender IP == target IP) announces, it asks nothing.
        if is_request and frame.target_ip in owned and frame.sender_ip != frame.target_ip:
            reply = packets.build_arp_reply(mac, frame.target_ip, frame.sender_mac, frame.sender_ip)
        return Verdict(is_request, reply, duplicate)
    if isinstance(frame, NeighborSolicitation):
        peer = frame.source_lladdr if frame.source_lladdr is not None else frame.eth_src
        duplicate = (frame.src_ip, peer) if frame.src_ip in owned and peer not in local_macs else None
        reply = packets.build_solicited_na(mac, frame) if frame.target in owned else None
        return Verdict(True, reply, duplicate)
    if isinstance(frame, NeighborAdvertisement):
        peer = frame.target_lladdr if frame.target_lladdr is not None else frame.eth_src
        if frame.target in owned and peer not in local_macs:
            return Verdict(False, None, (frame.target, peer))
    return _NOTHING


def pack_ip(ip: IPLike) -> bytes:
    if isinstance(ip, bytes):
        if len(ip) not in (4, 16):
            raise ValueError(f"packed IP of {len(ip)} bytes")
        return ip
    return (ipaddress.ip_address(ip) if isinstance(ip, str) else ip).packed


def unpack_ip(raw: bytes) -> str:
    return str(ipaddress.ip_address(raw))


@dataclass
class _Sockets:
    port: Port
    arp: socket.socket
    nd: socket.socket
    groups: set[bytes] = field(default_factory=set)
    # IP-level memberships, spread over as many UDP sockets as the per-socket option memory
    # (net.core.optmem_max) needs: each socket holds a few hundred at most.
    mld: list[socket.socket] = field(default_factory=list)
    mld_of: dict[bytes, socket.socket] = field(default_factory=dict)

    def join(self, group: bytes) -> None:
        mreq = group + struct.pack("I", self.port.index)
        for attempt in range(2):
            if not self.mld or attempt:
                self.mld.append(socket.socket(socket.AF_INET6, socket.SOCK_DGRAM))
            try:
                self.mld[-1].setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
            except OSError as exc:
                if exc.errno in (errno.ENOMEM, errno.ENOBUFS) and attempt == 0:
                    continue  # this socket is full: the next attempt uses a fresh one
                raise
            self.mld_of[group] = self.mld[-1]
            return

    def leave(self, group: bytes) -> None:
        sock = self.mld_of.pop(group, None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_LEAVE_GROUP, group + struct.pack("I", self.port.index))

    def close(self) -> None:
        for sock in (self.arp, self.nd, *self.mld):
            with contextlib.suppress(OSError):
                sock.close()


def _packet_socket(port: Port, proto: int, program: list[bpf.Insn]) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(proto))
    try:
        # Filter before bind: frames arriving between the two would otherwise reach us unfiltered.
        bpf.attach(sock, program)
        sock.bind((port.name, proto))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _current_netns() -> int:
    return os.stat(f"/proc/self/task/{threading.get_native_id()}/ns/net").st_ino


def _mreq(index: int, mac: bytes) -> bytes:
    return struct.pack("iHH8s", index, PACKET_MR_MULTICAST, len(mac), mac)


class Responder:
    """Raw-socket ARP/NDP responder for a changing set of owned IPs per interface."""

    def __init__(
        self,
        on_duplicate: DuplicateCallback | None = None,
        duplicate_interval: float = 10.0,
        on_claim: ClaimCallback | None = None,
        guard: Callable[[], bool] | None = None,
    ) -> None:
        """``on_duplicate`` is called at most once per ``duplicate_interval`` per (IP, interface).

        ``guard()``, when given, is asked before every reply: while it says False nothing is answered
        (membership's last safe instant has passed, even if the thread that would withdraw us stalled).
        """
        self._guard = guard
        self._on_duplicate = on_duplicate
        self._on_claim = on_claim
        self._duplicate_interval = duplicate_interval
        self._lock = threading.Lock()  # serialises set_owned and socket bookkeeping, never the hot path
        self._owned: Mapping[str, frozenset[bytes]] = {}
        self._local_macs: frozenset[bytes] = frozenset()
        self._open: dict[str, _Sockets] = {}
        self._by_fd: dict[int, tuple[_Sockets, socket.socket]] = {}
        self._to_close: list[_Sockets] = []
        self._last_duplicate: dict[tuple[bytes, str], float] = {}
        self._epoll: select.epoll | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._netns: int | None = None
        self.requests = 0
        self.responses = 0
        self.gratuitous = 0
        self.malformed = 0
        self.duplicates = 0
        self.errors = 0
        self.withheld = 0

    # --- control ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._netns = _current_netns()
        self._epoll = select.epoll()
        self._epoll.register(self._wake_r.fileno(), select.EPOLLIN)
        self._thread = threading.Thread(target=self._run, name="l2-responder", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._owned = {}
        self._stopping.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            for sockets in list(self._open.values()) + self._to_close:
                sockets.close()
            self._open.clear()
            self._by_fd.clear()
            self._to_close.clear()
        if self._epoll is not None:
            self._epoll.close()
        self._wake_r.close()
        self._wake_w.close()

    def set_owned(self, owned: Mapping[Port, Iterable[IPLike]]) -> None:
        """Answer for exactly these IPs on these interfaces from now on (interfaces absent: nothing)."""
        packed = {port: frozenset(pack_ip(ip) for ip in ips) for port, ips in owned.items()}
        packed = {port: ips for port, ips in packed.items() if ips}
        with self._lock:
            keep = {port.name: port for port in packed}
            answering: dict[str, frozenset[bytes]] = {}
            # Shrink first: an IP that moved away is not answered for even while new sockets open.
            self._owned = {name: ips & packed[keep[name]] for name, ips in self._owned.items() if name in keep}
            for name, sockets in list(self._open.items()):
                if keep.get(name) != sockets.port:
                    self._retire(name)
            for port, ips in packed.items():
                try:
                    sockets = self._open.get(port.name) or self._add(port)
                    self._sync_groups(sockets, ips)
                except OSError as exc:
                    self.errors += 1
                    log.error("cannot answer on %s: %s", port.name, exc)
                    continue
                answering[port.name] = ips
            self._local_macs = frozenset(s.port.mac for s in self._open.values())
            self._owned = answering
        self._wake()

    def owned(self) -> dict[str, frozenset[bytes]]:
        return dict(self._owned)

    def send(self, ifname: str, frames: Iterable[bytes]) -> int:
        """Send announcement frames out of ``ifname``'s sockets; returns how many went out."""
        sockets = self._open.get(ifname)
        if sockets is None:
            return 0
        sent = 0
        for frame in frames:
            sock = sockets.nd if frame[12:14] == b"\x86\xdd" else sockets.arp
            try:
                sock.send(frame)
                sent += 1
            except BlockingIOError:
                continue  # transmit queue full: the next round repeats it
            except OSError as exc:  # interface went down under us; the watcher will tell the owner
                self.errors += 1
                log.debug("send on %s: %s", ifname, exc)
                break
        self.gratuitous += sent
        return sent

    def counters(self) -> dict[str, int]:
        return {
            "requests_received": self.requests,
            "responses_sent": self.responses,
            "gratuitous_sent": self.gratuitous,
            "malformed_frames": self.malformed,
            "duplicates_seen": self.duplicates,
            "errors": self.errors,
            "answers_withheld": self.withheld,
        }

    # --- socket bookkeeping (under self._lock) -------------------------------------------------------

    def _add(self, port: Port) -> _Sockets:
        if _current_netns() != self._netns:
            # A socket opened here would bind to a same-named interface of another namespace.
            raise RuntimeError(f"{port.name}: sockets requested from another network namespace than start()'s")
        arp = _packet_socket(port, ETH_P_ARP, bpf.arp_program(port.index))
        try:
            nd = _packet_socket(port, ETH_P_IPV6, bpf.nd_program(port.index))
        except BaseException:
            arp.close()
            raise
        sockets = _Sockets(port, arp, nd)
        self._open[port.name] = sockets
        assert self._epoll is not None, "Responder.start() first"
        for sock in (arp, nd):
            self._by_fd[sock.fileno()] = (sockets, sock)
            self._epoll.register(sock.fileno(), select.EPOLLIN)
        return sockets

    def _retire(self, name: str) -> None:
        sockets = self._open.pop(name)
        for sock in (sockets.arp, sockets.nd):
            self._by_fd.pop(sock.fileno(), None)
            if self._epoll is not None:
                with contextlib.suppress(OSError):
                    self._epoll.unregister(sock.fileno())
        self._to_close.append(sockets)

    def _sync_groups(self, sockets: _Sockets, ips: frozenset[bytes]) -> None:
        wanted = {packets.solicited_node(ip)[0] for ip in ips if len(ip) == 16}
        for group in wanted - sockets.groups:
            mac = packets.solicited_node(group)[1]
            sockets.nd.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, _mreq(sockets.port.index, mac))
            try:
                sockets.join(group)
            except OSError as exc:  # IPv6 disabled: the packet membership above still opens the NIC filter
                self.errors += 1
                log.warning("IPV6_JOIN_GROUP %s on %s: %s", unpack_ip(group), sockets.port.name, exc)
            sockets.groups.add(group)
        for group in sockets.groups - wanted:
            mac = packets.solicited_node(group)[1]
            with contextlib.suppress(OSError):
                sockets.nd.setsockopt(SOL_PACKET, PACKET_DROP_MEMBERSHIP, _mreq(sockets.port.index, mac))
            sockets.leave(group)
            sockets.groups.discard(group)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    # --- serving thread -------------------------------------------------------------------------------

    def _run(self) -> None:
        assert self._epoll is not None
        wake_fd = self._wake_r.fileno()
        while not self._stopping.is_set():
            try:
                if self._to_close:
                    with self._lock:
                        closing, self._to_close = self._to_close, []
                    for sockets in closing:
                        sockets.close()
                for fd, _events in self._epoll.poll(1.0):
                    if fd == wake_fd:
                        with contextlib.suppress(OSError):
                            self._wake_r.recv(4096)
                        continue
                    entry = self._by_fd.get(fd)
                    if entry is not None:
                        self._serve(*entry)
            except Exception:
                self.errors += 1
                log.exception("responder loop")
                self._stopping.wait(0.01)  # never spin flat out on a persistent error

    def _serve(self, sockets: _Sockets, sock: socket.socket) -> None:
        for _ in range(_BATCH):
            try:
                frame = sock.recv(2048)
            except BlockingIOError:
                return
            except OSError as exc:  # ENETDOWN once after the link went down; the socket resumes on up
                log.debug("recv on %s: %s", sockets.port.name, exc)
                return
            try:
                self._handle(sockets, sock, frame)
            except packets.MalformedFrame as exc:
                self.malformed += 1
                log.debug("malformed frame on %s: %s", sockets.port.name, exc)
            except Exception:
                self.errors += 1
                log.exception("frame on %s", sockets.port.name)

    def _handle(self, sockets: _Sockets, sock: socket.socket, frame: bytes) -> None:
        parsed = packets.parse_frame(frame)
        if parsed is None:
            return
        port = sockets.port
        owned = self._owned.get(port.name, frozenset())
        verdict = decide(parsed, port.mac, owned, self._local_macs)
        if verdict.is_request:
            self.requests += 1
        if verdict.reply is not None and self._guard is not None and not self._guard():
            self.withheld += 1
        elif verdict.reply is not None:
            try:
                sock.send(verdict.reply)
                self.responses += 1
            except OSError as exc:
                self.errors += 1
                log.debug("reply on %s: %s", port.name, exc)
        if verdict.duplicate is not None:
            self.duplicates += 1
            ip, mac = verdict.duplicate
            if self._on_claim is not None:
                try:
                    self._on_claim(ip, mac, port.name)
                except Exception:
                    self.errors += 1
                    log.exception("on_claim callback")
            self._report_duplicate(ip, mac, port.name)

    def _report_duplicate(self, ip: bytes, mac: bytes, ifname: str) -> None:
        now = time.monotonic()
        key = (ip, ifname)
        last = self._last_duplicate.get(key)
        if last is not None and now - last < self._duplicate_interval:
            return
        if len(self._last_duplicate) > 4096:
            self._last_duplicate = {
                k: t for k, t in self._last_duplicate.items() if now - t < self._duplicate_interval
            }
        self._last_duplicate[key] = now
        log.warning("duplicate: %s is also claimed by %s on %s", unpack_ip(ip), mac.hex(":"), ifname)
        if self._on_duplicate is not None:
            try:
                self._on_duplicate(unpack_ip(ip), mac.hex(":"), ifname)
            except Exception:
                log.exception("on_duplicate callback")
