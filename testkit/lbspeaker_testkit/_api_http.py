"""HTTP/1.1 front end of the test API server: routing, content negotiation, auth, watch streaming.

One thread per connection (keep-alive). Watches are chunked JSON streams fed from a ``Watcher`` queue;
their threads sleep on a condition and wake only for events, bookmarks, the stream deadline or a
periodic check that the client is still connected.
"""

from __future__ import annotations

import contextlib
import json
import logging
import select
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from lbspeaker_testkit import _api_discovery as discovery
from lbspeaker_testkit import _api_errors as errors
from lbspeaker_testkit import _api_openapi as openapi
from lbspeaker_testkit import _api_protobuf as protobuf
from lbspeaker_testkit._api_errors import ApiError
from lbspeaker_testkit._api_resources import BY_PATH, ResourceInfo
from lbspeaker_testkit._api_schema import Decoder
from lbspeaker_testkit._api_selectors import Selector, parse_field_selector, parse_label_selector
from lbspeaker_testkit._api_store import Store, Watcher, encode_stored_event, with_rv
from lbspeaker_testkit._api_tables import table

Obj = dict[str, Any]
log = logging.getLogger("lbspeaker_testkit.apiserver")

MAX_BODY_BYTES = 3 * 1024 * 1024
DEFAULT_WATCH_TIMEOUT = 1800.0
PEER_CHECK_SECONDS = 5.0
UNAUTHENTICATED_PATHS = frozenset({"/healthz", "/livez", "/readyz", "/version"})
BODY_TYPES = ("application/json", "application/yaml", protobuf.MEDIA_TYPE)
PATCH_TYPES = {
    "application/json-patch+json": "json",
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
}


def _bearer_matches(header: str, token: str) -> bool:
    """kube-apiserver's bearer token check: the scheme in any case ("bearer " is what the Python
    client's in-cluster config sends), then the token up to the next space."""
    parts = header.strip().split(" ")
    return len(parts) >= 2 and parts[0].lower() == "bearer" and parts[1] == token


class ServerState:
    """What every handler thread shares: the store, settings, counters, open connections."""

    def __init__(
        self,
        store: Store,
        token: str | None,
        bookmark_interval: float,
        log_requests: bool,
        version: tuple[int, int] = discovery.DEFAULT_VERSION,
    ) -> None:
        self.store = store
        self.token = token
        self.bookmark_interval = bookmark_interval
        self.log_requests = log_requests
        self.version = version
        self.counts: Counter[tuple[str, ...]] = Counter()
        self.counts_lock = threading.Lock()
        self.paused = threading.Event()
        # "accept but never answer": requests are read, then held without a reply until cleared
        self.silent = threading.Event()
        self.answering = threading.Event()
        self.answering.set()
        self.connections: set[socket.socket] = set()
        self.streaming: set[socket.socket] = set()  # connections serving a watch
        self.forgotten: set[socket.socket] = set()  # answered by a reset on their next request
        self.conn_lock = threading.Lock()
        self.server_address = ""

    def count(self, key: tuple[str, ...]) -> None:
        with self.counts_lock:
            self.counts[key] += 1

    def drop_connections(self) -> None:
        with self.conn_lock:
            conns = list(self.connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def forget_connections(self) -> None:
        """Act as a peer that lost its TCP state: open watch streams break at once, idle keep-alive
        connections are reset when their next request arrives (what a client sees after the server's
        host rebooted or the link came back: the first request on a pooled connection fails)."""
        with self.conn_lock:
            self.forgotten |= self.connections - self.streaming
            streams = list(self.streaming)
        for conn in streams:
            with contextlib.suppress(OSError):
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.shutdown(socket.SHUT_RDWR)


class APIHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], state: ServerState) -> None:
        self.state = state
        super().__init__(address, Handler)


class _Route:
    """A parsed resource URL."""

    def __init__(self, res: ResourceInfo, namespace: str, name: str, subresource: str) -> None:
        self.res = res
        self.namespace = namespace
        self.name = name
        self.subresource = subresource


def _not_found_path() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


def _media_type(header: str | None) -> str:
    return (header or "").split(";", 1)[0].strip().lower()


