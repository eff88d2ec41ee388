"""Which interfaces exist, which of them an IP is announced on, and notice when that changes.

``choose_interfaces`` is pure: the interfaces that are up and hold an address on the IP's subnet; only
when there is none, every up broadcast interface the name pattern allows (the IP is then reachable
through an L2 segment the node has no address on, e.g. a dedicated VIP VLAN). ``InterfaceWatcher``
turns rtnetlink notifications into a fresh interface list within milliseconds of a link going down,
coming up or changing addresses.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import re
import select
import socket
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from lbspeaker.l2 import netlink

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

# Container and overlay plumbing: announcing a VIP on these would answer inside the node, not on the wire.
VIRTUAL_PREFIXES = (
    "veth",
    "docker",
    "cni",
    "flannel",
    "cali",
    "kube-ipvs",
    "lxc",
    "cilium",
    "vxlan",
    "tunl",
    "weave",
    "kube-bridge",
    "nodelocaldns",
    "virbr",
)


@dataclass(frozen=True)
class Interface:
    """An interface of this node's namespace as far as announcing is concerned."""

    name: str
    index: int
    mac: bytes
    admin_up: bool  # IFF_UP: someone set it up
    oper_up: bool  # IFF_RUNNING: carrier and lower layers up (operstate UP, or UNKNOWN for drivers that do not say)
    broadcast: bool
    loopback: bool
    noarp: bool
    addresses: tuple[IPInterface, ...] = ()

    @property
    def up(self) -> bool:
        return self.admin_up and self.oper_up

    @property
    def can_announce(self) -> bool:
        """Up, Ethernet-like and doing ARP: the only kind of link a neighbour answer means anything on."""
        return self.up and self.broadcast and not self.loopback and not self.noarp and len(self.mac) == 6

    @property
    def mac_str(self) -> str:
        return self.mac.hex(":")


def from_dump(dump: netlink.Dump) -> list[Interface]:
    """Join links and addresses by index, ordered by index."""
    by_index: dict[int, list[IPInterface]] = {}
    for addr in dump.addresses:
        by_index.setdefault(addr.index, []).append(addr.interface)
    return sorted(
        (
            Interface(
                name=link.name,
                index=link.index,
                mac=link.mac,
                admin_up=bool(link.flags & netlink.IFF_UP),
                oper_up=bool(link.flags & netlink.IFF_RUNNING),
                broadcast=bool(link.flags & netlink.IFF_BROADCAST),
                loopback=bool(link.flags & netlink.IFF_LOOPBACK),
                noarp=bool(link.flags & netlink.IFF_NOARP),
                addresses=tuple(by_index.get(link.index, ())),
            )
            for link in dump.links
        ),
        key=lambda i: i.index,
    )


def list_interfaces() -> list[Interface]:
    """The interfaces of the calling thread's network namespace."""
    return from_dump(netlink.dump())


def is_virtual_name(name: str) -> bool:
    return name.startswith(VIRTUAL_PREFIXES)


def choose_interfaces(ip: str | IPAddress, interfaces: Iterable[Interface], name_pattern: str | None) -> list[str]:
    """Names of the interfaces to announce ``ip`` on.

    ``name_pattern`` (a regex matched against the whole name) restricts both steps when given.
    Without it, the fallback skips container/overlay interfaces by name: an address on such an
    interface's subnet is still honoured (someone put it there on purpose), a guess is not.
    """
    addr = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    pattern = re.compile(name_pattern) if name_pattern is not None else None
    usable = [i for i in interfaces if i.can_announce and (pattern is None or pattern.fullmatch(i.name))]
    on_subnet = [
        i.name for i in usable if any(a.version == addr.version and addr in a.network for a in i.addresses)
    ]
    if on_subnet:
        return on_subnet
    return [i.name for i in usable if pattern is not None or not is_virtual_name(i.name)]


class InterfaceWatcher:
    """Keeps the interface list current and calls ``on_change(interfaces)`` whenever it changes.

    Created and started in the network namespace to watch: its sockets and thread live there.
    """

    def __init__(self, on_change: Callable[[Sequence[Interface]], None]) -> None:
        self._on_change = on_change
        self._lock = threading.Lock()
        self._current: list[Interface] = []
        self._monitor: socket.socket | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self) -> list[Interface]:
        """Subscribe first, then list, so no change between the two is missed. Returns the first list."""
        self._monitor = netlink.open_monitor()
        self._wake_r, self._wake_w = socket.socketpair()
        with self._lock:
            self._current = list_interfaces()
            first = list(self._current)
        self._thread = threading.Thread(target=self._run, name="l2-ifwatch", daemon=True)
        self._thread.start()
        return first

    def current(self) -> list[Interface]:
        with self._lock:
            return list(self._current)

    def stop(self) -> None:
        self._stopping.set()
        if self._wake_w is not None:
            with contextlib.suppress(OSError):
                self._wake_w.send(b"x")
        if self._thread is not None:
            self._thread.join(timeout=5)
        for sock in (self._monitor, self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()

    def _drain(self, sock: socket.socket) -> None:
        """Swallow queued notifications: they only say "something changed"; the dump says what."""
        while True:
            try:
                sock.recv(1 << 16, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError as exc:  # ENOBUFS: we missed some; the dump that follows covers them
                log.debug("netlink monitor: %s", exc)

    def _run(self) -> None:
        assert self._monitor is not None and self._wake_r is not None
        while not self._stopping.is_set():
            try:
                readable, _, _ = select.select([self._monitor, self._wake_r], [], [], 5.0)
                if self._wake_r in readable or self._stopping.is_set():
                    return
                if not readable:
                    continue  # idle timeout: nothing changed
                self._drain(self._monitor)
                fresh = list_interfaces()
                with self._lock:
                    changed = fresh != self._current
                    self._current = fresh
                if changed:
                    self._on_change(fresh)
            except Exception:  # the watcher must outlive any one bad dump or callback
                log.exception("interface watcher")
                self._stopping.wait(0.1)
