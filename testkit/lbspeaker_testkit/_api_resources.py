"""The resources the test API server serves: names, kinds, scopes, discovery data, selectable fields.

One ``ResourceInfo`` per (group, version, resource). core/v1 ``events`` and events.k8s.io/v1
``events`` share one storage (as in the real server) and differ only in the view: stored objects are
core/v1 events and ``to_view``/``from_view`` convert for the events.k8s.io endpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]

FULL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
SUB_VERBS = ("get", "patch", "update")


def _identity(obj: Obj) -> Obj:
    return obj


@dataclass(frozen=True)
class ResourceInfo:
    group: str
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    status_subresource: bool = False
    storage: str = ""
    allow_create_on_update: bool = False
    return_deleted_object: bool = False
    name_rule: str = "subdomain"  # subdomain | label | label1035
    fields: Callable[[Obj], dict[str, str]] = field(default=lambda obj: {}, compare=False)
    field_aliases: tuple[tuple[str, str], ...] = ()
    to_view: Callable[[Obj], Obj] = field(default=_identity, compare=False)
    from_view: Callable[[Obj], Obj] = field(default=_identity, compare=False)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    @property
    def storage_key(self) -> str:
        return self.storage or f"{self.group}/{self.plural}"

    def selectable_fields(self) -> frozenset[str]:
        names = {"metadata.name"}
        if self.namespaced:
            names.add("metadata.namespace")
        names.update(self.fields({}).keys())
        names.update(alias for alias, _ in self.field_aliases)
        return frozenset(names)

    def field_set(self, stored: Obj) -> dict[str, str]:
        meta = stored.get("metadata") or {}
        out = {"metadata.name": str(meta.get("name", ""))}
        if self.namespaced:
            out["metadata.namespace"] = str(meta.get("namespace", ""))
        out.update(self.fields(stored))
        for alias, target in self.field_aliases:
            out[alias] = out.get(target, "")
        return out


def _s(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _dig(obj: Obj, *path: str) -> Any:
    cur: Any = obj
    for p in path:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(p)
    return cur


def _service_fields(obj: Obj) -> dict[str, str]:
    return {"spec.clusterIP": _s(_dig(obj, "spec", "clusterIP")), "spec.type": _s(_dig(obj, "spec", "type"))}


def _pod_fields(obj: Obj) -> dict[str, str]:
    return {
        "spec.nodeName": _s(_dig(obj, "spec", "nodeName")),
        "spec.restartPolicy": _s(_dig(obj, "spec", "restartPolicy")),
        "spec.schedulerName": _s(_dig(obj, "spec", "schedulerName")),
        "spec.serviceAccountName": _s(_dig(obj, "spec", "serviceAccountName")),
        "spec.hostNetwork": _s(bool(_dig(obj, "spec", "hostNetwork"))),
        "status.phase": _s(_dig(obj, "status", "phase")),
        "status.podIP": _s(_dig(obj, "status", "podIP")),
        "status.nominatedNodeName": _s(_dig(obj, "status", "nominatedNodeName")),
    }


def _event_fields(obj: Obj) -> dict[str, str]:
    inv = obj.get("involvedObject") or {}
    return {
        "involvedObject.kind": _s(inv.get("kind")),
        "involvedObject.namespace": _s(inv.get("namespace")),
        "involvedObject.name": _s(inv.get("name")),
        "involvedObject.uid": _s(inv.get("uid")),
        "involvedObject.apiVersion": _s(inv.get("apiVersion")),
        "involvedObject.resourceVersion": _s(inv.get("resourceVersion")),
        "involvedObject.fieldPath": _s(inv.get("fieldPath")),
        "reason": _s(obj.get("reason")),
        "reportingComponent": _s(obj.get("reportingComponent")),
        "source": _s(_dig(obj, "source", "component")),
        "type": _s(obj.get("type")),
    }


_EVENT_ALIASES = (
    ("regarding.kind", "involvedObject.kind"),
    ("regarding.namespace", "involvedObject.namespace"),
    ("regarding.name", "involvedObject.name"),
    ("regarding.uid", "involvedObject.uid"),
    ("regarding.apiVersion", "involvedObject.apiVersion"),
    ("regarding.resourceVersion", "involvedObject.resourceVersion"),
    ("regarding.fieldPath", "involvedObject.fieldPath"),
    ("reportingController", "reportingComponent"),
)

# core/v1 Event field <-> events.k8s.io/v1 Event field
_EVENT_RENAMES = (
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
    ("reportingComponent", "reportingController"),
)


def core_event_to_events_v1(obj: Obj) -> Obj:
    out = dict(obj)
    for core, new in _EVENT_RENAMES:
        if core in out:
            out[new] = out.pop(core)
    return out


def events_v1_to_core_event(obj: Obj) -> Obj:
    out = dict(obj)
    for core, new in _EVENT_RENAMES:
        out.pop(core, None)
        if new in out:
            out[core] = out.pop(new)
    return out


def _secret_fields(obj: Obj) -> dict[str, str]:
    return {"type": _s(obj.get("type"))}


def _node_fields(obj: Obj) -> dict[str, str]:
    return {"spec.unschedulable": _s(bool(_dig(obj, "spec", "unschedulable")))}


def _namespace_fields(obj: Obj) -> dict[str, str]:
    return {"status.phase": _s(_dig(obj, "status", "phase"))}


RESOURCES: tuple[ResourceInfo, ...] = (
    ResourceInfo(
        "",
        "v1",
        "namespaces",
        "namespace",
        "Namespace",
        False,
        ("ns",),
        status_subresource=True,
        name_rule="label",
        fields=_namespace_fields,
        return_deleted_object=True,
    ),
    ResourceInfo(
        "",
        "v1",
        "services",
        "service",
        "Service",
        True,
        ("svc",),
        ("all",),
        status_subresource=True,
        allow_create_on_update=True,
        return_deleted_object=True,
        name_rule="label1035",
        fields=_service_fields,
    ),
    ResourceInfo("", "v1", "endpoints", "endpoints", "Endpoints", True, ("ep",), allow_create_on_update=True),
    ResourceInfo("", "v1", "configmaps", "configmap", "ConfigMap", True, ("cm",)),
    ResourceInfo("", "v1", "secrets", "secret", "Secret", True, fields=_secret_fields),
    ResourceInfo(
        "", "v1", "nodes", "node", "Node", False, ("no",), status_subresource=True, fields=_node_fields
    ),
    ResourceInfo(
        "",
        "v1",
        "pods",
        "pod",
        "Pod",
        True,
        ("po",),
        ("all",),
        status_subresource=True,
        return_deleted_object=True,
        fields=_pod_fields,
    ),
    ResourceInfo(
        "",
        "v1",
        "events",
        "event",
        "Event",
        True,
        ("ev",),
        storage="events",
        allow_create_on_update=True,
        fields=_event_fields,
        field_aliases=_EVENT_ALIASES,
    ),
    ResourceInfo("discovery.k8s.io", "v1", "endpointslices", "endpointslice", "EndpointSlice", True),
    ResourceInfo("coordination.k8s.io", "v1", "leases", "lease", "Lease", True, allow_create_on_update=True),
    ResourceInfo(
        "events.k8s.io",
        "v1",
        "events",
        "event",
        "Event",
        True,
        ("ev",),
        storage="events",
        fields=_event_fields,
        field_aliases=_EVENT_ALIASES,
        to_view=core_event_to_events_v1,
        from_view=events_v1_to_core_event,
    ),
)

BY_PATH: dict[tuple[str, str, str], ResourceInfo] = {(r.group, r.version, r.plural): r for r in RESOURCES}
CORE_EVENTS = BY_PATH[("", "v1", "events")]


def group_versions() -> dict[str, list[str]]:
    """Group name -> versions served (core group under "")."""
    out: dict[str, list[str]] = {}
    for r in RESOURCES:
        versions = out.setdefault(r.group, [])
        if r.version not in versions:
            versions.append(r.version)
    return out
