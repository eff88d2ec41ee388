"""UDP heartbeats between speakers: the I/O around ``protocol`` (wire format) and ``tracker`` (rules).

One socket, IPv4 or IPv6 after the bind address (``::`` also reaches IPv4 peers through mapped
addresses). Two threads:

* the sender sends one signed heartbeat to every peer each ``interval`` (jittered by up to 10% so
  speakers started together do not send in lock-step), and at once when our own state changes
  (end of warm-up), so peers learn that we now announce without waiting a whole interval;
* the receiver decodes and replay-checks datagrams, feeds accepted ones to the tracker, and checks
  the alive set after each datagram that may change it and at least every ``check_every`` seconds;
  ``on_change`` is called when the set differs from the last one seen. It runs on the receiver
  thread, so it must be quick (enqueue work, do not do it).

Graceful stop marks us as leaving in the tracker and calls ``on_change`` first (the speaker drops
its IPs), then sends LEAVING to every peer a few times, so peers take over at once and never
before we let go. Keys: the first signs, all are accepted (rotate by adding the new key second,
then first, then dropping the old one). Keys are never logged.
"""

from __future__ import annotations

import collections
import ipaddress
import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from lbspeaker.membership import protocol
from lbspeaker.membership.tracker import Liveness

__all__ = ["Heartbeater"]

log = logging.getLogger(__name__)

_RECV_BUFFER = 65535
# Rejections that mean "a speaker is talking to us but we cannot trust it": a key or clock mismatch.
_UNVERIFIED = frozenset({"mac", "clock-skew", "version"})


