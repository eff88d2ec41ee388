"""Address ranges as sorted, disjoint integer intervals.

Pools can be as large as an IPv6 /64, so nothing here ever enumerates a range: membership, size,
overlap and "lowest address not in a used set" are all computed on interval bounds.
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_MAX = {4: (1 << 32) - 1, 6: (1 << 128) - 1}


def parse_ip(text: str) -> IPAddress:
    """Parse one address; raise ValueError with the text at fault."""
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        raise ValueError(f"invalid IP address {text!r}") from None


def parse_range(text: str) -> tuple[int, int, int]:
    """Parse ``a.b.c.d/n``, ``first-last`` or a single address into ``(version, first, last)``.

    Host bits set in a CIDR are accepted and masked off, as MetalLB does.
    """
    raw = text.strip()
    if not raw:
        raise ValueError("empty address range")
    if "/" in raw:
        try:
            net = ipaddress.ip_network(raw, strict=False)
        except ValueError as exc:
            raise ValueError(f"invalid CIDR {text!r}: {exc}") from None
        return net.version, int(net.network_address), int(net.broadcast_address)
    if "-" in raw:
        left, _, right = raw.partition("-")
        try:
            a, b = ipaddress.ip_address(left.strip()), ipaddress.ip_address(right.strip())
        except ValueError:
            raise ValueError(f"invalid range {text!r}: both ends must be IP addresses") from None
        if a.version != b.version:
            raise ValueError(f"invalid range {text!r}: mixes IPv4 and IPv6")
        if int(a) > int(b):
            raise ValueError(f"invalid range {text!r}: start is after end")
        return a.version, int(a), int(b)
    try:
        ip = ipaddress.ip_address(raw)
    except ValueError:
        raise ValueError(f"invalid address range {text!r}: expected CIDR, a-b range or address") from None
    return ip.version, int(ip), int(ip)


def to_ip(version: int, value: int) -> IPAddress:
    return ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value)


def is_buggy(version: int, value: int) -> bool:
    """True for IPv4 addresses ending in .0 or .255, which some old client stacks drop."""
    return version == 4 and (value & 0xFF) in (0, 0xFF)


def count_buggy(version: int, first: int, last: int) -> int:
    """How many addresses of ``first..last`` (inclusive) ``is_buggy``, without enumerating them."""
    if version != 4 or first > last:
        return 0

    def congruent(residue: int) -> int:
        # Values v in [first, last] with v % 256 == residue; floor division keeps this exact at the ends.
        return (last - residue) // 256 - (first - 1 - residue) // 256

    return congruent(0) + congruent(0xFF)


@dataclass(frozen=True)
class IPSet:
    """An immutable set of addresses: per IP version, sorted disjoint inclusive intervals."""

    v4: tuple[tuple[int, int], ...] = ()
    v6: tuple[tuple[int, int], ...] = ()

    @classmethod
    def from_ranges(cls, ranges: Iterable[str]) -> IPSet:
        parts: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
        for text in ranges:
            version, first, last = parse_range(text)
            parts[version].append((first, last))
        return cls(v4=_merge(parts[4]), v6=_merge(parts[6]))

    def intervals(self, version: int) -> tuple[tuple[int, int], ...]:
        return self.v4 if version == 4 else self.v6

    @property
    def families(self) -> tuple[int, ...]:
        return tuple(v for v in (4, 6) if self.intervals(v))

    def size(self, version: int) -> int:
        return sum(last - first + 1 for first, last in self.intervals(version))

    def __contains__(self, ip: object) -> bool:
        if isinstance(ip, str):
            try:
                ip = ipaddress.ip_address(ip)
            except ValueError:
                return False
        if not isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address):
            return False
        return self.contains_int(ip.version, int(ip))

    def contains_int(self, version: int, value: int) -> bool:
        ivs = self.intervals(version)
        i = bisect.bisect_right(ivs, (value, _MAX[version])) - 1
        return i >= 0 and ivs[i][0] <= value <= ivs[i][1]

    def first_overlap(self, other: IPSet) -> IPAddress | None:
        """The lowest address in both sets, or None."""
        for version in (4, 6):
            a, b = self.intervals(version), other.intervals(version)
            i = j = 0
            while i < len(a) and j < len(b):
                lo = max(a[i][0], b[j][0])
                if lo <= min(a[i][1], b[j][1]):
                    return to_ip(version, lo)
                if a[i][1] < b[j][1]:
                    i += 1
                else:
                    j += 1
        return None

    def lowest_free(self, version: int, used: SortedInts, avoid_buggy: bool = False) -> int | None:
        """The lowest address of this set not in ``used``, skipping .0/.255 when ``avoid_buggy``.

        Cost grows with the number of used addresses passed over, never with the size of the range.
        """
        for first, last in self.intervals(version):
            candidate = first
            while candidate <= last:
                if avoid_buggy and is_buggy(version, candidate):
                    candidate += 1
                    continue
                nxt = used.next_gap(candidate)
                if nxt == candidate:
                    return candidate
                candidate = nxt
        return None


def _merge(ivs: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    out: list[tuple[int, int]] = []
    for first, last in sorted(ivs):
        if out and first <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], last))
        else:
            out.append((first, last))
    return tuple(out)


class SortedInts:
    """A mutable set of integers kept as sorted runs, so the next unused value is found in O(log n)."""

    def __init__(self, values: Iterable[int] = ()) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []  # inclusive
        for v in values:
            self.add(v)

    def __len__(self) -> int:
        return sum(e - s + 1 for s, e in zip(self._starts, self._ends, strict=True))

    def __bool__(self) -> bool:
        return bool(self._starts)

    def __contains__(self, value: int) -> bool:
        i = bisect.bisect_right(self._starts, value) - 1
        return i >= 0 and value <= self._ends[i]

    def next_member(self, value: int) -> int | None:
        """The smallest member >= value, or None."""
        i = bisect.bisect_right(self._starts, value) - 1
        if i >= 0 and value <= self._ends[i]:
            return value
        return self._starts[i + 1] if i + 1 < len(self._starts) else None

    def __iter__(self) -> Iterator[int]:
        for s, e in zip(self._starts, self._ends, strict=True):
            yield from range(s, e + 1)

    def runs_in(self, first: int, last: int) -> Iterator[tuple[int, int]]:
        """The stored runs clipped to ``first..last`` (inclusive), in order, as ``(start, end)`` pairs."""
        i = max(bisect.bisect_right(self._starts, first) - 1, 0)
        while i < len(self._starts) and self._starts[i] <= last:
            start, end = max(self._starts[i], first), min(self._ends[i], last)
            if start <= end:
                yield start, end
            i += 1

    def next_gap(self, value: int) -> int:
        """The smallest integer >= value that is not in the set."""
        i = bisect.bisect_right(self._starts, value) - 1
        if i >= 0 and value <= self._ends[i]:
            return self._ends[i] + 1
        return value

    def add(self, value: int) -> None:
        i = bisect.bisect_right(self._starts, value) - 1
        if i >= 0 and value <= self._ends[i]:
            return
        joins_left = i >= 0 and self._ends[i] + 1 == value
        joins_right = i + 1 < len(self._starts) and self._starts[i + 1] == value + 1
        if joins_left and joins_right:
            self._ends[i] = self._ends[i + 1]
            del self._starts[i + 1]
            del self._ends[i + 1]
        elif joins_left:
            self._ends[i] = value
        elif joins_right:
            self._starts[i + 1] = value
        else:
            self._starts.insert(i + 1, value)
            self._ends.insert(i + 1, value)

    def discard(self, value: int) -> None:
        i = bisect.bisect_right(self._starts, value) - 1
        if i < 0 or value > self._ends[i]:
            return
        s, e = self._starts[i], self._ends[i]
        if s == e:
            del self._starts[i]
            del self._ends[i]
        elif value == s:
            self._starts[i] = value + 1
        elif value == e:
            self._ends[i] = value - 1
        else:
            self._ends[i] = value - 1
            self._starts.insert(i + 1, value + 1)
            self._ends.insert(i + 1, e)
