"""Decoding of Kubernetes protobuf request bodies for the kinds ``kubectl create`` sends.

kubectl's typed clients (``kubectl create namespace|configmap|secret|service ...``) send
``application/vnd.kubernetes.protobuf`` bodies: the magic ``k8s\\x00`` followed by a runtime.Unknown
envelope whose ``raw`` field holds the object's protobuf encoding. Responses can stay JSON (clients
decode by the response Content-Type), so only request bodies need decoding, and only for the kinds
listed in ``SCHEMAS``; anything else gets a clear 415. Field numbers follow k8s.io/api generated.proto.
"""

from __future__ import annotations

import base64
import struct
from typing import Any

from lbspeaker_testkit._api_errors import ApiError

Obj = dict[str, Any]
MAGIC = b"k8s\x00"
MEDIA_TYPE = "application/vnd.kubernetes.protobuf"

# field number -> (json name, type, repeated, nested schema name); types: str int bool bytes msg
# map_str map_bytes intorstr skip
Schema = dict[int, tuple[str, str, bool, str]]

SCHEMAS: dict[str, Schema] = {
    "TypeMeta": {1: ("apiVersion", "str", False, ""), 2: ("kind", "str", False, "")},
    "Unknown": {
        1: ("typeMeta", "msg", False, "TypeMeta"),
        2: ("raw", "raw", False, ""),
        3: ("contentEncoding", "str", False, ""),
        4: ("contentType", "str", False, ""),
    },
    "ObjectMeta": {
        1: ("name", "str", False, ""),
        2: ("generateName", "str", False, ""),
        3: ("namespace", "str", False, ""),
        4: ("selfLink", "skip", False, ""),
        5: ("uid", "str", False, ""),
        6: ("resourceVersion", "str", False, ""),
        7: ("generation", "int", False, ""),
        8: ("creationTimestamp", "skip", False, ""),
        9: ("deletionTimestamp", "skip", False, ""),
        10: ("deletionGracePeriodSeconds", "int", False, ""),
        11: ("labels", "map_str", False, ""),
        12: ("annotations", "map_str", False, ""),
        13: ("ownerReferences", "msg", True, "OwnerReference"),
        14: ("finalizers", "str", True, ""),
        17: ("managedFields", "skip", True, ""),
    },
    "OwnerReference": {
        1: ("kind", "str", False, ""),
        3: ("name", "str", False, ""),
        4: ("uid", "str", False, ""),
        5: ("apiVersion", "str", False, ""),
        6: ("controller", "bool", False, ""),
        7: ("blockOwnerDeletion", "bool", False, ""),
    },
    "Namespace": {
        1: ("metadata", "msg", False, "ObjectMeta"),
        2: ("spec", "msg", False, "NamespaceSpec"),
        3: ("status", "skip", False, ""),
    },
    "NamespaceSpec": {1: ("finalizers", "str", True, "")},
    "ConfigMap": {
        1: ("metadata", "msg", False, "ObjectMeta"),
        2: ("data", "map_str", False, ""),
        3: ("binaryData", "map_bytes", False, ""),
        4: ("immutable", "bool", False, ""),
    },
    "Secret": {
        1: ("metadata", "msg", False, "ObjectMeta"),
        2: ("data", "map_bytes", False, ""),
        3: ("type", "str", False, ""),
        4: ("stringData", "map_str", False, ""),
        5: ("immutable", "bool", False, ""),
    },
    "Service": {
        1: ("metadata", "msg", False, "ObjectMeta"),
        2: ("spec", "msg", False, "ServiceSpec"),
        3: ("status", "skip", False, ""),
    },
    "ServiceSpec": {
        1: ("ports", "msg", True, "ServicePort"),
        2: ("selector", "map_str", False, ""),
        3: ("clusterIP", "str", False, ""),
        4: ("type", "str", False, ""),
        5: ("externalIPs", "str", True, ""),
        7: ("sessionAffinity", "str", False, ""),
        8: ("loadBalancerIP", "str", False, ""),
        9: ("loadBalancerSourceRanges", "str", True, ""),
        10: ("externalName", "str", False, ""),
        11: ("externalTrafficPolicy", "str", False, ""),
        12: ("healthCheckNodePort", "int", False, ""),
        13: ("publishNotReadyAddresses", "bool", False, ""),
        14: ("sessionAffinityConfig", "msg", False, "SessionAffinityConfig"),
        17: ("ipFamilyPolicy", "str", False, ""),
        18: ("clusterIPs", "str", True, ""),
        19: ("ipFamilies", "str", True, ""),
        20: ("allocateLoadBalancerNodePorts", "bool", False, ""),
        21: ("loadBalancerClass", "str", False, ""),
        22: ("internalTrafficPolicy", "str", False, ""),
        23: ("trafficDistribution", "str", False, ""),
    },
    "ServicePort": {
        1: ("name", "str", False, ""),
        2: ("protocol", "str", False, ""),
        3: ("port", "int", False, ""),
        4: ("targetPort", "intorstr", False, ""),
        5: ("nodePort", "int", False, ""),
        6: ("appProtocol", "str", False, ""),
    },
    "SessionAffinityConfig": {1: ("clientIP", "msg", False, "ClientIPConfig")},
    "ClientIPConfig": {1: ("timeoutSeconds", "int", False, "")},
    "IntOrString": {
        1: ("type", "int", False, ""),
        2: ("intVal", "int", False, ""),
        3: ("strVal", "str", False, ""),
    },
    "MapEntry": {1: ("key", "raw", False, ""), 2: ("value", "raw", False, "")},
}

