"""Raw JSON access to the Kubernetes API through the official client's connection and auth handling.

The generated model classes are skipped on purpose: decoding every watch event into models costs
more than the rest of a reconcile. Callers get plain dicts (the API's camelCase JSON) and validate
what they read with their own pydantic models or helpers.

Every call has explicit timeouts (connect: at most 10 s; read: ``timeout``, or the caller's for a
watch) and no hidden retries: urllib3's default of 3 retries made a GET to a server that accepts but
never answers take 4x its timeout. The one retry made here: a GET whose connection dropped before any
answer (a pooled keep-alive connection the server no longer knows, as after its host rebooted or a
link came back) is sent once more, at once, on a fresh connection; the idle connections pooled with
the dead one are closed first, since they come from the same server life. Writes are never resent (the
server may have applied them): they fail with status 0 and the caller retries from a fresh read.
Timeouts are never retried. ``stats`` counts drops, retries and timeouts.
"""

from __future__ import annotations

import http.client
import json
import queue
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import quote

import urllib3
from kubernetes import client

JSON = dict[str, Any]

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"

_DROPPED = (urllib3.exceptions.ProtocolError, ConnectionResetError, BrokenPipeError, ConnectionAbortedError,
            http.client.RemoteDisconnected)
_TIMEOUTS = (urllib3.exceptions.TimeoutError, TimeoutError)


