"""Runs a ``Detector`` on a real UDP socket: one thread that receives, ticks and sends.

One thread on purpose: datagrams that arrived while the thread was busy (or the process stalled) are
all read *before* the detector's clock moves on, so a stall can make us fence ourselves but never
makes us vote against a neighbour whose datagram sits unread in the socket buffer. The thread sleeps
until the detector's next deadline, a datagram, or a wake-up from another thread (``call``).

One socket, IPv4 or IPv6 after the bind address (``::`` also reaches IPv4 peers through mapped
addresses). Keys: the first signs, all verify (rotate by adding the new key second, then first, then
dropping the old one); never logged.

``on_change(answering, alive)`` runs on this thread whenever the detector's view changed; it must be
quick (it withdraws answers at once when ``answering`` turned False, and queues the rest).

Cost: a few microseconds of CPU per datagram (HMAC included) and one wake-up per deadline.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import select
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from lbspeaker.membership import wire
from lbspeaker.membership.detector import Detector, Outgoing

__all__ = ["Transport"]

log = logging.getLogger(__name__)

T = TypeVar("T")
ChangeCallback = Callable[[bool, frozenset[str]], None]

_RECV_BUFFER = 2048
_DRAIN_LIMIT = 512  # datagrams read per wake-up before the clock moves on


class Transport:
    """The socket and thread around one detector."""

    def __init__(self, detector: Detector, keys: bytes | Sequence[bytes], bind: tuple[str, int], *,
                 on_change: ChangeCallback | None = None, clock: Callable[[], float] = time.monotonic,
                 leave_repeats: int = 3) -> None:
        self.detector = detector
        self._keys = wire.validate_keys(keys)
        self._on_change = on_change
        self._clock = clock
        self._leave_repeats = leave_repeats
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_epoch = -1
        self.send_errors = 0
        host = bind[0] or "::"
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                self._sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            self._sock.bind((host, bind[1]))
            self._sock.setblocking(False)
        except OSError:
            self._sock.close()
            raise
        host_bound, port_bound = self._sock.getsockname()[:2]
        self._address = (str(host_bound), int(port_bound))  # kept: still asked for after close()
        self._family = family
        self._dual = family == socket.AF_INET6 and ipaddress.ip_address(host).is_unspecified
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    @property
    def address(self) -> tuple[str, int]:
        """The bound address, with the real port when bound to port 0."""
        return self._address

    # -- control from other threads ------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("already started")
        self._thread = threading.Thread(target=self._run, name="membership", daemon=True)
        self._thread.start()

    def call(self, fn: Callable[[Detector, float], T]) -> T:
        """Run ``fn(detector, now)`` under the detector's lock, then wake the thread to act on it."""
        with self._lock:
            result = fn(self.detector, self._clock())
        self._poke()
        return result

    def peek(self, fn: Callable[[Detector, float], T]) -> T:
        """Read the detector under its lock without waking the thread (nothing changed for it to act on)."""
        with self._lock:
            return fn(self.detector, self._clock())

    def set_keys(self, keys: bytes | Sequence[bytes]) -> None:
        validated = wire.validate_keys(keys)
        with self._lock:
            self._keys = validated

    def stop(self, leaving: bool = True) -> None:
        """Stop; with ``leaving``, tell every contact first (a few copies), so they take over at once."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._poke()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if leaving:
            with self._lock:
                out = self.detector.leave(self._clock())
            self._send(out)
            for _ in range(self._leave_repeats - 1):
                time.sleep(0.01)  # losses on a LAN come in bursts
                with self._lock:
                    out = self.detector.flush(self._clock())
                self._send(out)
        self._sock.close()
        self._wake_r.close()
        self._wake_w.close()

    def stats(self) -> dict[str, object]:
        with self._lock:
            det = self.detector
            return {"sent": det.stats["sent"], "received": det.stats["received"], "votes": det.stats["votes"],
                    "fences": det.stats["fences"], "refutes": det.stats["refutes"],
                    "rejected": dict(det.rejected), "send_errors": self.send_errors,
                    "neighbours": len(det.neighbours), "members": len(det.members)}

    # -- the thread ----------------------------------------------------------------------------------

    def _poke(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._once()
            except Exception:  # a bug must not silence us for good: peers would count us dead
                log.exception("membership loop failed; going on")
                self._stop.wait(0.05)

    def _once(self) -> None:
        with self._lock:
            now = self._clock()
            timeout = max(0.0, self.detector.next_deadline(now) - now)
        readable, _, _ = select.select([self._sock, self._wake_r], [], [], min(timeout, 1.0))
        if self._wake_r in readable:
            with contextlib.suppress(OSError):
                while self._wake_r.recv(4096):
                    pass
        datagrams = self._drain() if self._sock in readable else []
        with self._lock:
            now = self._clock()
            keys = self._keys
            for data in datagrams:
                msg = wire.decode(data, keys, self.detector.name)
                if isinstance(msg, wire.Rejected):
                    self.detector.reject(msg.reason)
                else:
                    self.detector.receive(msg, now)
            out = self.detector.tick(now)
            epoch = self.detector.epoch
            changed = epoch != self._last_epoch
            self._last_epoch = epoch
            answering, alive = self.detector.answering, self.detector.alive()
            encoded = [(o, self._encode(o, keys[0])) for o in out]
        self._send_encoded(encoded)
        if changed and self._on_change is not None:
            try:
                self._on_change(answering, alive)
            except Exception:
                log.exception("membership change callback failed")

    def _drain(self) -> list[bytes]:
        out: list[bytes] = []
        for _ in range(_DRAIN_LIMIT):
            try:
                data, _addr = self._sock.recvfrom(_RECV_BUFFER)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # e.g. ICMP port unreachable reported on the socket
                log.debug("membership receive: %s", exc)
                continue
            out.append(data)
        return out

    def _encode(self, out: Outgoing, key: bytes) -> bytes | None:
        try:
            return wire.encode(out.message, key, out.to)
        except ValueError as exc:
            log.warning("membership datagram to %s not sent: %s", out.to, exc)
            return None

    def _send(self, out: list[Outgoing]) -> None:
        with self._lock:
            key = self._keys[0]
            encoded = [(o, self._encode(o, key)) for o in out]
        self._send_encoded(encoded)

    def _send_encoded(self, encoded: list[tuple[Outgoing, bytes | None]]) -> None:
        for out, data in encoded:
            if data is None:
                continue
            dest = self._destination(out.addr)
            if dest is None:
                self.send_errors += 1
                continue
            try:
                self._sock.sendto(data, dest)
            except OSError as exc:
                self.send_errors += 1
                log.debug("membership datagram to %s %s: %s", out.to, dest, exc)

    def _destination(self, addr: tuple[str, int]) -> tuple[str, int] | None:
        try:
            version = ipaddress.ip_address(addr[0]).version
        except ValueError:
            return None
        if self._family == socket.AF_INET:
            return addr if version == 4 else None
        if version == 6:
            return addr
        return (f"::ffff:{addr[0]}", addr[1]) if self._dual else None
