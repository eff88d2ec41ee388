"""The decoding step of kube-apiserver: JSON types checked, unknown fields dropped (or refused).

The real server decodes a request into typed Go structs before anything else, so a value of the wrong
JSON type is a 400 ``cannot unmarshal``, ``null`` leaves a field unset, and fields the type does not
have are dropped: silently with ``fieldValidation=Ignore``, with a ``Warning`` header by default
(``Warn``), or refused under ``Strict`` (what kubectl sends): a 400 for a create or update body, a 422
for a patch. The schemas below describe the
kinds served here; parts written as ``OPEN`` are passed through unchecked (pod and node internals).
"""

from __future__ import annotations

import json
from typing import Any

from lbspeaker_testkit._api_discovery import DEFAULT_VERSION
from lbspeaker_testkit._api_errors import ApiError, invalid, invalid_object
from lbspeaker_testkit._api_resources import ResourceInfo

Obj = dict[str, Any]
Schema = Any  # "str" | "int" | "bool" | "intorstr" | "any" | ("map", Schema) | ("list", Schema) | dict

OPEN = "any"
STR, INT, BOOL = "str", "int", "bool"
STRS = ("list", STR)
STRMAP = ("map", STR)

OBJECT_REFERENCE = {
    "kind": STR,
    "namespace": STR,
    "name": STR,
    "uid": STR,
    "apiVersion": STR,
    "resourceVersion": STR,
    "fieldPath": STR,
}
OBJECT_META = {
    "name": STR,
    "generateName": STR,
    "namespace": STR,
    "selfLink": STR,
    "uid": STR,
    "resourceVersion": STR,
    "generation": INT,
    "creationTimestamp": STR,
    "deletionTimestamp": STR,
    "deletionGracePeriodSeconds": INT,
    "labels": STRMAP,
    "annotations": STRMAP,
    "finalizers": STRS,
    "managedFields": ("list", OPEN),
    "ownerReferences": (
        "list",
        {
            "apiVersion": STR,
            "kind": STR,
            "name": STR,
            "uid": STR,
            "controller": BOOL,
            "blockOwnerDeletion": BOOL,
        },
    ),
}
CONDITION = {
    "type": STR,
    "status": STR,
    "observedGeneration": INT,
    "lastTransitionTime": STR,
    "reason": STR,
    "message": STR,
}
SERVICE = {
    "metadata": OBJECT_META,
    "spec": {
        "ports": (
            "list",
            {
                "name": STR,
                "protocol": STR,
                "appProtocol": STR,
                "port": INT,
                "targetPort": "intorstr",
                "nodePort": INT,
            },
        ),
        "selector": STRMAP,
        "clusterIP": STR,
        "clusterIPs": STRS,
        "type": STR,
        "externalIPs": STRS,
        "sessionAffinity": STR,
        "loadBalancerIP": STR,
        "loadBalancerSourceRanges": STRS,
        "externalName": STR,
        "externalTrafficPolicy": STR,
        "healthCheckNodePort": INT,
        "publishNotReadyAddresses": BOOL,
        "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": INT}},
        "ipFamilies": STRS,
        "ipFamilyPolicy": STR,
        "allocateLoadBalancerNodePorts": BOOL,
        "loadBalancerClass": STR,
        "internalTrafficPolicy": STR,
        "trafficDistribution": STR,
    },
    "status": {
        "loadBalancer": {
            "ingress": (
                "list",
                {
                    "ip": STR,
                    "hostname": STR,
                    "ipMode": STR,
                    "ports": ("list", {"port": INT, "protocol": STR, "error": STR}),
                },
            )
        },
        "conditions": ("list", CONDITION),
    },
}
# Pods and nodes are only partly modelled: "*" lets fields not listed through unchecked.
CONTAINER = {
    "*": OPEN,
    "name": STR,
    "image": STR,
    "imagePullPolicy": STR,
    "command": STRS,
    "args": STRS,
    "ports": (
        "list",
        {"*": OPEN, "name": STR, "containerPort": INT, "hostPort": INT, "protocol": STR, "hostIP": STR},
    ),
    "terminationMessagePath": STR,
    "terminationMessagePolicy": STR,
}
POD_SPEC = {
    "*": OPEN,
    "containers": ("list", CONTAINER),
    "initContainers": ("list", CONTAINER),
    "nodeName": STR,
    "restartPolicy": STR,
    "hostNetwork": BOOL,
    "schedulerName": STR,
    "serviceAccountName": STR,
    "dnsPolicy": STR,
    "enableServiceLinks": BOOL,
    "activeDeadlineSeconds": INT,
    "terminationGracePeriodSeconds": INT,
    "tolerations": ("list", OPEN),
    "securityContext": OPEN,
}
POD_STATUS = {
    "*": OPEN,
    "phase": STR,
    "reason": STR,
    "message": STR,
    "podIP": STR,
    "podIPs": ("list", {"ip": STR}),
    "hostIP": STR,
    "hostIPs": ("list", {"ip": STR}),
    "nominatedNodeName": STR,
    "startTime": STR,
    "qosClass": STR,
    "conditions": (
        "list",
        {
            "*": OPEN,
            "type": STR,
            "status": STR,
            "lastProbeTime": STR,
            "lastTransitionTime": STR,
            "reason": STR,
            "message": STR,
        },
    ),
    "containerStatuses": ("list", {"*": OPEN, "name": STR, "ready": BOOL, "restartCount": INT}),
}
NODE_SPEC = {
    "*": OPEN,
    "podCIDR": STR,
    "podCIDRs": STRS,
    "providerID": STR,
    "unschedulable": BOOL,
    "taints": ("list", {"*": OPEN, "key": STR, "value": STR, "effect": STR, "timeAdded": STR}),
}
NODE_STATUS = {
    "*": OPEN,
    "phase": STR,
    "addresses": ("list", {"type": STR, "address": STR}),
    "conditions": (
        "list",
        {
            "*": OPEN,
            "type": STR,
            "status": STR,
            "lastHeartbeatTime": STR,
            "lastTransitionTime": STR,
            "reason": STR,
            "message": STR,
        },
    ),
    "nodeInfo": {"*": OPEN, "kubeletVersion": STR},
}
ENDPOINT_ADDRESS = {"ip": STR, "hostname": STR, "nodeName": STR, "targetRef": OBJECT_REFERENCE}
EVENT_SERIES = {"count": INT, "lastObservedTime": STR}
EVENT_SOURCE = {"component": STR, "host": STR}
SCHEMAS: dict[tuple[str, str], Schema] = {
    ("", "services"): SERVICE,
    ("", "configmaps"): {"metadata": OBJECT_META, "data": STRMAP, "binaryData": STRMAP, "immutable": BOOL},
    ("", "secrets"): {
        "metadata": OBJECT_META,
        "data": STRMAP,
        "stringData": STRMAP,
        "type": STR,
        "immutable": BOOL,
    },
    ("", "namespaces"): {
        "metadata": OBJECT_META,
        "spec": {"finalizers": STRS},
        "status": {"phase": STR, "conditions": ("list", CONDITION)},
    },
    ("", "endpoints"): {
        "metadata": OBJECT_META,
        "subsets": (
            "list",
            {
                "addresses": ("list", ENDPOINT_ADDRESS),
                "notReadyAddresses": ("list", ENDPOINT_ADDRESS),
                "ports": ("list", {"name": STR, "port": INT, "protocol": STR, "appProtocol": STR}),
            },
        ),
    },
    ("", "events"): {
        "metadata": OBJECT_META,
        "involvedObject": OBJECT_REFERENCE,
        "reason": STR,
        "message": STR,
        "source": EVENT_SOURCE,
        "firstTimestamp": STR,
        "lastTimestamp": STR,
        "count": INT,
        "type": STR,
        "eventTime": STR,
        "series": EVENT_SERIES,
        "action": STR,
        "related": OBJECT_REFERENCE,
        "reportingComponent": STR,
        "reportingInstance": STR,
    },
    ("events.k8s.io", "events"): {
        "metadata": OBJECT_META,
        "eventTime": STR,
        "series": EVENT_SERIES,
        "reportingController": STR,
        "reportingInstance": STR,
        "action": STR,
        "reason": STR,
        "regarding": OBJECT_REFERENCE,
        "related": OBJECT_REFERENCE,
        "note": STR,
        "type": STR,
        "deprecatedSource": EVENT_SOURCE,
        "deprecatedFirstTimestamp": STR,
        "deprecatedLastTimestamp": STR,
        "deprecatedCount": INT,
    },
    ("coordination.k8s.io", "leases"): {
        "metadata": OBJECT_META,
        "spec": {
            "holderIdentity": STR,
            "leaseDurationSeconds": INT,
            "acquireTime": STR,
            "renewTime": STR,
            "leaseTransitions": INT,
            "strategy": STR,
            "preferredHolder": STR,
        },
    },
    ("discovery.k8s.io", "endpointslices"): {
        "metadata": OBJECT_META,
        "addressType": STR,
        "endpoints": (
            "list",
            {
                "addresses": STRS,
                "conditions": {"ready": BOOL, "serving": BOOL, "terminating": BOOL},
                "hostname": STR,
                "targetRef": OBJECT_REFERENCE,
                "deprecatedTopology": STRMAP,
                "nodeName": STR,
                "zone": STR,
                "hints": {"forZones": ("list", {"name": STR}), "forNodes": ("list", {"name": STR})},
            },
        ),
        "ports": ("list", {"name": STR, "protocol": STR, "port": INT, "appProtocol": STR}),
    },
    ("", "nodes"): {"metadata": OBJECT_META, "spec": NODE_SPEC, "status": NODE_STATUS},
    ("", "pods"): {"metadata": OBJECT_META, "spec": POD_SPEC, "status": POD_STATUS},
}

