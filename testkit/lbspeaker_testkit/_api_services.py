"""Service semantics of kube-apiserver: defaulting, validation, type transitions and allocation.

Mirrors what the real Service REST storage does on create/update: v1 defaulting (type, ports,
traffic policies, ``allocateLoadBalancerNodePorts``), ClusterIP allocation from 10.96.0.0/16 and
fd00:10:96::/112 honouring ``ipFamilies``/``ipFamilyPolicy`` (the cluster is dual-stack, IPv4
primary, unless made single-stack IPv4), NodePort and healthCheckNodePort allocation from 30000-32767,
carrying allocated values over when an update omits them, dropping type-dependent fields (and
``status.loadBalancer``) when the type changes, and the immutability of ``clusterIP`` and ``loadBalancerClass``.

``plan_service`` is pure with respect to the allocator: it returns the errors and an ``AllocationPlan``
that the caller applies only when the write is committed.
"""

from __future__ import annotations

import ipaddress
import random
import re
from dataclasses import dataclass, field
from typing import Any

from lbspeaker_testkit._api_errors import FieldError, forbidden, invalid, not_supported, required
from lbspeaker_testkit._api_selectors import label_key_problem

Obj = dict[str, Any]

SERVICE_TYPES = ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort")
PROTOCOLS = ("SCTP", "TCP", "UDP")
POLICIES = ("PreferDualStack", "RequireDualStack", "SingleStack")
FAMILIES = ("IPv4", "IPv6")
NODE_PORT_MIN, NODE_PORT_MAX = 30000, 32767
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_IANA_SVC_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@dataclass
class AllocationPlan:
    """Addresses and ports to claim and to release once the write is committed."""

    claim_ips: list[str] = field(default_factory=list)
    release_ips: list[str] = field(default_factory=list)
    claim_ports: list[int] = field(default_factory=list)
    release_ports: list[int] = field(default_factory=list)


