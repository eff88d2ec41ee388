"""YAML decoding that reads a MetalLB ConfigMap the way MetalLB's Go decoder (gopkg.in/yaml.v2) did, bounded.

Typing. Go's decoder types a scalar by the field it lands in: a string field keeps the literal text
(``password: 0123456`` is "0123456", ``name: yes`` is "yes", ``1.50`` stays "1.50"), and only a number or
boolean field reads it as a number or boolean. PyYAML types every unquoted scalar up front (YAML 1.1:
"0123456" becomes the octal 42798, "0x5ec7e7" 6211559, "on" True, "64500:10" the base-60 3870010), and
the text is lost. So this loader resolves only nulls and merge keys (``<<``); every other unquoted scalar
becomes a ``Plain`` string holding its literal text, and the models type it per field with
``plain_int``/``plain_bool``, which follow yaml.v2's rules. Quoted scalars are ordinary ``str``, so
``"64500"`` is not a number, as in Go. Duplicate mapping keys (which PyYAML accepts silently and
MetalLB's strict decoder rejected) are reported.

Bounds. A document may hold at most ``MAX_DOCUMENT_BYTES`` (1 MiB, the API server's limit for a whole
ConfigMap), nest at most ``MAX_DEPTH`` collections deep, and expand to at most ``MAX_NODES`` values
counting every alias as the whole subtree it stands for (its size is known once its anchor is
composed). The count is kept while composing, so a "billion laughs" document of a few hundred bytes is
rejected at the alias that passes the bound, before anything walks the expanded tree. An alias inside
its own anchor (a recursive document) is rejected like Go does. Cost: linear in the document, with
libyaml's event parser when installed (the composer and constructor are Python): about 15 us per
value, so about 1-1.5 s for the largest documents accepted, and 0.1 ms to refuse the attacks
(``hack/bench/config_parse.py``).
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

from lbspeaker.config.errors import ConfigError, quote
from lbspeaker.config.scalars import Plain

try:  # libyaml's event parser; the composer and constructor below are Python either way
    from yaml._yaml import CParser as _EventParser

    _LIBYAML = True
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    _LIBYAML = False

MAX_DOCUMENT_BYTES = 1024 * 1024
MAX_DEPTH = 32
MAX_NODES = 100_000

PLAIN_TAG = "tag:lbspeaker,2024:plain"
_NULLS = frozenset(("", "~", "null", "Null", "NULL"))


class _Limits(Composer):
    """PyYAML's composer, counting depth and alias-expanded size as it goes."""

    def __init__(self) -> None:
        super().__init__()
        self._depth = 0
        self._nodes = 0
        self._sizes: dict[int, int] = {}  # id(anchored node) -> its expanded size, once composed

    def compose_document(self) -> Node | None:
        self._depth = self._nodes = 0
        self._sizes.clear()
        return super().compose_document()

    def _count(self, size: int, event: Any) -> None:
        self._nodes += size
        if self._nodes > MAX_NODES:
            raise ConfigError(
                [f"{_where(event)}: the document expands to more than {MAX_NODES} values (aliases count as "
                 "every value they repeat); refusing to read it"]
            )  # fmt: skip

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        if self.check_event(AliasEvent):  # type: ignore[attr-defined]
            event = self.peek_event()  # type: ignore[attr-defined]
            node = super().compose_node(parent, index)
            if node is None or id(node) not in self._sizes:
                raise ConfigError([f"{_where(event)}: alias *{quote(event.anchor)} is used inside its own anchor"])
            self._count(self._sizes[id(node)], event)
            return node
        event = self.peek_event()  # type: ignore[attr-defined]
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise ConfigError([f"{_where(event)}: nested more than {MAX_DEPTH} levels deep; refusing to read it"])
        before = self._nodes
        self._count(1, event)
        node = super().compose_node(parent, index)
        self._depth -= 1
        if node is None:  # pragma: no cover - PyYAML returns a node for every event it accepts
            raise ConfigError([f"{_where(event)}: invalid YAML"])
        if event.anchor is not None:
            self._sizes[id(node)] = self._nodes - before
        return node