_GO_TYPES = {STR: "string", INT: "int64", BOOL: "bool", "intorstr": "intstr.IntOrString"}
# Go struct names the JSON decoder reports ("Go struct field ServiceSpec.spec.externalIPs"); by parent path
_STRUCT_NAMES = {
    "metadata": "ObjectMeta",
    "spec.ports": "ServicePort",
    "status.loadBalancer": "LoadBalancerStatus",
    "status.loadBalancer.ingress": "LoadBalancerIngress",
    "status.loadBalancer.ingress.ports": "PortStatus",
    "status.conditions": "Condition",
}
# LoadBalancerIngress.ipMode: unknown before 1.29, behind a feature gate that is off in 1.29, on from 1.30
IP_MODE_KNOWN = (1, 29)
IP_MODE_ENABLED = (1, 30)


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _go_kind(value: Any) -> str:
    """reflect.Kind of a value as the strategic-merge path holds it (ints kept as int64)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int64"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "slice"
    return "map"


def go_value(value: Any) -> str:
    """fmt's ``%+v`` of a decoded JSON value: ``map[spec:map[type:LoadBalancer]]``, ``[a b]``, ``<nil>``."""
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{go_value(value[k])}" for k in sorted(value)) + "]"
    if isinstance(value, list):
        return "[" + " ".join(go_value(v) for v in value) + "]"
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _go_type(schema: Schema) -> str:
    if isinstance(schema, str):
        return _GO_TYPES.get(schema, "interface {}")
    if isinstance(schema, tuple):
        inner = _go_type(schema[1])
        return f"[]{inner}" if schema[0] == "list" else f"map[string]{inner}"
    return "struct"