KINDS = ("ConfigMap", "Namespace", "Secret", "Service")


def _bad(message: str) -> ApiError:
    return ApiError(400, "BadRequest", f"unable to decode protobuf body: {message}")


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise _bad("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise _bad("varint too long")


def _fields(buf: bytes) -> list[tuple[int, int, Any]]:
    """(field number, wire type, value) for every field; length-delimited values stay bytes."""
    out: list[tuple[int, int, Any]] = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        num, wire = key >> 3, key & 7
        val: Any
        if wire == 0:
            val, pos = _varint(buf, pos)
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise _bad("truncated field")
            val = buf[pos : pos + length]
            pos += length
        elif wire == 1:
            val = struct.unpack_from("<q", buf, pos)[0]
            pos += 8
        elif wire == 5:
            val = struct.unpack_from("<i", buf, pos)[0]
            pos += 4
        else:
            raise _bad(f"unsupported wire type {wire}")
        out.append((num, wire, val))
    return out


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _text(value: Any) -> str:
    if not isinstance(value, bytes):
        raise _bad("expected a length-delimited string")
    return value.decode("utf-8")


def _decode(buf: bytes, schema_name: str) -> Obj:
    schema = SCHEMAS[schema_name]
    out: Obj = {}
    for num, wire, val in _fields(buf):
        spec = schema.get(num)
        if spec is None:
            continue
        name, kind, repeated, sub = spec
        if kind == "skip":
            continue
        if kind == "str":
            item: Any = _text(val)
        elif kind == "int":
            if wire != 0:
                raise _bad(f"field {name} must be a varint")
            item = _signed(val)
        elif kind == "bool":
            item = bool(val)
        elif kind == "raw":
            item = val
        elif kind == "msg":
            item = _decode(val, sub)
        elif kind == "intorstr":
            ios = _decode(val, "IntOrString")
            item = ios.get("strVal", "") if ios.get("type") == 1 else ios.get("intVal", 0)
        elif kind in ("map_str", "map_bytes"):
            entry = _decode(val, "MapEntry")
            key = entry.get("key", b"").decode("utf-8")
            raw = entry.get("value", b"")
            target = out.setdefault(name, {})
            target[key] = raw.decode("utf-8") if kind == "map_str" else base64.b64encode(raw).decode()
            continue
        else:
            raise _bad(f"unknown schema type {kind}")
        if repeated:
            out.setdefault(name, []).append(item)
        elif item == "" or (kind == "int" and item == 0):
            continue  # gogo protobuf writes zero values that Go's JSON (omitempty) leaves out
        else:
            out[name] = item
    return out


def decode_body(body: bytes) -> Obj:
    """Turn a kubectl protobuf body into the JSON-shaped object it encodes."""
    if not body.startswith(MAGIC):
        raise _bad("missing the k8s protobuf magic prefix")
    envelope = _decode(body[len(MAGIC) :], "Unknown")
    type_meta = envelope.get("typeMeta") or {}
    kind = type_meta.get("kind", "")
    if envelope.get("contentEncoding"):
        raise _bad(f"content encoding {envelope['contentEncoding']!r} is not supported")
    if kind not in KINDS:
        raise ApiError(
            415,
            "UnsupportedMediaType",
            f"the test API server decodes protobuf request bodies only for {', '.join(KINDS)}, "
            f"not {kind or 'an object without kind'}; send application/json instead",
            {},
        )
    obj = _decode(envelope.get("raw", b""), kind)
    return {"apiVersion": type_meta.get("apiVersion", ""), "kind": kind, **obj}
