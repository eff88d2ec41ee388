"""Pure parsers for the scalar values of the pool ConfigMap: durations, BGP communities, label keys.

Each parser returns the normalised value or raises ValueError with a message that names the bad value,
so the model layer can put it behind the field's path unchanged.
"""

from __future__ import annotations

import functools
import ipaddress
import re

from lbspeaker.config.errors import quote
from lbspeaker.ipset import parse_range

# Go's time.ParseDuration units, in seconds. Both micro signs are accepted, as Go does.
_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")

MAX_BGP_TIMER = 65535  # hold time and keepalive are 16-bit second counts on the wire (RFC 4271)
MAX_MD5_KEY = 80  # TCP_MD5SIG_MAXKEYLEN in Linux: a longer key makes the socket option fail at run time
MAX_RANGE_TEXT = 100  # "first - last" of two full IPv6 addresses is 81 characters


def parse_go_duration(text: str) -> float:
    """Parse a Go duration string ("90s", "1m30s", "1.5h", "0") into seconds."""
    raw = text.strip()
    body = raw[1:] if raw[:1] in "+-" else raw
    if body == "0":
        return 0.0
    if not body:
        raise ValueError(f"invalid duration {quote(text)}: empty")
    total = 0.0
    pos = 0
    while pos < len(body):
        match = _DURATION_PART.match(body, pos)
        if match is None:
            if body[pos:].replace(".", "").isdigit():
                raise ValueError(f"invalid duration {quote(text)}: missing unit (for example '{body}s')")
            raise ValueError(f"invalid duration {quote(text)}: expected numbers with units ns, us, ms, s, m or h")
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    return -total if raw.startswith("-") else total


def format_seconds(seconds: float) -> str:
    """A duration for messages and summaries, in the unit a user wrote it in most often."""
    return f"{seconds:g}s"


def parse_bgp_timer(text: str, field: str, minimum: int) -> float:
    """A BGP timer: a Go duration rounded down to whole seconds (as MetalLB does), 0 or minimum..65535 s."""
    seconds = parse_go_duration(text)
    if seconds < 0:
        raise ValueError(f"invalid {field} {quote(text)}: must not be negative")
    whole = float(int(seconds))
    if seconds > 0 and whole < minimum:
        raise ValueError(f"invalid {field} {quote(text)}: must be 0 or at least {minimum}s")
    if whole > MAX_BGP_TIMER:
        raise ValueError(f"invalid {field} {quote(text)}: must be at most {MAX_BGP_TIMER}s")
    return whole


def _uint(part: str, bits: int) -> int | None:
    if not part.isdigit() or not part.isascii():
        return None
    value = int(part)
    return value if value < (1 << bits) else None


def parse_community(text: str) -> str:
    """A standard community "AA:NN" (two 16-bit numbers), normalised (no leading zeros)."""
    parts = text.strip().split(":")
    if len(parts) != 2:
        raise ValueError(f"invalid community {quote(text)}: expected AA:NN with two 16-bit numbers")
    values = [_uint(p, 16) for p in parts]
    for name, part, value in zip(("first", "second"), parts, values, strict=True):
        if value is None:
            raise ValueError(
                f"invalid community {quote(text)}: {name} part {quote(part)} is not a number from 0 to 65535"
            )
    return f"{values[0]}:{values[1]}"


def parse_large_community(text: str) -> str:
    """A large community "A:B:C" (RFC 8092: three 32-bit numbers), normalised."""
    parts = text.strip().split(":")
    if len(parts) != 3:
        raise ValueError(f"invalid large community {quote(text)}: expected A:B:C with three 32-bit numbers")
    values = [_uint(p, 32) for p in parts]
    for name, part, value in zip(("first", "second", "third"), parts, values, strict=True):
        if value is None:
            raise ValueError(
                f"invalid large community {quote(text)}: {name} part {quote(part)} is not a number from 0 to 4294967295"
            )
    return ":".join(str(v) for v in values)


def parse_ip_text(text: str, field: str, version: int | None = None) -> str:
    """One IP address in canonical text form; ``version`` restricts the family."""
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        raise ValueError(f"invalid {field} {quote(text)}: not an IP address") from None
    if version is not None and ip.version != version:
        raise ValueError(f"invalid {field} {quote(text)}: must be an IPv{version} address")
    return str(ip)


@functools.lru_cache(maxsize=1 << 17)
def address_range(text: str) -> tuple[int, int, int]:
    """(IP version, first, last) of a pool address entry (CIDR, "a-b" range or single address).

    ValueError naming the entry if malformed. Cached: validation, the checks and the summary all need
    the bounds of the same entries, and parsing an address is the costly step of a large pool.
    """
    if len(text) > MAX_RANGE_TEXT:  # parse_range's messages quote the text whole
        raise ValueError(f"invalid address range {quote(text)}: too long for a CIDR or a first-last range")
    return parse_range(text)


def check_address_range(text: str) -> str:
    """A pool address entry, stripped; ValueError if malformed."""
    address_range(text)
    return text.strip()


def widest_prefix(version: int, first: int, last: int) -> int:
    """The shortest prefix length among the CIDR blocks that exactly cover ``first..last``.

    A range is cut into the minimal list of CIDR blocks; aggregating to a prefix shorter than the widest
    of those would announce addresses outside the pool. That is MetalLB's rule for aggregation-length.
    Greedy over aligned blocks, at most two per bit: O(address bits), no address objects.
    """
    bits = 32 if version == 4 else 128
    widest = bits
    cursor = first
    while cursor <= last:
        aligned = cursor & -cursor if cursor else 1 << bits  # the largest block that may start at cursor
        fits = 1 << ((last - cursor + 1).bit_length() - 1)  # the largest block the rest can hold
        size = min(aligned, fits)
        widest = min(widest, bits - (size.bit_length() - 1))
        cursor += size
    return widest


def widest_prefix_len(text: str) -> tuple[int, int]:
    """(IP version, ``widest_prefix``) of an address entry."""
    version, first, last = address_range(text)
    return version, widest_prefix(version, first, last)


# Kubernetes label syntax (apimachinery validation): a qualified name, optionally "dns-prefix/name".
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def check_label_key(key: str) -> str:
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        raise ValueError(f"invalid label key {quote(key)}: prefix {quote(prefix)} must be a lowercase DNS subdomain")
    if len(name) > 63 or not _LABEL_NAME.match(name):
        raise ValueError(
            f"invalid label key {quote(key)}: name must be 1-63 characters, alphanumeric, '-', '_' or '.', "
            "starting and ending alphanumeric"
        )
    return key


def check_label_value(value: str) -> str:
    if value and (len(value) > 63 or not _LABEL_NAME.match(value)):
        raise ValueError(
            f"invalid label value {quote(value)}: must be empty or 1-63 characters, alphanumeric, '-', '_' or '.', "
            "starting and ending alphanumeric"
        )
    return value


def check_dns_subdomain(text: str, field: str) -> str:
    if len(text) > 253 or not _DNS_SUBDOMAIN.match(text):
        raise ValueError(f"invalid {field} {quote(text)}: must be a lowercase DNS subdomain name")
    return text


def has_control_chars(text: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in text)
