"""A human-readable summary of a validated configuration, for ``lbspeaker config check`` and logs.

Pool sizes are what the controller can hand out (``AddressPool.size``: after avoid-buggy-ips, the
count ``lbspeaker status`` shows as the total). Never shows BGP passwords: only whether one is set and
where it comes from.
"""

from __future__ import annotations

from collections.abc import Sequence

from lbspeaker.config.models import (
    BFD_DEFAULT_INTERVAL_MS,
    BFD_DEFAULT_MINIMUM_TTL,
    BFD_DEFAULT_MULTIPLIER,
    AddressPool,
    BfdProfile,
    BgpAdvertisement,
    Config,
    NodeSelector,
    Peer,
)
from lbspeaker.config.values import format_seconds


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _selector(sel: NodeSelector) -> str:
    terms = [f"{k}={v}" for k, v in sel.match_labels.items()]
    for e in sel.match_expressions:
        if e.operator in ("In", "NotIn"):
            terms.append(f"{e.key} {e.operator.lower()} ({', '.join(e.values)})")
        else:
            terms.append(e.key if e.operator == "Exists" else f"!{e.key}")
    return ", ".join(terms) or "all nodes"


def _nodes(selectors: Sequence[NodeSelector]) -> str:
    if not selectors:
        return "all nodes"
    return " or ".join(f"[{_selector(s)}]" for s in selectors)


def _advertisement(adv: BgpAdvertisement) -> str:
    parts = [f"aggregation-length /{adv.aggregation_length} (IPv6 /{adv.aggregation_length_v6})"]
    if adv.localpref is not None:
        parts.append(f"localpref {adv.localpref}")
    if adv.communities:
        parts.append(f"communities {', '.join(adv.communities)}")
    if adv.large_communities:
        parts.append(f"large-communities {', '.join(adv.large_communities)}")
    return ", ".join(parts)


def _pool(pool: AddressPool) -> list[str]:
    flags = f"{pool.protocol}, auto-assign {_yes(pool.auto_assign)}, avoid-buggy-ips {_yes(pool.avoid_buggy_ips)}"
    sizes = [f"{pool.size(v)} IPv{v}" for v in pool.ipset.families]
    skipped = sum(pool.ipset.size(v) - pool.size(v) for v in pool.ipset.families)
    size = f"{', '.join(sizes)} addresses"
    if skipped:
        size += f" ({skipped} ending in .0 or .255 skipped by avoid-buggy-ips)"
    lines = [
        f"  {pool.name}: {flags}",
        f"    addresses: {', '.join(pool.addresses)}",
        f"    size: {size}",
        f"    announced from: {_nodes(pool.node_selectors)}",
    ]
    for k, adv in enumerate(pool.bgp_advertisements, 1):
        lines.append(f"    advertisement {k}: {_advertisement(adv)}")
    return lines


def _peer(peer: Peer) -> str:
    parts = [f"AS {peer.peer_asn}", f"local AS {peer.my_asn}", f"hold-time {format_seconds(peer.hold_time)}"]
    if peer.keepalive_time is not None:
        parts.append(f"keepalive {format_seconds(peer.keepalive_time)}")
    if peer.router_id:
        parts.append(f"router-id {peer.router_id}")
    if peer.source_address:
        parts.append(f"source {peer.source_address}")
    if peer.ebgp_multihop:
        parts.append("eBGP multihop")
    if peer.password is not None:
        parts.append("password set (hidden)")
    if peer.password_secret is not None:
        parts.append(f"password from Secret {peer.password_secret.name} key {peer.password_secret.key}")
    if peer.bfd_profile is not None:
        hops = "multihop, UDP 4784" if peer.ebgp_multihop else "single hop, UDP 3784"
        parts.append(f"BFD profile {peer.bfd_profile} ({hops})")
    parts.append(f"from {_nodes(peer.node_selectors)}")
    return f"  {_endpoint(peer)}: {', '.join(parts)}"


def _bfd(profile: BfdProfile) -> str:
    rx = profile.receive_interval or BFD_DEFAULT_INTERVAL_MS
    tx = profile.transmit_interval or BFD_DEFAULT_INTERVAL_MS
    mult = profile.detect_multiplier or BFD_DEFAULT_MULTIPLIER
    parts = [
        f"receive {rx} ms",
        f"transmit {tx} ms",
        f"multiplier {mult} (peer down after {rx * mult} ms or more of silence)",
        f"passive {_yes(profile.passive_mode)}",
        f"minimum TTL {profile.minimum_ttl or BFD_DEFAULT_MINIMUM_TTL} (multihop)",
    ]
    return f"  {profile.name}: {', '.join(parts)}"


def _endpoint(peer: Peer) -> str:
    host = f"[{peer.peer_address}]" if ":" in peer.peer_address else peer.peer_address
    return f"{host}:{peer.peer_port}"


def notes(cfg: Config) -> list[str]:
    """Things that are valid but probably not what the user meant, or not supported."""
    out = []
    if not cfg.address_pools:
        out.append("no address pools: no Service will get an external IP")
    for peer in cfg.peers:
        if peer.source_address and not peer.node_selectors:
            out.append(
                f"peer {_endpoint(peer)} sets source-address {peer.source_address} but peers from every node; "
                "a source address usually exists on one node only"
            )
    for profile in cfg.bfd_profiles:
        if profile.echo_mode:
            out.append(
                f"bfd profile {profile.name!r}: echo-mode is not supported; its sessions run in asynchronous "
                "mode only (echo-interval is ignored)"
            )
    if any(p.protocol == "bgp" for p in cfg.address_pools) and not cfg.peers:
        out.append("bgp pools are configured but no peers: their addresses are assigned but not announced")
    return out


def summarize(cfg: Config) -> str:
    """Pools (protocol, flags, exact address counts per family, advertisements), peers, communities, notes."""
    lines = [f"address pools ({len(cfg.address_pools)}):"]
    for pool in cfg.address_pools:
        lines += _pool(pool)
    lines.append(f"peers ({len(cfg.peers)}):")
    lines += [_peer(p) for p in cfg.peers]
    if cfg.bgp_communities:
        lines.append("bgp communities: " + ", ".join(f"{k}={v}" for k, v in cfg.bgp_communities.items()))
    if cfg.bfd_profiles:
        lines.append(f"bfd profiles ({len(cfg.bfd_profiles)}):")
        lines += [_bfd(p) for p in cfg.bfd_profiles]
    found = notes(cfg)
    if found:
        lines.append("notes:")
        lines += [f"  - {n}" for n in found]
    return "\n".join(lines)
