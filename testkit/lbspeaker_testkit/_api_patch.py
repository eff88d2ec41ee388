"""The three PATCH flavours kube-apiserver accepts for built-in types, over plain JSON values.

- JSON patch (RFC 6902): a list of operations.
- JSON merge patch (RFC 7386): maps merge, ``null`` deletes, everything else replaces.
- Strategic merge patch: merge patch plus per-field list strategies. The real server reads them from
  the Go types; here a table lists the merge keys of the fields our kinds have (``ports`` by ``port``,
  ``conditions`` by ``type``, ...), and the directives kubectl emits (``$patch``, ``$retainKeys``,
  ``$setElementOrder/<field>``, ``$deleteFromPrimitiveList/<field>``) are honoured.

All functions return new values and never modify their inputs.
"""

from __future__ import annotations

import copy
from typing import Any

from lbspeaker_testkit._api_errors import ApiError

Obj = dict[str, Any]


def _patch_error(message: str) -> ApiError:
    return ApiError(422, "Invalid", message, {})


# --- JSON patch -------------------------------------------------------------------------------------------


def _unescape_pointer(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise _patch_error(f"invalid JSON pointer {path!r}: must start with '/'")
    return [_unescape_pointer(t) for t in path[1:].split("/")]


def _index(container: list[Any], token: str, allow_end: bool, path: str) -> int:
    if token == "-" and allow_end:
        return len(container)
    if not token.isdigit() or (len(token) > 1 and token.startswith("0")):
        raise _patch_error(f"invalid array index {token!r} in path {path!r}")
    idx = int(token)
    limit = len(container) if allow_end else len(container) - 1
    if idx > limit:
        raise _patch_error(f"array index {idx} out of bounds in path {path!r}")
    return idx


def _parent(doc: Any, tokens: list[str], path: str) -> Any:
    cur = doc
    for t in tokens[:-1]:
        if isinstance(cur, dict):
            if t not in cur:
                raise _patch_error(f"doc is missing path: {path!r}")
            cur = cur[t]
        elif isinstance(cur, list):
            cur = cur[_index(cur, t, False, path)]
        else:
            raise _patch_error(f"doc is missing path: {path!r}")
    return cur


def _get(doc: Any, path: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return doc
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise _patch_error(f"doc is missing path: {path!r}")
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, False, path)]
    raise _patch_error(f"doc is missing path: {path!r}")


def _add(doc: Any, path: str, value: Any) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return value
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, True, path), value)
    else:
        raise _patch_error(f"doc is missing path: {path!r}")
    return doc


def _remove(doc: Any, path: str) -> tuple[Any, Any]:
    tokens = _pointer(path)
    if not tokens:
        raise _patch_error("cannot remove the whole document")
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise _patch_error(f"unable to remove nonexistent key: {last}: missing value")
        return doc, parent.pop(last)
    if isinstance(parent, list):
        return doc, parent.pop(_index(parent, last, False, path))
    raise _patch_error(f"doc is missing path: {path!r}")


def apply_json_patch(doc: Obj, ops: Any) -> Obj:
    """Apply an RFC 6902 operation list to a copy of ``doc``."""
    if not isinstance(ops, list):
        raise ApiError(
            400, "BadRequest", "json: cannot unmarshal object into Go value of type jsonpatch.Patch"
        )
    out: Any = copy.deepcopy(doc)
    for i, op in enumerate(ops):
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise _patch_error(f"JSON patch operation {i} must be an object with 'op' and 'path'")
        kind, path = op["op"], op["path"]
        if not isinstance(path, str):
            raise _patch_error(f"JSON patch operation {i}: 'path' must be a string")
        if kind in ("add", "replace", "test") and "value" not in op:
            raise _patch_error(f"JSON patch operation {i} ({kind}) is missing 'value'")
        if kind == "add":
            out = _add(out, path, copy.deepcopy(op["value"]))
        elif kind == "remove":
            out, _ = _remove(out, path)
        elif kind == "replace":
            _get(out, path)  # replace requires the target to exist
            out, _ = _remove(out, path) if _pointer(path) else (out, None)
            out = _add(out, path, copy.deepcopy(op["value"]))
        elif kind == "move":
            src = op.get("from")
            if not isinstance(src, str):
                raise _patch_error(f"JSON patch operation {i} (move) is missing 'from'")
            out, moved = _remove(out, src)
            out = _add(out, path, moved)
        elif kind == "copy":
            src = op.get("from")
            if not isinstance(src, str):
                raise _patch_error(f"JSON patch operation {i} (copy) is missing 'from'")
            out = _add(out, path, copy.deepcopy(_get(out, src)))
        elif kind == "test":
            if _get(out, path) != op["value"]:
                raise _patch_error(f"testing value {path} failed: test failed")
        else:
            raise _patch_error(f"Unexpected kind: {kind}")
    if not isinstance(out, dict):
        raise _patch_error("JSON patch result is not an object")
    return out


# --- JSON merge patch --------------------------------------------------------------------------------------


