"""The JSON lines between the speaker and its BFD process: session specs one way, states the other. Pure."""

from __future__ import annotations

import dataclasses
from typing import Any

from lbspeaker.bfd.engine import SessionKey, SessionSpec, SessionStatus
from lbspeaker.bfd.session import Timers


def spec_from_json(item: dict[str, Any]) -> SessionSpec:
    """A ``SessionSpec`` from its JSON form; ValueError/TypeError/KeyError when malformed."""
    return SessionSpec(
        key=SessionKey(peer=str(item["peer"]), local=str(item["local"]), multihop=bool(item.get("multihop", False))),
        timers=Timers(
            desired_min_tx=int(item["desired_min_tx"]),
            required_min_rx=int(item["required_min_rx"]),
            detect_mult=int(item["detect_mult"]),
            passive=bool(item.get("passive", False)),
        ),
        minimum_ttl=int(item.get("minimum_ttl", 254)),
    )


def spec_to_json(spec: SessionSpec) -> dict[str, Any]:
    return {
        "peer": spec.key.peer,
        "local": spec.key.local,
        "multihop": spec.key.multihop,
        "desired_min_tx": spec.timers.desired_min_tx,
        "required_min_rx": spec.timers.required_min_rx,
        "detect_mult": spec.timers.detect_mult,
        "passive": spec.timers.passive,
        "minimum_ttl": spec.minimum_ttl,
    }


def status_to_json(status: SessionStatus) -> dict[str, Any]:
    out = dataclasses.asdict(status)
    out.update(out.pop("key"))
    return out


def status_from_json(item: dict[str, Any]) -> SessionStatus:
    return SessionStatus(
        key=SessionKey(peer=str(item["peer"]), local=str(item["local"]), multihop=bool(item["multihop"])),
        state=str(item["state"]),
        diag=str(item["diag"]),
        since=float(item["since"]),
        remote_state=str(item["remote_state"]),
        tx_interval_ms=float(item["tx_interval_ms"]),
        detection_time_ms=float(item["detection_time_ms"]),
        sent=int(item["sent"]),
        received=int(item["received"]),
        error=str(item.get("error", "")),
    )
