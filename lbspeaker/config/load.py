"""Reading configurations from files: ConfigMap manifests or bare config YAML, one file or several.

``load_file`` reads one file and merges every ConfigMap in it, in file order (tests and tools that keep
pool configurations in files). ``load_inputs`` is what ``lbspeaker config check`` runs: it takes
several texts and merges them as the cluster would (``cluster.config_sources``: the main ConfigMap,
then the labelled ones by name, in the lbspeaker namespace), says which ConfigMaps the cluster would
ignore and why, and still validates those. A file without any Kubernetes object is bare configuration
(the ``config`` data key) and is merged too.

Bounds: a file is read up to ``MAX_FILE_BYTES`` (8 MiB, several ConfigMaps of at most 1 MiB each); each
configuration inside is bounded by ``yamlload``. Cost: linear in the input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from lbspeaker.config.cluster import CONFIG_NAME, NAMESPACE, config_sources, ignored_because
from lbspeaker.config.errors import ConfigError, capped, prefixed
from lbspeaker.config.merge import merge_configs
from lbspeaker.config.models import Config
from lbspeaker.config.parse import config_from_data, configmap_source, parse_configmap
from lbspeaker.config.yamlload import MAX_DOCUMENT_BYTES, check_size, load_documents

MAX_FILE_BYTES = 8 * 1024 * 1024


def _is_kube_object(doc: Any) -> bool:
    return isinstance(doc, dict) and ("kind" in doc or "apiVersion" in doc)


def read_text(stream: BinaryIO, name: str) -> str:
    """At most ``MAX_FILE_BYTES`` of ``stream`` as text; ConfigError if larger or not UTF-8."""
    raw = stream.read(MAX_FILE_BYTES + 1)
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError([f"{name}: larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB; refusing to read it"])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{name}: not UTF-8 text (byte {exc.start})"]) from None


def _documents(name: str, text: str) -> list[Any]:
    try:
        return [d for d in load_documents(text, MAX_FILE_BYTES) if d is not None]
    except ConfigError as exc:
        raise ConfigError(prefixed(name, exc.errors)) from None


def _bare(name: str, text: str, docs: list[Any]) -> Config:
    if len(docs) > 1:
        raise ConfigError(
            [f"{name}: {len(docs)} YAML documents and no ConfigMap; bare configuration must be one document"]
        )
    try:
        check_size(text, MAX_DOCUMENT_BYTES)
    except ConfigError as exc:
        raise ConfigError(prefixed(name, exc.errors)) from None
    return config_from_data(docs[0] if docs else None, name)


def load_file(path: str) -> Config:
    """The configuration in ``path``. OSError if it cannot be read; ConfigError if its content is invalid.

    A file of Kubernetes objects uses every ConfigMap in it (other kinds are skipped) and merges them in
    file order; a file without any is read as the bare YAML of the ``config`` data key.
    """
    with open(path, "rb") as f:
        text = read_text(f, path)
    docs = _documents(path, text)
    if not any(_is_kube_object(d) for d in docs):
        return _bare(path, text, docs)

    parts: list[tuple[str, Config]] = []
    errors: list[str] = []
    for n, doc in enumerate(docs, 1):
        if not _is_kube_object(doc):
            errors.append(f"{path}: document {n}: not a Kubernetes object (no kind), in a file of Kubernetes objects")
        elif doc.get("kind") == "ConfigMap":
            try:
                parts.append((configmap_source(doc), parse_configmap(doc)))
            except ConfigError as exc:
                errors.extend(exc.errors)
    if not parts and not errors:
        errors.append(f"{path}: no ConfigMap in this file")
    if errors:
        raise ConfigError(capped(errors))
    return merge_configs(parts)


@dataclass(frozen=True)
class Part:
    """One piece of the merged configuration: a ConfigMap ("namespace/name") or a bare file, and its file."""

    source: str
    file: str
    config: Config


@dataclass
class Loaded:
    """What ``load_inputs`` found. ``config`` is the merged configuration, None when there are errors."""

    config: Config | None
    parts: list[Part] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Found:
    file: str
    configmap: Mapping[str, Any]
    ignored: str | None


def _identity(cm: Mapping[str, Any], namespace: str) -> tuple[str, str]:
    meta = cm.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    return (str(meta.get("namespace") or namespace), str(meta.get("name") or ""))


def _configmaps(
    name: str, docs: list[Any], namespace: str, config_name: str, found: dict[tuple[str, str], _Found], out: Loaded
) -> None:
    count = 0
    for n, doc in enumerate(docs, 1):
        if not _is_kube_object(doc):
            out.errors.append(
                f"{name}: document {n}: not a Kubernetes object (no kind), in a file of Kubernetes objects"
            )
            continue
        if doc.get("kind") != "ConfigMap":
            continue
        count += 1
        label = configmap_source(doc)
        why = ignored_because(doc, namespace, config_name)
        if why is not None:
            out.warnings.append(f"{name}: ConfigMap {label} would be ignored by the cluster: {why}")
        meta = doc.get("metadata")
        if why is None and not (isinstance(meta, Mapping) and meta.get("namespace")):
            out.warnings.append(
                f"{name}: ConfigMap {label} has no metadata.namespace: it must be applied to {namespace} "
                f"(kubectl apply -n {namespace})"
            )
        key = _identity(doc, namespace)
        if key in found:
            out.warnings.append(
                f"{name}: ConfigMap {label} is also defined in {found[key].file}; applying both keeps the one "
                "applied last, this one is checked"
            )
        found[key] = _Found(name, doc, why)
    if count == 0:
        out.warnings.append(f"{name}: no ConfigMap in this file, nothing to check in it")


def load_inputs(
    inputs: Sequence[tuple[str, str]], namespace: str = NAMESPACE, config_name: str = CONFIG_NAME
) -> Loaded:
    """Check (file name, text) pairs together, merged as the cluster in ``namespace`` would merge them.

    Every ConfigMap is validated, ignored ones included (their errors count); the merged configuration
    is made of the ones the cluster would read, then the bare files in the order given.
    """
    out = Loaded(config=None)
    found: dict[tuple[str, str], _Found] = {}
    bare: list[Part] = []
    for name, text in inputs:
        try:
            docs = _documents(name, text)
            if not any(_is_kube_object(d) for d in docs):
                bare.append(Part(name, name, _bare(name, text, docs)))
                continue
        except ConfigError as exc:
            out.errors.extend(exc.errors)
            continue
        _configmaps(name, docs, namespace, config_name, found, out)

    by_id = {id(f.configmap): f for f in found.values()}
    used = config_sources([f.configmap for f in found.values() if f.ignored is None], config_name)
    parsed: dict[int, Config] = {}
    for f in found.values():
        try:
            parsed[id(f.configmap)] = parse_configmap(f.configmap)
        except ConfigError as exc:
            out.errors.extend(prefixed(f.file, exc.errors))
    out.parts = [Part(configmap_source(cm), by_id[id(cm)].file, parsed[id(cm)]) for cm in used if id(cm) in parsed]
    out.parts += bare
    if found and not used and not bare:
        out.warnings.append("the cluster would read none of the ConfigMaps given: see the warnings above")
    if not out.errors:
        try:
            out.config = merge_configs([(p.source, p.config) for p in out.parts]) if out.parts else Config()
        except ConfigError as exc:
            out.errors.extend(exc.errors)
    out.errors = capped(out.errors)
    return out
