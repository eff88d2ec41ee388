"""Kubernetes timestamp formats: metav1.Time (seconds) and metav1.MicroTime (microseconds), always UTC."""

from __future__ import annotations

from datetime import UTC, datetime


def now_time() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str | None) -> float | None:
    """Seconds since the epoch for either format; None for empty or unparseable input."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
