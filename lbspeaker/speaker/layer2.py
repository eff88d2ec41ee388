"""Pure desired-state computation for the speaker: cluster objects + live members -> who announces what.

Nothing here does I/O or reads a clock. The speaker's reconcile loop (``speaker.app``) and
``lbspeaker status`` both call ``plan``, so the status column shows the same answer every speaker
computes, given the same inputs.

Per IP of a layer2 pool found in a Service's status, the eligible nodes are those that are

* alive (the membership tracker's verdict, passed in as ``alive``);
* known as Node objects, not labelled ``node.kubernetes.io/exclude-from-external-load-balancers``
  and without a ``NetworkUnavailable=True`` condition;
* selected by the pool's ``node-selectors``;
* holding an up interface on the IP's subnet, as published in their speaker Lease; when *no* live
  node has one, any live node with an up interface it may announce on will do (the IP is then
  announced on whatever interface the owner chooses, as MetalLB does for off-subnet pools);
* for ``externalTrafficPolicy: Local``, running a ready endpoint of the Service; for ``Cluster``,
  the Service needs a ready endpoint anywhere, or nobody announces it.

Services sharing one IP make one election over the intersection of their eligible sets.
BGP pools are carried through as ``bgp`` items untouched: the seam for a BGP announcer later.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from lbspeaker import election
from lbspeaker.config import Config
from lbspeaker.l2 import Interface
from lbspeaker.l2.interfaces import is_virtual_name
from lbspeaker.objects import NodeView, ServiceView
from lbspeaker.speaker import eligibility
from lbspeaker.speaker.lease import Link

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Decision:
    """The election's answer for one IP."""

    ip: str
    pool: str
    protocol: str
    services: tuple[str, ...]
    eligible: frozenset[str]
    owner: str | None


@dataclass
class Plan:
    l2: dict[str, Decision] = field(default_factory=dict)  # ip -> decision (layer2 pools)
    bgp: dict[str, Decision] = field(default_factory=dict)  # ip -> decision, owner unused: every node may
    unknown: dict[str, tuple[str, ...]] = field(default_factory=dict)  # ips in no pool -> services

    def owned_by(self, node: str) -> dict[str, Decision]:
        return {ip: d for ip, d in self.l2.items() if d.owner == node}


# -- the computation ---------------------------------------------------------------------------------


def plan(
    config: Config | None,
    services: Sequence[ServiceView],
    nodes: Mapping[str, NodeView],
    links: Mapping[str, Link],
    alive: Iterable[str],
) -> Plan:
    """Who announces each IP. ``links`` is every node's published data path (from its Lease)."""
    result = Plan()
    if config is None:
        return result
    alive_set = frozenset(alive)
    base = frozenset(n for n in alive_set if n in nodes and eligibility.excluded(nodes[n]) is None)
    by_ip: dict[str, list[ServiceView]] = {}
    for svc in services:
        for ip in svc.ips:
            by_ip.setdefault(ip, []).append(svc)
    pools = config.address_pools
    pool_nodes: dict[str, frozenset[str]] = {}
    with_link = frozenset(n for n in base if links.get(n, Link()).any_up)
    for ip, svcs in sorted(by_ip.items()):
        addr = ipaddress.ip_address(ip)
        pool = next((p for p in pools if addr in p.ipset), None)
        names = tuple(sorted(s.key for s in svcs))
        if pool is None:
            result.unknown[ip] = names
            continue
        if pool.name not in pool_nodes:
            pool_nodes[pool.name] = frozenset(n for n in base if eligibility.pool_selects(pool, nodes[n].labels))
        selected = pool_nodes[pool.name]
        candidates = selected
        for svc in svcs:
            candidates = frozenset(n for n in candidates if eligibility.endpoints_allow(svc, n))
        if pool.protocol == "bgp":
            result.bgp[ip] = Decision(ip, pool.name, "bgp", names, candidates, None)
            continue
        on_subnet = frozenset(n for n in candidates if eligibility.on_subnet(addr, links.get(n)))
        if not on_subnet:
            # Fall back only when no live node of the pool has the subnet: otherwise an endpoint rule
            # excluding the on-subnet nodes would move the IP to a node its clients cannot reach.
            if any(eligibility.on_subnet(addr, links.get(n)) for n in selected):
                eligible: frozenset[str] = frozenset()
            else:
                eligible = candidates & with_link
        else:
            eligible = on_subnet
        result.l2[ip] = Decision(ip, pool.name, "layer2", names, eligible, election.owner(ip, eligible))
    return result


def local_link(interfaces: Sequence[Interface], regex: str | None) -> Link:
    """Our data path as we publish it: subnets of up interfaces we may announce on (link-local left out)."""
    pattern = re.compile(regex) if regex else None
    usable = [i for i in interfaces if i.can_announce and (pattern is None or pattern.fullmatch(i.name))]
    if pattern is None:
        usable = [i for i in usable if not is_virtual_name(i.name) or i.addresses]
    subnets = {a.network for i in usable for a in i.addresses if not a.ip.is_link_local}
    return Link(tuple(sorted(subnets, key=lambda n: (n.version, n))), bool(usable))