class ApiError(Exception):
    """An API call that returned an error Status (or failed to connect: status 0)."""

    def __init__(self, status: int, reason: str, message: str, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.details: Mapping[str, Any] = details or {}

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def gone(self) -> bool:
        return self.status == 410

    @property
    def invalid(self) -> bool:
        return self.status == 422

    @property
    def unreachable(self) -> bool:
        """No answer at all: refused, reset, timed out (status 0)."""
        return self.status == 0

    @property
    def too_large(self) -> bool:
        """504 "Too large resource version": the server has not reached the version asked for (it has
        state older than the client's: restored, or behind)."""
        causes = self.details.get("causes") or []
        return self.status == 504 and (
            any(isinstance(c, Mapping) and c.get("reason") == "ResourceVersionTooLarge" for c in causes)
            or "Too large resource version" in self.message)


def path_for(api: str, resource: str, namespace: str | None = None, name: str | None = None,
             subresource: str | None = None) -> str:
    """``/api/v1/namespaces/ns/services/name/status`` and the like. ``api`` is "v1" or "group/version"."""
    base = "/api/v1" if api == "v1" else f"/apis/{api}"
    parts = [base]
    if namespace is not None:
        parts.append(f"namespaces/{quote(namespace, safe='')}")
    parts.append(resource)
    if name is not None:
        parts.append(quote(name, safe=""))
    if subresource is not None:
        parts.append(subresource)
    return "/".join(parts)


class Rest:
    """JSON requests and watch streams over an ``ApiClient``."""

    def __init__(self, api_client: client.ApiClient, *, timeout: float = 30.0) -> None:
        self.api_client = api_client
        self.timeout = timeout
        self._stats_lock = threading.Lock()
        self.stats = {"dropped": 0, "retried": 0, "timeouts": 0}

    @property
    def host(self) -> str:
        return str(self.api_client.configuration.host)

    def _count(self, what: str) -> None:
        with self._stats_lock:
            self.stats[what] += 1

    def _open(self, method: str, path: str, query: Mapping[str, Any] | None, body: Any,
              content_type: str | None, read_timeout: float | None) -> Any:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        params = [(k, str(v).lower() if isinstance(v, bool) else str(v)) for k, v in (query or {}).items()
                  if v is not None]
        _, url, headers, _, _ = self.api_client.param_serialize(
            method=method, resource_path=path, query_params=params, header_params=headers,
            auth_settings=["BearerToken"],
        )
        data = None if body is None else json.dumps(body)
        timeout = urllib3.Timeout(connect=min(self.timeout, 10.0), read=read_timeout)
        pool = self.api_client.rest_client.pool_manager
        for attempt in (1, 2):
            try:
                # Give the body as a string so the client does not re-encode it by content type.
                resp = pool.request(method, url, body=data, headers=headers, preload_content=False,
                                    timeout=timeout, retries=False)
                break
            except urllib3.exceptions.NewConnectionError as exc:  # refused (a ConnectTimeoutError subclass)
                raise ApiError(0, "Unreachable", f"{method} {path}: {exc}") from exc
            except _TIMEOUTS as exc:
                self._count("timeouts")
                raise ApiError(0, "Unreachable", f"{method} {path}: timed out: {exc}") from exc
            except _DROPPED as exc:
                self._count("dropped")
                _close_idle(pool, url)
                if method != "GET" or attempt == 2:
                    raise ApiError(0, "Unreachable", f"{method} {path}: connection dropped: {exc}") from exc
                self._count("retried")
            except Exception as exc:  # refused, DNS, TLS: the API is unreachable
                raise ApiError(0, "Unreachable", f"{method} {path}: {exc}") from exc
        if not 200 <= resp.status < 300:
            try:
                raw = resp.read()
            except Exception as exc:
                raise ApiError(0, "Unreachable", f"{method} {path}: {exc}") from exc
            finally:
                resp.release_conn()
            raise _error_from(resp.status, raw, f"{method} {path}")
        return resp

    def request(self, method: str, path: str, *, query: Mapping[str, Any] | None = None, body: Any = None,
                content_type: str | None = None) -> JSON:
        """One request; the decoded JSON body. Raises ApiError."""
        resp = self._open(method, path, query, body, content_type, self.timeout)
        try:
            raw = resp.read()
        except _TIMEOUTS as exc:
            self._count("timeouts")
            raise ApiError(0, "Unreachable", f"{method} {path}: timed out: {exc}") from exc
        except Exception as exc:
            raise ApiError(0, "Unreachable", f"{method} {path}: {exc}") from exc
        finally:
            resp.release_conn()
        if not raw:
            return {}
        result: JSON = json.loads(raw)
        return result

    def get(self, path: str, **query: Any) -> JSON:
        return self.request("GET", path, query=query)

    def watch(self, path: str, query: Mapping[str, Any], read_timeout: float,
              on_open: Callable[[], None] | None = None) -> Iterator[JSON]:
        """Stream watch events (``{"type": ..., "object": ...}``) until the server ends the stream.

        ``read_timeout`` bounds the silence between two reads (events or bookmarks); ``on_open`` is
        called once the server has answered 200. Raises ApiError on connection trouble; an ERROR event
        is yielded as it came.
        """
        resp = self._open("GET", path, {**query, "watch": "true"}, None, None, read_timeout)
        if on_open is not None:
            on_open()
        buf = b""
        try:
            for chunk in resp.stream(65536, decode_content=True):
                buf += chunk
                while True:
                    nl = buf.find(b"\n")
                    if nl < 0:
                        break
                    line, buf = buf[:nl], buf[nl + 1:]
                    if line.strip():
                        yield json.loads(line)
            if buf.strip():
                yield json.loads(buf)
        except ApiError:
            raise
        except _TIMEOUTS as exc:
            self._count("timeouts")
            raise ApiError(0, "Unreachable", f"watch {path}: no data for {read_timeout:g}s: {exc}") from exc
        except Exception as exc:
            raise ApiError(0, "Unreachable", f"watch {path}: {exc}") from exc
        finally:
            resp.release_conn()
            resp.close()


def _close_idle(pool: urllib3.PoolManager, url: str) -> None:
    """Close the idle pooled connections to ``url``'s server (the dead one's siblings) without closing
    the pool itself, so requests running on other threads are not disturbed."""
    try:
        conn_pool = pool.connection_from_url(url)
        idle: queue.LifoQueue[Any] | None = getattr(conn_pool, "pool", None)
        if idle is None:
            return
        taken = []
        while True:
            try:
                taken.append(idle.get(block=False))
            except queue.Empty:
                break
        for conn in taken:
            if conn is not None:
                conn.close()
            idle.put(None)  # keep the pool's count of slots
    except Exception:  # best effort: the retry then finds a dead connection and fails as before
        return


def _error_from(status: int, raw: bytes, what: str) -> ApiError:
    reason, message = "", raw.decode("utf-8", "replace")[:500]
    details: dict[str, Any] = {}
    try:
        doc = json.loads(raw)
        if isinstance(doc, dict):
            reason = str(doc.get("reason", ""))
            message = str(doc.get("message", message))
            if isinstance(doc.get("details"), dict):
                details = doc["details"]
    except ValueError:
        pass
    return ApiError(status, reason or "Error", f"{what}: {message}", details)


def error_from_status(status: Mapping[str, Any]) -> ApiError:
    """The ApiError a watch ERROR event's Status object stands for."""
    details = status.get("details")
    return ApiError(int(status.get("code") or 0), str(status.get("reason", "")),
                    str(status.get("message", "watch error")), details if isinstance(details, Mapping) else None)
