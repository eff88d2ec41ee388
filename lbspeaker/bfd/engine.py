"""The BFD sessions of this node on real sockets: RFC 5881 (single hop) and RFC 5883 (multihop).

``Engine`` owns the UDP sockets, the sessions (``session.Session``) and their timers, and runs them
from one thread: ``run_once`` waits on its sockets until the next deadline, reads what arrived, fires
expired detection timers and sends what is due. ``configure`` adds, changes and removes sessions
(a removed session is taken AdminDown first, so the remote knows it was on purpose).

Wire rules:

- Single hop (RFC 5881): Control packets to UDP 3784, from one source port per session in
  49152-65535, sent with TTL / Hop Limit 255; received packets must arrive with 255 (GTSM: nothing
  forwarded by a router can), on the 3784 socket.
- Multihop (RFC 5883), for ``ebgp-multihop`` peers: port 4784, sent with TTL 255; received packets must
  have at least the session's ``minimum_ttl`` (MetalLB's ``minimum-ttl``, default 254).
- Demultiplexing (RFC 5880 6.8.6): by Your Discriminator when set, else by (peer, local address,
  hop mode); a packet must also come from the session's peer and be addressed to its local address.

Every dropped packet is counted by reason (``stats``); parsing is bounded (one 512-byte read per
packet, truncation detected). Costs: O(1) work per packet, one wakeup per due event, two sockets per
family and hop mode plus one per session.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import random
import selectors
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from lbspeaker.bfd.packet import ControlPacket, PacketError, State, decode
from lbspeaker.bfd.session import Session, Timers, Transition

log = logging.getLogger(__name__)

SINGLE_HOP_PORT = 3784
MULTIHOP_PORT = 4784
SOURCE_PORTS = (49152, 65535)
TTL = 255
DEFAULT_MINIMUM_TTL = 254
_RECV_SIZE = 512
_CMSG_SPACE = socket.CMSG_SPACE(64) * 2
_MAX_WAIT = 1.0

# Linux socket options the socket module may not name.
_IP_RECVTTL = getattr(socket, "IP_RECVTTL", 12)
_IP_TTL = getattr(socket, "IP_TTL", 2)
_IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
_IPV6_RECVHOPLIMIT = getattr(socket, "IPV6_RECVHOPLIMIT", 51)
_IPV6_HOPLIMIT = getattr(socket, "IPV6_HOPLIMIT", 52)
_IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
_IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)


@dataclass(frozen=True, order=True)
class SessionKey:
    """One BFD session: our peer, our address towards it, and the hop mode."""

    peer: str
    local: str
    multihop: bool = False

    def __post_init__(self) -> None:
        peer, local = ipaddress.ip_address(self.peer), ipaddress.ip_address(self.local)
        if peer.version != local.version:
            raise ValueError(f"BFD peer {self.peer} and local address {self.local} are of different families")
        object.__setattr__(self, "peer", str(peer))
        object.__setattr__(self, "local", str(local))

    @property
    def family(self) -> int:
        return 6 if ":" in self.peer else 4


@dataclass(frozen=True)
class SessionSpec:
    """A session this node must run, with its timers."""

    key: SessionKey
    timers: Timers = field(default_factory=Timers)
    minimum_ttl: int = DEFAULT_MINIMUM_TTL  # multihop only; single hop always wants 255

    def __post_init__(self) -> None:
        if not 1 <= self.minimum_ttl <= TTL:
            raise ValueError(f"minimum TTL {self.minimum_ttl} must be 1 to 255")


@dataclass(frozen=True)
class SessionStatus:
    """What ``sessions`` reports of one session. ``since`` is a ``time.time()`` stamp."""

    key: SessionKey
    state: str
    diag: str
    since: float
    remote_state: str
    tx_interval_ms: float
    detection_time_ms: float
    sent: int
    received: int
    error: str = ""


OnTransition = Callable[[SessionKey, Transition, SessionStatus], None]


@dataclass
class _Entry:
    spec: SessionSpec
    session: Session
    sock: socket.socket | None
    error: str = ""


class Engine:
    """Sessions, sockets and timers; everything runs in the thread that calls ``run_once``."""

    def __init__(
        self,
        on_transition: OnTransition | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        ports: tuple[int, int] = (SINGLE_HOP_PORT, MULTIHOP_PORT),
        peer_ports: tuple[int, int] | None = None,
    ) -> None:
        """``ports``: where we listen (single hop, multihop); ``peer_ports``: where peers listen (the
        same by default; two engines on one host, as in tests, need them apart)."""
        self._on_transition = on_transition
        self._clock = clock
        self._rng = rng or random.Random()
        self._ports = ports
        self._peer_ports = peer_ports or ports
        self._selector = selectors.DefaultSelector()
        self._listeners: dict[tuple[int, bool], socket.socket] = {}  # (family, multihop) -> socket
        self._entries: dict[SessionKey, _Entry] = {}
        self._by_discr: dict[int, SessionKey] = {}
        self._retired: list[_Entry] = []  # AdminDown sessions still telling their remote
        self._readers: dict[int, Callable[[], None]] = {}
        self.counters: Counter[str] = Counter()

    # ---- configuration ---------------------------------------------------------------------------

    def configure(self, specs: Iterable[SessionSpec]) -> None:
        """Run exactly ``specs`` (a key listed twice keeps its first spec)."""
        wanted: dict[SessionKey, SessionSpec] = {}
        for spec in specs:
            wanted.setdefault(spec.key, spec)
        now = self._clock()
        for key in [k for k in self._entries if k not in wanted]:
            self._retire(key, now)
        for key, spec in wanted.items():
            entry = self._entries.get(key)
            if entry is None:
                self._add(spec, now)
            elif entry.spec != spec:
                entry.spec = spec
                entry.session.reconfigure(spec.timers, now)

    def close(self) -> None:
        """Close every socket at once, sending nothing more (see ``__main__`` for why on shutdown)."""
        for entry in [*self._entries.values(), *self._retired]:
            if entry.sock is not None:
                entry.sock.close()
        self._entries.clear()
        self._retired.clear()
        self._by_discr.clear()
        for sock in self._listeners.values():
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(sock)
            sock.close()
        self._listeners.clear()
        self._selector.close()

    def add_reader(self, fd: int, callback: Callable[[], None]) -> None:
        """Also wait on ``fd`` in ``run_once`` and call ``callback`` when it is readable."""
        self._readers[fd] = callback
        self._selector.register(fd, selectors.EVENT_READ, ("reader", fd))

    # ---- state -----------------------------------------------------------------------------------

    def sessions(self) -> dict[SessionKey, SessionStatus]:
        now = self._clock()
        return {key: self._status(entry, now) for key, entry in self._entries.items()}

    def stats(self) -> dict[str, int]:
        return dict(self.counters)

    # ---- the loop --------------------------------------------------------------------------------

    def run_once(self, max_wait: float = _MAX_WAIT) -> None:
        """Wait for packets until the next deadline (at most ``max_wait`` s), then handle what is due."""
        now = self._clock()
        deadlines = [d for d in (e.session.deadline() for e in self._all()) if d is not None]
        timeout = max(0.0, min([now + max_wait, *deadlines]) - now)
        for key, _mask in self._selector.select(timeout):
            kind, value = key.data
            if kind == "listener":
                self._read(key.fileobj, value)  # type: ignore[arg-type]
            else:
                self._readers[value]()
        self._tick(self._clock())

    def _all(self) -> list[_Entry]:
        return [*self._entries.values(), *self._retired]

    def _tick(self, now: float) -> None:
        for key, entry in list(self._entries.items()):
            session = entry.session
            if session.detect_deadline is not None and now >= session.detect_deadline:
                self._notify(key, entry, session.expire(now), now)
            self._send(entry, session.due(now))
        for entry in list(self._retired):
            self._send(entry, entry.session.due(now))
            if entry.session.finished:
                self._retired.remove(entry)
                self._by_discr.pop(entry.session.local_discr, None)
                if entry.sock is not None:
                    entry.sock.close()

    # ---- sessions --------------------------------------------------------------------------------

    def _add(self, spec: SessionSpec, now: float) -> None:
        for old in [e for e in self._retired if e.spec.key == spec.key]:
            # Back before its AdminDown was over: the new session replaces it (two sessions with one
            # address pair would contradict each other at the remote).
            self._retired.remove(old)
            self._by_discr.pop(old.session.local_discr, None)
            if old.sock is not None:
                old.sock.close()
        discr = self._new_discr()
        session = Session(discr, spec.timers, now, self._rng)
        entry = _Entry(spec=spec, session=session, sock=None)
        try:
            self._listen(spec.key.family, spec.key.multihop)
            entry.sock = self._sender(spec.key)
        except OSError as exc:
            entry.error = f"{exc.strerror or exc}"
            self.counters["socket_errors"] += 1
            log.error("BFD session to %s cannot run: %s", spec.key.peer, entry.error)
            session.next_tx = None
        self._entries[spec.key] = entry
        self._by_discr[discr] = spec.key
        log.info("BFD session to %s from %s%s added", spec.key.peer, spec.key.local,
                 " (multihop)" if spec.key.multihop else "")

    def _retire(self, key: SessionKey, now: float) -> None:
        entry = self._entries.pop(key)
        transition = entry.session.shutdown(now)
        self._notify(key, entry, transition, now)
        if entry.sock is None:
            self._by_discr.pop(entry.session.local_discr, None)
            return
        self._retired.append(entry)

    def _new_discr(self) -> int:
        while True:
            discr = self._rng.randrange(1, 1 << 32)
            if discr not in self._by_discr:
                return discr

    def _notify(self, key: SessionKey, entry: _Entry, transition: Transition | None, now: float) -> None:
        if transition is None:
            return
        level = logging.WARNING if transition.old == State.UP else logging.INFO
        log.log(level, "BFD session to %s: %s -> %s (%s)", key.peer, transition.old.label, transition.new.label,
                transition.diag.name.lower().replace("_", " "))
        self.counters[f"transitions_to_{transition.new.label}"] += 1
        if self._on_transition is not None:
            self._on_transition(key, transition, self._status(entry, now))

    def _status(self, entry: _Entry, now: float) -> SessionStatus:
        session = entry.session
        return SessionStatus(
            key=entry.spec.key,
            state=session.state.label,
            diag=session.local_diag.name.lower().replace("_", "-"),
            since=time.time() - (now - session.since),
            remote_state=session.remote_state.label,
            tx_interval_ms=session.tx_interval() / 1000,
            detection_time_ms=session.detection_time() / 1000,
            sent=session.sent,
            received=session.received,
            error=entry.error,
        )

    # ---- sockets ---------------------------------------------------------------------------------

    def _listen(self, family: int, multihop: bool) -> None:
        if (family, multihop) in self._listeners:
            return
        af = socket.AF_INET6 if family == 6 else socket.AF_INET
        sock = socket.socket(af, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == 6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_RECVHOPLIMIT, 1)
                sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_RECVPKTINFO, 1)
            else:
                sock.setsockopt(socket.IPPROTO_IP, _IP_RECVTTL, 1)
                sock.setsockopt(socket.IPPROTO_IP, _IP_PKTINFO, 1)
            port = self._ports[1] if multihop else self._ports[0]
            sock.bind(("::" if family == 6 else "0.0.0.0", port))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._selector.register(sock, selectors.EVENT_READ, ("listener", multihop))
        self._listeners[(family, multihop)] = sock

    def _sender(self, key: SessionKey) -> socket.socket:
        af = socket.AF_INET6 if key.family == 6 else socket.AF_INET
        sock = socket.socket(af, socket.SOCK_DGRAM)
        try:
            if key.family == 6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, TTL)
            else:
                sock.setsockopt(socket.IPPROTO_IP, _IP_TTL, TTL)
            # Network control traffic: first out of the queues where the link is busy.
            with contextlib.suppress(OSError):
                if key.family == 6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, 0xC0)
                else:
                    sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0xC0)
            low, high = SOURCE_PORTS
            for _ in range(64):
                try:
                    sock.bind((key.local, self._rng.randint(low, high)))
                    break
                except OSError as exc:
                    if exc.errno != errno.EADDRINUSE:
                        raise
            else:
                raise OSError(errno.EADDRINUSE, "no free source port in 49152-65535")
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    def _send(self, entry: _Entry, packets: list[ControlPacket]) -> None:
        if not packets or entry.sock is None:
            return
        port = self._peer_ports[1] if entry.spec.key.multihop else self._peer_ports[0]
        for packet in packets:
            try:
                entry.sock.sendto(packet.encode(), (entry.spec.key.peer, port))
                self.counters["packets_sent"] += 1
            except OSError:
                # The link may be down or the route gone: the session's timers say what that means.
                self.counters["send_errors"] += 1

    def _read(self, sock: socket.socket, multihop: bool) -> None:
        for _ in range(64):  # bounded per wakeup, so one flood cannot starve the timers
            try:
                data, ancillary, flags, source = sock.recvmsg(_RECV_SIZE, _CMSG_SPACE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.counters["receive_errors"] += 1
                return
            self.counters["packets_received"] += 1
            if flags & socket.MSG_TRUNC:
                self._drop("oversize")
                continue
            ttl, destination = _ancillary(ancillary)
            self._deliver(data, str(ipaddress.ip_address(source[0].split("%")[0])), destination, ttl, multihop)

    def _drop(self, reason: str) -> None:
        self.counters[f"dropped_{reason}"] += 1

    def _deliver(self, data: bytes, source: str, destination: str | None, ttl: int | None, multihop: bool) -> None:
        try:
            packet = decode(data)
        except PacketError as exc:
            self._drop(exc.reason)
            return
        if packet.your_discr:
            key = self._by_discr.get(packet.your_discr)
        else:
            key = None
            for candidate in (k for k in self._entries if k.peer == source and k.multihop == multihop):
                if destination is None or candidate.local == destination:
                    key = candidate
                    break
        entry = self._entries.get(key) if key is not None else None
        if entry is None:
            entry = next((e for e in self._retired if e.spec.key == key), None)
        if entry is None or key is None:
            self._drop("no_session")
            return
        if key.peer != source or key.multihop != multihop or (destination is not None and key.local != destination):
            self._drop("address")
            return
        wanted = entry.spec.minimum_ttl if multihop else TTL
        if ttl is None or ttl < wanted:
            self._drop("ttl")  # RFC 5881 5 / RFC 5883 2: forwarded (or spoofed from afar) packets
            return
        now = self._clock()
        transition = entry.session.receive(packet, now)
        if entry in self._retired:
            return
        self._notify(key, entry, transition, now)
        self._send(entry, entry.session.due(now))


def _ancillary(items: list[tuple[int, int, bytes]]) -> tuple[int | None, str | None]:
    """(TTL or hop limit, destination address) from the control messages of one datagram."""
    ttl: int | None = None
    destination: str | None = None
    for level, kind, data in items:
        if level == socket.IPPROTO_IP and kind == _IP_TTL and len(data) >= 4:
            ttl = struct.unpack("i", data[:4])[0]
        elif level == socket.IPPROTO_IP and kind == _IP_PKTINFO and len(data) >= 12:
            destination = socket.inet_ntop(socket.AF_INET, data[8:12])  # ipi_addr: the header's destination
        elif level == socket.IPPROTO_IPV6 and kind == _IPV6_HOPLIMIT and len(data) >= 4:
            ttl = struct.unpack("i", data[:4])[0]
        elif level == socket.IPPROTO_IPV6 and kind == _IPV6_PKTINFO and len(data) >= 16:
            destination = socket.inet_ntop(socket.AF_INET6, data[:16])
    return ttl, destination
