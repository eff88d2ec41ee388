"""From the YAML of one ConfigMap to a validated ``Config``, collecting every error of the document.

Each pool, peer and BFD profile is validated on its own, so one broken entry does not hide the errors
of the others, and the cross-object checks still run over the entries that are valid (pool names over
every pool that has one). A null entry (``-`` alone) is an entry with every field at its default, as Go
decodes it. At most ``MAX_MESSAGES`` errors are reported, then how many more there were.

Cost: the YAML bounds of ``yamlload`` (1 MiB, 100,000 values) bound everything here; validation is
linear in the values, the overlap check n log n in the address entries.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import ValidationError

from lbspeaker.config import checks
from lbspeaker.config.checks import Located
from lbspeaker.config.errors import (
    ConfigError,
    capped,
    document_order,
    join_path,
    prefixed,
    pydantic_messages,
    show,
    unknown_key,
)
from lbspeaker.config.models import AddressPool, BfdProfile, Config, Peer, _Model, yaml_context
from lbspeaker.config.values import parse_community
from lbspeaker.config.yamlload import load_document

DEFAULT_SOURCE = "config"  # parse_config's default: messages then carry no source label
CONFIG_KEY = "config"  # the ConfigMap data key that holds the YAML, as in MetalLB

M = TypeVar("M", bound=_Model)

_SECTIONS: dict[str, type] = {"address-pools": list, "peers": list, "bgp-communities": dict, "bfd-profiles": list}


def parse_config(text: str, source: str = DEFAULT_SOURCE) -> Config:
    """Parse and validate the YAML of the ``config`` data key. Messages are labelled with ``source``
    unless it is the default; raises ConfigError with every problem found."""
    label = None if source == DEFAULT_SOURCE else source
    try:
        data = load_document(text)
    except ConfigError as exc:
        raise ConfigError(prefixed(label, exc.errors)) from None
    return config_from_data(data, label)


def configmap_source(obj: Mapping[str, Any]) -> str:
    """The "namespace/name" of a ConfigMap given as a dict (just the name when it has no namespace)."""
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    name, namespace = meta.get("name"), meta.get("namespace")
    name = str(name) if name else "<unnamed ConfigMap>"
    return f"{namespace}/{name}" if namespace else name


def parse_configmap(obj: Mapping[str, Any]) -> Config:
    """Parse a ConfigMap given as a dict (as from the API server or a manifest): its data["config"]."""
    source = configmap_source(obj)
    kind = obj.get("kind")
    if kind is not None and kind != "ConfigMap":
        raise ConfigError([f"{source}: kind: expected ConfigMap, got {show(kind)}"])
    data = obj.get("data")
    if not isinstance(data, Mapping) or CONFIG_KEY not in data:
        raise ConfigError([f"{source}: data.{CONFIG_KEY}: required key is missing (the pool configuration goes there)"])
    text = data[CONFIG_KEY]
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise ConfigError(
            [f"{source}: data.{CONFIG_KEY}: expected the configuration as a string ('config: |' and the YAML "
             f"indented below), got {show(text)}"]
        )  # fmt: skip
    return parse_config(text, source)


def _validate_items(
    model: type[M], raw: list[Any], section: str, context: dict[str, Any]
) -> tuple[list[Located[M]], list[str]]:
    found: list[Located[M]] = []
    errors: list[str] = []
    for i, item in enumerate(raw):
        path = f"{section}[{i}]"
        if item is None:
            item = {}
        try:
            # by_name=False: YAML must use MetalLB's kebab-case keys; "auto_assign" is an unknown key there.
            item_model = model.model_validate(item, context=context, by_alias=True, by_name=False)
            found.append(Located(item_model, path, order=(0, i)))
        except ValidationError as exc:
            errors.extend(pydantic_messages(exc, path))
    return found, errors


def _communities(raw: dict[Any, Any]) -> tuple[dict[str, str], list[str]]:
    found: dict[str, str] = {}
    errors: list[str] = []
    for key, value in raw.items():
        # Go decodes both sides of this map as strings, whatever scalar the YAML holds.
        alias = str(key).lower() if isinstance(key, bool) else "" if key is None else str(key)
        path = join_path("bgp-communities", alias)
        if not alias.strip():
            errors.append(f"{path}: alias must not be empty")
            continue
        if isinstance(value, dict | list) or value is None:
            errors.append(f"{path}: expected a community in AA:NN form, got {show(value)}")
            continue
        try:
            found[alias] = parse_community(str(value))
        except ValueError as exc:
            errors.append(f"{path}: {exc}")
    return found, errors


def _raw_pool_names(raw: list[Any]) -> list[Located[str]]:
    """The name of every pool that has a usable one, valid pool or not."""
    names = []
    for i, item in enumerate(raw):
        name = item.get("name") if isinstance(item, dict) else None
        if isinstance(name, str) and name.strip():
            names.append(Located(str(name), f"address-pools[{i}]", order=(0, i)))
    return names


def config_from_data(data: Any, source: str | None = None) -> Config:
    """Validate a decoded configuration document; messages are labelled with ``source`` when given."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        expected = f"expected a mapping with keys {', '.join(_SECTIONS)}"
        raise ConfigError(prefixed(source, [f"(top level): {expected}, got {show(data)}"]))
    errors: list[str] = []
    sections: dict[str, Any] = {}
    for key, value in data.items():
        if key not in _SECTIONS:
            errors.append(f"{join_path('', str(key))}: {unknown_key(key)}")
        elif value is None:
            continue
        elif not isinstance(value, _SECTIONS[key]):
            kind = "a list" if _SECTIONS[key] is list else "a mapping"
            errors.append(f"{key}: expected {kind}, got {show(value)}")
        else:
            sections[key] = value

    communities, errs = _communities(sections.get("bgp-communities", {}))
    errors += errs
    context = yaml_context(communities)
    profiles, errs = _validate_items(BfdProfile, sections.get("bfd-profiles", []), "bfd-profiles", context)
    errors += errs
    peers, errs = _validate_items(Peer, sections.get("peers", []), "peers", context)
    errors += errs
    pools, errs = _validate_items(AddressPool, sections.get("address-pools", []), "address-pools", context)
    errors += errs

    # A peer naming a profile that exists but is itself invalid already has an error there; don't add one.
    profile_names = {str(p["name"]) for p in sections.get("bfd-profiles", []) if isinstance(p, dict) and "name" in p}
    for peer in peers:
        errors += checks.check_peer(peer, profile_names)
    for pool in pools:
        errors += checks.check_pool(pool)
    errors += checks.check_bfd_names(profiles)
    errors += checks.check_peer_duplicates(peers)
    errors += checks.check_pool_names(_raw_pool_names(sections.get("address-pools", [])))
    errors += checks.check_overlaps(pools)
    if errors:
        raise ConfigError(prefixed(source, capped(document_order(errors))))
    return Config(
        address_pools=tuple(p.item for p in pools),
        peers=tuple(p.item for p in peers),
        bgp_communities=communities,
        bfd_profiles=tuple(p.item for p in profiles),
    )
