"""Typed views over the raw API objects both programs read: Services, EndpointSlices, Nodes.

The API objects arrive as plain dicts (camelCase JSON, see ``lbspeaker.kube.rest``); every place that
needs a field of one reads it through a view from here, so a field is parsed in exactly one way. Views
hold facts only: what a rule makes of them (who may announce, which pool) lives with the rule
(``lbspeaker.speaker.eligibility``, ``controller.service``).

Cost: a view is built in O(size of the object); ``services_from_cache`` is O(Services + slices).
Per-IP parsing is memoised, since every pass sees the same addresses again.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "JSON",
    "SERVICE_NAME_LABEL",
    "NodeView",
    "ServiceView",
    "canonical_ip",
    "internal_ip",
    "is_load_balancer",
    "node_view",
    "service_key",
    "service_view",
    "services_from_cache",
    "slice_service",
    "status_ips",
]

JSON = Mapping[str, Any]

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


def service_key(svc: JSON) -> str:
    """``namespace/name`` of a Service (``default`` when the namespace is not set, as the API defaults it)."""
    meta = svc.get("metadata") or {}
    return f"{meta.get('namespace') or 'default'}/{meta.get('name', '')}"


# -- Services ---------------------------------------------------------------------------------------


def is_load_balancer(svc: JSON, lb_class: str | None) -> bool:
    """True when the Service is ours: type LoadBalancer and its loadBalancerClass is exactly ``lb_class``.

    With ``lb_class`` None only Services without a class qualify, as the built-in cloud provider convention
    demands: a Service naming some other implementation's class must be left alone.
    """
    spec = svc.get("spec") or {}
    return bool(spec.get("type") == "LoadBalancer" and spec.get("loadBalancerClass") == lb_class)


def status_ips(svc: JSON) -> tuple[str, ...]:
    """The IPs in ``status.loadBalancer.ingress[].ip``, in order (hostname-only entries are skipped)."""
    ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    return tuple(str(entry["ip"]) for entry in ingress if isinstance(entry, Mapping) and entry.get("ip"))


@dataclass(frozen=True)
class ServiceView:
    """A LoadBalancer Service as the speaker sees it: its IPs and where its ready endpoints run."""

    key: str  # namespace/name
    ips: tuple[str, ...]  # canonical text, from the status
    local: bool  # externalTrafficPolicy: Local
    ready_nodes: frozenset[str]  # nodes with a ready endpoint
    any_ready: bool  # a ready endpoint anywhere (with or without a node name)


def service_view(svc: JSON, slices: Iterable[JSON]) -> ServiceView:
    """The view of ``svc`` given the EndpointSlices labelled with its name."""
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
            # The API leaves ``ready`` unset for "unknown", which consumers must read as ready.
            if cond.get("ready") is False:
                continue
            any_ready = True
            if ep.get("nodeName"):
                ready.add(str(ep["nodeName"]))
    ips = tuple(ip for ip in (canonical_ip(text) for text in status_ips(svc)) if ip)
    return ServiceView(key, ips, local, frozenset(ready), any_ready)


def slice_service(es: JSON) -> str | None:
    """``namespace/name`` of the Service an EndpointSlice belongs to, or None when it is not labelled."""
    meta = es.get("metadata") or {}
    name = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
    return f"{meta.get('namespace')}/{name}" if name else None


def services_from_cache(services: Iterable[JSON], slices: Iterable[JSON], lb_class: str | None) -> list[ServiceView]:
    """ServiceViews for the Services we handle (same lb-class rule as the controller) that have IPs."""
    by_service: dict[str, list[JSON]] = {}
    for es in slices:
        owner = slice_service(es)
        if owner:
            by_service.setdefault(owner, []).append(es)
    out = []
    for svc in services:
        if not is_load_balancer(svc, lb_class):
            continue
        meta = svc.get("metadata") or {}
        view = service_view(svc, by_service.get(f"{meta.get('namespace')}/{meta.get('name')}", ()))
        if view.ips:
            out.append(view)
    return out


@functools.lru_cache(maxsize=1 << 17)  # every pass parses the same IPs again
def canonical_ip(ip: str) -> str:
    """The canonical text of an address (``2001:DB8::1`` -> ``2001:db8::1``), or "" when it is not one."""
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        return ""


# -- Nodes ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeView:
    """The facts about a Node that announcing depends on."""

    name: str
    labels: Mapping[str, str]
    network_unavailable: bool  # condition NetworkUnavailable=True
    internal_ips: tuple[str, ...] = ()  # InternalIP addresses, IPv4 first


def node_view(node: JSON) -> NodeView:
    meta = node.get("metadata") or {}
    labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    unavailable = any(
        isinstance(cond, Mapping) and cond.get("type") == "NetworkUnavailable" and cond.get("status") == "True"
        for cond in (node.get("status") or {}).get("conditions") or []
    )
    return NodeView(name=str(meta.get("name")), labels=labels, network_unavailable=unavailable,
                    internal_ips=_internal_ips(node))


def _internal_ips(node: JSON) -> tuple[str, ...]:
    found: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for addr in (node.get("status") or {}).get("addresses") or []:
        if isinstance(addr, Mapping) and addr.get("type") == "InternalIP":
            try:
                found.append(ipaddress.ip_address(str(addr.get("address"))))
            except ValueError:
                continue
    found.sort(key=lambda a: a.version)  # stable: IPv4 first, API order within a family
    return tuple(str(a) for a in found)


def internal_ip(node: JSON) -> str | None:
    """The node's first valid InternalIP (IPv4 preferred): its heartbeat address and default router id."""
    ips = _internal_ips(node)
    return ips[0] if ips else None
