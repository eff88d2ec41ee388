"""Configuration errors: the exception type, the path notation, and pydantic's errors in that notation.

Every message reads ``<path>: <what is wrong, naming the bad value>``, e.g.
``address-pools[1].addresses[0]: invalid CIDR '10.0.0.0/33': ...``, so a user can find the line to fix
without knowing anything about pydantic.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import ValidationError

from lbspeaker.config.scalars import Plain, plain_bool, plain_int

CUSTOM_ERROR = "lbspeaker"  # error type of messages our own validators produce, shown verbatim

_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
MAX_SHOWN = 60  # characters of a user's value a message quotes; longer values are cut
MAX_MESSAGES = 100  # messages reported for one configuration; the rest are counted

# Every key the schema knows, for "did you mean" hints on unknown keys.
KNOWN_KEYS: tuple[str, ...] = (
    "peers", "bgp-communities", "address-pools", "bfd-profiles",
    "peer-address", "peer-asn", "my-asn", "peer-port", "hold-time", "keepalive-time", "router-id",
    "source-address", "password", "password-secret", "ebgp-multihop", "node-selectors", "bfd-profile",
    "name", "key", "match-labels", "match-expressions", "operator", "values",
    "protocol", "addresses", "auto-assign", "avoid-buggy-ips", "bgp-advertisements",
    "aggregation-length", "aggregation-length-v6", "localpref", "communities", "large-communities",
    "receive-interval", "transmit-interval", "detect-multiplier", "echo-interval", "echo-mode",
    "passive-mode", "minimum-ttl",
)  # fmt: skip


def capped(messages: Iterable[str], limit: int = MAX_MESSAGES) -> list[str]:
    """At most ``limit`` messages; beyond that, one line saying how many more there were."""
    out = list(messages)
    if len(out) <= limit:
        return out
    return [*out[:limit], f"... and {len(out) - limit} more errors"]


class ConfigError(ValueError):
    """Invalid configuration. ``errors`` holds one message per problem; str() is all of them, one per line."""

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors: list[str] = list(errors)
        super().__init__("\n".join(self.errors))

    def __str__(self) -> str:
        return "\n".join(self.errors)


def quote(value: object, limit: int = MAX_SHOWN) -> str:
    """``repr`` of a value from the input, cut to ``limit`` characters (with the full length said).

    Every message that names a user's value goes through here (or ``show``), so a megabyte-long name
    or key never lands whole in a log line, an Event or a terminal.
    """
    if isinstance(value, str):
        text = repr(str(value[:limit]))
        return text if len(value) <= limit else f"{text[:-1]}...{text[-1]} ({len(value)} characters)"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}..."


def join_path(base: str, *parts: str | int) -> str:
    """Extend a path: ints become ``[i]``, plain keys ``.key``, anything else ``['key']`` (cut if long)."""
    out = base
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif len(part) <= MAX_SHOWN and _PLAIN_KEY.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{quote(part)}]"
    return out


class _Hidden:
    """Stands in for a value that must not appear in messages (passwords)."""


def show(value: Any) -> str:
    """A short rendering of a bad input value for a message."""
    if isinstance(value, _Hidden):
        return "a value (not shown)"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        kind = "a mapping"
    elif isinstance(value, list | tuple):
        kind = "a list"
    elif isinstance(value, Plain) and (plain_int(value) is not value or plain_bool(value) is not value):
        return str(value) if len(value) <= MAX_SHOWN else quote(value)  # a number or boolean as written
    else:
        return quote(value)
    text = repr(value)  # the YAML bounds keep this small enough to build whole, aliases expanded
    return f"{kind} {text}" if len(text) <= MAX_SHOWN else f"{kind} {text[: MAX_SHOWN - 3]}..."


def _did_you_mean(key: object) -> str:
    if not isinstance(key, str):
        return ""
    close = difflib.get_close_matches(key, KNOWN_KEYS, n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_key(key: object) -> str:
    return f"unknown key {quote(key)}{_did_you_mean(key)}"


def _describe(err: Any) -> str:
    kind = err["type"]
    value = err.get("input")
    ctx = err.get("ctx") or {}
    if kind == CUSTOM_ERROR:
        return str(err["msg"])
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        return unknown_key(err["loc"][-1] if err["loc"] else "?")
    if kind == "bool_type":
        return f"expected a boolean (true or false), got {show(value)}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"expected an integer, got {show(value)}"
    if kind == "string_type":
        return f"expected a string, got {show(value)}"
    if kind in ("list_type", "tuple_type"):
        return f"expected a list, got {show(value)}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"expected a mapping, got {show(value)}"
    if kind == "greater_than_equal":
        return f"must be at least {ctx.get('ge')}, got {show(value)}"
    if kind == "less_than_equal":
        return f"must be at most {ctx.get('le')}, got {show(value)}"
    if kind == "too_short":
        return "must not be empty"
    if kind == "literal_error":
        return f"expected {ctx.get('expected')}, got {show(value)}"
    return f"{err['msg']}, got {show(value)}"


def pydantic_messages(exc: ValidationError, base: str) -> list[str]:
    """pydantic's errors for an object found at path ``base``, in our notation."""
    out = []
    for err in exc.errors(include_url=False):
        loc = [p for p in err["loc"] if p != "[key]"]
        if "password" in loc:
            err = {**err, "input": _Hidden()}
        out.append(f"{join_path(base, *loc) or '(top level)'}: {_describe(err)}")
    return out


_SECTION_ORDER = ("bgp-communities", "bfd-profiles", "peers", "address-pools")
_OBJECT = re.compile(r"^([A-Za-z0-9_-]+)(?:\[(\d+)\])?")


def document_order(messages: Iterable[str]) -> list[str]:
    """Messages grouped by the pool/peer/profile they are about, sections in schema order.

    The sort is stable and looks only at the object, so the messages about one object keep the order
    they were found in (which follows the order of its fields).
    """

    def key(message: str) -> tuple[int, int]:
        found = _OBJECT.match(message)
        section = found.group(1) if found else ""
        rank = _SECTION_ORDER.index(section) if section in _SECTION_ORDER else -1
        return rank, int(found.group(2)) if found and found.group(2) else -1

    return sorted(messages, key=key)


def prefixed(source: str | None, messages: Iterable[str]) -> list[str]:
    """Messages labelled with the ConfigMap (or file) they came from, when that is worth saying."""
    return [f"{source}: {m}" for m in messages] if source else list(messages)
