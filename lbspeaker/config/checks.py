"""Rules that relate several values or several objects of a configuration; pure functions over models.

Each check takes objects together with where they were found (``Located``) and returns messages; none
raises. ``parse`` runs them over one document, ``merge`` runs the cross-object ones over the union of
several ConfigMaps, where a conflict names both sources.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from lbspeaker.config.errors import join_path
from lbspeaker.config.models import AddressPool, BfdProfile, Peer
from lbspeaker.config.values import format_seconds, widest_prefix_len
from lbspeaker.ipset import parse_range, to_ip

T = TypeVar("T")


@dataclass(frozen=True)
class Located(Generic[T]):
    """An object, the path it was found at, and the ConfigMap it came from (None: say nothing)."""

    item: T
    path: str
    source: str | None = None
    order: tuple[int, int] = (0, 0)  # (source, index) in document order: "first defined" is the lowest

    def at(self, *parts: str | int) -> str:
        path = join_path(self.path, *parts)
        return f"{self.source}: {path}" if self.source else path

    def ref(self, other: Located[Any], *parts: str | int) -> str:
        """How to mention this object's location in a message about ``other``."""
        path = join_path(self.path, *parts)
        return f"{path} in {self.source}" if self.source and self.source != other.source else path


def check_pool(pool: Located[AddressPool]) -> list[str]:
    """A pool's own consistency: advertisements only on bgp pools, aggregation fits the addresses."""
    p = pool.item
    errors: list[str] = []
    if p.protocol != "bgp":
        if p.bgp_advertisements:
            errors.append(f"{pool.at('bgp-advertisements')}: only valid in a bgp pool, pool {p.name!r} is {p.protocol}")
        return errors
    seen: dict[object, int] = {}
    for k, adv in enumerate(p.bgp_advertisements):
        if adv in seen:
            errors.append(f"{pool.at('bgp-advertisements', k)}: same as bgp-advertisements[{seen[adv]}]")
        seen.setdefault(adv, k)
        for j, text in enumerate(p.addresses):
            version, widest = widest_prefix_len(text)
            key, length = ("aggregation-length", adv.aggregation_length)
            if version == 6:
                key, length = ("aggregation-length-v6", adv.aggregation_length_v6)
            if length < widest:
                errors.append(
                    f"{pool.at('bgp-advertisements', k, key)}: {length} is shorter than /{widest}, the widest "
                    f"prefix of {text!r} (addresses[{j}]); a /{length} route would cover addresses outside the pool"
                )
    return errors


def check_peer(peer: Located[Peer], bfd_profiles: Iterable[str]) -> list[str]:
    """A peer's own consistency: timers, eBGP multihop, password source, address families, BFD profile."""
    p = peer.item
    errors: list[str] = []
    if p.keepalive_time is not None:
        if p.hold_time == 0 and p.keepalive_time != 0:
            errors.append(
                f"{peer.at('keepalive-time')}: {format_seconds(p.keepalive_time)} but hold-time is 0 "
                "(keepalives disabled); set keepalive-time to 0 or remove it"
            )
        elif p.hold_time > 0 and p.keepalive_time == 0:
            errors.append(
                f"{peer.at('keepalive-time')}: 0s sends no keepalives, so the peer would drop the session "
                f"after hold-time {format_seconds(p.hold_time)}; use a value shorter than hold-time"
            )
        elif p.hold_time > 0 and p.keepalive_time >= p.hold_time:
            errors.append(
                f"{peer.at('keepalive-time')}: {format_seconds(p.keepalive_time)} must be shorter than "
                f"hold-time {format_seconds(p.hold_time)}"
            )
    if p.ebgp_multihop and p.peer_asn == p.my_asn:
        errors.append(f"{peer.at('ebgp-multihop')}: only valid for eBGP, but peer-asn and my-asn are both {p.my_asn}")
    if p.password is not None and p.password_secret is not None:
        errors.append(f"{peer.at('password-secret')}: set together with password; use only one of them")
    if p.source_address is not None and to_family(p.source_address) != to_family(p.peer_address):
        errors.append(
            f"{peer.at('source-address')}: {p.source_address!r} is not of the same IP family as "
            f"peer-address {p.peer_address!r}"
        )
    if p.bfd_profile is not None and p.bfd_profile not in set(bfd_profiles):
        errors.append(f"{peer.at('bfd-profile')}: {p.bfd_profile!r} is not defined in bfd-profiles")
    return errors


