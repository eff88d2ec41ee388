"""Plain data of the BGP layer: peers, advertisements, session states. No I/O.

The caller (the speaker) maps the pool configuration to these types: it picks the peers of this node,
looks up Secret passwords and resolves community names, so everything here is final and literal.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Literal

_COMMUNITY = re.compile(r"^(\d{1,5}):(\d{1,5})$")
_LARGE_COMMUNITY = re.compile(r"^(\d{1,10}):(\d{1,10}):(\d{1,10})$")
_U16 = 0xFFFF
_U32 = 0xFFFFFFFF


def normalize_ip(text: str) -> str:
    """The canonical spelling of an address (compressed IPv6, no leading zeros); ValueError when invalid."""
    return str(ipaddress.ip_address(text.strip()))


def ip_family(text: str) -> Literal[4, 6]:
    """4 or 6 for an address or prefix."""
    version = ipaddress.ip_network(text, strict=False).version
    return 4 if version == 4 else 6


def check_community(text: str) -> str:
    """Validate a standard community written ``AA:NN`` (two 16-bit numbers)."""
    match = _COMMUNITY.match(text)
    if not match or any(int(part) > _U16 for part in match.groups()):
        raise ValueError(f"community {text!r} is not AA:NN with 16-bit numbers")
    return f"{int(match.group(1))}:{int(match.group(2))}"


def check_large_community(text: str) -> str:
    """Validate a large community written ``A:B:C`` (three 32-bit numbers)."""
    match = _LARGE_COMMUNITY.match(text)
    if not match or any(int(part) > _U32 for part in match.groups()):
        raise ValueError(f"large community {text!r} is not A:B:C with 32-bit numbers")
    return ":".join(str(int(part)) for part in match.groups())


def _check_asn(name: str, value: int) -> None:
    if not 0 < value <= _U32:
        raise ValueError(f"{name} {value} is not a 32-bit AS number")


@dataclass(frozen=True)
class BgpPeer:
    """One BGP session this node must keep. The password never appears in ``repr``.

    ``keepalive_time``: seconds between keepalives (None: a third of the negotiated hold time). It
    must be shorter than a non-zero hold time; ExaBGP learns it from ``exabgp_main``.
    """

    peer_address: str
    peer_asn: int
    my_asn: int
    peer_port: int = 179
    hold_time: float = 90.0
    keepalive_time: float | None = None
    router_id: str | None = None
    source_address: str | None = None
    password: str | None = field(default=None, repr=False)
    ebgp_multihop: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "peer_address", normalize_ip(self.peer_address))
        if self.source_address is not None:
            object.__setattr__(self, "source_address", normalize_ip(self.source_address))
            if ip_family(self.source_address) != self.family:
                raise ValueError(f"source-address {self.source_address} is not of the family of {self.peer_address}")
        if self.router_id is not None:
            rid = ipaddress.ip_address(self.router_id)
            if rid.version != 4:
                raise ValueError(f"router-id {self.router_id} is not an IPv4 address")
            object.__setattr__(self, "router_id", str(rid))
        _check_asn("peer-asn", self.peer_asn)
        _check_asn("my-asn", self.my_asn)
        if not 0 < self.peer_port <= _U16:
            raise ValueError(f"peer-port {self.peer_port} is out of range")
        if self.hold_time != 0 and not 3 <= self.hold_time <= _U16:
            raise ValueError(f"hold-time {self.hold_time} must be 0 or between 3 and 65535 seconds")
        if self.keepalive_time is not None and not (
            self.keepalive_time == 0 if self.hold_time == 0 else 0 < self.keepalive_time < self.hold_time
        ):
            raise ValueError(
                f"keepalive-time {self.keepalive_time} must be shorter than hold-time {self.hold_time} "
                "and not 0 (0 only with hold-time 0)"
            )
        if self.password is not None and not 0 < len(self.password.encode()) <= 80:
            # RFC 2385 keys are at most 80 bytes; Linux refuses longer ones.
            raise ValueError(f"password of peer {self.peer_address} must be 1 to 80 bytes long")

    @property
    def family(self) -> Literal[4, 6]:
        return ip_family(self.peer_address)

    @property
    def ibgp(self) -> bool:
        return self.peer_asn == self.my_asn


@dataclass(frozen=True, order=True)
class PeerId:
    """How ExaBGP names a neighbour; its adj-rib-out is kept per name, so we track routes per PeerId too."""

    peer_address: str
    local_address: str
    local_asn: int
    peer_asn: int
    router_id: str

    def selector(self) -> str:
        """The API prefix that scopes a command to exactly this neighbour."""
        return (
            f"neighbor {self.peer_address} local-ip {self.local_address} local-as {self.local_asn}"
            f" peer-as {self.peer_asn} router-id {self.router_id}"
        )


@dataclass(frozen=True)
class ResolvedPeer:
    """A peer with the local address and router id this node uses towards it."""

    peer: BgpPeer
    local_address: str
    router_id: str

    @property
    def id(self) -> PeerId:
        return PeerId(
            peer_address=self.peer.peer_address,
            local_address=self.local_address,
            local_asn=self.peer.my_asn,
            peer_asn=self.peer.peer_asn,
            router_id=self.router_id,
        )


@dataclass(frozen=True)
class Advertisement:
    """A route to announce: a prefix and its path attributes (communities sorted: equal routes compare equal)."""

    prefix: str
    localpref: int | None = None
    communities: tuple[str, ...] = ()
    large_communities: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "prefix", str(ipaddress.ip_network(self.prefix, strict=False)))
        object.__setattr__(self, "communities", tuple(sorted({check_community(c) for c in self.communities})))
        object.__setattr__(
            self, "large_communities", tuple(sorted({check_large_community(c) for c in self.large_communities}))
        )
        if self.localpref is not None and not 0 <= self.localpref <= _U32:
            raise ValueError(f"localpref {self.localpref} is not a 32-bit number")

    @property
    def family(self) -> Literal[4, 6]:
        return ip_family(self.prefix)


@dataclass(frozen=True)
class AdvSpec:
    """One bgp-advertisement of a pool, with communities already resolved to ``AA:NN``."""

    aggregation_length: int = 32
    aggregation_length_v6: int = 128
    localpref: int | None = None
    communities: tuple[str, ...] = ()
    large_communities: tuple[str, ...] = ()


SessionStateName = Literal["idle", "connected", "established", "down"]


@dataclass(frozen=True)
class SessionState:
    """The state of one BGP session as ExaBGP last reported it; ``since`` is a ``time.time()`` stamp."""

    peer: str
    state: SessionStateName
    since: float
    reason: str = ""

    @property
    def established(self) -> bool:
        return self.state == "established"
