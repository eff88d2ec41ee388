"""BIRD 2 as the test router: config writing, running it in a lab namespace, reading its state back.

Used by the BGP network tests, the BGP benchmark and the demo. BIRD runs in the foreground inside
a host namespace of a ``Lab`` (``bird -f -c CONF -s SOCK``); ``birdc -s SOCK`` talks to it over the
control socket, which is a file and so works from any namespace.

The RIB is what the tests read (``show route all``): it lists every path of a prefix, one per
neighbour, with its BGP attributes. The kernel protocols export BGP routes with ``merge paths on``,
so the router namespace's kernel table shows the ECMP route built from those paths as well.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from lbspeaker_testkit.netns import Host, Lab

T = TypeVar("T")


def bird_available() -> str | None:
    """None when bird and birdc are installed, else why not."""
    missing = [tool for tool in ("bird", "birdc") if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} not installed (Debian package bird2)"
    return None


@dataclass(frozen=True)
class BirdNeighbor:
    """One BGP session of the router."""

    name: str
    address: str
    asn: int
    local_address: str
    password: str | None = None
    multihop: bool = False
    hold_time: int = 90
    graceful_restart: bool = True
    import_filter: str = "all"  # the channel's import clause: "all", "none", "where net != 203.0.113.9/32"
    bfd: bool = False  # "bfd on": the session follows a BFD session to the neighbour (needs ``bfd=`` below)

    @property
    def family(self) -> int:
        return 6 if ":" in self.address else 4


def _quote(text: str) -> str:
    # BIRD strings have no escapes: a double quote or newline cannot be written at all.
    if '"' in text or "\n" in text:
        raise ValueError("BIRD strings cannot hold double quotes or newlines")
    return f'"{text}"'


@dataclass(frozen=True)
class BirdBfd:
    """The router's ``protocol bfd``: the timers it asks for on direct and on multihop sessions."""

    min_rx_ms: int = 300
    min_tx_ms: int = 300
    multiplier: int = 3
    interface: str = "eth0"
    neighbors: tuple[str, ...] = ()  # static sessions, without a BGP protocol asking for them

    def render(self) -> list[str]:
        timers = f"min rx interval {self.min_rx_ms} ms; min tx interval {self.min_tx_ms} ms; " \
                 f"idle tx interval 1000 ms; multiplier {self.multiplier};"
        return [
            "protocol bfd {",
            f'  interface "{self.interface}" {{ {timers} }};',
            f"  multihop {{ {timers} }};",
            *(f'  neighbor {address} dev "{self.interface}";' for address in self.neighbors),
            "}",
        ]