def to_family(address: str) -> int:
    return 6 if ":" in address else 4


def check_pool_names(pools: Sequence[Located[AddressPool]]) -> list[str]:
    errors = []
    first: dict[str, Located[AddressPool]] = {}
    for pool in pools:
        earlier = first.setdefault(pool.item.name, pool)
        if earlier is not pool:
            errors.append(
                f"{pool.at('name')}: duplicate pool name {pool.item.name!r}, already defined at {earlier.ref(pool)}"
            )
    return errors


@dataclass(frozen=True)
class _Span:
    version: int
    first: int
    last: int
    pool: Located[AddressPool]
    index: int  # which entry of the pool's addresses

    @property
    def order(self) -> tuple[int, int, int]:
        return (*self.pool.order, self.index)


def check_overlaps(pools: Sequence[Located[AddressPool]]) -> list[str]:
    """No address may belong to two entries, in the same pool or in different ones (MetalLB rejects both).

    A sweep over entries sorted by first address reports every entry that overlaps an earlier one, at the
    entry defined later in the document, with the first address the two have in common.
    """
    spans = []
    for pool in pools:
        for j, text in enumerate(pool.item.addresses):
            version, first, last = parse_range(text)
            spans.append(_Span(version, first, last, pool, j))
    spans.sort(key=lambda s: (s.version, s.first, s.last))
    errors = []
    widest: _Span | None = None  # among earlier spans of this version, the one reaching furthest
    for span in spans:
        if widest is not None and widest.version == span.version and span.first <= widest.last:
            a, b = sorted((widest, span), key=lambda s: s.order)
            common = to_ip(span.version, span.first)
            errors.append(
                f"{b.pool.at('addresses', b.index)}: {b.pool.item.addresses[b.index]!r} of pool "
                f"{b.pool.item.name!r} overlaps {a.pool.item.addresses[a.index]!r} of pool {a.pool.item.name!r} "
                f"({a.pool.ref(b.pool, 'addresses', a.index)}); both contain {common}"
            )
        if widest is None or widest.version != span.version or span.last > widest.last:
            widest = span
    return errors


def _session_key(peer: Peer) -> tuple[object, ...]:
    selectors = tuple((tuple(sorted(s.match_labels.items())), s.match_expressions) for s in peer.node_selectors)
    return (peer.peer_address, peer.peer_port, peer.source_address, selectors)


def check_peer_duplicates(peers: Sequence[Located[Peer]]) -> list[str]:
    """Two peers that would open the same session (same router, port, source, nodes) cannot both exist."""
    errors = []
    first: dict[tuple[object, ...], Located[Peer]] = {}
    for peer in peers:
        earlier = first.setdefault(_session_key(peer.item), peer)
        if earlier is not peer:
            p = peer.item
            errors.append(
                f"{peer.at()}: duplicate of {earlier.ref(peer)}: same peer-address {p.peer_address}, "
                f"peer-port {p.peer_port}, source-address and node-selectors"
            )
    return errors


def check_bfd_names(profiles: Sequence[Located[BfdProfile]]) -> list[str]:
    """Profile names are unique; across ConfigMaps an identical repeat is tolerated."""
    errors = []
    first: dict[str, Located[BfdProfile]] = {}
    for prof in profiles:
        earlier = first.setdefault(prof.item.name, prof)
        if earlier is not prof and (earlier.source == prof.source or earlier.item != prof.item):
            errors.append(
                f"{prof.at('name')}: duplicate bfd profile name {prof.item.name!r}, already defined at "
                f"{earlier.ref(prof)}"
            )
    return errors
