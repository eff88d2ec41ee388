"""Server-side printing: ``meta.k8s.io/v1 Table`` responses for kubectl, as the real printers make them.

Services get kubectl's familiar NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE (+ SELECTOR with -o wide),
a few other kinds get their usual columns, everything else NAME and AGE.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from lbspeaker_testkit._api_resources import ResourceInfo

Obj = dict[str, Any]
Column = tuple[str, str, int]  # name, description, priority


def human_duration(seconds: float) -> str:
    """kubectl's short age format (2m30s, 5h, 3d4h, ...)."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        rem = s % 60
        return f"{minutes}m{rem}s" if rem else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        rem = minutes % 60
        return f"{hours}h{rem}m" if rem else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rem = hours % 24
        return f"{hours // 24}d{rem}h" if rem else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y{days}d" if days else f"{hours // 24 // 365}y"
    return f"{hours // 24 // 365}y"


def age(obj: Obj, now: dt.datetime) -> str:
    ts = (obj.get("metadata") or {}).get("creationTimestamp")
    if not ts:
        return "<unknown>"
    try:
        created = dt.datetime.strptime(str(ts), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return "<unknown>"
    return human_duration((now - created).total_seconds())


def _svc_external_ip(spec: Obj, status: Obj) -> str:
    stype = spec.get("type")
    external = [str(ip) for ip in spec.get("externalIPs") or []]
    if stype in ("ClusterIP", "NodePort"):
        return ",".join(external) if external else "<none>"
    if stype == "LoadBalancer":
        ingress = ((status.get("loadBalancer") or {}).get("ingress")) or []
        lb = [str(i.get("ip") or i.get("hostname") or "") for i in ingress if isinstance(i, dict)]
        lb = [x for x in lb if x]
        joined = lb + external
        return ",".join(joined) if joined else "<pending>"
    if stype == "ExternalName":
        return str(spec.get("externalName", ""))
    return "<unknown>"


def _svc_ports(spec: Obj) -> str:
    out = []
    for p in spec.get("ports") or []:
        if not isinstance(p, dict):
            continue
        proto = p.get("protocol", "TCP")
        if p.get("nodePort"):
            out.append(f"{p.get('port')}:{p['nodePort']}/{proto}")
        else:
            out.append(f"{p.get('port')}/{proto}")
    return ",".join(out) if out else "<none>"


def _selector(sel: Any) -> str:
    if not sel:
        return "<none>"
    return ",".join(f"{k}={v}" for k, v in sorted(sel.items()))


def _service_row(obj: Obj, now: dt.datetime) -> list[Any]:
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    return [
        obj["metadata"]["name"],
        spec.get("type", ""),
        spec.get("clusterIP") or "<none>",
        _svc_external_ip(spec, status),
        _svc_ports(spec),
        age(obj, now),
        _selector(spec.get("selector")),
    ]


def _namespace_row(obj: Obj, now: dt.datetime) -> list[Any]:
    return [obj["metadata"]["name"], (obj.get("status") or {}).get("phase", ""), age(obj, now)]


def _configmap_row(obj: Obj, now: dt.datetime) -> list[Any]:
    return [
        obj["metadata"]["name"],
        len(obj.get("data") or {}) + len(obj.get("binaryData") or {}),
        age(obj, now),
    ]


def _secret_row(obj: Obj, now: dt.datetime) -> list[Any]:
    return [obj["metadata"]["name"], obj.get("type", ""), len(obj.get("data") or {}), age(obj, now)]


def _node_row(obj: Obj, now: dt.datetime) -> list[Any]:
    conditions = (obj.get("status") or {}).get("conditions") or []
    ready = next((c for c in conditions if isinstance(c, dict) and c.get("type") == "Ready"), None)
    state = "Unknown" if ready is None else ("Ready" if ready.get("status") == "True" else "NotReady")
    if (obj.get("spec") or {}).get("unschedulable"):
        state += ",SchedulingDisabled"
    roles = sorted(
        k.split("/", 1)[1]
        for k in ((obj.get("metadata") or {}).get("labels") or {})
        if k.startswith("node-role.kubernetes.io/") and "/" in k
    )
    version = ((obj.get("status") or {}).get("nodeInfo") or {}).get("kubeletVersion", "")
    return [
        obj["metadata"]["name"],
        state,
        ",".join(r for r in roles if r) or "<none>",
        age(obj, now),
        version,
    ]


def _pod_row(obj: Obj, now: dt.datetime) -> list[Any]:
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    statuses = status.get("containerStatuses") or []
    ready = sum(1 for c in statuses if isinstance(c, dict) and c.get("ready"))
    restarts = sum(int(c.get("restartCount") or 0) for c in statuses if isinstance(c, dict))
    reason = status.get("reason") or status.get("phase", "")
    if (obj.get("metadata") or {}).get("deletionTimestamp"):
        reason = "Terminating"
    return [
        obj["metadata"]["name"],
        f"{ready}/{len(spec.get('containers') or [])}",
        reason,
        restarts,
        age(obj, now),
        status.get("podIP") or "<none>",
        spec.get("nodeName") or "<none>",
    ]


def _endpoints_row(obj: Obj, now: dt.datetime) -> list[Any]:
    addrs = []
    for subset in obj.get("subsets") or []:
        ports = [p.get("port") for p in subset.get("ports") or [] if isinstance(p, dict)] or [None]
        for a in subset.get("addresses") or []:
            for port in ports:
                addrs.append(f"{a.get('ip')}:{port}" if port else str(a.get("ip")))
    text = ",".join(addrs[:3]) + (f" + {len(addrs) - 3} more..." if len(addrs) > 3 else "")
    return [obj["metadata"]["name"], text or "<none>", age(obj, now)]


def _lease_row(obj: Obj, now: dt.datetime) -> list[Any]:
    return [obj["metadata"]["name"], (obj.get("spec") or {}).get("holderIdentity") or "", age(obj, now)]


def _default_row(obj: Obj, now: dt.datetime) -> list[Any]:
    return [obj["metadata"]["name"], age(obj, now)]


_NAME: Column = ("Name", "Name must be unique within a namespace.", 0)
_AGE: Column = (
    "Age",
    "CreationTimestamp is a timestamp representing the server time when this object was created.",
    0,
)

_PRINTERS: dict[str, tuple[list[Column], Callable[[Obj, dt.datetime], list[Any]]]] = {
    "services": (
        [
            _NAME,
            ("Type", "type determines how the Service is exposed.", 0),
            ("Cluster-IP", "clusterIP is the IP address of the service.", 0),
            (
                "External-IP",
                "externalIPs is a list of IP addresses for which nodes in the cluster will "
                "also accept traffic for this service.",
                0,
            ),
            ("Port(s)", "The list of ports that are exposed by this service.", 0),
            _AGE,
            (
                "Selector",
                "Route service traffic to pods with label keys and values matching this selector.",
                1,
            ),
        ],
        _service_row,
    ),
    "namespaces": ([_NAME, ("Status", "The status of the namespace", 0), _AGE], _namespace_row),
    "configmaps": ([_NAME, ("Data", "Number of data entries", 0), _AGE], _configmap_row),
    "secrets": (
        [_NAME, ("Type", "The type of the secret", 0), ("Data", "Number of data entries", 0), _AGE],
        _secret_row,
    ),
    "nodes": (
        [
            _NAME,
            ("Status", "The status of the node", 0),
            ("Roles", "The roles of the node", 0),
            _AGE,
            ("Version", "Kubelet Version reported by the node.", 0),
        ],
        _node_row,
    ),
    "pods": (
        [
            _NAME,
            ("Ready", "The aggregate readiness state of this pod for accepting traffic.", 0),
            ("Status", "The aggregate status of the containers in this pod.", 0),
            ("Restarts", "The number of times the containers in this pod have been restarted.", 0),
            _AGE,
            ("IP", "IP address allocated to the pod.", 1),
            ("Node", "Name of the Node this pod runs on.", 1),
        ],
        _pod_row,
    ),
    "endpoints": ([_NAME, ("Endpoints", "Endpoints of the service", 0), _AGE], _endpoints_row),
    "leases": ([_NAME, ("Holder", "The holder of the lease", 0), _AGE], _lease_row),
}


def _column_defs(columns: list[Column]) -> list[Obj]:
    out = []
    for name, desc, priority in columns:
        d: Obj = {
            "name": name,
            "type": "integer" if name in ("Data", "Restarts") else "string",
            "format": "name" if name == "Name" else "",
            "description": desc,
            "priority": priority,
        }
        out.append(d)
    return out


def _row_object(res: ResourceInfo, obj: Obj, include: str) -> Obj | None:
    if include == "None":
        return None
    if include == "Object":
        return {"kind": res.kind, "apiVersion": res.api_version, **res.to_view(obj)}
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata", {}),
    }


def table(
    res: ResourceInfo,
    items: list[Obj],
    resource_version: int | None,
    include: str = "Metadata",
    continue_token: str = "",
    remaining: int | None = None,
    with_columns: bool = True,
) -> Obj:
    columns, printer = _PRINTERS.get(res.plural, ([_NAME, _AGE], _default_row))
    now = dt.datetime.now(dt.UTC)
    rows = []
    for obj in items:
        try:
            cells = printer(obj, now)
        except (TypeError, ValueError, AttributeError, KeyError):
            # an odd object (fields of unexpected shape) must not break listing everything else
            name = (obj.get("metadata") or {}).get("name", "")
            cells = [name, *(["<unknown>"] * (len(columns) - 2)), age(obj, now)]
        row: Obj = {"cells": cells}
        ro = _row_object(res, obj, include)
        if ro is not None:
            row["object"] = ro
        rows.append(row)
    meta: Obj = {}
    if resource_version is not None:
        meta["resourceVersion"] = str(resource_version)
    if continue_token:
        meta["continue"] = continue_token
    if remaining is not None:
        meta["remainingItemCount"] = remaining
    out: Obj = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta}
    out["columnDefinitions"] = _column_defs(columns) if with_columns else None
    out["rows"] = rows
    return out
