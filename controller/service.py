"""Service object -> allocation request.

Pure translation of a Service as the API returns it (a dict with camelCase keys) into the
`ServiceRequest` the allocator works on. Everything a user can get wrong in annotations or in
``spec.loadBalancerIP`` is reported here as `BadAnnotation`, naming the field and the value, so the
allocator only ever sees well-formed requests.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lbspeaker.objects import service_key

ANNOTATION_PREFIXES = ("lbspeaker.io/", "metallb.universe.tf/")

POOL_ANNOTATION = "address-pool"
IPS_ANNOTATION = "loadBalancerIPs"
SHARING_ANNOTATION = "allow-shared-ip"

FAMILY_POLICIES = ("SingleStack", "PreferDualStack", "RequireDualStack")
_FAMILIES = {"IPv4": 4, "IPv6": 6}


@dataclass(frozen=True)
class ServiceRequest:
    """What one Service asks of the allocator."""

    key: str  # "namespace/name"
    families: tuple[int, ...] = (4,)  # 4/6 in spec.ipFamilies order
    family_policy: str = "SingleStack"  # SingleStack | PreferDualStack | RequireDualStack
    requested_ips: tuple[str, ...] = ()  # normalized text, at most one per family
    pool: str | None = None
    sharing_key: str | None = None
    ports: frozenset[tuple[str, int]] = frozenset()  # (protocol, port)
    traffic_policy: str = "Cluster"  # Cluster | Local
    selector: tuple[tuple[str, str], ...] = ()  # sorted spec.selector


class BadAnnotation(ValueError):
    """An annotation (or spec field) the user set to something unusable; the message names both."""

    def __init__(self, field: str, value: str, problem: str) -> None:
        super().__init__(f"{field}={_shown(value)}: {problem}")
        self.field = field
        self.value = value
        self.problem = problem


def service_request(svc: Mapping[str, Any]) -> ServiceRequest:
    """Translate a Service into a request; raise `BadAnnotation` for unusable annotations or fields."""
    meta = svc.get("metadata") or {}
    spec = svc.get("spec") or {}
    annotations: Mapping[str, Any] = meta.get("annotations") or {}
    families = _families(spec)
    family_policy = _family_policy(spec)
    pool = _name_annotation(annotations, POOL_ANNOTATION)
    sharing_key = _name_annotation(annotations, SHARING_ANNOTATION)
    return ServiceRequest(
        key=service_key(svc),
        families=families,
        family_policy=family_policy,
        requested_ips=_requested_ips(spec, annotations),
        pool=pool,
        sharing_key=sharing_key,
        ports=frozenset(
            (str(p.get("protocol") or "TCP"), int(p["port"])) for p in spec.get("ports") or () if "port" in p
        ),
        traffic_policy=str(spec.get("externalTrafficPolicy") or "Cluster"),
        selector=tuple(sorted((str(k), str(v)) for k, v in (spec.get("selector") or {}).items())),
    )


def _annotation(annotations: Mapping[str, Any], suffix: str) -> tuple[str, str] | None:
    """``(annotation name, value)`` for the first spelling present; both spellings must agree."""
    found = [(p + suffix, str(annotations[p + suffix])) for p in ANNOTATION_PREFIXES if p + suffix in annotations]
    if not found:
        return None
    if any(value != found[0][1] for _, value in found[1:]):
        names = " and ".join(f"{name}={value!r}" for name, value in found)
        raise BadAnnotation(found[0][0], found[0][1], f"contradicts {names}")
    return found[0]


def _name_annotation(annotations: Mapping[str, Any], suffix: str) -> str | None:
    """A pool name or sharing key: absent or empty means none; only whitespace is a mistake."""
    found = _annotation(annotations, suffix)
    if found is None or found[1] == "":
        return None
    name, value = found
    if not value.strip():
        raise BadAnnotation(name, value, "is only whitespace")
    # Surrounding blanks are almost always a YAML slip; matching " a" and "a" as one name is what the user meant.
    return value.strip()


def _shown(value: str, limit: int = 100) -> str:
    """``repr`` of a user's value, cut short so that a message never carries a whole large value."""
    return repr(value) if len(value) <= limit else repr(value[:limit]) + f" (cut, {len(value)} characters)"


def _parse_ip(field: str, value: str, text: str,
              entry: int | None = None) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    where = f"entry {entry} " if entry is not None else ""
    if not text.strip():
        raise BadAnnotation(field, value, f"{where}is empty (not an IP address)")
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        raise BadAnnotation(field, value, f"{where}{_shown(text.strip(), 40)} is not an IP address") from None


def _requested_ips(spec: Mapping[str, Any], annotations: Mapping[str, Any]) -> tuple[str, ...]:
    from_annotation: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    name, value = _annotation(annotations, IPS_ANNOTATION) or (ANNOTATION_PREFIXES[0] + IPS_ANNOTATION, "")
    if value.strip():
        items = value.split(",")
        # the first unusable entry is what the user needs to see, before any count of entries
        from_annotation = [_parse_ip(name, value, item, i + 1 if len(items) > 1 else None)
                           for i, item in enumerate(items)]
        if len(items) > 2:
            raise BadAnnotation(name, value, "at most two IPs (one IPv4, one IPv6) may be requested")
        if len(from_annotation) == 2 and from_annotation[0].version == from_annotation[1].version:
            raise BadAnnotation(name, value, f"two IPv{from_annotation[0].version} addresses; at most one per family")
    spec_value = spec.get("loadBalancerIP")
    if spec_value:
        ip = _parse_ip("spec.loadBalancerIP", str(spec_value), str(spec_value))
        if from_annotation and set(from_annotation) != {ip}:
            raise BadAnnotation(name, value, f"contradicts spec.loadBalancerIP={str(spec_value)!r}")
        return (str(ip),)
    return tuple(str(ip) for ip in from_annotation)


def _families(spec: Mapping[str, Any]) -> tuple[int, ...]:
    raw = spec.get("ipFamilies") or ["IPv4"]
    out: list[int] = []
    for item in raw:
        family = _FAMILIES.get(str(item))
        if family is None or family in out:
            raise BadAnnotation("spec.ipFamilies", ",".join(map(str, raw)), f"unexpected family {item!r}")
        out.append(family)
    return tuple(out)


def _family_policy(spec: Mapping[str, Any]) -> str:
    policy = str(spec.get("ipFamilyPolicy") or "SingleStack")
    if policy not in FAMILY_POLICIES:
        raise BadAnnotation("spec.ipFamilyPolicy", policy, f"expected one of {', '.join(FAMILY_POLICIES)}")
    return policy
