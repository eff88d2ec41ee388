"""Desired routes: from service IPs and pool advertisements to the routes each peer gets, and what to change.

Pure functions over plain data. The supervisor keeps, per ExaBGP neighbour, the routes ExaBGP holds and
asks ``diff_routes`` what to send to reach the desired set.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from lbspeaker.bgp.model import Advertisement, AdvSpec, BgpPeer


def routes_for(ip: str, advertisements: Sequence[AdvSpec]) -> list[Advertisement]:
    """The routes that announce one service IP under a pool's advertisements.

    Each advertisement gives one route: the IP's covering prefix of the advertisement's aggregation
    length (``aggregation_length`` for IPv4, ``aggregation_length_v6`` for IPv6) with its attributes.
    No advertisement gives the host route (/32 or /128) without attributes. Advertisements that land on
    the same prefix are merged as ``merge_routes`` describes. The result is sorted by prefix.
    """
    address = ipaddress.ip_address(ip)
    host_length = address.max_prefixlen
    if not advertisements:
        return [Advertisement(prefix=f"{address}/{host_length}")]
    routes = []
    for spec in advertisements:
        length = spec.aggregation_length if address.version == 4 else spec.aggregation_length_v6
        if not 0 <= length <= host_length:
            raise ValueError(f"aggregation length {length} is out of range for {address}")
        network = ipaddress.ip_network(f"{address}/{length}", strict=False)
        routes.append(
            Advertisement(
                prefix=str(network),
                localpref=spec.localpref,
                communities=spec.communities,
                large_communities=spec.large_communities,
            )
        )
    return sorted(merge_routes(routes).values(), key=_prefix_key)


def merge_routes(routes: Iterable[Advertisement]) -> dict[str, Advertisement]:
    """One route per prefix, keyed by prefix.

    A router can only hold one path per prefix from us, so routes of several Services (or several
    advertisements) that aggregate to the same prefix become one. Their attributes merge
    order-independently: communities and large communities are the union, so no Service loses a
    community it depends on (no-export, a traffic-engineering tag); localpref is the highest one set
    (None when none is), because the path is one and the Service asking for the strongest preference
    would otherwise be ignored silently.
    """
    merged: dict[str, Advertisement] = {}
    for route in routes:
        seen = merged.get(route.prefix)
        if seen is None:
            merged[route.prefix] = route
            continue
        prefs = [p for p in (seen.localpref, route.localpref) if p is not None]
        merged[route.prefix] = Advertisement(
            prefix=route.prefix,
            localpref=max(prefs) if prefs else None,
            communities=seen.communities + route.communities,
            large_communities=seen.large_communities + route.large_communities,
        )
    return merged


def routes_for_peer(peer: BgpPeer, routes: Mapping[str, Advertisement]) -> dict[str, Advertisement]:
    """The routes one peer gets: those of the session's address family; localpref only over iBGP.

    LOCAL_PREF is an iBGP attribute (RFC 4271 5.1.5): a router ignores it from an external peer, so
    it is dropped for eBGP sessions rather than sent and silently discarded.
    """
    selected: dict[str, Advertisement] = {}
    for prefix, route in routes.items():
        if route.family != peer.family:
            continue
        if route.localpref is not None and not peer.ibgp:
            route = replace(route, localpref=None)
        selected[prefix] = route
    return selected


@dataclass(frozen=True)
class RouteDiff:
    """What to send to one neighbour: announcements (new or changed) first, then withdrawals."""

    announce: tuple[Advertisement, ...]
    withdraw: tuple[str, ...]

    def __bool__(self) -> bool:
        return bool(self.announce or self.withdraw)


def diff_routes(desired: Mapping[str, Advertisement], current: Mapping[str, Advertisement]) -> RouteDiff:
    """The changes that turn ``current`` into ``desired`` (both keyed by prefix).

    A route whose attributes changed is only re-announced: a BGP UPDATE for a prefix replaces the
    previous path (implicit withdraw), so withdrawing first would open a gap in reachability.
    Announcements come before withdrawals for the same make-before-break reason: when an IP moves
    from a /32 to an aggregate, the aggregate is in place before the /32 goes.
    """
    announce = tuple(
        sorted((r for p, r in desired.items() if current.get(p) != r), key=_prefix_key),
    )
    withdraw = tuple(sorted((p for p in current if p not in desired), key=_network_key))
    return RouteDiff(announce=announce, withdraw=withdraw)


def apply_diff(current: dict[str, Advertisement], diff: RouteDiff) -> None:
    """Record in ``current`` that ``diff`` was sent."""
    for route in diff.announce:
        current[route.prefix] = route
    for prefix in diff.withdraw:
        current.pop(prefix, None)


@functools.lru_cache(maxsize=1 << 17)  # sorting thousands of routes parses the same prefixes each time
def _network_key(prefix: str) -> tuple[int, int, int]:
    network = ipaddress.ip_network(prefix)
    return network.version, int(network.network_address), network.prefixlen


def _prefix_key(route: Advertisement) -> tuple[int, int, int]:
    return _network_key(route.prefix)