class Heartbeater:
    """Sends and receives heartbeats for ``node`` and keeps ``tracker`` informed."""

    def __init__(
        self,
        node: str,
        key: bytes | Sequence[bytes],
        bind: tuple[str, int],
        *,
        tracker: Liveness,
        peers: Callable[[], Mapping[str, tuple[str, int]]] | None = None,
        on_change: Callable[[], None] | None = None,
        interval: float = 0.1,
        check_every: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        max_skew: float | None = 30.0,
        leave_repeats: int = 3,
    ) -> None:
        if interval <= 0 or check_every <= 0:
            raise ValueError("interval and check_every must be positive")
        self.node = node
        self.incarnation = protocol.new_incarnation()
        self._keys = protocol.validate_keys(key)
        self._decoder = protocol.Decoder(self._keys, max_skew=max_skew)
        self._tracker = tracker
        self._peers = peers if peers is not None else tracker.peers
        self._on_change = on_change
        self._interval = interval
        self._check_every = check_every
        self._clock = clock
        self._wall_clock = wall_clock
        self._leave_repeats = leave_repeats

        self.sent = 0
        self.received = 0
        self.send_errors = 0
        self.rejected: collections.Counter[str] = collections.Counter()

        self._seq = 0
        self._send_lock = threading.Lock()
        self._check_lock = threading.Lock()
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._last_alive: frozenset[str] = frozenset()
        self._last_ready = False
        self._last_check = float("-inf")

        family = socket.AF_INET6 if ipaddress.ip_address(bind[0]).version == 6 else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                # Dual-stack when bound to "::", so IPv4 peers are reachable as ::ffff:a.b.c.d.
                self._sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            self._sock.bind(bind)
            self._sock.settimeout(check_every)
        except OSError:
            self._sock.close()
            raise
        self._family = family
        self._dual_stack = family == socket.AF_INET6 and ipaddress.ip_address(bind[0]).is_unspecified

    # ---- public -----------------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """The bound address, with the real port when bound to port 0."""
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    def start(self) -> None:
        """Start the sender and receiver threads."""
        if self._threads:
            raise RuntimeError("already started")
        self._threads = [
            threading.Thread(target=self._send_loop, name=f"heartbeat-send-{self.node}", daemon=True),
            threading.Thread(target=self._receive_loop, name=f"heartbeat-recv-{self.node}", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self, leaving: bool = True) -> None:
        """Stop; with ``leaving``, first give up our IPs, then tell peers so they take over at once.

        ``leaving=False`` just goes silent, as a crash would.
        """
        if self._stopping.is_set():
            return
        if leaving:
            self._tracker.leave()
            self._check(force=True)
        self._stopping.set()
        self._wake.set()
        for thread in self._threads:
            if thread.name.startswith("heartbeat-send"):
                thread.join()
        if leaving:
            for attempt in range(self._leave_repeats):
                if attempt:
                    # Spread the copies a little: losses on a LAN come in bursts.
                    time.sleep(0.01)
                self._send_round(leaving=True)
        for thread in self._threads:
            thread.join()
        self._sock.close()

    def check(self) -> None:
        """Re-evaluate the alive set now, e.g. right after a Lease was deleted; may call on_change."""
        self._check(force=True)

    def set_keys(self, key: bytes | Sequence[bytes]) -> None:
        """Rotate keys: sign with the first from now on, accept any of them."""
        keys = protocol.validate_keys(key)
        with self._send_lock:
            self._keys = keys
            self._decoder.set_keys(keys)

    def stats(self) -> dict[str, object]:
        """Counters for metrics: sent, received, send_errors and rejected by reason."""
        return {
            "sent": self.sent,
            "received": self.received,
            "send_errors": self.send_errors,
            "rejected": dict(self.rejected),
        }

    # ---- sending ----------------------------------------------------------------------------

    def _destination(self, addr: tuple[str, int]) -> tuple[str, int] | None:
        try:
            version = ipaddress.ip_address(addr[0]).version
        except ValueError:
            return None
        if self._family == socket.AF_INET and version == 4:
            return addr
        if self._family == socket.AF_INET6:
            if version == 6:
                return addr
            if self._dual_stack:
                return f"::ffff:{addr[0]}", addr[1]
        return None

    def _send_round(self, *, leaving: bool = False) -> None:
        now = self._clock()
        try:
            peers = dict(self._peers())
        except Exception:
            # Not counted as sent: if this persists, we must stop counting ourselves alive.
            log.exception("heartbeat peer list failed")
            return
        warming = not self._tracker.warmed_up(now)
        quiet = self._tracker.quiet(now)
        heard = protocol.heard_filter(self._tracker.heard_recently(now))
        delivered = 0
        with self._send_lock:
            self._seq += 1
            msg = protocol.Heartbeat(
                node=self.node,
                incarnation=self.incarnation,
                seq=self._seq,
                timestamp=self._wall_clock(),
                leaving=leaving,
                warming=warming,
                quiet=quiet,
                heard=heard,
            )
            data = protocol.encode(msg, self._keys[0])
            for name, addr in peers.items():
                if name == self.node:
                    continue
                dest = self._destination(addr)
                if dest is None:
                    self.send_errors += 1
                    continue
                try:
                    self._sock.sendto(data, dest)
                except OSError as exc:
                    self.send_errors += 1
                    log.debug("heartbeat to %s %s failed: %s", name, dest, exc)
                else:
                    self.sent += 1
                    delivered += 1
        if delivered or not peers:
            self._tracker.sent(now)

    def _send_loop(self) -> None:
        while not self._stopping.is_set():
            # Cleared before sending: a wake-up requested while we send triggers one more round.
            self._wake.clear()
            try:
                self._send_round()
            except Exception:
                log.exception("heartbeat send round failed")
            self._wake.wait(self._interval * random.uniform(0.9, 1.0))

    # ---- receiving --------------------------------------------------------------------------

    def _receive_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                data, source = self._sock.recvfrom(_RECV_BUFFER)
            except TimeoutError:
                self._check()
                continue
            except OSError as exc:
                if not self._stopping.is_set():
                    log.warning("heartbeat receive failed: %s", exc)
                    self._stopping.wait(self._check_every)
                continue
            try:
                changed = self._accept(data, source)
            except Exception:
                log.exception("heartbeat processing failed")
                changed = True
            self._check(force=changed)

    def _accept(self, data: bytes, source: tuple[str, int]) -> bool:
        result = self._decoder.decode(data, self._wall_clock())
        if isinstance(result, protocol.Rejected):
            self.rejected[result.reason] += 1
            log.debug("heartbeat from %s rejected: %s", source[0], result.reason)
            if result.reason in _UNVERIFIED:
                peer = self._peer_at(source)
                if peer is not None:
                    self._tracker.unverified(peer, self._clock())
                    return True
            return False
        if result.node == self.node:
            # Our own name from another process: a duplicate speaker or a reflection; never trust it.
            self.rejected["self"] += 1
            return False
        self.received += 1
        return self._tracker.heard(
            result.node,
            result.incarnation,
            result.seq,
            self._clock(),
            leaving=result.leaving,
            warming=result.warming,
            quiet=result.quiet,
            hears_us=result.hears(self.node),
        )

    def _peer_at(self, source: tuple[str, int]) -> str | None:
        """The peer whose heartbeat address is ``source`` (IPv4-mapped forms unmapped), if any."""
        try:
            addr = ipaddress.ip_address(source[0].split("%", 1)[0])
            if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
                addr = addr.ipv4_mapped
            peers = self._peers()
        except Exception:
            return None
        for name, (host, port) in peers.items():
            if port == source[1] and _same_ip(host, addr):
                return name
        return None

    def _check(self, force: bool = False) -> None:
        now = self._clock()
        if not force and now - self._last_check < self._check_every:
            return
        with self._check_lock:
            self._last_check = now
            alive = self._tracker.alive(now)
            ready = self._tracker.warmed_up(now)
            changed = alive != self._last_alive
            self._last_alive = alive
            if ready != self._last_ready:
                self._last_ready = ready
                self._wake.set()
        if changed and self._on_change is not None:
            try:
                self._on_change()
            except Exception:
                log.exception("membership on_change callback failed")


def _same_ip(host: str, addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    try:
        return ipaddress.ip_address(host) == addr
    except ValueError:
        return False
