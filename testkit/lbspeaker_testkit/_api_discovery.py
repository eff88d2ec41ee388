"""Discovery documents (/version, /api, /apis, APIResourceLists) in their legacy (non-aggregated) form.

kubectl asks for aggregated discovery first; answering with ``Content-Type: application/json`` and the
legacy documents makes client-go fall back to per-group-version discovery, which is all it needs.
"""

from __future__ import annotations

from typing import Any

from lbspeaker_testkit._api_resources import FULL_VERBS, RESOURCES, SUB_VERBS, group_versions

Obj = dict[str, Any]

DEFAULT_VERSION = (1, 36)

KUBE_VERSION = {
    "major": "1",
    "minor": "36",
    "gitVersion": "v1.36.2-lbspeaker-test",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2024-12-11T00:00:00Z",
    "goVersion": "go1.23.3",
    "compiler": "gc",
    "platform": "linux/amd64",
}


def parse_version(text: str) -> tuple[int, int]:
    """``"1.28"`` or ``"v1.28.3"`` -> (1, 28)."""
    parts = text.strip().lstrip("v").split(".")
    try:
        major, minor = int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        raise ValueError(f"version must look like 1.28, got {text!r}") from None
    if major != 1 or minor < 20:
        raise ValueError(f"version must be 1.20 or later, got {text!r}")
    return major, minor


def version(served: tuple[int, int] = DEFAULT_VERSION) -> Obj:
    """/version for the Kubernetes minor version the server acts as."""
    doc = dict(KUBE_VERSION)
    if served != DEFAULT_VERSION:
        doc["minor"] = str(served[1])
        doc["gitVersion"] = f"v{served[0]}.{served[1]}.0-lbspeaker-test"
    return doc


def api_versions(server_address: str) -> Obj:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    }


def _group(name: str, versions: list[str]) -> Obj:
    gvs = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": gvs, "preferredVersion": gvs[0]}


def api_group_list() -> Obj:
    groups = [_group(g, vs) for g, vs in sorted(group_versions().items()) if g]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(name: str) -> Obj | None:
    versions = group_versions().get(name)
    if not name or versions is None:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(name, versions)}


def api_resource_list(group: str, version: str) -> Obj | None:
    resources: list[Obj] = []
    for r in RESOURCES:
        if r.group != group or r.version != version:
            continue
        entry: Obj = {
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": list(FULL_VERBS),
        }
        if r.short_names:
            entry["shortNames"] = list(r.short_names)
        if r.categories:
            entry["categories"] = list(r.categories)
        resources.append(entry)
        if r.status_subresource:
            resources.append(
                {
                    "name": f"{r.plural}/status",
                    "singularName": "",
                    "namespaced": r.namespaced,
                    "kind": r.kind,
                    "verbs": list(SUB_VERBS),
                }
            )
    if not resources:
        return None
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}
