"""Timestamps as kube-apiserver decodes and re-encodes them.

``metav1.Time`` fields accept RFC 3339 (a zone is required; a fraction is allowed and dropped) and are
returned as ``2006-01-02T15:04:05Z``. ``metav1.MicroTime`` fields require exactly six fractional digits
and a zone, and are returned as ``2006-01-02T15:04:05.000000Z``. A value the real decoder rejects is a
400 here too, so client code that writes naive or oddly formatted times fails in tests, not in production.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from typing import Any

from lbspeaker_testkit._api_errors import ApiError

Obj = dict[str, Any]

_RFC3339 = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
TIME_LAYOUT = "2006-01-02T15:04:05Z07:00"
MICRO_LAYOUT = "2006-01-02T15:04:05.000000Z07:00"

# resource plural -> paths of Time ("s") and MicroTime ("us") fields; "[]" walks a list
TIME_FIELDS: dict[str, tuple[tuple[str, str], ...]] = {
    "leases": (("spec.acquireTime", "us"), ("spec.renewTime", "us")),
    "events": (
        ("firstTimestamp", "s"),
        ("lastTimestamp", "s"),
        ("eventTime", "us"),
        ("series.lastObservedTime", "us"),
    ),
    "nodes": (
        ("status.conditions[].lastHeartbeatTime", "s"),
        ("status.conditions[].lastTransitionTime", "s"),
    ),
    "pods": (
        ("status.conditions[].lastProbeTime", "s"),
        ("status.conditions[].lastTransitionTime", "s"),
        ("status.startTime", "s"),
    ),
    "services": (("status.conditions[].lastTransitionTime", "s"),),
    "namespaces": (("status.conditions[].lastTransitionTime", "s"),),
}


def _parse(value: str, micro: bool) -> dt.datetime | None:
    m = _RFC3339.match(value)
    if m is None:
        return None
    frac = m.group(7) or ""
    if micro and len(frac) != 7:
        return None
    zone = m.group(8)
    tz = (
        dt.UTC
        if zone in ("Z", "z")
        else dt.timezone(
            (1 if zone[0] == "+" else -1) * dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
        )
    )
    try:
        stamp = dt.datetime(
            int(m.group(1)),
            int(m.group(2)),
            int(m.group(3)),
            int(m.group(4)),
            int(m.group(5)),
            int(m.group(6)),
            int(frac[1:7].ljust(6, "0")) if frac else 0,
            tzinfo=tz,
        )
    except ValueError:
        return None
    return stamp.astimezone(dt.UTC)


def _slots(obj: Any, parts: list[str]) -> Iterator[tuple[Obj, str]]:
    """(container, key) for every place the dotted path reaches."""
    if not parts or not isinstance(obj, dict):
        return
    head, rest = parts[0], parts[1:]
    if head.endswith("[]"):
        items = obj.get(head[:-2])
        for item in items if isinstance(items, list) else []:
            yield from _slots(item, rest)
    elif not rest:
        yield obj, head
    else:
        yield from _slots(obj.get(head), rest)


def normalize_times(plural: str, kind: str, version: str, obj: Obj) -> None:
    """Validate and re-format the time fields of ``obj`` in place; a 400 ApiError for a bad value."""
    for path, precision in TIME_FIELDS.get(plural, ()):
        micro = precision == "us"
        for container, key in _slots(obj, path.split(".")):
            value = container.get(key)
            if value is None:
                continue
            parsed = _parse(value, micro) if isinstance(value, str) else None
            if parsed is None:
                layout = MICRO_LAYOUT if micro else TIME_LAYOUT
                raise ApiError(
                    400,
                    "BadRequest",
                    f'{kind} in version "{version}" cannot be handled as a {kind}: '
                    f'parsing time {value!r} as "{layout}": {path} is not in this format',
                )
            container[key] = (
                parsed.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if micro else parsed.strftime("%Y-%m-%dT%H:%M:%SZ")
            )
