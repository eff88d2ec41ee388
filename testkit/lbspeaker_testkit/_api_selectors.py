"""Label and field selectors with the syntax and semantics of Kubernetes list/watch requests.

Pure parsing and matching: a selector string becomes a list of requirements, and a requirement is
checked against a flat ``dict[str, str]`` (an object's labels, or the fields a resource exposes to
field selectors).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from lbspeaker_testkit._api_errors import bad_request

_LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_NAME_PART_RE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def label_key_problem(key: str) -> str | None:
    """Why ``key`` is not a valid label key (qualified name), or None when it is."""
    prefix, sep, name = key.rpartition("/")
    if sep and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN_RE.match(prefix)):
        return "prefix part must be a lowercase RFC 1123 subdomain"
    if not name:
        return "name part must be non-empty"
    if len(name) > 63:
        return "name part must be no more than 63 characters"
    if not _NAME_PART_RE.match(name):
        return (
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and "
            "end with an alphanumeric character"
        )
    return None


def label_value_problem(value: str) -> str | None:
    if len(value) > 63:
        return "must be no more than 63 characters"
    if not _LABEL_VALUE_RE.match(value):
        return (
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
            "'.', and must start and end with an alphanumeric character"
        )
    return None


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!", "gt", "lt"
    values: tuple[str, ...] = ()

    def matches(self, fields: Mapping[str, str]) -> bool:
        present = self.key in fields
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op == "=":
            return present and fields[self.key] == self.values[0]
        if self.op == "!=":
            return not present or fields[self.key] != self.values[0]
        if self.op == "in":
            return present and fields[self.key] in self.values
        if self.op == "notin":
            return not present or fields[self.key] not in self.values
        if not present:
            return False
        try:
            have = int(fields[self.key])
        except ValueError:
            return False
        want = int(self.values[0])
        return have > want if self.op == "gt" else have < want


@dataclass(frozen=True)
class Selector:
    requirements: tuple[Requirement, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.requirements

    def matches(self, fields: Mapping[str, str]) -> bool:
        return all(r.matches(fields) for r in self.requirements)

    def keys(self) -> set[str]:
        return {r.key for r in self.requirements}


EVERYTHING = Selector()


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside a parenthesised value set."""
    parts: list[str] = []
    depth = 0
    cur: list[str] = []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise bad_request(f"unable to parse requirement: unexpected ')' in {text!r}")
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth != 0:
        raise bad_request(f"unable to parse requirement: unclosed '(' in {text!r}")
    parts.append("".join(cur))
    return parts


_SET_RE = re.compile(r"^\s*([^\s!=<>(),]+)\s+(in|notin)\s*\((.*)\)\s*$")
_CMP_RE = re.compile(r"^\s*([^\s!=<>(),]+)\s*(==|=|!=|<|>)\s*([^\s]*)\s*$")
_EXISTS_RE = re.compile(r"^\s*(!?)\s*([^\s!=<>(),]+)\s*$")


def _check_label(key: str, values: tuple[str, ...]) -> None:
    problem = label_key_problem(key)
    if problem is not None:
        raise bad_request(f"unable to parse requirement: key: Invalid value: {key!r}: {problem}")
    for v in values:
        vp = label_value_problem(v)
        if vp is not None:
            raise bad_request(f"unable to parse requirement: values[0][{key}]: Invalid value: {v!r}: {vp}")


def parse_label_selector(text: str | None) -> Selector:
    """Parse a ``labelSelector`` query value; raises a 400 ApiError naming the bad requirement."""
    if text is None or not text.strip():
        return EVERYTHING
    reqs: list[Requirement] = []
    for part in _split_top_level(text):
        if not part.strip():
            raise bad_request(f"unable to parse requirement: found '', expected: identifier in {text!r}")
        m = _SET_RE.match(part)
        if m:
            key, op, inner = m.group(1), m.group(2), m.group(3)
            values = tuple(v.strip() for v in inner.split(",")) if inner.strip() else ()
            if op == "in" and not values:
                raise bad_request(
                    f"unable to parse requirement: for 'in', 'notin' operators, values set "
                    f"can't be empty ({part.strip()!r})"
                )
            _check_label(key, values)
            reqs.append(Requirement(key, op, tuple(sorted(set(values)))))
            continue
        m = _CMP_RE.match(part)
        if m:
            key, op, value = m.group(1), m.group(2), m.group(3)
            if op in ("<", ">"):
                if not re.fullmatch(r"-?\d+", value):
                    raise bad_request(
                        f"unable to parse requirement: for 'Gt', 'Lt' operators, the value "
                        f"must be an integer ({part.strip()!r})"
                    )
                _check_label(key, ())
                reqs.append(Requirement(key, "gt" if op == ">" else "lt", (value,)))
                continue
            _check_label(key, (value,))
            reqs.append(Requirement(key, "!=" if op == "!=" else "=", (value,)))
            continue
        m = _EXISTS_RE.match(part)
        if m:
            _check_label(m.group(2), ())
            reqs.append(Requirement(m.group(2), "!" if m.group(1) else "exists"))
            continue
        raise bad_request(
            f"unable to parse requirement: {part.strip()!r} is not a valid label selector requirement"
        )
    return Selector(tuple(reqs))


def _split_unescaped(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            cur.append(text[i : i + 2])
            i += 2
            continue
        if ch == sep:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    return parts


def _unescape(value: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(value):
        if value[i] == "\\":
            if i + 1 >= len(value) or value[i + 1] not in "\\,=":
                raise bad_request(f"invalid field selector: invalid escape sequence in {value!r}")
            out.append(value[i + 1])
            i += 2
            continue
        if value[i] in ",=":
            raise bad_request(f"invalid field selector: unescaped {value[i]!r} in value {value!r}")
        out.append(value[i])
        i += 1
    return "".join(out)


def parse_field_selector(text: str | None, supported: frozenset[str]) -> Selector:
    """Parse a ``fieldSelector``; unknown fields give the real server's 400 'field label not supported'."""
    if text is None or not text.strip():
        return EVERYTHING
    reqs: list[Requirement] = []
    for part in _split_unescaped(text, ","):
        if not part:
            continue
        m = re.match(r"^([^=!]+)(==|!=|=)(.*)$", part, re.DOTALL)
        if not m:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
        key, op, raw_value = m.group(1).strip(), m.group(2), m.group(3)
        if key not in supported:
            raise bad_request(f"field label not supported: {key}")
        reqs.append(Requirement(key, "!=" if op == "!=" else "=", (_unescape(raw_value),)))
    return Selector(tuple(reqs))