def render_bird_config(
    router_id: str, asn: int, neighbors: Sequence[BirdNeighbor], bfd: BirdBfd | None = None
) -> str:
    """A router that accepts every route its neighbours send (unless a neighbour's ``import_filter``
    says otherwise) and exports none back; with ``bfd``, a BFD protocol for the ``bfd`` neighbours."""
    if any(n.bfd for n in neighbors) and bfd is None:
        raise ValueError("a neighbour with bfd needs the router's BFD protocol (bfd=BirdBfd())")
    lines = [
        f"router id {router_id};",
        "log stderr all;",
        "timeformat protocol iso long ms;",
        "timeformat route iso long ms;",
        "protocol device { scan time 10; }",
        "protocol direct { ipv4; ipv6; }",
        "protocol kernel kernel4 { ipv4 { import none; export where source = RTS_BGP; }; merge paths on; }",
        "protocol kernel kernel6 { ipv6 { import none; export where source = RTS_BGP; }; merge paths on; }",
    ]
    if bfd is not None:
        lines.extend(bfd.render())
    for n in neighbors:
        channel = "ipv4" if n.family == 4 else "ipv6"
        ibgp = n.asn == asn
        body = [
            f"local {n.local_address} as {asn};",
            f"neighbor {n.address} as {n.asn};",
            f"hold time {n.hold_time};",
            f"graceful restart {'on' if n.graceful_restart else 'off'};",
            "connect retry time 1;",
            "error wait time 1, 5;",
        ]
        if n.multihop:
            body.append("multihop;")
        elif ibgp:
            # BIRD treats iBGP as multihop with recursive next hops; our nodes share its link.
            body.append("direct;")
        if n.password is not None:
            body.append(f"password {_quote(n.password)};")
        if n.bfd:
            body.append("bfd on;")
        body.append(f"{channel} {{ import {n.import_filter}; export none; }};")
        lines.append(f"protocol bgp {n.name} {{")
        lines.extend(f"  {line}" for line in body)
        lines.append("}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class ProtocolStatus:
    name: str
    proto: str
    table: str
    state: str
    since: str
    info: str

    @property
    def established(self) -> bool:
        return self.proto == "BGP" and self.info.startswith("Established")


@dataclass(frozen=True)
class RoutePath:
    """One path of a prefix in BIRD's RIB."""

    protocol: str
    since: str
    primary: bool
    gateway: str | None
    attributes: dict[str, str] = field(default_factory=dict)

    @property
    def next_hop(self) -> str | None:
        return self.attributes.get("BGP.next_hop", self.gateway)

    @property
    def local_pref(self) -> int | None:
        value = self.attributes.get("BGP.local_pref")
        return int(value) if value is not None else None

    @property
    def communities(self) -> tuple[str, ...]:
        # "(65000,1) (65000,2)"
        text = self.attributes.get("BGP.community", "")
        return tuple(f"{a}:{b}" for a, b in re.findall(r"\((\d+),\s*(\d+)\)", text))

    @property
    def large_communities(self) -> tuple[str, ...]:
        # "(64500, 1, 2)"
        text = self.attributes.get("BGP.large_community", "")
        return tuple(f"{a}:{b}:{c}" for a, b, c in re.findall(r"\((\d+),\s*(\d+),\s*(\d+)\)", text))


_PROTOCOL_ROW = re.compile(
    r"^(?P<name>\S+)\s+(?P<proto>\S+)\s+(?P<table>\S+)\s+(?P<state>\S+)\s+"
    r"(?P<since>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?|\S+)\s*(?P<info>.*)$"
)
_ROUTE_HEAD = re.compile(
    r"^(?P<prefix>\S+)?\s+(?:unicast|unreachable|blackhole|prohibit)\s+\[(?P<proto>\S+)\s+(?P<since>[^\]]*)\]"
    r"(?P<primary>\s+\*)?"
)
_VIA = re.compile(r"^\s+via\s+(?P<gw>\S+)")


def parse_show_protocols(text: str) -> dict[str, ProtocolStatus]:
    """Parse ``birdc show protocols``."""
    out: dict[str, ProtocolStatus] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith(("BIRD ", "Name ")):
            continue
        match = _PROTOCOL_ROW.match(line)
        if match:
            row = match.groupdict()
            out[row["name"]] = ProtocolStatus(
                name=row["name"],
                proto=row["proto"],
                table=row["table"],
                state=row["state"],
                since=row["since"],
                info=row["info"].strip(),
            )
    return out


@dataclass
class _PathSoFar:
    """The path being read: RoutePath's fields, filled in line by line."""

    protocol: str
    since: str
    primary: bool
    gateway: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)


def parse_show_route(text: str) -> dict[str, list[RoutePath]]:
    """Parse ``birdc show route all``: prefix -> its paths (the primary one marked)."""
    routes: dict[str, list[RoutePath]] = {}
    prefix: str | None = None
    current: _PathSoFar | None = None

    def finish() -> None:
        if current is not None and prefix is not None:
            routes.setdefault(prefix, []).append(
                RoutePath(
                    protocol=current.protocol,
                    since=current.since,
                    primary=current.primary,
                    gateway=current.gateway,
                    attributes=dict(current.attributes),
                )
            )

    for line in text.splitlines():
        if not line.strip() or line.startswith(("BIRD ", "Table ")):
            continue
        head = _ROUTE_HEAD.match(line)
        if head and not line.startswith("\t"):
            finish()
            if head.group("prefix"):
                prefix = head.group("prefix")
            current = _PathSoFar(protocol=head.group("proto"), since=head.group("since"),
                                 primary=head.group("primary") is not None)
            continue
        if current is None:
            continue
        via = _VIA.match(line)
        if via:
            if current.gateway is None:
                current.gateway = via.group("gw")
            continue
        key, sep, value = line.strip().partition(":")
        if sep:
            current.attributes[key.strip()] = value.strip()
    finish()
    return routes


