"""A deliberately small OpenAPI v3 surface: enough for kubectl to trust server-side field validation.

kubectl (default ``--validate=strict``) asks OpenAPI v3 whether each kind's PATCH operation takes the
``fieldValidation`` query parameter; if it does, kubectl sends ``fieldValidation=Strict`` instead of
validating against schemas itself. Each group-version document therefore lists, per resource, the
object path with a PATCH operation tagged with ``x-kubernetes-group-version-kind`` and that parameter.
No schemas are published, so ``kubectl apply`` computes strategic merge patches from its compiled-in
types, exactly as it does when a server's schema does not cover a kind.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from lbspeaker_testkit._api_resources import RESOURCES, group_versions

Obj = dict[str, Any]


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def _document(group: str, version: str) -> Obj:
    paths: Obj = {}
    for r in RESOURCES:
        if r.group != group or r.version != version:
            continue
        base = "/" + _gv_path(group, version)
        obj_path = (
            f"{base}/namespaces/{{namespace}}/{r.plural}/{{name}}"
            if r.namespaced
            else f"{base}/{r.plural}/{{name}}"
        )
        gvk = {"group": group, "version": version, "kind": r.kind}
        params = [
            {"name": n, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
            for n in ("dryRun", "fieldManager", "fieldValidation", "force", "pretty")
        ]
        paths[obj_path] = {
            "patch": {
                "operationId": f"patch{r.kind}",
                "description": f"partially update the specified {r.kind}",
                "parameters": params,
                "responses": {"200": {"description": "OK"}},
                "x-kubernetes-action": "patch",
                "x-kubernetes-group-version-kind": gvk,
            },
        }
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": {}},
    }


def _hash(doc: Obj) -> str:
    return hashlib.sha512(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:64].upper()


def v3_root() -> Obj:
    paths: Obj = {}
    for group, versions in sorted(group_versions().items()):
        for version in versions:
            rel = _gv_path(group, version)
            paths[rel] = {"serverRelativeURL": f"/openapi/v3/{rel}?hash={_hash(_document(group, version))}"}
    return {"paths": paths}


def v3_document(rel_path: str) -> Obj | None:
    """The document for ``api/v1`` or ``apis/<group>/<version>``; None if not served."""
    parts = [p for p in rel_path.split("/") if p]
    if len(parts) == 2 and parts[0] == "api":
        group, version = "", parts[1]
    elif len(parts) == 3 and parts[0] == "apis":
        group, version = parts[1], parts[2]
    else:
        return None
    if version not in group_versions().get(group, []):
        return None
    return _document(group, version)
