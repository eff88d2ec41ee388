"""A validated configuration written back as config YAML, normalised: ``lbspeaker config check --show``.

It shows how every value was read: defaults filled in (ports, timers, the default advertisement of a
bgp pool, keepalive a third of hold-time), community aliases resolved to AA:NN, timers in seconds,
text values quoted where YAML would otherwise read them as something else (``name: '0123'``). The
output is valid input again and parses to the same configuration, except for passwords: each is
replaced by a placeholder that says how long it is, so no secret reaches a terminal or a CI log.
Cost: linear in the configuration.
"""

from __future__ import annotations

from typing import Any

import yaml

from lbspeaker.config.models import Config, Peer
from lbspeaker.config.values import format_seconds

SECTIONS = ("peers", "bgp-communities", "address-pools", "bfd-profiles")


def redacted(password: str) -> str:
    return f"<redacted, {len(password)} characters>"


def _clean(value: Any) -> Any:
    """Model dump to plain YAML data: tuples as lists, unset (None) and empty values left out."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if v is not None and v != () and v != {}}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _peer(peer: Peer) -> dict[str, Any]:
    data: dict[str, Any] = peer.model_dump(by_alias=True)
    data["hold-time"] = format_seconds(peer.hold_time)
    if peer.keepalive_time is not None:
        data["keepalive-time"] = format_seconds(peer.keepalive_time)
    if peer.password is not None:
        data["password"] = redacted(peer.password)
    return data


def config_data(cfg: Config) -> dict[str, Any]:
    """The configuration as the data of the ``config`` key, in MetalLB's key names."""
    data: dict[str, Any] = {
        "peers": [_peer(p) for p in cfg.peers],
        "bgp-communities": dict(cfg.bgp_communities),
        "address-pools": [p.model_dump(by_alias=True) for p in cfg.address_pools],
        "bfd-profiles": [p.model_dump(by_alias=True) for p in cfg.bfd_profiles],
    }
    return {k: _clean(v) for k, v in data.items() if v}


def config_yaml(cfg: Config) -> str:
    data = config_data(cfg)
    if not data:
        return "{}\n"
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True, width=120)
