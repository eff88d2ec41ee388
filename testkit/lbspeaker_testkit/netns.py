"""Network-namespace lab: a private switch and hosts on the real kernel, for tests, benchmarks and the demo.

A ``Lab`` makes one namespace holding a Linux bridge (the "switch") and any number of host namespaces,
each joined to the switch by a veth pair whose host end is called ``eth0``. Nothing is created in the
root namespace, so lab traffic never touches the machine's own interfaces. ``Lab.close`` deletes
everything the lab made, also when a test failed half-way.

Processes in a host namespace cannot reach the root namespace's loopback, where the API test server
listens. ``Lab.forward_loopback`` opens a listener on the host namespace's 127.0.0.1 that relays each
connection to an address in the root namespace: the listening socket is created after ``setns`` in a
helper thread, so it lives in the host namespace, while the relay's outgoing sockets are made in the
root namespace.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import os
import secrets
import selectors
import socket
import subprocess
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, TypedDict, Unpack

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


class PopenOptions(TypedDict, total=False):
    """The ``subprocess.Popen`` options a lab process may take (bytes I/O: its pipes carry bytes)."""

    stdin: int | IO[Any] | None
    stdout: int | IO[Any] | None
    stderr: int | IO[Any] | None
    env: Mapping[str, str] | None
    cwd: str | os.PathLike[str] | None


def run(cmd: Sequence[str], *, check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing its output; raise with the command's stderr when it fails."""
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def _setns(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


@contextlib.contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Switch the calling thread into namespace ``name`` and back. Sockets made inside stay there."""
    own = f"/proc/self/task/{threading.get_native_id()}/ns/net"
    back = os.open(own, os.O_RDONLY)
    try:
        _setns(f"/run/netns/{name}")
        try:
            yield
        finally:
            if _libc.setns(back, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back to the original namespace failed")
    finally:
        os.close(back)


@dataclass
class Host:
    """One host namespace on the lab switch."""

    name: str  # namespace name
    ifname: str  # interface inside the namespace
    mac: str
    ipv4: ipaddress.IPv4Interface | None
    ipv6: ipaddress.IPv6Interface | None
    switch_port: str  # veth end on the bridge side

    def exec_args(self, cmd: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *cmd]

    def run(self, cmd: Sequence[str], *, check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        return run(self.exec_args(cmd), check=check, timeout=timeout)

    def popen(self, cmd: Sequence[str], **options: Unpack[PopenOptions]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.exec_args(cmd), **options)


@dataclass
class _Relay:
    listener: socket.socket
    target: tuple[str, int]
    stop: threading.Event = field(default_factory=threading.Event)


class Lab:
    """A switch namespace with a bridge, and host namespaces attached to it. Use as a context manager."""

    def __init__(self, prefix: str = "lbs") -> None:
        if len(prefix) > 6:
            raise ValueError(f"lab prefix {prefix!r} is longer than 6 characters")
        self.prefix = f"{prefix}{secrets.token_hex(2)}"
        self.switch = f"{self.prefix}-sw"
        self.hosts: dict[str, Host] = {}
        self._namespaces: list[str] = []
        self._relays: list[_Relay] = []
        self._procs: list[subprocess.Popen[bytes]] = []
        self._closed = False
        try:
            self._add_namespace(self.switch)
            run(["ip", "-n", self.switch, "link", "add", "br0", "type", "bridge"])
            # Forward at once: the default 15 s learning delay would hide the first packets of a test.
            run(["ip", "-n", self.switch, "link", "set", "br0", "type", "bridge", "forward_delay", "0"])
            run(["ip", "-n", self.switch, "link", "set", "br0", "up"])
        except BaseException:
            self.close()
            raise

    def _add_namespace(self, name: str) -> None:
        run(["ip", "netns", "add", name])
        self._namespaces.append(name)
        run(["ip", "-n", name, "link", "set", "lo", "up"])

    def add_host(self, short: str, ipv4: str | None = None, ipv6: str | None = None) -> Host:
        """Add a host namespace ``<prefix>-<short>`` with ``eth0`` on the switch, and the given addresses."""
        name = f"{self.prefix}-{short}"
        if len(name) > 15 or short in self.hosts:
            raise ValueError(f"host name {short!r} is too long or already used")
        self._add_namespace(name)
        # A new namespace copies the root namespace's forwarding setting; a forwarding lab host would
        # send ICMP redirects and ARP on others' behalf, which no test host should do.
        run(["ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv4.ip_forward=0"])
        port = f"p{len(self.hosts)}"
        tmp = f"{self.prefix}{len(self.hosts)}"
        run(["ip", "-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", tmp])
        run(["ip", "-n", self.switch, "link", "set", tmp, "netns", name])
        run(["ip", "-n", name, "link", "set", tmp, "name", "eth0"])
        run(["ip", "-n", self.switch, "link", "set", port, "master", "br0", "up"])
        if ipv6 is not None:
            # Duplicate address detection would keep the address tentative for a second or more.
            run(["ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0"])
        run(["ip", "-n", name, "link", "set", "eth0", "up"])
        v4 = ipaddress.IPv4Interface(ipv4) if ipv4 else None
        v6 = ipaddress.IPv6Interface(ipv6) if ipv6 else None
        if v4 is not None:
            run(["ip", "-n", name, "addr", "add", str(v4), "dev", "eth0"])
        if v6 is not None:
            run(["ip", "-n", name, "addr", "add", str(v6), "dev", "eth0", "nodad"])
        mac = run(["ip", "netns", "exec", name, "cat", "/sys/class/net/eth0/address"]).stdout.strip()
        host = Host(name=name, ifname="eth0", mac=mac, ipv4=v4, ipv6=v6, switch_port=port)
        self.hosts[short] = host
        return host

    def set_port(self, host: Host, up: bool) -> None:
        """Take a host's interface down or up (a data-path failure as the host sees it)."""
        run(["ip", "-n", host.name, "link", "set", host.ifname, "up" if up else "down"])

    def popen(self, host: Host, cmd: Sequence[str], **options: Unpack[PopenOptions]) -> subprocess.Popen[bytes]:
        """Start a process in a host namespace; it is killed on ``close``."""
        proc = host.popen(cmd, **options)
        self._procs.append(proc)
        return proc

    def forward_loopback(self, host: Host, target: tuple[str, int], port: int | None = None) -> int:
        """Listen on ``127.0.0.1:port`` inside ``host`` and relay connections to ``target`` in this namespace.

        Returns the port listened on (``target``'s port when ``port`` is None).
        """
        listen_port = target[1] if port is None else port
        result: list[socket.socket] = []
        errors: list[BaseException] = []

        def make() -> None:
            try:
                with in_netns(host.name):
                    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    sock.bind(("127.0.0.1", listen_port))
                    sock.listen(64)
                    result.append(sock)
            except BaseException as exc:  # reported in the caller's thread
                errors.append(exc)

        maker = threading.Thread(target=make)
        maker.start()
        maker.join()
        if errors:
            raise errors[0]
        relay = _Relay(listener=result[0], target=target)
        self._relays.append(relay)
        threading.Thread(target=self._accept_loop, args=(relay,), daemon=True, name=f"relay-{host.name}").start()
        return listen_port

    @staticmethod
    def _accept_loop(relay: _Relay) -> None:
        relay.listener.settimeout(0.2)
        while not relay.stop.is_set():
            try:
                conn, _ = relay.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(relay.target, timeout=5)
            except OSError:
                conn.close()
                continue
            threading.Thread(target=_pump, args=(conn, upstream, relay.stop), daemon=True).start()

    def close(self) -> None:
        """Kill the lab's processes and relays and delete every namespace it made."""
        if self._closed:
            return
        self._closed = True
        for relay in self._relays:
            relay.stop.set()
            with contextlib.suppress(OSError):
                relay.listener.close()
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        for name in reversed(self._namespaces):
            # Processes started by others inside the namespace would keep it alive: kill them too.
            pids = run(["ip", "netns", "pids", name], check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), 9)
            run(["ip", "netns", "del", name], check=False)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _pump(a: socket.socket, b: socket.socket, stop: threading.Event) -> None:
    """Copy bytes both ways between two sockets until either side closes."""
    sel = selectors.DefaultSelector()
    a.setblocking(False)
    b.setblocking(False)
    sel.register(a, selectors.EVENT_READ)
    sel.register(b, selectors.EVENT_READ)
    try:
        while not stop.is_set():
            for key, _ in sel.select(timeout=0.5):
                src, dst = (a, b) if key.fileobj is a else (b, a)
                try:
                    data = src.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                dst.setblocking(True)
                try:
                    dst.sendall(data)
                except OSError:
                    return
                finally:
                    dst.setblocking(False)
    finally:
        sel.close()
        a.close()
        b.close()