class ServiceAllocator:
    """Which cluster IPs and node ports are taken. Callers serialise access (the store lock)."""

    def __init__(self, seed: int | None = None, single_stack: bool = False) -> None:
        self.v4 = ipaddress.ip_network("10.96.0.0/16")
        self.v6 = ipaddress.ip_network("fd00:10:96::/112")
        self.single_stack = single_stack  # only an IPv4 service range, as a cluster not set up for dual-stack
        self.used_ips: set[str] = set()
        self.used_ports: set[int] = set()
        self._rng = random.Random(seed)

    def network(self, family: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return self.v4 if family == "IPv4" else self.v6

    def pick_ip(self, family: str, avoid: set[str]) -> str | None:
        net = self.network(family)
        size = net.num_addresses
        first, last = 1, size - 2 if family == "IPv4" else size - 1
        span = last - first + 1
        start = self._rng.randrange(span)
        base = int(net.network_address)
        for i in range(span):
            addr = str(ipaddress.ip_address(base + first + (start + i) % span))
            if addr not in self.used_ips and addr not in avoid:
                return addr
        return None

    def pick_port(self, avoid: set[int]) -> int | None:
        span = NODE_PORT_MAX - NODE_PORT_MIN + 1
        start = self._rng.randrange(span)
        for i in range(span):
            port = NODE_PORT_MIN + (start + i) % span
            if port not in self.used_ports and port not in avoid:
                return port
        return None

    def apply(self, plan: AllocationPlan) -> None:
        for ip in plan.release_ips:
            self.used_ips.discard(ip)
        for port in plan.release_ports:
            self.used_ports.discard(port)
        self.used_ips.update(plan.claim_ips)
        self.used_ports.update(plan.claim_ports)

    def release_service(self, svc: Obj) -> None:
        self.apply(AllocationPlan(release_ips=service_ips(svc), release_ports=service_node_ports(svc)))


def service_ips(svc: Obj) -> list[str]:
    spec = svc.get("spec") or {}
    ips = [ip for ip in (spec.get("clusterIPs") or []) if isinstance(ip, str) and ip not in ("", "None")]
    cip = spec.get("clusterIP")
    if isinstance(cip, str) and cip not in ("", "None") and cip not in ips:
        ips.append(cip)
    return ips


def service_node_ports(svc: Obj) -> list[int]:
    spec = svc.get("spec") or {}
    ports = [p.get("nodePort") for p in (spec.get("ports") or []) if isinstance(p, dict)]
    out = [p for p in ports if isinstance(p, int) and p > 0]
    hc = spec.get("healthCheckNodePort")
    if isinstance(hc, int) and hc > 0:
        out.append(hc)
    return out


def _family_of(ip: str) -> str | None:
    try:
        return "IPv4" if ipaddress.ip_address(ip).version == 4 else "IPv6"
    except ValueError:
        return None


def _needs_cluster_ip(spec: Obj) -> bool:
    return spec.get("type") != "ExternalName"


def _needs_node_ports(spec: Obj) -> bool:
    return spec.get("type") in ("NodePort", "LoadBalancer")


def _allocates_node_ports(spec: Obj) -> bool:
    if spec.get("type") == "NodePort":
        return True
    return spec.get("type") == "LoadBalancer" and spec.get("allocateLoadBalancerNodePorts") is not False


def _needs_hc_node_port(spec: Obj) -> bool:
    return spec.get("type") == "LoadBalancer" and spec.get("externalTrafficPolicy") == "Local"


def _externally_accessible(spec: Obj) -> bool:
    return spec.get("type") in ("LoadBalancer", "NodePort") or (
        spec.get("type") == "ClusterIP" and bool(spec.get("externalIPs"))
    )


def apply_defaults(svc: Obj, ip_mode: bool = True) -> None:
    """v1 defaulting that the real server applies to every Service it decodes (``ipMode`` only where the
    server knows the field: 1.30 and later)."""
    spec = svc.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    spec.setdefault("type", "ClusterIP")
    if not spec.get("type"):
        spec["type"] = "ClusterIP"
    if not spec.get("sessionAffinity"):
        spec["sessionAffinity"] = "None"
    if spec.get("sessionAffinity") == "ClientIP":
        cfg = spec.get("sessionAffinityConfig")
        if not isinstance(cfg, dict):
            cfg = spec["sessionAffinityConfig"] = {}
        client = cfg.get("clientIP")
        if not isinstance(client, dict):
            client = cfg["clientIP"] = {}
        client.setdefault("timeoutSeconds", 10800)
    for port in spec.get("ports") or []:
        if isinstance(port, dict):
            if not port.get("protocol"):
                port["protocol"] = "TCP"
            if port.get("targetPort") in (None, 0, "") and "port" in port:
                port["targetPort"] = port["port"]
    if spec.get("type") in ("NodePort", "LoadBalancer") and not spec.get("externalTrafficPolicy"):
        spec["externalTrafficPolicy"] = "Cluster"
    if spec.get("type") != "ExternalName" and not spec.get("internalTrafficPolicy"):
        spec["internalTrafficPolicy"] = "Cluster"
    if spec.get("type") == "LoadBalancer" and spec.get("allocateLoadBalancerNodePorts") is None:
        spec["allocateLoadBalancerNodePorts"] = True
    if spec.get("type") == "LoadBalancer" and ip_mode:
        status = svc.get("status")
        lb = status.get("loadBalancer") if isinstance(status, dict) else None
        for ing in (lb.get("ingress") or []) if isinstance(lb, dict) else []:
            if isinstance(ing, dict) and ing.get("ip") and not ing.get("ipMode"):
                ing["ipMode"] = "VIP"


def drop_type_dependent_fields(new: Obj, old: Obj) -> None:
    """On a type change, clear what the old type had allocated and the user left unchanged."""
    ns, os_ = new.setdefault("spec", {}), old.get("spec") or {}
    if _needs_cluster_ip(os_) and not _needs_cluster_ip(ns):
        if ns.get("clusterIP") == os_.get("clusterIP") and ns.get("clusterIPs") == os_.get("clusterIPs"):
            ns.pop("clusterIP", None)
            ns.pop("clusterIPs", None)
        if ns.get("ipFamilies") == os_.get("ipFamilies"):
            ns.pop("ipFamilies", None)
        if ns.get("ipFamilyPolicy") == os_.get("ipFamilyPolicy"):
            ns.pop("ipFamilyPolicy", None)
    if _needs_node_ports(os_) and not _needs_node_ports(ns):
        old_ports = {p.get("nodePort") for p in os_.get("ports") or [] if isinstance(p, dict)}
        new_ports = {
            p.get("nodePort") for p in ns.get("ports") or [] if isinstance(p, dict) and p.get("nodePort")
        }
        if new_ports <= old_ports:
            for p in ns.get("ports") or []:
                if isinstance(p, dict):
                    p.pop("nodePort", None)
    if (
        _needs_hc_node_port(os_)
        and not _needs_hc_node_port(ns)
        and ns.get("healthCheckNodePort") == os_.get("healthCheckNodePort")
    ):
        ns.pop("healthCheckNodePort", None)
    if os_.get("type") == "LoadBalancer" and ns.get("type") != "LoadBalancer":
        if ns.get("allocateLoadBalancerNodePorts") == os_.get("allocateLoadBalancerNodePorts"):
            ns.pop("allocateLoadBalancerNodePorts", None)
        if ns.get("loadBalancerClass") == os_.get("loadBalancerClass"):
            ns.pop("loadBalancerClass", None)
    if (
        _externally_accessible(os_)
        and not _externally_accessible(ns)
        and ns.get("externalTrafficPolicy") == os_.get("externalTrafficPolicy")
    ):
        ns.pop("externalTrafficPolicy", None)
    if ns.get("type") != "LoadBalancer":
        status = new.get("status")
        if isinstance(status, dict) and status.get("loadBalancer"):
            status["loadBalancer"] = {}


def patch_allocated_values(new: Obj, old: Obj) -> None:
    """An update that omits allocated values keeps the old ones (clients built from scratch do this)."""
    ns, os_ = new.setdefault("spec", {}), old.get("spec") or {}
    if _needs_cluster_ip(os_) and _needs_cluster_ip(ns):
        if not ns.get("clusterIP") and os_.get("clusterIP"):
            ns["clusterIP"] = os_["clusterIP"]
        if (
            not ns.get("clusterIPs")
            and os_.get("clusterIPs")
            and ns.get("clusterIP") == (os_.get("clusterIPs") or [None])[0]
        ):
            ns["clusterIPs"] = list(os_["clusterIPs"])
        if not ns.get("ipFamilies") and os_.get("ipFamilies"):
            ns["ipFamilies"] = list(os_["ipFamilies"])
        if not ns.get("ipFamilyPolicy") and os_.get("ipFamilyPolicy"):
            ns["ipFamilyPolicy"] = os_["ipFamilyPolicy"]
    if _needs_node_ports(os_) and _needs_node_ports(ns):
        old_by_name = {
            p.get("name", ""): p.get("nodePort") for p in os_.get("ports") or [] if isinstance(p, dict)
        }
        used_new = {
            p.get("nodePort") for p in ns.get("ports") or [] if isinstance(p, dict) and p.get("nodePort")
        }
        for p in ns.get("ports") or []:
            if isinstance(p, dict) and not p.get("nodePort"):
                candidate = old_by_name.get(p.get("name", ""))
                if candidate and candidate not in used_new:
                    p["nodePort"] = candidate
                    used_new.add(candidate)
    if (
        _needs_hc_node_port(os_)
        and _needs_hc_node_port(ns)
        and not ns.get("healthCheckNodePort")
        and os_.get("healthCheckNodePort")
    ):
        ns["healthCheckNodePort"] = os_["healthCheckNodePort"]


def _validate_ports(spec: Obj, errs: list[FieldError]) -> None:
    ports = spec.get("ports")
    headless = spec.get("clusterIP") == "None"
    if ports is None or ports == []:
        if spec.get("type") != "ExternalName" and not headless:
            errs.append(required("spec.ports"))
        return
    if not isinstance(ports, list):
        errs.append(invalid("spec.ports", str(ports), "must be a list"))
        return
    names: set[str] = set()
    seen: set[tuple[Any, Any]] = set()
    for i, port in enumerate(ports):
        path = f"spec.ports[{i}]"
        if not isinstance(port, dict):
            errs.append(invalid(path, str(port), "must be an object"))
            continue
        name = port.get("name") or ""
        if len(ports) > 1 and not name:
            errs.append(required(f"{path}.name"))
        elif name:
            if not isinstance(name, str) or not _DNS1123_LABEL.match(name) or len(name) > 63:
                errs.append(
                    invalid(
                        f"{path}.name",
                        name,
                        "a lowercase RFC 1123 label must consist of lower case "
                        "alphanumeric characters or '-', and must start and end with an alphanumeric "
                        "character",
                    )
                )
            elif name in names:
                errs.append(FieldError("Duplicate", f"{path}.name", "", name))
            names.add(name)
        number = port.get("port")
        if not isinstance(number, int) or isinstance(number, bool) or not 1 <= number <= 65535:
            if number is None:
                errs.append(required(f"{path}.port"))
            else:
                errs.append(invalid(f"{path}.port", number, "must be between 1 and 65535, inclusive"))
        proto = port.get("protocol")
        if proto not in PROTOCOLS:
            errs.append(not_supported(f"{path}.protocol", proto, PROTOCOLS))
        key = (number, proto)
        if key in seen:
            errs.append(FieldError("Duplicate", path, "", f"{number}/{proto}"))
        seen.add(key)
        target = port.get("targetPort")
        if isinstance(target, bool) or (isinstance(target, int) and not 1 <= target <= 65535):
            errs.append(invalid(f"{path}.targetPort", target, "must be between 1 and 65535, inclusive"))
        elif isinstance(target, str) and not (
            len(target) <= 15
            and _IANA_SVC_NAME.match(target)
            and re.search("[a-z]", target)
            and "--" not in target
        ):
            errs.append(
                invalid(
                    f"{path}.targetPort",
                    target,
                    "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
                )
            )
        node_port = port.get("nodePort")
        if node_port not in (None, 0):
            if not isinstance(node_port, int) or isinstance(node_port, bool):
                errs.append(invalid(f"{path}.nodePort", node_port, "must be an integer"))
            elif not _needs_node_ports(spec):
                errs.append(
                    forbidden(f"{path}.nodePort", f"may not be used when `type` is '{spec.get('type')}'")
                )


def validate_service(svc: Obj, old: Obj | None) -> list[FieldError]:
    """Validation of spec (and of status defaults already applied) for create and update."""
    errs: list[FieldError] = []
    spec = svc.get("spec")
    if not isinstance(spec, dict):
        return [required("spec")]
    stype = spec.get("type")
    if stype not in SERVICE_TYPES:
        errs.append(not_supported("spec.type", stype, SERVICE_TYPES))
        return errs
    _validate_ports(spec, errs)
    affinity = spec.get("sessionAffinity")
    if affinity not in ("ClientIP", "None"):
        errs.append(not_supported("spec.sessionAffinity", affinity, ("ClientIP", "None")))
    elif affinity == "None" and spec.get("sessionAffinityConfig"):
        errs.append(
            invalid(
                "spec.sessionAffinityConfig",
                str(spec["sessionAffinityConfig"]),
                "must not be set when session affinity is None",
            )
        )
    elif affinity == "ClientIP":
        timeout = ((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}).get("timeoutSeconds")
        if not isinstance(timeout, int) or not 0 < timeout <= 86400:
            errs.append(
                invalid(
                    "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                    timeout,
                    "must be greater than 0 and less than 86400",
                )
            )
    etp = spec.get("externalTrafficPolicy")
    if etp:
        if etp not in ("Cluster", "Local"):
            errs.append(not_supported("spec.externalTrafficPolicy", etp, ("Cluster", "Local")))
        elif not _externally_accessible(spec):
            errs.append(
                invalid(
                    "spec.externalTrafficPolicy", etp, "may only be set for externally-accessible services"
                )
            )
    itp = spec.get("internalTrafficPolicy")
    if itp and itp not in ("Cluster", "Local"):
        errs.append(not_supported("spec.internalTrafficPolicy", itp, ("Cluster", "Local")))
    if spec.get("allocateLoadBalancerNodePorts") is not None and stype != "LoadBalancer":
        errs.append(
            forbidden("spec.allocateLoadBalancerNodePorts", "may only be used when `type` is 'LoadBalancer'")
        )
    hc = spec.get("healthCheckNodePort")
    if hc not in (None, 0) and not _needs_hc_node_port(spec):
        errs.append(
            invalid(
                "spec.healthCheckNodePort",
                hc,
                "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
            )
        )
    lbc = spec.get("loadBalancerClass")
    if lbc is not None:
        if stype != "LoadBalancer":
            errs.append(forbidden("spec.loadBalancerClass", "may only be used when `type` is 'LoadBalancer'"))
        elif not isinstance(lbc, str) or label_key_problem(lbc) is not None:
            errs.append(
                invalid("spec.loadBalancerClass", lbc, label_key_problem(str(lbc)) or "must be a string")
            )
    if old is not None:
        ospec = old.get("spec") or {}
        if (
            ospec.get("type") == "LoadBalancer"
            and stype == "LoadBalancer"
            and ospec.get("loadBalancerClass") != lbc
        ):
            errs.append(invalid("spec.loadBalancerClass", lbc, "may not change once set"))
    lb_ip = spec.get("loadBalancerIP")
    if lb_ip:
        if stype != "LoadBalancer":
            errs.append(forbidden("spec.loadBalancerIP", "may only be used when `type` is 'LoadBalancer'"))
        elif _family_of(str(lb_ip)) is None:
            errs.append(invalid("spec.loadBalancerIP", lb_ip, "must be a valid IP address"))
    for i, ext in enumerate(spec.get("externalIPs") or []):
        if not isinstance(ext, str) or _family_of(ext) is None:
            errs.append(invalid(f"spec.externalIPs[{i}]", ext, "must be a valid IP address"))
    if stype == "ExternalName":
        name = spec.get("externalName")
        if not name:
            errs.append(required("spec.externalName"))
        elif not isinstance(name, str) or not _DNS_SUBDOMAIN.match(name.rstrip(".").lower()):
            errs.append(invalid("spec.externalName", name, "must be a valid DNS name"))
        if spec.get("clusterIP") not in (None, ""):
            errs.append(forbidden("spec.clusterIP", "may not be set for ExternalName services"))
        if spec.get("ipFamilyPolicy"):
            errs.append(forbidden("spec.ipFamilyPolicy", "may not be set for type 'ExternalName'"))
        if spec.get("ipFamilies"):
            errs.append(forbidden("spec.ipFamilies", "may not be set for type 'ExternalName'"))
    policy = spec.get("ipFamilyPolicy")
    if policy is not None and policy not in POLICIES:
        errs.append(not_supported("spec.ipFamilyPolicy", policy, POLICIES))
    families = spec.get("ipFamilies") or []
    for i, fam in enumerate(families):
        if fam not in FAMILIES:
            errs.append(not_supported(f"spec.ipFamilies[{i}]", fam, FAMILIES))
    if len(families) > 2:
        errs.append(
            invalid("spec.ipFamilies", str(families), "may specify no more than one IP for each IP family")
        )
    elif len(families) == 2 and families[0] == families[1]:
        errs.append(FieldError("Duplicate", "spec.ipFamilies[1]", "", families[1]))
    errs.extend(validate_service_status(svc))
    return errs


def validate_service_status(svc: Obj) -> list[FieldError]:
    errs: list[FieldError] = []
    status = svc.get("status") or {}
    lb = status.get("loadBalancer") if isinstance(status, dict) else None
    ingress = lb.get("ingress") if isinstance(lb, dict) else None
    for i, ing in enumerate(ingress or []):
        path = f"status.loadBalancer.ingress[{i}]"
        if not isinstance(ing, dict):
            errs.append(invalid(path, str(ing), "must be an object"))
            continue
        ip, host, mode = ing.get("ip"), ing.get("hostname"), ing.get("ipMode")
        if ip and (not isinstance(ip, str) or _family_of(ip) is None):
            errs.append(invalid(f"{path}.ip", ip, "must be a valid IP address"))
        if host:
            if not isinstance(host, str) or not _DNS_SUBDOMAIN.match(host):
                errs.append(invalid(f"{path}.hostname", host, "must be a valid DNS subdomain"))
            elif _family_of(host) is not None:
                errs.append(invalid(f"{path}.hostname", host, "must be a DNS name, not an IP address"))
        if mode is not None:
            if not ip:
                errs.append(forbidden(f"{path}.ipMode", "may not be specified when `ip` is not set"))
            elif mode not in ("Proxy", "VIP"):
                errs.append(not_supported(f"{path}.ipMode", mode, ("Proxy", "VIP")))
    return errs


def stale_status_errors(svc: Obj) -> list[FieldError]:
    """The status of a write whose resourceVersion is stale, checked as sent (before defaulting).

    kube-apiserver v1.36 was seen to answer such a ``services/status`` write with 422 (``ipMode: Required
    value``) when an ingress entry has an ``ip`` and no ``ipMode``, and with 409 Conflict otherwise;
    with a current resourceVersion the same body succeeds and ``ipMode`` is defaulted to VIP (issue 10).
    """
    errs = validate_service_status(svc)
    status = svc.get("status") or {}
    lb = status.get("loadBalancer") if isinstance(status, dict) else None
    for i, ing in enumerate((lb.get("ingress") if isinstance(lb, dict) else None) or []):
        if isinstance(ing, dict) and ing.get("ip") and ing.get("ipMode") is None:
            errs.append(
                required(f"status.loadBalancer.ingress[{i}].ipMode", "must be specified when `ip` is set")
            )
    return sorted(errs, key=lambda e: e.path)


def rebuild_allocator(alloc: ServiceAllocator, services: list[Obj]) -> None:
    """Claim the cluster IPs and node ports of ``services`` (after a restore replaced the store)."""
    alloc.used_ips.clear()
    alloc.used_ports.clear()
    for svc in services:
        alloc.used_ips.update(service_ips(svc))
        alloc.used_ports.update(service_node_ports(svc))


def _plan_cluster_ips(
    svc: Obj, old: Obj | None, alloc: ServiceAllocator, plan: AllocationPlan, errs: list[FieldError]
) -> None:
    spec = svc["spec"]
    ospec = (old or {}).get("spec") or {}
    old_ips = service_ips(old) if old is not None else []
    if not _needs_cluster_ip(spec):
        spec.pop("clusterIPs", None)
        plan.release_ips.extend(old_ips)
        return
    cip = spec.get("clusterIP") or ""
    cips = list(spec.get("clusterIPs") or [])
    if cip and cips and cips[0] != cip:
        errs.append(invalid("spec.clusterIPs[0]", cips[0], "must be same as clusterIP"))
        return
    if cip and not cips:
        cips = [cip]
    if (
        old is not None
        and _needs_cluster_ip(ospec)
        and ospec.get("clusterIP")
        and cips[:1]
        and cips[0] != ospec.get("clusterIP")
    ):
        errs.append(invalid("spec.clusterIP", cips[0], "field is immutable"))
        return
    headless = bool(cips) and cips[0] == "None"
    families_req = list(spec.get("ipFamilies") or [])
    for i, ip in enumerate(cips):
        if ip == "None":
            if i > 0:
                errs.append(invalid(f"spec.clusterIPs[{i}]", ip, "must be a valid IP address"))
            continue
        fam = _family_of(ip)
        if fam is None:
            errs.append(invalid(f"spec.clusterIPs[{i}]", ip, "must be a valid IP address"))
            return
        if i < len(families_req) and families_req[i] != fam:
            errs.append(
                invalid(
                    f"spec.ipFamilies[{i}]",
                    families_req[i],
                    f"does not match IP family of spec.clusterIPs[{i}]",
                )
            )
            return
    policy = spec.get("ipFamilyPolicy")
    wants_two = len(families_req) == 2 or len([c for c in cips if c != "None"]) == 2
    if policy is None:
        if wants_two:
            errs.append(
                invalid(
                    "spec.ipFamilyPolicy",
                    "SingleStack",
                    "must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are specified",
                )
            )
            return
        policy = "RequireDualStack" if headless and not spec.get("selector") else "SingleStack"
    elif policy == "SingleStack" and wants_two:
        errs.append(
            invalid(
                "spec.ipFamilyPolicy",
                policy,
                "must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are specified",
            )
        )
        return
    if families_req:
        primary = families_req[0]
    elif cips and not headless:
        primary = _family_of(cips[0]) or "IPv4"
    elif ospec.get("ipFamilies"):
        primary = ospec["ipFamilies"][0]
    else:
        primary = "IPv4"
    if old is not None and ospec.get("ipFamilies") and primary != ospec["ipFamilies"][0]:
        errs.append(invalid("spec.ipFamilies[0]", primary, "may not change once set"))
        return
    secondary = "IPv6" if primary == "IPv4" else "IPv4"
    if alloc.single_stack and not headless:
        single: list[FieldError] = []
        if policy == "RequireDualStack":
            single.append(
                invalid("spec.ipFamilyPolicy", policy, "this cluster is not configured for dual-stack services")
            )
        for i, fam in enumerate(families_req):
            if fam != "IPv4":
                single.append(invalid(f"spec.ipFamilies[{i}]", fam, "not configured on this cluster"))
        if single:
            errs.extend(single)
            return
        families = ["IPv4"]  # PreferDualStack gets the one family there is
    else:
        families = [primary] if policy == "SingleStack" else [primary, secondary]
    if len(families_req) == 2 and families_req[1] != secondary:
        errs.append(FieldError("Duplicate", "spec.ipFamilies[1]", "", families_req[1]))
        return
    spec["ipFamilyPolicy"] = policy
    spec["ipFamilies"] = families
    if headless:
        spec["clusterIP"] = "None"
        spec["clusterIPs"] = ["None"]
        plan.release_ips.extend(old_ips)
        return
    chosen: list[str] = []
    taken_here: set[str] = set()
    for i, fam in enumerate(families):
        ip = cips[i] if i < len(cips) else ""
        if ip:
            net = alloc.network(fam)
            addr = ipaddress.ip_address(ip)
            if addr not in net or addr == net.network_address:
                errs.append(
                    invalid(
                        "spec.clusterIPs",
                        ip,
                        f"failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid "
                        f"range. The range of valid IPs is {net}",
                    )
                )
                return
            if ip in alloc.used_ips and ip not in old_ips:
                errs.append(
                    invalid(
                        "spec.clusterIPs", ip, f"failed to allocate IP {ip}: provided IP is already allocated"
                    )
                )
                return
        else:
            picked = alloc.pick_ip(fam, taken_here)
            if picked is None:
                errs.append(
                    invalid("spec.clusterIPs", "", f"failed to allocate a serviceIP: range is full ({fam})")
                )
                return
            ip = picked
        chosen.append(ip)
        taken_here.add(ip)
    spec["clusterIP"] = chosen[0]
    spec["clusterIPs"] = chosen
    plan.claim_ips.extend(ip for ip in chosen if ip not in old_ips)
    plan.release_ips.extend(ip for ip in old_ips if ip not in chosen)


def _plan_node_ports(
    svc: Obj, old: Obj | None, alloc: ServiceAllocator, plan: AllocationPlan, errs: list[FieldError]
) -> None:
    spec = svc["spec"]
    old_ports = set(service_node_ports(old)) if old is not None else set()
    keep: set[int] = set()
    if _needs_node_ports(spec):
        by_value: dict[int, set[Any]] = {}
        for i, port in enumerate(spec.get("ports") or []):
            if not isinstance(port, dict):
                continue
            np = port.get("nodePort")
            if isinstance(np, int) and np > 0:
                if not NODE_PORT_MIN <= np <= NODE_PORT_MAX:
                    errs.append(
                        invalid(
                            f"spec.ports[{i}].nodePort",
                            np,
                            "provided port is not in the valid range. The range of valid ports is "
                            f"{NODE_PORT_MIN}-{NODE_PORT_MAX}",
                        )
                    )
                    continue
                protos = by_value.setdefault(np, set())
                if port.get("protocol") in protos:
                    errs.append(FieldError("Duplicate", f"spec.ports[{i}].nodePort", "", np))
                    continue
                if np in alloc.used_ports and np not in old_ports and not protos:
                    errs.append(
                        invalid(f"spec.ports[{i}].nodePort", np, "provided port is already allocated")
                    )
                    continue
                protos.add(port.get("protocol"))
                keep.add(np)
        if _allocates_node_ports(spec):
            for port in spec.get("ports") or []:
                if isinstance(port, dict) and not port.get("nodePort"):
                    picked = alloc.pick_port(keep)
                    if picked is None:
                        errs.append(invalid("spec.ports", "", "failed to allocate a nodePort: range is full"))
                        return
                    port["nodePort"] = picked
                    keep.add(picked)
    if _needs_hc_node_port(spec):
        hc = spec.get("healthCheckNodePort")
        if isinstance(hc, int) and hc > 0:
            if not NODE_PORT_MIN <= hc <= NODE_PORT_MAX:
                errs.append(
                    invalid("spec.healthCheckNodePort", hc, "provided port is not in the valid range")
                )
            elif (hc in alloc.used_ports and hc not in old_ports) or hc in keep:
                errs.append(invalid("spec.healthCheckNodePort", hc, "provided port is already allocated"))
            keep.add(hc)
        else:
            picked = alloc.pick_port(keep)
            if picked is None:
                errs.append(
                    invalid("spec.healthCheckNodePort", 0, "failed to allocate a nodePort: range is full")
                )
                return
            spec["healthCheckNodePort"] = picked
            keep.add(picked)
    plan.claim_ports.extend(p for p in keep if p not in old_ports)
    plan.release_ports.extend(p for p in old_ports if p not in keep)


def plan_service(
    svc: Obj, old: Obj | None, alloc: ServiceAllocator, ip_mode: bool = True
) -> tuple[list[FieldError], AllocationPlan]:
    """Default, validate and allocate ``svc`` (mutated in place) against ``old`` (None on create)."""
    if old is not None:
        patch_allocated_values(svc, old)
        drop_type_dependent_fields(svc, old)
    apply_defaults(svc, ip_mode)
    errs = validate_service(svc, old)
    plan = AllocationPlan()
    if errs:
        return errs, plan
    _plan_cluster_ips(svc, old, alloc, plan, errs)
    if not errs:
        _plan_node_ports(svc, old, alloc, plan, errs)
    return errs, plan
