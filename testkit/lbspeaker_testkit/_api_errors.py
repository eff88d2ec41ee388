"""Kubernetes-shaped API errors for the test API server.

Every failure the server reports is a ``kind: Status`` object with the same ``reason``, ``code``,
``message`` wording and ``details`` layout kube-apiserver uses, so clients (the official Python
client, kubectl, client-go) classify them exactly as they would against a real cluster.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]


def _go_quote(value: Any) -> str:
    """Render a value the way Go's field errors do (%q for strings, %v otherwise)."""
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


@dataclass(frozen=True)
class FieldError:
    """One validation failure on one field, like apimachinery's field.Error."""

    kind: str  # Required, Invalid, NotSupported, Forbidden, Duplicate, TooMany
    path: str
    detail: str = ""
    value: Any = None
    supported: tuple[str, ...] = ()

    @property
    def reason(self) -> str:
        return {
            "Required": "FieldValueRequired",
            "Invalid": "FieldValueInvalid",
            "NotSupported": "FieldValueNotSupported",
            "Forbidden": "FieldValueForbidden",
            "Duplicate": "FieldValueDuplicate",
            "TooMany": "FieldValueTooMany",
        }[self.kind]

    def body(self) -> str:
        """The message without the field path (what goes into a Status cause)."""
        if self.kind == "Required":
            head = "Required value"
        elif self.kind == "Invalid":
            head = f"Invalid value: {_go_quote(self.value)}"
        elif self.kind == "NotSupported":
            head = f"Unsupported value: {_go_quote(self.value)}"
            if self.supported:
                return head + ": supported values: " + ", ".join(_go_quote(s) for s in self.supported)
        elif self.kind == "Duplicate":
            head = f"Duplicate value: {_go_quote(self.value)}"
        elif self.kind == "TooMany":
            head = "Too many"
        else:
            head = "Forbidden"
        return f"{head}: {self.detail}" if self.detail else head

    def __str__(self) -> str:
        return f"{self.path}: {self.body()}"


def required(path: str, detail: str = "") -> FieldError:
    return FieldError("Required", path, detail)


def invalid(path: str, value: Any, detail: str) -> FieldError:
    return FieldError("Invalid", path, detail, value)


def not_supported(path: str, value: Any, supported: tuple[str, ...]) -> FieldError:
    return FieldError("NotSupported", path, "", value, supported)


def forbidden(path: str, detail: str) -> FieldError:
    return FieldError("Forbidden", path, detail)


def duplicate(path: str, value: Any) -> FieldError:
    return FieldError("Duplicate", path, "", value)


@dataclass
class ApiError(Exception):
    """An error answered to the client as a Status object with HTTP ``code``."""

    code: int
    reason: str
    message: str
    details: Obj | None = None
    retry_after: int | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.code} {self.reason}: {self.message}"

    def status(self) -> Obj:
        out: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            out["details"] = self.details
        return out


def qualified_resource(resource: str, group: str) -> str:
    """``services`` or ``leases.coordination.k8s.io``, as in real error messages."""
    return f"{resource}.{group}" if group else resource


def _details(name: str, resource: str, group: str) -> Obj:
    d: Obj = {"name": name}
    if group:
        d["group"] = group
    d["kind"] = resource
    return d


def not_found(resource: str, group: str, name: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'{qualified_resource(resource, group)} "{name}" not found',
        _details(name, resource, group),
    )


def already_exists(resource: str, group: str, name: str) -> ApiError:
    return ApiError(
        409,
        "AlreadyExists",
        f'{qualified_resource(resource, group)} "{name}" already exists',
        _details(name, resource, group),
    )


def conflict(resource: str, group: str, name: str, why: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {qualified_resource(resource, group)} "{name}": {why}',
        _details(name, resource, group),
    )


MODIFIED_CONFLICT = (
    "the object has been modified; please apply your changes to the latest version and try again"
)


def invalid_object(kind: str, group: str, name: str, errors: list[FieldError]) -> ApiError:
    """apimachinery's NewInvalid; empty name and kind are left out of ``details`` (omitempty), as in a
    patch that fails to decode (``"" "" is invalid: patch: ...``)."""
    summary = str(errors[0]) if len(errors) == 1 else "[" + ", ".join(str(e) for e in errors) + "]"
    details: Obj = {"name": name} if name else {}
    if group:
        details["group"] = group
    if kind:
        details["kind"] = kind
    details["causes"] = [{"reason": e.reason, "message": e.body(), "field": e.path} for e in errors]
    return ApiError(
        422, "Invalid", f'{kind}{"." + group if group else ""} "{name}" is invalid: {summary}', details
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def expired(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def method_not_allowed(
    message: str = "the server does not allow this method on the requested resource",
) -> ApiError:
    return ApiError(405, "MethodNotAllowed", message, {})


def unsupported_media_type(content_type: str) -> ApiError:
    return ApiError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format - "
        f"accepted media types include: application/json-patch+json, "
        f"application/merge-patch+json, application/strategic-merge-patch+json "
        f"(got {content_type!r})",
        {},
    )


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def forbidden_error(resource: str, group: str, name: str, message: str) -> ApiError:
    return ApiError(403, "Forbidden", message, _details(name, resource, group))


def timeout_error(message: str, retry_after: int = 1) -> ApiError:
    """apimachinery's NewTimeoutError: 504, reason Timeout, the message prefixed with "Timeout: "."""
    return ApiError(
        504, "Timeout", f"Timeout: {message}", {"retryAfterSeconds": retry_after}, retry_after=retry_after
    )


def too_large_resource_version(requested: int, current: int) -> ApiError:
    """What the watch cache answers when asked for a resourceVersion it has not reached within 3 s: a 504
    Timeout whose one cause is ``ResourceVersionTooLarge`` (to a list as an HTTP error, to a watch as an
    ERROR event), with Retry-After: 1."""
    err = timeout_error(f"Too large resource version: {requested}, current: {current}")
    assert err.details is not None
    err.details["causes"] = [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}]
    return err


def internal_error(message: str) -> ApiError:
    return ApiError(
        500, "InternalError", f"Internal error occurred: {message}", {"causes": [{"message": message}]}
    )
