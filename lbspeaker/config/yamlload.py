"""YAML decoding that reads a MetalLB ConfigMap the way MetalLB's Go decoder (gopkg.in/yaml.v2) did.

PyYAML implements YAML 1.1 more fully than Go's decoder, and two of its extras would silently change
a MetalLB user's values: base-60 integers (the community ``64500:10`` would become the number 3870010)
and timestamps. Both are turned off here, so such scalars stay strings. Duplicate mapping keys, which
PyYAML accepts silently (last one wins) and MetalLB rejected, are reported.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from lbspeaker.config.errors import ConfigError

_INT = re.compile(
    r"""^(?:[-+]?0b[0-1_]+
    |[-+]?0[0-7_]+
    |[-+]?(?:0|[1-9][0-9_]*)
    |[-+]?0x[0-9a-fA-F_]+)$""",
    re.X,
)
_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?
    |\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_DROPPED_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:timestamp")


class _Loader(yaml.SafeLoader):
    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[str] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.value == "<<":
                continue
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                mark = key_node.start_mark
                self.duplicates.append(
                    f"line {mark.line + 1}, column {mark.column + 1}: key {key!r} appears twice in the same mapping"
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in _DROPPED_TAGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:int", _INT, list("-+0123456789"))
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def _syntax_error(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = exc.problem or exc.context or "syntax error"
        return f"invalid YAML: {what}{where}"
    return f"invalid YAML: {exc}"


def load_documents(text: str) -> list[Any]:
    """Every document of a YAML stream (empty ones included as None); ConfigError on syntax errors."""
    loader = _Loader(text)
    try:
        docs = []
        while loader.check_data():  # type: ignore[no-untyped-call]  # untyped in types-PyYAML
            docs.append(loader.get_data())
    except yaml.YAMLError as exc:
        raise ConfigError([_syntax_error(exc)]) from None
    finally:
        loader.dispose()
    if loader.duplicates:
        raise ConfigError(loader.duplicates)
    return docs


def load_document(text: str) -> Any:
    """The single document of a YAML text (None when empty); ConfigError on syntax errors or several."""
    docs = load_documents(text)
    if len(docs) > 1:
        raise ConfigError([f"expected one YAML document, found {len(docs)}"])
    return docs[0] if docs else None