def apply_merge_patch(doc: Any, patch: Any) -> Any:
    """RFC 7386 merge patch; returns a new value."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(doc) if isinstance(doc, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = apply_merge_patch(out.get(key), value)
    return out


# --- strategic merge patch ---------------------------------------------------------------------------------

# (path with list indices dropped) -> merge key; "" marks a list of primitives merged as a set.
MERGE_KEYS: dict[str, str] = {
    "metadata.finalizers": "",
    "metadata.ownerReferences": "uid",
    "spec.ports": "port",  # Service
    "spec.containers": "name",
    "spec.initContainers": "name",
    "spec.ephemeralContainers": "name",
    "spec.containers.ports": "containerPort",
    "spec.initContainers.ports": "containerPort",
    "spec.containers.env": "name",
    "spec.initContainers.env": "name",
    "spec.containers.volumeMounts": "mountPath",
    "spec.initContainers.volumeMounts": "mountPath",
    "spec.containers.volumeDevices": "devicePath",
    "spec.volumes": "name",
    "spec.imagePullSecrets": "name",
    "spec.hostAliases": "ip",
    "spec.topologySpreadConstraints": "topologyKey",
    "status.conditions": "type",  # Pod and Node
    "status.addresses": "type",  # Node
    "status.podIPs": "ip",
    "status.hostIPs": "ip",
}

_DIRECTIVE = "$patch"
_RETAIN = "$retainKeys"
_ORDER = "$setElementOrder/"
_DELETE_PRIM = "$deleteFromPrimitiveList/"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _merge_list(path: str, old: Any, patch: list[Any]) -> list[Any]:
    key = MERGE_KEYS.get(path)
    if key is None:
        # atomic list: replaced, after dropping any element-level directives
        return [
            copy.deepcopy(v) for v in patch if not (isinstance(v, dict) and _DIRECTIVE in v and len(v) == 1)
        ]
    base: list[Any] = copy.deepcopy(old) if isinstance(old, list) else []
    if any(isinstance(v, dict) and v.get(_DIRECTIVE) == "replace" for v in patch):
        return [copy.deepcopy(v) for v in patch if not (isinstance(v, dict) and _DIRECTIVE in v)]
    if key == "":
        for v in patch:
            if v not in base:
                base.append(copy.deepcopy(v))
        return base
    for item in patch:
        if not isinstance(item, dict):
            raise _patch_error(f"{path}: strategic merge patch list items must be objects with key {key!r}")
        directive = item.get(_DIRECTIVE)
        if key not in item:
            raise _patch_error(f"{path}: map: {item} does not contain declared merge key: {key}")
        idx = next(
            (i for i, cur in enumerate(base) if isinstance(cur, dict) and cur.get(key) == item[key]), None
        )
        if directive == "delete":
            if idx is not None:
                base.pop(idx)
            continue
        if idx is None:
            base.append(_strategic(path, {}, item))
        else:
            base[idx] = _strategic(path, base[idx], item)
    return base


def _reorder(items: list[Any], order: list[Any], key: str) -> list[Any]:
    """Honour ``$setElementOrder``: listed elements first, in the given order; the rest keep theirs."""

    def ident(v: Any) -> Any:
        return v.get(key) if key and isinstance(v, dict) else v

    wanted = [ident(o) for o in order]
    pos = {repr(w): i for i, w in enumerate(wanted)}
    listed = [v for v in items if repr(ident(v)) in pos]
    listed.sort(key=lambda v: pos[repr(ident(v))])
    rest = [v for v in items if repr(ident(v)) not in pos]
    return listed + rest


def _strategic(path: str, old: Any, patch: Obj) -> Obj:
    if patch.get(_DIRECTIVE) == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != _DIRECTIVE}
    out: Obj = copy.deepcopy(old) if isinstance(old, dict) else {}
    orders: dict[str, list[Any]] = {}
    for k, v in patch.items():
        if k == _DIRECTIVE:
            if v not in ("merge", "delete", "replace"):
                raise _patch_error(f"{path or 'object'}: unknown patch type: {v}")
            continue
        if k == _RETAIN:
            continue
        if k.startswith(_ORDER):
            if isinstance(v, list):
                orders[k[len(_ORDER) :]] = v
            continue
        if k.startswith(_DELETE_PRIM):
            field_name = k[len(_DELETE_PRIM) :]
            if isinstance(out.get(field_name), list) and isinstance(v, list):
                out[field_name] = [x for x in out[field_name] if x not in v]
            continue
        child = _join(path, k)
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict):
            if v.get(_DIRECTIVE) == "delete":
                out.pop(k, None)
            else:
                out[k] = _strategic(child, out.get(k), v)
        elif isinstance(v, list):
            out[k] = _merge_list(child, out.get(k), v)
        else:
            out[k] = copy.deepcopy(v)
    for field_name, order in orders.items():
        if isinstance(out.get(field_name), list):
            key = MERGE_KEYS.get(_join(path, field_name), "")
            out[field_name] = _reorder(out[field_name], order, key)
    retain = patch.get(_RETAIN)
    if isinstance(retain, list):
        keep = set(retain)
        out = {k: v for k, v in out.items() if k in keep}
    return out


def apply_strategic_merge_patch(doc: Obj, patch: Any) -> Obj:
    """Strategic merge patch of ``doc`` (a whole object) by ``patch`` (a JSON object)."""
    if not isinstance(patch, dict):
        raise ApiError(400, "BadRequest", "strategic merge patch must be a JSON object")
    return _strategic("", doc, patch)
