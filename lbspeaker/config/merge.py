"""Merging several validated ConfigMaps (the ``config`` one and those labelled ``lbspeaker.io/config``).

Pools, peers and BFD profiles are concatenated in the given order and community aliases united; what
would conflict (a pool name used twice, an address in two pools, an alias with two values, a peer
session defined twice) is reported naming both sources. Community aliases were already resolved
inside each ConfigMap, so a pool can only use aliases defined in its own ConfigMap.
"""

from __future__ import annotations

from collections.abc import Sequence

from lbspeaker.config import checks
from lbspeaker.config.checks import Located
from lbspeaker.config.errors import ConfigError, capped, join_path, quote
from lbspeaker.config.models import AddressPool, BfdProfile, Config, Peer


def merge_configs(parts: Sequence[tuple[str, Config]]) -> Config:
    """One Config from several (source, Config) pairs; ConfigError naming both sources on conflicts."""
    if len(parts) == 1:
        return parts[0][1]
    pools: list[Located[AddressPool]] = []
    peers: list[Located[Peer]] = []
    profiles: list[Located[BfdProfile]] = []
    for n, (source, cfg) in enumerate(parts):
        pools += [Located(p, f"address-pools[{i}]", source, (n, i)) for i, p in enumerate(cfg.address_pools)]
        peers += [Located(p, f"peers[{i}]", source, (n, i)) for i, p in enumerate(cfg.peers)]
        profiles += [Located(p, f"bfd-profiles[{i}]", source, (n, i)) for i, p in enumerate(cfg.bfd_profiles)]

    communities, errors = _merge_communities(parts)
    errors += checks.check_pool_names(checks.pool_names(pools))
    errors += checks.check_overlaps(pools)
    errors += checks.check_peer_duplicates(peers)
    errors += checks.check_bfd_names(profiles)
    if errors:
        raise ConfigError(capped(errors))

    unique_profiles: dict[str, BfdProfile] = {}
    for prof in profiles:
        unique_profiles.setdefault(prof.item.name, prof.item)
    return Config(
        address_pools=tuple(p.item for p in pools),
        peers=tuple(p.item for p in peers),
        bgp_communities=communities,
        bfd_profiles=tuple(unique_profiles.values()),
    )


def _merge_communities(parts: Sequence[tuple[str, Config]]) -> tuple[dict[str, str], list[str]]:
    merged: dict[str, str] = {}
    defined_in: dict[str, str] = {}
    errors = []
    for source, cfg in parts:
        for alias, value in cfg.bgp_communities.items():
            if alias in merged and merged[alias] != value:
                errors.append(
                    f"{source}: {join_path('bgp-communities', alias)}: {quote(value)} conflicts with "
                    f"{quote(merged[alias])} "
                    f"given to the same alias in {defined_in[alias]}"
                )
                continue
            merged.setdefault(alias, value)
            defined_in.setdefault(alias, source)
    return merged, errors
