"""ExaBGP 5 API command lines for announcing and withdrawing routes. Pure formatting.

Every command is scoped with the neighbour's full name (peer address, local address, ASNs, router
id) rather than just ``neighbor <ip>``: while a reload replaces a neighbour whose ASN changed, the old
and the new definition share the peer address, and only the full name picks the one meant.
"""

from __future__ import annotations

from collections.abc import Iterable

from lbspeaker.bgp.model import Advertisement, PeerId, ip_family
from lbspeaker.bgp.routes import RouteDiff

_FAMILY = {4: "ipv4 unicast", 6: "ipv6 unicast"}
# Prefixes per batched command: long enough to amortise ExaBGP's per-command cost, short enough
# (about 10 kB) to stay far below its 1 MB line limit.
BATCH = 256


def _attributes(route: Advertisement) -> str:
    # "next-hop self" is resolved by ExaBGP to the neighbour's configured local-address, the address
    # the session runs from: the router then forwards to this node on the shared link.
    parts = ["next-hop self"]
    if route.localpref is not None:
        parts.append(f"local-preference {route.localpref}")
    if route.communities:
        parts.append(f"community [{' '.join(route.communities)}]")
    if route.large_communities:
        parts.append(f"large-community [{' '.join(route.large_communities)}]")
    return " ".join(parts)


def announce_command(peer: PeerId, route: Advertisement) -> str:
    return f"{peer.selector()} announce route {route.prefix} {_attributes(route)}"


def withdraw_command(peer: PeerId, prefix: str) -> str:
    # ExaBGP builds a full route even for a withdrawal; naming the next hop keeps IPv6 withdrawals
    # from being checked against its IPv4 placeholder next hop.
    return f"{peer.selector()} withdraw route {prefix} next-hop self"


def eor_command(peer: PeerId, family: int) -> str:
    """End-of-RIB: tells a router helping us through a graceful restart that our routes are complete."""
    return f"{peer.selector()} announce eor {_FAMILY[family]}"


def diff_commands(peer: PeerId, diff: RouteDiff, batch: int = BATCH) -> list[str]:
    """The commands of one diff: announcements, then withdrawals.

    Routes sharing their attributes (and family) go out as one ``announce attributes ... nlri P1 P2
    ...`` command of up to ``batch`` prefixes, withdrawals likewise: ExaBGP parses and schedules
    each command as a task of its own, so a batch saves most of that work on large changes.
    """
    lines: list[str] = []
    groups: dict[tuple[str, int], list[str]] = {}
    for route in diff.announce:
        groups.setdefault((_attributes(route), route.family), []).append(route.prefix)
    for (attributes, _family), prefixes in groups.items():
        for chunk in _chunks(prefixes, batch):
            if len(chunk) == 1:
                lines.append(f"{peer.selector()} announce route {chunk[0]} {attributes}")
            else:
                lines.append(f"{peer.selector()} announce attributes {attributes} nlri {' '.join(chunk)}")
    withdrawals: dict[int, list[str]] = {}
    for prefix in diff.withdraw:
        withdrawals.setdefault(ip_family(prefix), []).append(prefix)
    for prefixes in withdrawals.values():
        for chunk in _chunks(prefixes, batch):
            if len(chunk) == 1:
                lines.append(withdraw_command(peer, chunk[0]))
            else:
                lines.append(f"{peer.selector()} withdraw attributes next-hop self nlri {' '.join(chunk)}")
    return lines


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def encode_batch(lines: Iterable[str]) -> bytes:
    """One write for many commands: ExaBGP reads its input in large chunks and splits at newlines."""
    data = "".join(f"{line}\n" for line in lines)
    if any(ch in data for ch in "\r\0"):
        raise ValueError("command lines must not contain carriage returns or NUL")
    return data.encode("ascii")
