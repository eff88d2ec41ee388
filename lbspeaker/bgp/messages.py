"""Parsing what ExaBGP 5 writes to its API process, and the log lines the supervisor watches. Pure.

ExaBGP writes one message per line: ``done`` / ``error`` (acks, one per command, in command order)
or a JSON object. The JSON objects we ask for (see config_render) are neighbour state changes
(``"type": "state"`` with ``connected`` / ``up`` / ``down``) and the UPDATEs it sent
(``"type": "update"``, ``"direction": "send"``). Anything else is returned as ``Other``.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from typing import Any

from lbspeaker.bgp.model import PeerId


class MessageError(ValueError):
    """A line that is neither an ack nor a JSON message of the expected shape."""


@dataclass(frozen=True)
class Ack:
    ok: bool


@dataclass(frozen=True)
class StateChange:
    """``state`` is ExaBGP's word: ``connected`` (TCP up, OPEN under way), ``up`` or ``down``."""

    peer: PeerId
    state: str
    reason: str
    time: float


@dataclass(frozen=True)
class UpdateSent:
    """One UPDATE ExaBGP wrote to a peer: the prefixes it announced and withdrew, or an End-of-RIB."""

    peer: PeerId
    announced: tuple[str, ...]
    withdrawn: tuple[str, ...]
    eor: bool


@dataclass(frozen=True)
class Other:
    kind: str


Message = Ack | StateChange | UpdateSent | Other


def parse_line(line: str) -> Message:
    """Parse one line ExaBGP wrote to the API process."""
    text = line.strip()
    if text == "done":
        return Ack(ok=True)
    if text == "error":
        return Ack(ok=False)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MessageError(f"not an ack and not JSON: {text[:120]!r}") from exc
    if not isinstance(data, dict):
        raise MessageError(f"JSON message is not an object: {text[:120]!r}")
    kind = data.get("type")
    try:
        if kind == "state":
            neighbor = data["neighbor"]
            return StateChange(
                peer=_peer_id(neighbor),
                state=str(neighbor["state"]),
                reason=str(neighbor.get("reason", "")),
                time=float(data.get("time", 0.0)),
            )
        if kind == "update" and data.get("neighbor", {}).get("direction") == "send":
            neighbor = data["neighbor"]
            message = neighbor["message"]
            if "eor" in message:
                # End-of-RIB comes as "message": {"eor": {"afi": ..., "safi": ...}}, not as an update.
                return UpdateSent(peer=_peer_id(neighbor), announced=(), withdrawn=(), eor=True)
            return _update(_peer_id(neighbor), message["update"])
    except (KeyError, TypeError, ValueError) as exc:
        raise MessageError(f"malformed {kind} message: {exc!r}") from exc
    return Other(kind=str(kind))


def _peer_id(neighbor: dict[str, Any]) -> PeerId:
    address = neighbor["address"]
    asn = neighbor["asn"]
    return PeerId(
        peer_address=str(ipaddress.ip_address(address["peer"])),
        local_address=str(ipaddress.ip_address(address["local"])),
        local_asn=int(asn["local"]),
        peer_asn=int(asn["peer"]),
        router_id=str(neighbor.get("router-id", "")),
    )


def _update(peer: PeerId, update: dict[str, Any]) -> UpdateSent:
    announced: list[str] = []
    # "announce": {"ipv4 unicast": {"<next hop>": [{"nlri": "203.0.113.5/32"}, ...]}}
    for by_nexthop in update.get("announce", {}).values():
        for nlris in by_nexthop.values():
            announced.extend(_nlri(item) for item in nlris)
    withdrawn: list[str] = []
    # "withdraw": {"ipv4 unicast": [{"nlri": "203.0.113.5/32"}, ...]}
    for nlris in update.get("withdraw", {}).values():
        withdrawn.extend(_nlri(item) for item in nlris)
    return UpdateSent(peer=peer, announced=tuple(announced), withdrawn=tuple(withdrawn), eor=False)


def _nlri(item: Any) -> str:
    # compact encoding (exabgp.api.compact) lists bare prefixes; the default wraps them.
    text = item["nlri"] if isinstance(item, dict) else item
    return str(ipaddress.ip_network(text, strict=False))


# Log lines of ExaBGP 5 (INFO, "short" format) that end a configuration load.
RELOAD_OK = "loaded new configuration successfully"
RELOAD_FAILED = "could not load/reload configuration"


def reload_outcome(log_line: str) -> bool | None:
    """True when a log line reports a loaded configuration, False a refused one, None otherwise."""
    if RELOAD_OK in log_line:
        return True
    if RELOAD_FAILED in log_line:
        return False
    return None