def _converter_error(value: Any, schema: Schema) -> str:
    """runtime.DefaultUnstructuredConverter's words for a value of the wrong type (strategic merge patch)."""
    kind = _go_kind(value)
    if isinstance(schema, tuple):
        return f"cannot restore {'slice' if schema[0] == 'list' else 'map'} from {kind}"
    if isinstance(schema, dict):
        return f"cannot restore struct from: {kind}"
    if schema == "intorstr":
        return f"json: cannot unmarshal {_json_kind(value)} into Go value of type intstr.IntOrString"
    target = _GO_TYPES.get(schema, "interface {}")
    # Go converts int64 -> string and float64 -> int64 (whole values only) but reports them as mismatches;
    # other pairs fall through to "unrecognized type"
    if (kind, target) in (("int64", "string"), ("float64", "int64")):
        return f"cannot convert {kind} to {target}"
    return f"unrecognized type: {target}"


def _struct_name(kind: str, path: str) -> str:
    parent = path.rpartition(".")[0]
    if not parent:
        return kind
    if parent in ("spec", "status"):
        return kind + parent.capitalize()
    return _STRUCT_NAMES.get(parent, parent.rpartition(".")[2][:1].upper() + parent.rpartition(".")[2][1:])


def _without_ip_mode(schema: Schema) -> Schema:
    ingress = dict(schema["status"]["loadBalancer"]["ingress"][1])
    ingress.pop("ipMode")
    status = {**schema["status"], "loadBalancer": {"ingress": ("list", ingress)}}
    return {**schema, "status": status}