def _accept_params(accept: str) -> list[dict[str, str]]:
    out = []
    for part in accept.split(","):
        fields = [f.strip() for f in part.split(";")]
        params = {"type": fields[0].lower()}
        for f in fields[1:]:
            if "=" in f:
                k, v = f.split("=", 1)
                params[k.strip().lower()] = v.strip()
        out.append(params)
    return out


def _wants(accept: str, as_kind: str) -> bool:
    return any(
        p.get("as") == as_kind and p["type"] in ("application/json", "*/*") for p in _accept_params(accept)
    )


def _bool_param(value: str | None) -> bool:
    return value is not None and value.lower() in ("true", "1")


def route(path: str) -> _Route | None:
    """Map a resource URL to (resource, namespace, name, subresource); None if not a resource URL."""
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    if not rest:
        return None
    ns = ""
    if rest[0] == "namespaces" and len(rest) >= 3:
        candidate = BY_PATH.get((group, version, rest[2]))
        if candidate is not None and candidate.namespaced:
            ns, rest = rest[1], rest[2:]
    res = BY_PATH.get((group, version, rest[0]))
    if res is None or len(rest) > 3:
        raise _not_found_path()
    name = rest[1] if len(rest) > 1 else ""
    sub = rest[2] if len(rest) > 2 else ""
    if sub and (sub != "status" or not res.status_subresource):
        raise _not_found_path()
    if not res.namespaced and ns:
        raise _not_found_path()
    if res.namespaced and name and not ns:
        raise _not_found_path()
    return _Route(res, ns, name, sub)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "lbspeaker-test-apiserver"
    server: APIHTTPServer
    timeout = 600  # idle keep-alive connections are closed after this long

    # --- connection bookkeeping -----------------------------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        state = self.server.state
        with state.conn_lock:
            state.connections.add(self.connection)

    def finish(self) -> None:
        state = self.server.state
        with state.conn_lock:
            state.connections.discard(self.connection)
            state.streaming.discard(self.connection)
            state.forgotten.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.state.log_requests:
            log.info("%s %s", self.address_string(), format % args)

    def log_error(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    # --- response helpers -----------------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        self.wfile.write(data)

    def _send_bytes(
        self,
        code: int,
        body: bytes,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "Unknown"
        lines = [
            f"HTTP/1.1 {code} {phrase}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}",
            "Cache-Control: no-cache, private",
        ]
        for k, v in (headers or {}).items():
            lines.append(f"{k}: {v}")
        if self.close_connection:
            lines.append("Connection: close")
        self._write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        if self.server.state.log_requests:
            self.log_request(code, len(body))

    def _send_json(self, code: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send_bytes(code, json.dumps(obj, separators=(",", ":")).encode(), headers=headers)

    def _send_error(self, exc: ApiError) -> None:
        headers = dict(exc.extra_headers)
        if exc.retry_after is not None:
            headers["Retry-After"] = str(exc.retry_after)
        self._send_json(exc.code, exc.status(), headers)

    # --- request parsing ------------------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            total = 0
            while True:
                size_line = self.rfile.readline(1024)
                try:
                    size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                except ValueError:
                    self.close_connection = True
                    raise errors.bad_request("malformed chunked request body") from None
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                total += size
                if total > MAX_BODY_BYTES:
                    self.close_connection = True
                    raise ApiError(413, "RequestEntityTooLarge", "request entity too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline(1024)
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            raise ApiError(413, "RequestEntityTooLarge", "request entity too large")
        return self.rfile.read(length) if length > 0 else b""

    def _decode(self, raw: bytes, media: str) -> Any:
        if not raw.strip():
            raise errors.bad_request("the request body is empty")
        if media == protobuf.MEDIA_TYPE:
            return protobuf.decode_body(raw)
        try:
            if media in (
                "application/yaml",
                "application/x-yaml",
                "text/yaml",
                "application/apply-patch+yaml",
            ):
                return yaml.safe_load(raw)
            return json.loads(raw)
        except (ValueError, yaml.YAMLError) as exc:
            raise errors.bad_request(f"the body of the request could not be decoded: {exc}") from None

    # --- dispatch -------------------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        state = self.server.state
        if state.paused.is_set():
            self.close_connection = True
            return
        with state.conn_lock:
            forgotten = self.connection in state.forgotten
        if forgotten:
            self._reset()
            return
        split = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        try:
            raw = self._read_body() if method in ("POST", "PUT", "PATCH", "DELETE") else b""
            if state.silent.is_set():
                self._hold()
                return
            if (
                state.token is not None
                and split.path not in UNAUTHENTICATED_PATHS
                and not _bearer_matches(self.headers.get("Authorization", ""), state.token)
            ):
                raise errors.unauthorized()
            self._handle(method, split.path, query, raw)
        except ApiError as exc:
            api_err = exc
            self._safe(lambda: self._send_error(api_err))
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError):
            self.close_connection = True
        except Exception as exc:  # the server must survive any bad request
            log.exception("internal error serving %s %s", method, self.path)
            internal = errors.internal_error(f"{type(exc).__name__}: {exc}")
            self._safe(lambda: self._send_error(internal))

    def _reset(self) -> None:
        """Close with a TCP reset and no answer."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()

    def _hold(self) -> None:
        """Silent mode: the request has been read; answer nothing until the mode ends (or the server
        stops), then close the connection, still without an answer."""
        state = self.server.state
        while state.silent.is_set() and not state.paused.is_set():
            state.answering.wait(0.2)
        self.close_connection = True

    def _safe(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except OSError:
            self.close_connection = True

    def _handle(self, method: str, path: str, query: dict[str, str], raw: bytes) -> None:
        if self._discovery(method, path):
            return
        r = route(path)
        if r is None:
            raise _not_found_path()
        res, state = r.res, self.server.state
        if r.subresource:
            verb = {"GET": "get", "PUT": "update", "PATCH": "patch"}.get(method)
        elif r.name:
            verb = {"GET": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method)
        else:
            verb = {
                "GET": "watch" if _bool_param(query.get("watch")) else "list",
                "POST": "create",
                "DELETE": "deletecollection",
            }.get(method)
        if verb is None:
            raise errors.method_not_allowed()
        state.count((verb, res.plural, r.subresource) if r.subresource else (verb, res.plural))
        dry_run = query.get("dryRun") == "All"
        if not dry_run and query.get("dryRun") not in (None, ""):
            raise errors.bad_request(
                f'dryRun: Unsupported value: {query.get("dryRun")!r}: supported values: "All"'
            )
        store = state.store
        accept = self.headers.get("Accept", "")
        if verb == "get":
            obj = store.get(res, r.namespace, r.name)
            self._send_object(res, obj, 200, accept, query)
        elif verb == "list":
            self._list(res, r.namespace, query, accept)
        elif verb == "watch":
            self._watch(res, r.namespace, query, accept)
        elif verb == "create":
            body = self._decode(raw, self._content_type(BODY_TYPES))
            decoder = Decoder(res, query.get("fieldValidation") or "Warn", version=state.version)
            obj = store.create(res, r.namespace, body, dry_run, decoder)
            self._send_object(res, obj, 201, accept, query, decoder.warnings())
        elif verb == "update":
            body = self._decode(raw, self._content_type(BODY_TYPES))
            decoder = Decoder(res, query.get("fieldValidation") or "Warn", version=state.version)
            obj, created = store.update(res, r.namespace, r.name, body, r.subresource, dry_run, decoder)
            self._send_object(res, obj, 201 if created else 200, accept, query, decoder.warnings())
        elif verb == "patch":
            media = _media_type(self.headers.get("Content-Type"))
            patch_type = PATCH_TYPES.get(media)
            if patch_type is None:
                raise errors.unsupported_media_type(media)
            patch = self._decode(raw, media)
            decoder = Decoder(
                res, query.get("fieldValidation") or "Warn", (patch_type, patch), version=state.version
            )
            obj = store.patch(
                res,
                r.namespace,
                r.name,
                patch_type,
                patch,
                r.subresource,
                dry_run,
                decoder,
            )
            self._send_object(res, obj, 200, accept, query, decoder.warnings())
        elif verb == "delete":
            # DeleteOptions from typed Go clients may be protobuf; only their preconditions matter here and
            # those are rare, so such a body is treated as "no options" rather than refused
            protobuf_body = _media_type(self.headers.get("Content-Type")) == protobuf.MEDIA_TYPE
            options = self._decode(raw, "application/json") if raw.strip() and not protobuf_body else {}
            if not isinstance(options, dict):
                raise errors.bad_request("DeleteOptions must be a JSON object")
            obj, now = store.delete(res, r.namespace, r.name, options, dry_run)
            if not now or res.return_deleted_object:
                self._send_object(res, obj, 200 if now else 202, accept, query)
            else:
                details: Obj = {"name": r.name}
                if res.group:
                    details["group"] = res.group
                details["kind"] = res.plural
                details["uid"] = obj["metadata"].get("uid")
                self._send_json(
                    200,
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "metadata": {},
                        "status": "Success",
                        "details": details,
                    },
                )
        else:  # deletecollection
            labels, fields = self._selectors(res, query)
            store.delete_collection(res, r.namespace, labels, fields, dry_run)
            self._send_json(200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})

    def _content_type(self, allowed: tuple[str, ...]) -> str:
        media = _media_type(self.headers.get("Content-Type")) or "application/json"
        if media not in (*allowed, "application/x-yaml", "text/yaml", "*/*"):
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - "
                f"accepted media types include: {', '.join(allowed)} (got {media!r})",
                {},
            )
        return media

    def _discovery(self, method: str, path: str) -> bool:
        path = path.rstrip("/") or "/"
        state = self.server.state
        doc: Obj | None
        if path in ("/healthz", "/livez", "/readyz"):
            if method != "GET":
                raise errors.method_not_allowed()
            self._send_bytes(200, b"ok", "text/plain; charset=utf-8")
            return True
        parts = [p for p in path.split("/") if p]
        if path == "/version":
            doc = discovery.version(state.version)
        elif path == "/api":
            doc = discovery.api_versions(state.server_address)
        elif path == "/apis":
            doc = discovery.api_group_list()
        elif len(parts) == 2 and parts[0] == "api":
            doc = discovery.api_resource_list("", parts[1])
            if doc is None:
                raise _not_found_path()
        elif len(parts) == 2 and parts[0] == "apis":
            doc = discovery.api_group(parts[1])
            if doc is None:
                raise _not_found_path()
        elif len(parts) == 3 and parts[0] == "apis":
            doc = discovery.api_resource_list(parts[1], parts[2])
            if doc is None:
                raise _not_found_path()
        elif path == "/openapi/v3":
            doc = openapi.v3_root()
        elif len(parts) > 2 and parts[:2] == ["openapi", "v3"]:
            doc = openapi.v3_document("/".join(parts[2:]))
            if doc is None:
                raise _not_found_path()
        else:
            return False
        if method != "GET":
            raise errors.method_not_allowed()
        state.count(("get", "discovery"))
        self._send_json(200, doc)
        return True

    # --- reads ----------------------------------------------------------------------------------------------

    def _send_object(
        self,
        res: ResourceInfo,
        obj: Obj,
        code: int,
        accept: str,
        query: dict[str, str],
        warnings: list[str] | None = None,
    ) -> None:
        headers = {}
        if warnings:
            # one header field, comma-joined, as RFC 7234 allows and client-go parses
            headers["Warning"] = ", ".join(
                '299 - "' + w.replace("\\", "\\\\").replace('"', '\\"') + '"' for w in warnings
            )
        if _wants(accept, "Table"):
            self._send_json(code, table(res, [obj], None, query.get("includeObject") or "Metadata"), headers)
        elif _wants(accept, "PartialObjectMetadata"):
            self._send_json(
                code,
                {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": obj.get("metadata", {}),
                },
                headers,
            )
        else:
            self._send_json(
                code, {"kind": res.kind, "apiVersion": res.api_version, **res.to_view(obj)}, headers
            )

    def _selectors(self, res: ResourceInfo, query: dict[str, str]) -> tuple[Selector, Selector]:
        fields = parse_field_selector(query.get("fieldSelector"), res.selectable_fields())
        return parse_label_selector(query.get("labelSelector")), fields

    def _list(self, res: ResourceInfo, ns: str, query: dict[str, str], accept: str) -> None:
        labels, fields = self._selectors(res, query)
        limit_raw = query.get("limit") or "0"
        try:
            limit = max(0, int(limit_raw))
        except ValueError:
            raise errors.bad_request(f"invalid limit {limit_raw!r}") from None
        rv = query.get("resourceVersion") or ""
        match = query.get("resourceVersionMatch") or ""
        token = query.get("continue") or ""
        if match and match not in ("Exact", "NotOlderThan"):
            raise ApiError(
                422,
                "Invalid",
                f'resourceVersionMatch: Unsupported value: "{match}": supported values: '
                '"Exact", "NotOlderThan"',
                {},
            )
        if match and not rv:
            raise ApiError(
                422,
                "Invalid",
                "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden "
                "unless resourceVersion is provided",
                {},
            )
        if token and rv not in ("", "0"):
            raise ApiError(
                422,
                "Invalid",
                "resourceVersion: Forbidden: specifying resource version is not allowed when using continue",
                {},
            )
        if match == "Exact" and rv == "0":
            raise ApiError(
                422,
                "Invalid",
                'resourceVersionMatch: Forbidden: resourceVersionMatch "exact" is '
                'forbidden for resourceVersion "0"',
                {},
            )
        result = self.server.state.store.list_objects(res, ns, labels, fields, limit, token, rv, match)
        if _wants(accept, "Table"):
            self._send_json(
                200,
                table(
                    res,
                    result.items,
                    result.resource_version,
                    query.get("includeObject") or "Metadata",
                    result.continue_token,
                    result.remaining,
                ),
            )
            return
        partial = _wants(accept, "PartialObjectMetadataList")
        meta: Obj = {"resourceVersion": str(result.resource_version)}
        if result.continue_token:
            meta["continue"] = result.continue_token
        if result.remaining is not None:
            meta["remainingItemCount"] = result.remaining
        if partial:
            items: list[Obj] = [
                {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": o.get("metadata", {}),
                }
                for o in result.items
            ]
            body: Obj = {
                "kind": "PartialObjectMetadataList",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": meta,
                "items": items,
            }
        else:
            body = {
                "kind": res.list_kind,
                "apiVersion": res.api_version,
                "metadata": meta,
                "items": [res.to_view(o) for o in result.items],
            }
        self._send_json(200, body)

    # --- watch ----------------------------------------------------------------------------------------------

    def _chunk(self, data: bytes) -> None:
        self._write(b"%x\r\n%s\r\n" % (len(data), data))

    def _peer_closed(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            return bool(self.connection.recv(1, socket.MSG_PEEK) == b"")
        except (OSError, ValueError):
            return True

    def _watch(self, res: ResourceInfo, ns: str, query: dict[str, str], accept: str) -> None:
        state = self.server.state
        labels, fields = self._selectors(res, query)
        timeout_raw = query.get("timeoutSeconds")
        try:
            timeout = float(timeout_raw) if timeout_raw else DEFAULT_WATCH_TIMEOUT
        except ValueError:
            raise errors.bad_request(f"invalid timeoutSeconds {timeout_raw!r}") from None
        bookmarks = _bool_param(query.get("allowWatchBookmarks"))
        send_initial_raw = query.get("sendInitialEvents")
        send_initial = None if send_initial_raw is None else _bool_param(send_initial_raw)
        if send_initial and (not bookmarks or query.get("resourceVersionMatch") != "NotOlderThan"):
            raise ApiError(
                422,
                "Invalid",
                "sendInitialEvents: Forbidden: sendInitialEvents is forbidden for watch "
                "unless allowWatchBookmarks=true and resourceVersionMatch=NotOlderThan",
                {},
            )
        as_table = _wants(accept, "Table")
        include = query.get("includeObject") or "Metadata"
        expired: ApiError | None = None
        watcher: Watcher | None = None
        try:
            watcher, backlog, start_rv = state.store.watch(
                res,
                ns,
                labels,
                fields,
                query.get("resourceVersion") or "",
                send_initial,
                max(1000, state.store.history_size),
            )
        except ApiError as exc:
            # as the cacher does: once the resourceVersion has parsed, failures (410 Expired, 504 Too
            # large resource version) are an ERROR event on a 200 stream, not an HTTP error
            if exc.code == 400:
                raise
            expired = exc
        self._write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCache-Control: no-cache, private\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        if state.log_requests:
            self.log_request(200, "-")
        first = [True]

        def encode(etype: str, obj: Obj) -> bytes:
            if as_table:
                tbl = table(res, [obj], None, include, with_columns=first[0])
                first[0] = False
                return json.dumps({"type": etype, "object": tbl}, separators=(",", ":")).encode() + b"\n"
            body = {
                "type": etype,
                "object": {"kind": res.kind, "apiVersion": res.api_version, **res.to_view(obj)},
            }
            return json.dumps(body, separators=(",", ":")).encode() + b"\n"

        def bookmark(rv: int, initial_end: bool = False) -> bytes:
            meta: Obj = {"resourceVersion": str(rv), "creationTimestamp": None}
            if initial_end:
                meta["annotations"] = {"k8s.io/initial-events-end": "true"}
            obj = {"kind": res.kind, "apiVersion": res.api_version, "metadata": meta}
            return json.dumps({"type": "BOOKMARK", "object": obj}, separators=(",", ":")).encode() + b"\n"

        if expired is not None or watcher is None:
            assert expired is not None
            self._chunk(
                json.dumps({"type": "ERROR", "object": expired.status()}, separators=(",", ":")).encode()
                + b"\n"
            )
            self._write(b"0\r\n\r\n")
            return
        with state.conn_lock:
            state.streaming.add(self.connection)
        try:
            self._stream(
                watcher,
                backlog,
                start_rv,
                send_initial is True,
                bookmarks,
                timeout,
                as_table,
                encode,
                bookmark,
            )
        finally:
            state.store.unwatch(watcher)
            with state.conn_lock:
                state.streaming.discard(self.connection)

    def _stream(
        self,
        w: Watcher,
        backlog: list[tuple[str, Obj]],
        start_rv: int,
        initial_end: bool,
        bookmarks: bool,
        timeout: float,
        as_table: bool,
        encode: Callable[[str, Obj], bytes],
        bookmark: Callable[..., bytes],
    ) -> None:
        state = self.server.state
        started = time.monotonic()
        deadline = started + max(0.0, timeout)
        interval = state.bookmark_interval if state.bookmark_interval > 0 else float("inf")
        next_bookmark = started + interval if bookmarks else float("inf")
        for etype, obj in backlog:
            self._chunk(encode(etype, obj))
        if initial_end:
            self._chunk(bookmark(start_rv, True))
        next_peer_check = started + PEER_CHECK_SECONDS
        while True:
            now = time.monotonic()
            if now >= deadline or state.paused.is_set():
                break
            events = w.take(max(0.0, min(deadline, next_bookmark, next_peer_check) - now))
            if state.paused.is_set():
                self.close_connection = True
                return
            if state.silent.is_set():
                self._hold()  # the stream goes quiet; the client resumes from what it last saw
                return
            for ev in events:
                conv = w.convert(ev)
                if conv is None:
                    continue
                etype, as_prev = conv
                if as_table:
                    self._chunk(encode(etype, with_rv(ev.prev, ev.rv) if as_prev and ev.prev else ev.obj))
                else:
                    self._chunk(encode_stored_event(w.res, ev, etype, as_prev))
            if w.closed and not events:
                break
            now = time.monotonic()
            if now >= next_bookmark:
                rv = state.store.bookmark_rv(w)
                if rv is not None:
                    self._chunk(bookmark(rv))
                next_bookmark = now + interval
            if now >= next_peer_check:
                if self._peer_closed():
                    self.close_connection = True
                    return
                next_peer_check = now + PEER_CHECK_SECONDS
        if state.paused.is_set():
            self.close_connection = True
            return
        with state.conn_lock:  # idle again once the client has the end of the stream
            state.streaming.discard(self.connection)
        self._write(b"0\r\n\r\n")
