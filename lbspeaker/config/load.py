"""Reading a configuration from a file: a ConfigMap manifest (every ConfigMap in it, merged) or bare config YAML.

Used by ``lbspeaker config check`` and by tests and tools that keep pool configurations in files.
"""

from __future__ import annotations

from typing import Any

from lbspeaker.config.errors import ConfigError, prefixed
from lbspeaker.config.merge import merge_configs
from lbspeaker.config.models import Config
from lbspeaker.config.parse import config_from_data, configmap_source, parse_configmap
from lbspeaker.config.yamlload import load_documents


def _is_kube_object(doc: Any) -> bool:
    return isinstance(doc, dict) and ("kind" in doc or "apiVersion" in doc)


def load_file(path: str) -> Config:
    """The configuration in ``path``. OSError if it cannot be read; ConfigError if its content is invalid.

    A file of Kubernetes objects uses every ConfigMap in it (other kinds are skipped) and merges them in
    file order; a file without any is read as the bare YAML of the ``config`` data key.
    """
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text (byte {exc.start})"]) from None
    try:
        docs = [d for d in load_documents(text) if d is not None]
    except ConfigError as exc:
        raise ConfigError(prefixed(path, exc.errors)) from None

    if not any(_is_kube_object(d) for d in docs):
        if len(docs) > 1:
            raise ConfigError(
                [f"{path}: {len(docs)} YAML documents and no ConfigMap; bare configuration must be one document"]
            )
        return config_from_data(docs[0] if docs else None, path)

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
        raise ConfigError(errors)
    return merge_configs(parts)