class Decoder:
    """One request's decoding: collects unknown-field warnings, or raises under Strict.

    A create or update body that fails to decode is a 400 (``Service in version "v1" cannot be handled
    as a Service: ...``). A patch is decoded after it has been applied, and the real server reports its
    failures as 422 Invalid on the field ``patch`` (handlers/patch.go): the value shown is the patch as
    Go prints a map for a strategic merge patch, the patched object's JSON for a merge or JSON patch.
    ``version`` is the Kubernetes minor version served: before 1.29 ``ipMode`` is an unknown field, in
    1.29 it is dropped (feature gate off).
    """

    def __init__(
        self,
        res: ResourceInfo,
        mode: str,
        patch: tuple[str, Any] | None = None,
        version: tuple[int, int] = DEFAULT_VERSION,
    ) -> None:
        self.res = res
        self.mode = mode if mode in ("Ignore", "Warn", "Strict") else "Warn"
        self.patch = patch  # (patch type, patch body) for a PATCH
        self.version = version
        self.unknown: list[str] = []
        self._patched: Obj = {}

    def _fail(self, detail: str) -> ApiError:
        if self.patch is not None:
            patch_type, body = self.patch
            if patch_type == "strategic":
                shown = go_value(body)
            else:
                shown = json.dumps(self._patched, separators=(",", ":"), sort_keys=True)
            return invalid_object("", "", "", [invalid("patch", shown, detail)])
        kind, version = self.res.kind, self.res.version
        return ApiError(
            400, "BadRequest", f'{kind} in version "{version}" cannot be handled as a {kind}: {detail}'
        )

    def _mismatch(self, value: Any, schema: Schema, path: str) -> ApiError:
        if self.patch is not None and self.patch[0] == "strategic":
            return self._fail(_converter_error(value, schema))
        return self._fail(
            f"json: cannot unmarshal {_json_kind(value)} into Go struct field "
            f"{_struct_name(self.res.kind, path)}.{path} of type {_go_type(schema)}"
        )

    def _walk(self, value: Any, schema: Schema, path: str) -> Any:
        if schema == OPEN:
            return value
        if schema == STR:
            if not isinstance(value, str):
                raise self._mismatch(value, schema, path)
            return value
        if schema == BOOL:
            if not isinstance(value, bool):
                raise self._mismatch(value, schema, path)
            return value
        if schema == INT:
            if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
                return int(value)
            if not isinstance(value, int) or isinstance(value, bool) or not -(2**63) <= value < 2**63:
                raise self._mismatch(value, schema, path)
            return value
        if schema == "intorstr":
            if isinstance(value, bool) or not isinstance(value, int | str):
                raise self._mismatch(value, schema, path)
            return value
        if isinstance(schema, tuple):
            container, inner = schema
            if container == "list":
                if not isinstance(value, list):
                    raise self._mismatch(value, schema, path)
                return [self._walk(v, inner, path) for v in value if v is not None]
            if not isinstance(value, dict):
                raise self._mismatch(value, schema, path)
            return {
                str(k): ("" if v is None and inner == STR else self._walk(v, inner, path))
                for k, v in value.items()
            }
        if not isinstance(value, dict):
            raise self._mismatch(value, schema, path)
        out: Obj = {}
        for key, item in value.items():
            sub = schema.get(key, schema.get("*"))
            child = f"{path}.{key}" if path else key
            if sub is None:
                self.unknown.append(child)
                continue
            if item is None:
                continue  # null leaves the field unset, as decoding into a Go struct does
            out[key] = self._walk(item, sub, child)
        return out

    def decode(self, body: Obj) -> Obj:
        schema = SCHEMAS.get((self.res.group, self.res.plural))
        if schema is None:
            return body
        self._patched = body
        if self.res.plural == "services" and self.version < IP_MODE_KNOWN:
            schema = _without_ip_mode(schema)
        envelope = {k: body[k] for k in ("apiVersion", "kind") if k in body}
        for k, v in envelope.items():
            if not isinstance(v, str):
                raise self._mismatch(v, STR, k)
        rest = {k: v for k, v in body.items() if k not in ("apiVersion", "kind")}
        out = self._walk(rest, schema, "")
        if self.res.plural == "services" and self.version < IP_MODE_ENABLED:
            _drop_ip_mode(out)
        if self.unknown and self.mode == "Strict":
            fields = ", ".join(f'unknown field "{u}"' for u in self.unknown)
            raise self._fail(f"strict decoding error: {fields}")
        return {**envelope, **out}

    def warnings(self) -> list[str]:
        if self.mode != "Warn":
            return []
        return [f'unknown field "{u}"' for u in self.unknown]


def _drop_ip_mode(svc: Obj) -> None:
    lb = (svc.get("status") or {}).get("loadBalancer") or {}
    for ing in lb.get("ingress") or []:
        if isinstance(ing, dict):
            ing.pop("ipMode", None)
