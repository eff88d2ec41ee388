"""The configuration as it lives in the cluster: which ConfigMaps make it up, and loading them together.

The main ConfigMap (``config`` by default) comes first, then every ConfigMap in the namespace labelled
``lbspeaker.io/config``, by name. The controller and the speaker both call this, so they always agree;
``lbspeaker config check`` uses the same rules to say which ConfigMaps of a file the cluster would ignore.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from lbspeaker.config.errors import ConfigError
from lbspeaker.config.merge import merge_configs
from lbspeaker.config.models import Config
from lbspeaker.config.parse import configmap_source, parse_configmap

CONFIG_LABEL = "lbspeaker.io/config"
NAMESPACE = "lbspeaker-system"  # the default namespace of the controller and the speakers
CONFIG_NAME = "config"  # the default name of the main ConfigMap
METALLB_NAMESPACE = "metallb-system"

JSON = Mapping[str, Any]


def _meta(cm: JSON) -> Mapping[str, Any]:
    meta = cm.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def is_part(cm: JSON, config_name: str) -> bool:
    """Whether a ConfigMap of the namespace belongs to the configuration: the main one or a labelled one."""
    meta = _meta(cm)
    labels = meta.get("labels")
    return meta.get("name") == config_name or (isinstance(labels, Mapping) and CONFIG_LABEL in labels)


def config_sources(configmaps: Iterable[JSON], config_name: str) -> list[JSON]:
    """The ConfigMaps that make up the configuration, in merge order."""
    chosen = [cm for cm in configmaps if is_part(cm, config_name)]
    return sorted(chosen, key=lambda cm: (_meta(cm).get("name") != config_name, str(_meta(cm).get("name", ""))))


def ignored_because(cm: JSON, namespace: str, config_name: str) -> str | None:
    """Why the controller and the speakers would not read this ConfigMap, or None if they would.

    A ConfigMap without a namespace is taken to be applied to ``namespace`` (``kubectl apply -n``).
    """
    meta = _meta(cm)
    where = meta.get("namespace")
    if where is not None and where != namespace:
        if where == METALLB_NAMESPACE:
            return (
                f"it is in MetalLB's namespace {where}, and lbspeaker reads ConfigMaps in {namespace} only: "
                f"change metadata.namespace to {namespace} (the schema needs no change)"
            )
        return f"it is in namespace {where}, and lbspeaker reads ConfigMaps in {namespace} only: move it there"
    if not is_part(cm, config_name):
        return (
            f"lbspeaker reads the ConfigMap named {config_name!r} and those labelled {CONFIG_LABEL}: "
            f'rename it or add the label {CONFIG_LABEL}: "true"'
        )
    return None


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
