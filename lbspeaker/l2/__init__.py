"""Layer 2 announcements: raw-socket ARP and NDP responders and gratuitous announcements.

``L2Announcer`` is what the speaker uses: it is told which IPs to announce on which interfaces and
converges to that — answering requests, announcing newly owned (ip, interface) pairs, and going
silent on lost ones at once. It follows interface state itself: a pair whose interface is down or
gone is not answered for, and is announced again when the interface comes back; so is a pair lost
and then regained, and one another MAC claims (see ``reclaim``). Create, start and update it from
threads of the network namespace it should work in (the host's, for the speaker).
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from lbspeaker.l2 import packets
from lbspeaker.l2.announce import Announcer
from lbspeaker.l2.interfaces import Interface, InterfaceWatcher, choose_interfaces
from lbspeaker.l2.reclaim import Reclaim
from lbspeaker.l2.responder import DuplicateCallback, Port, Responder

__all__ = ["DuplicateCallback", "Interface", "L2Announcer"]

log = logging.getLogger(__name__)

InterfacesCallback = Callable[[Sequence[Interface]], None]
Pair = tuple[bytes, str]  # (packed ip, interface name)


def changes(active: Mapping[Pair, Port], wanted: Mapping[Pair, Port]) -> tuple[list[Pair], list[Pair]]:
    """Pure: (lost, gained) going from ``active`` to ``wanted``; a pair on a re-made interface is both."""
    lost = [pair for pair, port in active.items() if wanted.get(pair) != port]
    gained = [pair for pair, port in wanted.items() if active.get(pair) != port]
    return lost, gained


class L2Announcer:
    """Announce IPs on interfaces: answer ARP/NS for them and send gratuitous ARP/NA on takeover."""

    def __init__(
        self,
        interfaces_regex: str | None = None,
        *,
        on_duplicate: DuplicateCallback | None = None,
        on_interfaces_changed: InterfacesCallback | None = None,
        repeats: int = 2,
        interval: float = 0.5,
        duplicate_interval: float = 10.0,
        reclaim_delay: float = 0.1,
        reclaim_burst: int = 3,
        reclaim_interval: float = 1.0,
        guard: Callable[[], bool] | None = None,
    ) -> None:
        """``repeats``/``interval``: announcement rounds after the first; ``on_duplicate`` is called at most
        once per ``duplicate_interval`` per (IP, interface); ``reclaim_*``: see ``lbspeaker.l2.reclaim``;
        ``guard()``: while False, no reply and no announcement leaves (see ``Responder``)."""
        self._guard = guard
        self._regex = interfaces_regex
        self._listeners: list[InterfacesCallback] = [on_interfaces_changed] if on_interfaces_changed else []
        self._lock = threading.RLock()
        # Held briefly by the responder's thread, never around I/O: the big lock above must not delay answers.
        self._reclaim_lock = threading.Lock()
        self._reclaim: Reclaim[Pair] = Reclaim(reclaim_delay, reclaim_burst, reclaim_interval)
        self._reannouncements = 0
        self._responder = Responder(on_duplicate, duplicate_interval, on_claim=self._claimed, guard=guard)
        self._announcer: Announcer[Pair] = Announcer(self._fire, repeats=repeats, interval=interval)
        self._watcher = InterfaceWatcher(self._interfaces_changed)
        self._interfaces: dict[str, Interface] = {}
        self._desired: dict[bytes, frozenset[str]] = {}
        self._active: dict[Pair, Port] = {}
        self._started = False

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            self._responder.start()
            self._announcer.start()
            self._interfaces = {i.name: i for i in self._watcher.start()}
            self._started = True

    def stop(self) -> None:
        """Stop answering and announcing; closes every socket. Nothing is sent on the way out."""
        with self._lock:
            self._started = False
            self._desired = {}
            self._active = {}
        self._watcher.stop()
        self._announcer.stop()
        self._responder.stop()

    def add_interface_listener(self, callback: InterfacesCallback) -> None:
        """``callback(interfaces)`` after any link or address change, from the watcher's thread."""
        self._listeners.append(callback)

    # --- what the speaker calls --------------------------------------------------------------------

    def update(self, desired: Mapping[str, Sequence[str]]) -> None:
        """Announce exactly ``desired`` (ip -> interface names) from now on."""
        parsed = {ipaddress.ip_address(ip).packed: frozenset(names) for ip, names in desired.items()}
        with self._lock:
            if not self._started:
                raise RuntimeError("L2Announcer.update() before start()")
            self._desired = parsed
            self._converge()

    def interfaces_for(self, ip: str) -> list[str]:
        return choose_interfaces(ip, self._watcher.current(), self._regex)

    def interfaces(self) -> list[Interface]:
        return self._watcher.current()

    def announced(self) -> dict[str, list[str]]:
        """What is being answered for right now: ip -> interfaces (down interfaces left out)."""
        out: dict[str, list[str]] = {}
        with self._lock:
            for ip, name in sorted(self._active):
                out.setdefault(str(ipaddress.ip_address(ip)), []).append(name)
        return out

    def stats(self) -> dict[str, int]:
        counters = self._responder.counters()
        counters["announcements_pending"] = self._announcer.pending()
        counters["reannouncements"] = self._reannouncements
        with self._lock:
            counters["pairs_active"] = len(self._active)
        return counters

    # --- convergence -------------------------------------------------------------------------------

    def _converge(self) -> None:
        """Make sockets, answers and announcements match desired pairs on usable interfaces."""
        wanted: dict[Pair, Port] = {}
        for ip, names in self._desired.items():
            for name in names:
                iface = self._interfaces.get(name)
                if iface is not None and iface.can_announce:
                    wanted[(ip, name)] = Port(iface.name, iface.index, iface.mac)
        lost, gained = changes(self._active, wanted)
        owned: dict[Port, list[bytes]] = {}
        for (ip, _name), port in wanted.items():
            owned.setdefault(port, []).append(ip)
        self._active = wanted  # replaced whole, never changed in place: the responder's thread reads it
        with self._reclaim_lock:
            self._announcer.cancel(lost)
            self._reclaim.forget(lost)
        self._responder.set_owned(owned)
        if gained:
            self._announcer.announce(gained)

    def _claimed(self, ip: bytes, mac: bytes, ifname: str) -> None:
        """From the responder's thread: ``mac`` claimed ``ip``, which we announce on ``ifname``."""
        pair = (ip, ifname)
        with self._reclaim_lock:
            if pair not in self._active:
                return  # lost meanwhile: the claimant may well be the new owner
            when = self._reclaim.claimed(pair, time.monotonic())
            if when is None:
                return
            self._reannouncements += 1
            self._announcer.announce([pair], at=when)
        log.info("announcing %s on %s again in %.0f ms: %s claimed it", ipaddress.ip_address(ip), ifname,
                 max(0.0, when - time.monotonic()) * 1e3, mac.hex(":"))

    def _fire(self, batch: Sequence[Pair]) -> None:
        """One announcement round; pairs lost since they were queued are skipped."""
        if self._guard is not None and not self._guard():
            return
        with self._reclaim_lock:
            if self._reclaim.tracked():
                self._reclaim.sent(batch, time.monotonic())
        by_port: dict[Port, list[bytes]] = {}
        with self._lock:
            for pair in batch:
                port = self._active.get(pair)
                if port is not None:
                    by_port.setdefault(port, []).append(pair[0])
        for port, ips in by_port.items():
            frames: list[bytes] = []
            for ip in ips:
                if len(ip) == 4:
                    frames.append(packets.build_gratuitous_arp(port.mac, ip, reply=False))
                    frames.append(packets.build_gratuitous_arp(port.mac, ip, reply=True))
                else:
                    frames.append(packets.build_unsolicited_na(port.mac, ip))
            self._responder.send(port.name, frames)

    def _interfaces_changed(self, interfaces: Sequence[Interface]) -> None:
        with self._lock:
            before = self._interfaces
            self._interfaces = {i.name: i for i in interfaces}
            for name, iface in self._interfaces.items():
                old = before.get(name)
                if old is None or old.can_announce != iface.can_announce:
                    log.info("interface %s %s", name, "up" if iface.can_announce else "down")
            for name in before.keys() - self._interfaces.keys():
                log.info("interface %s gone", name)
            if self._started:
                self._converge()
        for callback in list(self._listeners):
            try:
                callback(interfaces)
            except Exception:
                log.exception("interface listener")