def wait_until(probe: Callable[[], T | None], timeout: float, interval: float = 0.1, what: str = "condition") -> T:
    """Poll ``probe`` until it returns something truthy; raise TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(interval)


class BirdControl:
    """A persistent connection to BIRD's control socket, for fast polling (no birdc process per query).

    BIRD answers each command with lines that start with a 4-digit code and a '-' (more follows), or
    a space (last line); lines starting with a space continue the previous one. Codes from 8000 on
    are errors, such as "8001 Network not found".
    """

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        self._sock.connect(str(path))
        self._buf = b""
        self._reply()  # the greeting

    def _line(self) -> str:
        while b"\n" not in self._buf:
            data = self._sock.recv(65536)
            if not data:
                raise ConnectionError("BIRD closed the control connection")
            self._buf += data
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode("utf-8", "replace")

    def _reply(self) -> tuple[int, list[str]]:
        lines: list[str] = []
        while True:
            line = self._line()
            if len(line) >= 5 and line[:4].isdigit() and line[4] in " -":
                lines.append(line[5:])
                if line[4] == " ":
                    return int(line[:4]), lines
            else:
                lines.append(line[1:] if line.startswith(" ") else line)

    def command(self, text: str) -> tuple[int, list[str]]:
        """Send one command; return the code of the last reply line and all reply lines."""
        self._sock.sendall(text.encode() + b"\n")
        return self._reply()

    def has_route(self, prefix: str) -> bool:
        code, _ = self.command(f"show route {prefix}")
        return code < 8000

    def route_count(self, table: str | None = None) -> int:
        """Networks in ``table`` (all tables when None)."""
        _code, lines = self.command("show route count" + (f" table {table}" if table else ""))
        for line in reversed(lines):
            match = re.search(r"(\d+) of \d+ routes for (\d+) networks", line)
            if match:
                return int(match.group(2))
        return 0

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> BirdControl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BirdRouter:
    """A BIRD process in a lab host; stopped by ``stop`` (or by the lab's close)."""

    def __init__(self, lab: Lab, host: Host, workdir: Path, config: str) -> None:
        self.lab = lab
        self.host = host
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "bird.conf"
        self.socket_path = workdir / "bird.ctl"
        self._socket_dir: str | None = None
        if len(str(self.socket_path)) > 100:
            # AF_UNIX paths are limited to 108 bytes; deep test directories do not fit.
            self._socket_dir = tempfile.mkdtemp(prefix="lbs-bird-")
            self.socket_path = Path(self._socket_dir) / "bird.ctl"
        self.log_path = workdir / "bird.log"
        self.config_path.write_text(config)
        self._log = self.log_path.open("ab")
        self.proc = lab.popen(
            host,
            ["bird", "-f", "-c", str(self.config_path), "-s", str(self.socket_path)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(self._ready, timeout=10, what="BIRD control socket")
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"bird exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
        return self.socket_path.exists() and "ready" in self.birdc("show", "status", check=False)

    def birdc(self, *args: str, check: bool = True) -> str:
        proc = subprocess.run(
            ["birdc", "-s", str(self.socket_path), *args], capture_output=True, text=True, timeout=30, check=False
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"birdc {' '.join(args)} failed: {proc.stderr.strip() or proc.stdout.strip()}")
        return proc.stdout

    def protocols(self) -> dict[str, ProtocolStatus]:
        return parse_show_protocols(self.birdc("show", "protocols"))

    def routes(self, *filters: str) -> dict[str, list[RoutePath]]:
        """``show route <filters> all`` parsed; no filters lists every table."""
        # birdc exits non-zero for "Network not found", which is an empty answer here.
        return parse_show_route(self.birdc("show", "route", *filters, "all", check=False))

    def route_count(self) -> int:
        """How many prefixes the RIB holds over all tables (cheap: no attributes are printed)."""
        text = self.birdc("show", "route", "count")
        match = re.search(r"Total:\s+(\d+) of (\d+) routes for (\d+) networks", text)
        return int(match.group(3)) if match else 0

    def protocol_detail(self, name: str) -> str:
        return self.birdc("show", "protocols", "all", name)

    def bfd_sessions(self) -> dict[str, str]:
        """``show bfd sessions``: neighbour address -> BFD state (Up, Down, Init, AdminDown)."""
        return {address: state for address, (state, _timeout) in self.bfd_detail().items()}

    def bfd_detail(self) -> dict[str, tuple[str, float]]:
        """``show bfd sessions``: neighbour address -> (state, detection time in seconds). The detection
        time is the remote's multiplier times its transmit interval as BIRD applies it (0 when Down)."""
        out: dict[str, tuple[str, float]] = {}
        for line in self.birdc("show", "bfd", "sessions", check=False).splitlines():
            words = line.split()
            if len(words) >= 3 and words[2] in ("Up", "Down", "Init", "AdminDown"):
                try:
                    timeout = float(words[-1])
                except ValueError:
                    timeout = 0.0
                out[words[0]] = (words[2], timeout)
        return out

    def reconfigure(self, config: str) -> None:
        self.config_path.write_text(config)
        out = self.birdc("configure")
        if "Reconfigured" not in out and "Reconfiguration in progress" not in out:
            raise RuntimeError(f"bird refused the configuration: {out.strip()}")

    def kernel_route(self, prefix: str) -> str:
        """The router namespace's kernel route for ``prefix`` (``ip route show``), to see the ECMP result."""
        version = "-6" if ":" in prefix else "-4"
        return self.host.run(["ip", version, "route", "show", prefix]).stdout

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
