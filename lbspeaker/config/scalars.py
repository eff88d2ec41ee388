"""YAML scalars as Go's decoder (gopkg.in/yaml.v2, MetalLB's) types them: by the field they land in.

``Plain`` is an unquoted scalar kept as its literal text. A string field takes the text as it is; only
a number field (``plain_int``) or a boolean field (``plain_bool``) reads it as a number or boolean, by
yaml.v2's rules. Pure functions, no I/O; each costs O(length of the scalar).
"""

from __future__ import annotations

import math
import re
from typing import Any


class Plain(str):
    """An unquoted YAML scalar: its literal text; a number or boolean only where a field says so."""

    __slots__ = ()


# yaml.v2's resolve table for booleans (YAML 1.1, single letters included), used for bool fields only.
_BOOLS = {
    **dict.fromkeys(("y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"), True),
    **dict.fromkeys(("n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"), False),
}
_GO_FLOAT = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$")
_GO_INT = re.compile(r"^[-+]?(?:0[xX][0-9a-fA-F]+|0[oO]?[0-7]+|0[bB][01]+|[1-9][0-9]*|0)$")
_INT64 = (-(1 << 63), (1 << 64) - 1)  # yaml.v2 resolves through int64 and uint64


def plain_int(value: Any) -> Any:
    """A ``Plain`` scalar in a number field, read as yaml.v2 does; anything else unchanged.

    yaml.v2 drops underscores and parses with Go's ``strconv.ParseInt(s, 0, 64)``: a leading ``0`` is
    octal (``010`` is 8), ``0x``/``0o``/``0b`` prefixes, a sign. A float (``1e3``, ``42.0``) lands in an
    integer field truncated toward zero. Text that is no number stays as it is, for the field to reject.
    """
    if not isinstance(value, Plain):
        return value
    text = value.replace("_", "")
    if len(text) > 100:  # no number of the schema is that long (and Python refuses to parse huge ones)
        return value
    if _GO_INT.match(text):
        sign = -1 if text[0] == "-" else 1
        digits = text.lstrip("+-")
        base = 10
        if len(digits) > 1 and digits[0] == "0":
            base = {"x": 16, "X": 16, "b": 2, "B": 2}.get(digits[1], 8)
            digits = digits[2:] if digits[1] in "xXbBoO" else digits[1:]
        number = sign * int(digits, base)
        return number if _INT64[0] <= number <= _INT64[1] else value
    if _GO_FLOAT.match(text):
        number_f = float(text)
        if math.isfinite(number_f) and number_f >= 0:  # Go's conversion of a negative float is undefined
            return int(number_f)
    return value


def plain_bool(value: Any) -> Any:
    """A ``Plain`` scalar in a boolean field, read as yaml.v2 does (yes/no, on/off, y/n...)."""
    if isinstance(value, Plain) and value in _BOOLS:
        return _BOOLS[value]
    return value
