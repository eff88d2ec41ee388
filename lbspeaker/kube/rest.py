"""Raw JSON access to the Kubernetes API through the official client's connection and auth handling.

The generated model classes are skipped on purpose: decoding every watch event into models costs
more than the rest of a reconcile. Callers get plain dicts (the API's camelCase JSON) and validate
what they read with their own pydantic models or helpers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote

import urllib3
from kubernetes import client

JSON = dict[str, Any]

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


class ApiError(Exception):
    """An API call that returned an error Status (or failed to connect: status 0)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def gone(self) -> bool:
        return self.status == 410


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

    @property
    def host(self) -> str:
        return str(self.api_client.configuration.host)

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
        try:
            # Give the body as a string so the client does not re-encode it by content type.
            resp = self.api_client.rest_client.pool_manager.request(
                method, url, body=data, headers=headers, preload_content=False,
                timeout=urllib3.Timeout(connect=min(self.timeout, 10.0), read=read_timeout),
            )
        except Exception as exc:  # connection refused, reset, timeout: the API is unreachable
            raise ApiError(0, "Unreachable", f"{method} {path}: {exc}") from exc
        if not 200 <= resp.status < 300:
            raw = resp.read()
            resp.release_conn()
            raise _error_from(resp.status, raw, f"{method} {path}")
        return resp

    def request(self, method: str, path: str, *, query: Mapping[str, Any] | None = None, body: Any = None,
                content_type: str | None = None) -> JSON:
        """One request; the decoded JSON body. Raises ApiError."""
        resp = self._open(method, path, query, body, content_type, self.timeout)
        try:
            raw = resp.read()
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

    def watch(self, path: str, query: Mapping[str, Any], read_timeout: float) -> Iterator[JSON]:
        """Stream watch events (``{"type": ..., "object": ...}``) until the server ends the stream.

        Raises ApiError on connection trouble; an ERROR event is yielded as it came.
        """
        resp = self._open("GET", path, {**query, "watch": "true"}, None, None, read_timeout)
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
        except Exception as exc:
            raise ApiError(0, "Unreachable", f"watch {path}: {exc}") from exc
        finally:
            resp.release_conn()
            resp.close()


def _error_from(status: int, raw: bytes, what: str) -> ApiError:
    reason, message = "", raw.decode("utf-8", "replace")[:500]
    try:
        doc = json.loads(raw)
        if isinstance(doc, dict):
            reason = str(doc.get("reason", ""))
            message = str(doc.get("message", message))
    except ValueError:
        pass
    return ApiError(status, reason or "Error", f"{what}: {message}")
