"""Rules that relate several values or several objects of a configuration; pure functions over models.

Each check takes objects together with where they were found (``Located``) and returns messages; none
raises. ``parse`` runs them over one document, ``merge`` runs the cross-object ones over the union of
several ConfigMaps, where a conflict names both sources.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from lbspeaker.config.errors import join_path, quote
from lbspeaker.config.models import AddressPool, BfdProfile, Peer
from lbspeaker.config.values import address_range, format_seconds, widest_prefix_len
from lbspeaker.ipset import to_ip

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
    """A bgp pool's advertisements: no two alike, and each aggregation length fits the addresses.

    (That a layer2 pool has no advertisements is checked by the model, before their content.) An
    aggregation length must not be shorter than the widest prefix of any address entry of its family;
    the message names the entry that needs the longest one. Linear in advertisements plus addresses.
    """
    p = pool.item
    errors: list[str] = []
    if p.protocol != "bgp":
        return errors
    # IP version -> (the longest of the entries' widest prefix lengths, index of that entry): an
    # aggregation length at least that long fits every entry of the family.
    widest: dict[int, tuple[int, int]] = {}
    for j, text in enumerate(p.addresses):
        version, length = widest_prefix_len(text)
        if version not in widest or length > widest[version][0]:
            widest[version] = (length, j)
    seen: dict[object, int] = {}
    for k, adv in enumerate(p.bgp_advertisements):
        if adv in seen:
            errors.append(f"{pool.at('bgp-advertisements', k)}: same as bgp-advertisements[{seen[adv]}]")
        seen.setdefault(adv, k)
        for version, key, length in (
            (4, "aggregation-length", adv.aggregation_length),
            (6, "aggregation-length-v6", adv.aggregation_length_v6),
        ):
            if version in widest and length < widest[version][0]:
                prefix, j = widest[version]
                errors.append(
                    f"{pool.at('bgp-advertisements', k, key)}: {length} is shorter than /{prefix}, the widest "
                    f"prefix of {quote(p.addresses[j])} (addresses[{j}]); a /{length} route would cover addresses "
                    "outside the pool"
                )
    return errors


def check_peer(peer: Located[Peer], bfd_profiles: Collection[str]) -> list[str]:
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
            f"{peer.at('source-address')}: {quote(p.source_address)} is not of the same IP family as "
            f"peer-address {quote(p.peer_address)}"
        )
    if p.bfd_profile is not None and p.bfd_profile not in bfd_profiles:
        errors.append(f"{peer.at('bfd-profile')}: {quote(p.bfd_profile)} is not defined in bfd-profiles")
    return errors


def to_family(address: str) -> int:
    return 6 if ":" in address else 4


def check_pool_names(names: Sequence[Located[str]]) -> list[str]:
    """Pool names are unique. ``names`` are located at their pool, so a pool that is invalid otherwise
    can still be named here (every error at once)."""
    errors = []
    first: dict[str, Located[str]] = {}
    for name in names:
        earlier = first.setdefault(name.item, name)
        if earlier is not name:
            errors.append(
                f"{name.at('name')}: duplicate pool name {quote(name.item)}, already defined at {earlier.ref(name)}"
            )
    return errors


def pool_names(pools: Sequence[Located[AddressPool]]) -> list[Located[str]]:
    return [Located(p.item.name, p.path, p.source, p.order) for p in pools]


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
            version, first, last = address_range(text)
            spans.append(_Span(version, first, last, pool, j))
    spans.sort(key=lambda s: (s.version, s.first, s.last))
    errors = []
    widest: _Span | None = None  # among earlier spans of this version, the one reaching furthest
    for span in spans:
        if widest is not None and widest.version == span.version and span.first <= widest.last:
            a, b = sorted((widest, span), key=lambda s: s.order)
            common = to_ip(span.version, span.first)
            errors.append(
                f"{b.pool.at('addresses', b.index)}: {quote(b.pool.item.addresses[b.index])} of pool "
                f"{quote(b.pool.item.name)} overlaps {quote(a.pool.item.addresses[a.index])} of pool "
                f"{quote(a.pool.item.name)} "
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
                f"{prof.at('name')}: duplicate bfd profile name {quote(prof.item.name)}, already defined at "
                f"{earlier.ref(prof)}"
            )
    return errors
