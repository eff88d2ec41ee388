"""Per-kind write rules: defaulting, validation and status handling the real registry strategies apply.

``prepare(res, new, old, subresource, alloc)`` is called under the store lock with ``new`` already
carrying the generic metadata; it mutates ``new`` (defaults) and returns field errors plus a Service
allocation plan. Generic ObjectMeta validation lives here too.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from typing import Any

from lbspeaker_testkit._api_errors import (
    ApiError,
    FieldError,
    bad_request,
    forbidden,
    invalid,
    not_supported,
    required,
)
from lbspeaker_testkit._api_resources import ResourceInfo
from lbspeaker_testkit._api_selectors import label_key_problem, label_value_problem
from lbspeaker_testkit._api_services import AllocationPlan, ServiceAllocator, plan_service
from lbspeaker_testkit._api_times import normalize_times

Obj = dict[str, Any]

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")

SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
    "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
    "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
    "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
    "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
LABEL1035_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
    "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', "
    "regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)

MAX_ANNOTATIONS_BYTES = 256 * 1024
MAX_CONFIG_BYTES = 1024 * 1024


def name_problem(rule: str, name: str) -> str | None:
    """Why ``name`` is not acceptable under ``rule``, or None."""
    if rule == "subdomain":
        if len(name) > 253:
            return "must be no more than 253 characters"
        return None if _SUBDOMAIN.match(name) else SUBDOMAIN_MSG
    if len(name) > 63:
        return "must be no more than 63 characters"
    if rule == "label":
        return None if _LABEL.match(name) else LABEL_MSG
    return None if _LABEL1035.match(name) else LABEL1035_MSG


def path_segment_problem(name: str) -> str | None:
    if name in (".", ".."):
        return f"may not be '{name}'"
    for bad in ("/", "%"):
        if bad in name:
            return f"may not contain '{bad}'"
    return None


def validate_object_meta(res: ResourceInfo, obj: Obj) -> list[FieldError]:
    errs: list[FieldError] = []
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return [required("metadata")]
    name = meta.get("name")
    if not name:
        errs.append(required("metadata.name", "name or generateName is required"))
    elif not isinstance(name, str):
        errs.append(invalid("metadata.name", str(name), "must be a string"))
    else:
        problem = path_segment_problem(name) or name_problem(res.name_rule, name)
        if problem:
            errs.append(invalid("metadata.name", name, problem))
    if res.namespaced and not meta.get("namespace"):
        errs.append(required("metadata.namespace"))
    labels = meta.get("labels")
    if labels is not None:
        if not isinstance(labels, dict):
            errs.append(invalid("metadata.labels", str(labels), "must be a map of strings"))
        else:
            for k, v in labels.items():
                kp = label_key_problem(k)
                if kp:
                    errs.append(invalid("metadata.labels", k, kp))
                if not isinstance(v, str):
                    errs.append(invalid(f"metadata.labels[{k}]", str(v), "must be a string"))
                else:
                    vp = label_value_problem(v)
                    if vp:
                        errs.append(invalid("metadata.labels", v, vp))
    annotations = meta.get("annotations")
    if annotations is not None:
        if not isinstance(annotations, dict):
            errs.append(invalid("metadata.annotations", str(annotations), "must be a map of strings"))
        else:
            total = 0
            for k, v in annotations.items():
                kp = label_key_problem(k.lower())
                if kp:
                    errs.append(invalid("metadata.annotations", k, kp))
                if not isinstance(v, str):
                    errs.append(invalid(f"metadata.annotations[{k}]", str(v), "must be a string"))
                    continue
                total += len(k) + len(v)
            if total > MAX_ANNOTATIONS_BYTES:
                errs.append(
                    FieldError(
                        "TooMany", "metadata.annotations", f"must have at most {MAX_ANNOTATIONS_BYTES} bytes"
                    )
                )
    finalizers = meta.get("finalizers")
    if finalizers is not None:
        if not isinstance(finalizers, list):
            errs.append(invalid("metadata.finalizers", str(finalizers), "must be a list of strings"))
        else:
            for i, f in enumerate(finalizers):
                if not isinstance(f, str) or label_key_problem(f) is not None:
                    errs.append(
                        invalid(
                            f"metadata.finalizers[{i}]", f, label_key_problem(str(f)) or "must be a string"
                        )
                    )
    return errs


# --- per kind ----------------------------------------------------------------------------------------------


def _namespace(new: Obj, old: Obj | None, subresource: str) -> list[FieldError]:
    meta = new["metadata"]
    labels = meta.get("labels")
    if not isinstance(labels, dict):
        labels = meta["labels"] = {}
    labels["kubernetes.io/metadata.name"] = meta.get("name", "")
    if old is None:
        spec = new.setdefault("spec", {})
        if isinstance(spec, dict) and "finalizers" not in spec:
            spec["finalizers"] = ["kubernetes"]
        new["status"] = {"phase": "Active"}
    elif subresource != "status":
        new["spec"] = old.get("spec", {})
    return []


def _config_keys(data: Any, path: str, errs: list[FieldError]) -> int:
    size = 0
    if data is None:
        return 0
    if not isinstance(data, dict):
        errs.append(invalid(path, str(data), "must be a map"))
        return 0
    for k, v in data.items():
        if not _CONFIG_KEY.match(k) or len(k) > 253:
            errs.append(
                invalid(
                    path,
                    k,
                    "a valid config key must consist of alphanumeric characters, '-', '_' or "
                    "'.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation "
                    "is '[-._a-zA-Z0-9]+')",
                )
            )
        if not isinstance(v, str):
            errs.append(invalid(f"{path}[{k}]", str(v), "must be a string"))
        else:
            size += len(v)
    return size


def _immutable_data(new: Obj, old: Obj | None, keys: tuple[str, ...]) -> list[FieldError]:
    if old is None or old.get("immutable") is not True:
        return []
    errs: list[FieldError] = []
    if new.get("immutable") is not True:
        errs.append(forbidden("immutable", "field is immutable when `immutable` is set"))
    for key in keys:
        if (new.get(key) or {}) != (old.get(key) or {}):
            errs.append(forbidden(key, "field is immutable when `immutable` is set"))
    return errs


def _configmap(new: Obj, old: Obj | None, subresource: str) -> list[FieldError]:
    errs: list[FieldError] = []
    size = _config_keys(new.get("data"), "data", errs)
    binary = new.get("binaryData")
    size += _config_keys(binary, "binaryData", [])
    for k in set(new.get("data") or {}) & set(binary or {}):
        errs.append(invalid("data", k, "duplicate of key present in binaryData"))
    if size > MAX_CONFIG_BYTES:
        errs.append(FieldError("TooMany", "", f"must have at most {MAX_CONFIG_BYTES} bytes"))
    errs.extend(_immutable_data(new, old, ("data", "binaryData")))
    return errs


def _secret(new: Obj, old: Obj | None, subresource: str) -> list[FieldError]:
    string_data = new.pop("stringData", None)
    if isinstance(string_data, dict):
        data = new.get("data")
        if not isinstance(data, dict):
            data = new["data"] = {}
        for k, v in string_data.items():
            if isinstance(v, str):
                data[k] = base64.b64encode(v.encode()).decode()
    errs: list[FieldError] = []
    for k, v in (new.get("data") or {}).items():
        if isinstance(v, str):
            try:
                base64.b64decode(v, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise bad_request(
                    f'Secret in version "v1" cannot be handled as a Secret: illegal base64 data '
                    f"in data[{k!r}]: {exc}"
                ) from None
    if not new.get("type"):
        new["type"] = "Opaque"
    _config_keys({k: "" for k in (new.get("data") or {})}, "data", errs)
    if old is not None and old.get("type") != new.get("type"):
        errs.append(invalid("type", new.get("type"), "field is immutable"))
    errs.extend(_immutable_data(new, old, ("data",)))
    return errs


def _node(new: Obj, old: Obj | None, subresource: str) -> list[FieldError]:
    errs: list[FieldError] = []
    spec = new.get("spec")
    if isinstance(spec, dict):
        for i, cidr in enumerate(spec.get("podCIDRs") or []):
            try:
                ipaddress.ip_network(cidr, strict=False)
            except (ValueError, TypeError):
                errs.append(invalid(f"spec.podCIDRs[{i}]", cidr, "must be a valid CIDR"))
        if old is not None and subresource != "status":
            ospec = old.get("spec") or {}
            if ospec.get("podCIDRs") and ospec.get("podCIDRs") != spec.get("podCIDRs"):
                errs.append(
                    forbidden("spec.podCIDRs", 'node updates may not change podCIDR except from "" to valid')
                )
    return errs


_POD_MUTABLE = ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds")


def _pod_defaults(spec: Obj) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("securityContext", {})
    spec.setdefault("enableServiceLinks", True)
    for key in ("containers", "initContainers"):
        for c in spec.get(key) or []:
            if not isinstance(c, dict):
                continue
            image = str(c.get("image", ""))
            tag = image.rsplit("/", 1)[-1]
            if not c.get("imagePullPolicy"):
                c["imagePullPolicy"] = (
                    "Always"
                    if (":" not in tag or tag.endswith(":latest")) and "@" not in tag
                    else "IfNotPresent"
                )
            c.setdefault("terminationMessagePath", "/dev/termination-log")
            c.setdefault("terminationMessagePolicy", "File")
            c.setdefault("resources", {})
            for p in c.get("ports") or []:
                if isinstance(p, dict) and not p.get("protocol"):
                    p["protocol"] = "TCP"


def _pod_spec_without_mutable(spec: Obj) -> Obj:
    out = {k: v for k, v in spec.items() if k not in _POD_MUTABLE}
    for key in ("containers", "initContainers"):
        if isinstance(out.get(key), list):
            out[key] = [
                {k: v for k, v in c.items() if k != "image"} if isinstance(c, dict) else c for c in out[key]
            ]
    return out


def _pod(new: Obj, old: Obj | None, subresource: str) -> list[FieldError]:
    errs: list[FieldError] = []
    spec = new.get("spec")
    if not isinstance(spec, dict):
        return [required("spec")]
    _pod_defaults(spec)
    if old is None:
        new["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
    containers = spec.get("containers")
    if not containers:
        errs.append(required("spec.containers"))
    names: set[str] = set()
    for i, c in enumerate(containers or []):
        if not isinstance(c, dict):
            errs.append(invalid(f"spec.containers[{i}]", str(c), "must be an object"))
            continue
        cname = c.get("name")
        if not cname:
            errs.append(required(f"spec.containers[{i}].name"))
        elif not isinstance(cname, str) or not _LABEL.match(cname):
            errs.append(invalid(f"spec.containers[{i}].name", cname, LABEL_MSG))
        elif cname in names:
            errs.append(FieldError("Duplicate", f"spec.containers[{i}].name", "", cname))
        else:
            names.add(cname)
        if not c.get("image") and old is None:
            errs.append(required(f"spec.containers[{i}].image"))
    policy = spec.get("restartPolicy")
    if policy not in ("Always", "OnFailure", "Never"):
        errs.append(not_supported("spec.restartPolicy", policy, ("Always", "Never", "OnFailure")))
    if old is not None and subresource != "status":
        ospec = old.get("spec") or {}
        if _pod_spec_without_mutable(spec) != _pod_spec_without_mutable(ospec):
            errs.append(
                forbidden(
                    "spec",
                    "pod updates may not change fields other than `spec.containers[*].image`,"
                    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,"
                    "`spec.tolerations` (only additions to existing tolerations),"
                    "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was "
                    "previously negative)",
                )
            )
    phase = (new.get("status") or {}).get("phase")
    if phase is not None and phase not in ("Pending", "Running", "Succeeded", "Failed", "Unknown"):
        errs.append(
            not_supported("status.phase", phase, ("Failed", "Pending", "Running", "Succeeded", "Unknown"))
        )
    return errs


def _endpoints(new: Obj, old: Obj | None, subresource: str) -> list[FieldError]:
    errs: list[FieldError] = []
    subsets = new.get("subsets")
    if subsets is not None and not isinstance(subsets, list):
        return [invalid("subsets", str(subsets), "must be a list")]
    for i, subset in enumerate(subsets or []):
        if not isinstance(subset, dict):
            errs.append(invalid(f"subsets[{i}]", str(subset), "must be an object"))
            continue
        for key in ("addresses", "notReadyAddresses"):
            for j, addr in enumerate(subset.get(key) or []):
                ip = addr.get("ip") if isinstance(addr, dict) else None
                try:
                    ipaddress.ip_address(str(ip))
                except ValueError:
                    errs.append(invalid(f"subsets[{i}].{key}[{j}].ip", ip, "must be a valid IP address"))
        for j, port in enumerate(subset.get("ports") or []):
            if isinstance(port, dict):
                if not port.get("protocol"):
                    port["protocol"] = "TCP"
                number = port.get("port")
                if not isinstance(number, int) or not 1 <= number <= 65535:
                    errs.append(
                        invalid(
                            f"subsets[{i}].ports[{j}].port", number, "must be between 1 and 65535, inclusive"
                        )
                    )
    return errs


_ADDRESS_TYPES = ("FQDN", "IPv4", "IPv6")


def _endpointslice(new: Obj, old: Obj | None, subresource: str) -> list[FieldError]:
    errs: list[FieldError] = []
    atype = new.get("addressType")
    if not atype:
        errs.append(required("addressType"))
    elif atype not in _ADDRESS_TYPES:
        errs.append(not_supported("addressType", atype, _ADDRESS_TYPES))
    elif old is not None and old.get("addressType") != atype:
        errs.append(invalid("addressType", atype, "field is immutable"))
    endpoints = new.get("endpoints")
    if endpoints is None:
        new["endpoints"] = endpoints = []
    if not isinstance(endpoints, list):
        return [*errs, invalid("endpoints", str(endpoints), "must be a list")]
    for i, ep in enumerate(endpoints):
        if not isinstance(ep, dict):
            errs.append(invalid(f"endpoints[{i}]", str(ep), "must be an object"))
            continue
        addrs = ep.get("addresses")
        if not addrs:
            errs.append(required(f"endpoints[{i}].addresses", "must contain at least 1 address"))
            continue
        if len(addrs) > 100:
            errs.append(FieldError("TooMany", f"endpoints[{i}].addresses", "must have at most 100 items"))
        for j, addr in enumerate(addrs):
            if atype in ("IPv4", "IPv6"):
                try:
                    ip = ipaddress.ip_address(str(addr))
                    ok = (ip.version == 4) == (atype == "IPv4")
                except ValueError:
                    ok = False
                if not ok:
                    errs.append(
                        invalid(f"endpoints[{i}].addresses[{j}]", addr, f"must be a valid {atype} address")
                    )
    for port in new.get("ports") or []:
        if isinstance(port, dict):
            if not port.get("protocol"):
                port["protocol"] = "TCP"
            port.setdefault("name", "")
    return errs


def _event(new: Obj, old: Obj | None, subresource: str) -> list[FieldError]:
    errs: list[FieldError] = []
    etype = new.get("type")
    if etype not in (None, "", "Normal", "Warning"):
        errs.append(not_supported("type", etype, ("Normal", "Warning")))
    inv = new.get("involvedObject")
    if inv is not None and not isinstance(inv, dict):
        errs.append(invalid("involvedObject", str(inv), "must be an object"))
    return errs


def _lease(new: Obj, old: Obj | None, subresource: str) -> list[FieldError]:
    spec = new.get("spec")
    if spec is None:
        return []
    if not isinstance(spec, dict):
        return [invalid("spec", str(spec), "must be an object")]
    errs: list[FieldError] = []
    duration = spec.get("leaseDurationSeconds")
    if duration is not None and (not isinstance(duration, int) or duration <= 0):
        errs.append(invalid("spec.leaseDurationSeconds", duration, "must be greater than 0"))
    transitions = spec.get("leaseTransitions")
    if transitions is not None and (not isinstance(transitions, int) or transitions < 0):
        errs.append(invalid("spec.leaseTransitions", transitions, "must be greater than or equal to 0"))
    return errs


_HOOKS = {
    "namespaces": _namespace,
    "configmaps": _configmap,
    "secrets": _secret,
    "nodes": _node,
    "pods": _pod,
    "endpoints": _endpoints,
    "endpointslices": _endpointslice,
    "events": _event,
    "leases": _lease,
}


def prepare(
    res: ResourceInfo,
    new: Obj,
    old: Obj | None,
    subresource: str,
    alloc: ServiceAllocator,
    ip_mode: bool = True,
) -> tuple[list[FieldError], AllocationPlan | None]:
    """Kind-specific defaulting and validation; ``new`` is the full stored form. ``ip_mode``: the served
    version knows LoadBalancerIngress.ipMode (1.30+)."""
    normalize_times(res.plural, res.kind, res.version, new)
    errs = validate_object_meta(res, new)
    if res.plural == "services":
        if old is None:
            new["status"] = {"loadBalancer": {}}
        svc_errs, plan = plan_service(new, old, alloc, ip_mode)
        status = new.get("status")
        if not isinstance(status, dict) or not status:
            new["status"] = {"loadBalancer": {}}
        return errs + svc_errs, (plan if not svc_errs and not errs else None)
    hook = _HOOKS.get(res.plural)
    if hook is not None:
        errs.extend(hook(new, old, subresource))
    return errs, None


def generation_tracked(res: ResourceInfo) -> bool:
    """Kinds whose registry strategy maintains metadata.generation (of those served here)."""
    return res.plural == "endpointslices"


def check_body_type(res: ResourceInfo, body: Obj) -> None:
    """A body whose apiVersion/kind names another type is a 400, as in the real server."""
    kind = body.get("kind")
    api_version = body.get("apiVersion")
    if kind not in (None, "") and kind != res.kind:
        raise bad_request(
            f"the kind in the body ({kind}) does not match the expected kind ({res.kind}) for {res.plural}"
        )
    if api_version not in (None, "") and api_version != res.api_version:
        raise ApiError(
            400,
            "BadRequest",
            f"the API version in the data ({api_version}) does not match the "
            f"expected API version ({res.api_version})",
        )
