"""Who may announce an IP: the one place for every eligibility rule.

The layer2 election (``speaker.layer2``), BGP announcing (``speaker.bgp``) and ``lbspeaker status`` all
ask here, so a rule changes in one place and every consumer agrees. Pure: no I/O, no clock.

Rules, for a node and an IP of a pool in a Service's status:

* the node is not excluded: no label ``node.kubernetes.io/exclude-from-external-load-balancers`` and no
  ``NetworkUnavailable=True`` condition (``excluded``);
* the pool's ``node-selectors`` select the node's labels (``pool_selects``);
* endpoints (``endpoints_allow``): ``externalTrafficPolicy: Local`` needs a ready endpoint of the
  Service on the node, ``Cluster`` a ready endpoint anywhere (or nobody announces the Service);
  Services sharing one IP must all allow the node;
* layer2 only: the node has an up interface on the IP's subnet, as published in its speaker Lease
  (``on_subnet``); when no selected node has one, any node with an up interface will do
  (``speaker.layer2`` applies that fallback).

Cost: each check is O(labels) or O(subnets of the node).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

from lbspeaker.config.models import AddressPool, selects
from lbspeaker.objects import NodeView, ServiceView
from lbspeaker.speaker.lease import Link

EXCLUDE_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers"

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def excluded(node: NodeView) -> str | None:
    """Why ``node`` may not announce anything at all, or None when it may."""
    if EXCLUDE_LABEL in node.labels:
        return f"labelled {EXCLUDE_LABEL}"
    if node.network_unavailable:
        return "NetworkUnavailable"
    return None


def pool_selects(pool: AddressPool, labels: Mapping[str, str]) -> bool:
    """Whether the pool's ``node-selectors`` select a node with ``labels`` (no selectors: every node)."""
    return selects(pool.node_selectors, labels)


def endpoints_allow(service: ServiceView, node: str) -> bool:
    """Whether ``service``'s endpoints let ``node`` announce it (Local: one ready here; Cluster: one anywhere)."""
    if service.local:
        return node in service.ready_nodes
    return service.any_ready


def on_subnet(addr: Address, link: Link | None) -> bool:
    """Whether a node whose published data path is ``link`` has an up interface on ``addr``'s subnet."""
    return link is not None and any(addr.version == n.version and addr in n for n in link.subnets)


def layer2_member(node: NodeView, pools: Iterable[AddressPool]) -> bool:
    """Whether ``node`` takes part in layer2 membership: not excluded and selected by some layer2 pool.

    Nodes that can announce no layer2 IP (BGP-only nodes, excluded nodes) send no membership traffic.
    """
    return excluded(node) is None and any(p.protocol == "layer2" and pool_selects(p, node.labels) for p in pools)