def _where(event: Any) -> str:
    mark = event.start_mark
    return f"line {mark.line + 1}, column {mark.column + 1}"


class _GoTyping(Resolver):
    def resolve(self, kind: type[Node], value: Any, implicit: Any) -> str:
        if kind is ScalarNode and implicit[0]:  # an unquoted scalar without a tag
            if value in _NULLS:
                return "tag:yaml.org,2002:null"
            return "tag:yaml.org,2002:merge" if value == "<<" else PLAIN_TAG
        return super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call,no-any-return]


class _Constructor(SafeConstructor):
    def __init__(self) -> None:
        super().__init__()
        self.duplicates: list[str] = []

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                mark = key_node.start_mark
                self.duplicates.append(
                    f"line {mark.line + 1}, column {mark.column + 1}: key {quote(key)} appears twice in the same "
                    "mapping"
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _construct_plain(loader: Any, node: Node) -> Plain:
    return Plain(node.value)


_Constructor.add_constructor(PLAIN_TAG, _construct_plain)


class _PyLoader(Reader, Scanner, Parser, _Limits, _Constructor, _GoTyping):
    """PyYAML's pure-Python parser under the bounded composer (when libyaml is missing)."""

    def __init__(self, text: str) -> None:
        Reader.__init__(self, text)
        Scanner.__init__(self)
        Parser.__init__(self)
        _Limits.__init__(self)
        _Constructor.__init__(self)
        _GoTyping.__init__(self)


_Loader: type[_PyLoader] | type[Any] = _PyLoader
if _LIBYAML:

    class _CLoader(_Limits, _EventParser, _Constructor, _GoTyping):
        """libyaml's event parser (about 3 times faster) under the same bounded composer."""

        def __init__(self, text: str) -> None:
            _EventParser.__init__(self, text)
            _Limits.__init__(self)
            _Constructor.__init__(self)
            _GoTyping.__init__(self)

    _Loader = _CLoader


def _syntax_error(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = exc.problem or exc.context or "syntax error"
        return f"invalid YAML: {what}{where}"
    return f"invalid YAML: {exc}"


def check_size(text: str, limit: int = MAX_DOCUMENT_BYTES) -> None:
    """ConfigError when ``text`` is longer than ``limit`` bytes in UTF-8, or not encodable (checked before
    any parsing; a lone surrogate can come in through JSON from the API server)."""
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise ConfigError([f"not valid Unicode text: {exc.reason} (character {exc.start})"]) from None
    if size > limit:
        raise ConfigError([f"the document is {size} bytes, more than the {limit // 1024} KiB allowed; refusing to "
                           "read it"])  # fmt: skip


def load_documents(text: str, limit: int = MAX_DOCUMENT_BYTES) -> list[Any]:
    """Every document of a YAML stream (empty ones included as None); ConfigError on syntax errors,
    duplicate keys or a stream beyond the bounds. ``limit`` bounds the whole stream in bytes."""
    check_size(text, limit)
    loader = _Loader(text)  # after check_size: the text encodes as UTF-8, so this cannot fail
    try:
        docs = []
        while loader.check_node():
            docs.append(loader.construct_document(loader.get_node()))
    except yaml.YAMLError as exc:
        raise ConfigError([_syntax_error(exc)]) from None
    except ConfigError:  # the bounds, raised while composing
        raise
    except Exception as exc:  # PyYAML's constructors fail in many ways on odd input
        # A value with an explicit tag its constructor cannot read (``!!int 1e999``, ``!!int`` alone,
        # ``!!timestamp x``): PyYAML raises ValueError, IndexError, AttributeError... instead of YAMLError.
        raise ConfigError([f"invalid YAML: a tagged value cannot be read: {quote(str(exc), 120)}"]) from None
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
