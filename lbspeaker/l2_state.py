"""Pure desired-state computation for the speaker: cluster objects + live members -> who announces what.

Nothing here does I/O or reads a clock. The speaker's reconcile loop (``lbspeaker.speaker``) and
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

import functools
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from controller.service import is_load_balancer, status_ips
from lbspeaker import election
from lbspeaker.config import Config
from lbspeaker.config.models import selects

EXCLUDE_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"

# Annotations each speaker writes on its own Lease so peers can judge its eligibility.
HEARTBEAT_ANNOTATION = "lbspeaker.io/heartbeat-addr"
SUBNETS_ANNOTATION = "lbspeaker.io/subnets"
INTERFACES_UP_ANNOTATION = "lbspeaker.io/interfaces-up"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
JSON = Mapping[str, Any]


@dataclass(frozen=True)
class NodeView:
    """What eligibility needs to know about one node."""

    name: str
    labels: Mapping[str, str]
    excluded: str | None  # why the node may not announce at all, or None


@dataclass(frozen=True)
class Link:
    """A node's data path as its speaker publishes it: subnets of up interfaces, and whether any is up."""

    subnets: tuple[Network, ...] = ()
    any_up: bool = False


@dataclass(frozen=True)
class ServiceView:
    key: str  # namespace/name
    ips: tuple[str, ...]
    local: bool  # externalTrafficPolicy: Local
    ready_nodes: frozenset[str]  # nodes with a ready endpoint (Local needs ours)
    any_ready: bool  # a ready endpoint anywhere (Cluster needs one)


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


# -- parsing API objects ----------------------------------------------------------------------------


def node_view(node: JSON) -> NodeView:
    meta = node.get("metadata") or {}
    labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    excluded: str | None = None
    if EXCLUDE_LABEL in labels:
        excluded = f"labelled {EXCLUDE_LABEL}"
    for cond in (node.get("status") or {}).get("conditions") or []:
        if isinstance(cond, Mapping) and cond.get("type") == "NetworkUnavailable" and cond.get("status") == "True":
            excluded = "NetworkUnavailable"
    return NodeView(name=str(meta.get("name")), labels=labels, excluded=excluded)


def internal_ip(node: JSON) -> str | None:
    """The node's first valid InternalIP (IPv4 preferred), for its heartbeat address."""
    found: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for addr in (node.get("status") or {}).get("addresses") or []:
        if isinstance(addr, Mapping) and addr.get("type") == "InternalIP":
            try:
                found.append(ipaddress.ip_address(str(addr.get("address"))))
            except ValueError:
                continue
    found.sort(key=lambda a: a.version)
    return str(found[0]) if found else None


def format_subnets(subnets: Iterable[Network]) -> str:
    return ",".join(str(n) for n in sorted(set(subnets), key=lambda n: (n.version, n)))


def parse_link(annotations: Mapping[str, Any]) -> Link:
    """A peer's published data path; malformed entries are skipped, never fatal."""
    subnets: list[Network] = []
    for part in str(annotations.get(SUBNETS_ANNOTATION) or "").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            subnets.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            continue
    up = str(annotations.get(INTERFACES_UP_ANNOTATION) or "").strip().lower() == "true"
    return Link(tuple(subnets), up or bool(subnets))


def service_view(svc: JSON, slices: Iterable[JSON]) -> ServiceView:
    meta = svc.get("metadata") or {}
    key = f"{meta.get('namespace')}/{meta.get('name')}"
    local = (svc.get("spec") or {}).get("externalTrafficPolicy") == "Local"
    ready: set[str] = set()
    any_ready = False
    for es in slices:
        for ep in es.get("endpoints") or []:
            if not isinstance(ep, Mapping):
                continue
            cond = ep.get("conditions") or {}
            if cond.get("ready") is False:
                continue
            any_ready = True
            if ep.get("nodeName"):
                ready.add(str(ep["nodeName"]))
    return ServiceView(key, tuple(_canonical(ip) for ip in status_ips(svc) if _canonical(ip)), local,
                       frozenset(ready), any_ready)


def services_from_cache(services: Iterable[JSON], slices: Iterable[JSON], lb_class: str | None) -> list[ServiceView]:
    """ServiceViews for the Services we handle (same lb-class rule as the controller) that have IPs."""
    by_service: dict[str, list[JSON]] = {}
    for es in slices:
        meta = es.get("metadata") or {}
        name = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if name:
            by_service.setdefault(f"{meta.get('namespace')}/{name}", []).append(es)
    out = []
    for svc in services:
        if not is_load_balancer(svc, lb_class):
            continue
        meta = svc.get("metadata") or {}
        view = service_view(svc, by_service.get(f"{meta.get('namespace')}/{meta.get('name')}", ()))
        if view.ips:
            out.append(view)
    return out


@functools.lru_cache(maxsize=1 << 17)  # every reconcile parses the same IPs again
def _canonical(ip: str) -> str:
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        return ""


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
    base = frozenset(n for n in alive_set if n in nodes and nodes[n].excluded is None)
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
            pool_nodes[pool.name] = frozenset(n for n in base if selects(pool.node_selectors, nodes[n].labels))
        selected = pool_nodes[pool.name]
        candidates = selected
        for svc in svcs:
            if svc.local:
                candidates = candidates & svc.ready_nodes
            elif not svc.any_ready:
                candidates = frozenset()
        if pool.protocol == "bgp":
            result.bgp[ip] = Decision(ip, pool.name, "bgp", names, candidates, None)
            continue
        on_subnet = frozenset(n for n in candidates if _on_subnet(addr, links.get(n)))
        if not on_subnet:
            # Fall back only when no live node of the pool has the subnet: otherwise an endpoint rule
            # excluding the on-subnet nodes would move the IP to a node its clients cannot reach.
            if any(_on_subnet(addr, links.get(n)) for n in selected):
                eligible: frozenset[str] = frozenset()
            else:
                eligible = candidates & with_link
        else:
            eligible = on_subnet
        result.l2[ip] = Decision(ip, pool.name, "layer2", names, eligible, election.owner(ip, eligible))
    return result


def _on_subnet(addr: ipaddress.IPv4Address | ipaddress.IPv6Address, link: Link | None) -> bool:
    return link is not None and any(addr.version == n.version and addr in n for n in link.subnets)
