"""The configuration as it lives in the cluster: which ConfigMaps make it up, and loading them together.

The main ConfigMap (``config`` by default) comes first, then every ConfigMap in the namespace labelled
``lbspeaker.io/config``, by name. The controller and the speaker both call this, so they always agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from lbspeaker.config.errors import ConfigError
from lbspeaker.config.merge import merge_configs
from lbspeaker.config.models import Config
from lbspeaker.config.parse import configmap_source, parse_configmap

CONFIG_LABEL = "lbspeaker.io/config"

JSON = Mapping[str, Any]


def config_sources(configmaps: Iterable[JSON], config_name: str) -> list[JSON]:
    """The ConfigMaps that make up the configuration, in merge order."""
    chosen = [cm for cm in configmaps
              if cm["metadata"]["name"] == config_name or CONFIG_LABEL in (cm["metadata"].get("labels") or {})]
    return sorted(chosen, key=lambda cm: (cm["metadata"]["name"] != config_name, cm["metadata"]["name"]))


def load_config(configmaps: Iterable[JSON]) -> tuple[Config | None, list[tuple[JSON, str]]]:
    """Parse and merge ConfigMaps: the config, or None and (ConfigMap, error text) pairs."""
    configmaps = list(configmaps)
    parts: list[tuple[str, Config]] = []
    errors: list[tuple[JSON, str]] = []
    for cm in configmaps:
        try:
            parts.append((configmap_source(cm), parse_configmap(cm)))
        except ConfigError as exc:
            errors.append((cm, str(exc)))
    if errors:
        return None, errors
    try:
        return merge_configs(parts), []
    except ConfigError as exc:
        return None, [(cm, str(exc)) for cm in configmaps]
