"""Tests for lbspeaker.ipset: parsing, interval sets, the used-address set and lowest-free search."""

from __future__ import annotations

import ipaddress
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbspeaker.ipset import IPSet, SortedInts, count_buggy, is_buggy, parse_ip, parse_range, to_ip

V4 = 4
BASE4 = int(ipaddress.IPv4Address("192.0.2.0"))
BASE6 = int(ipaddress.IPv6Address("2001:db8::"))


# --- parsing ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.0/24", (4, BASE4, BASE4 + 255)),
        ("192.0.2.77/24", (4, BASE4, BASE4 + 255)),  # host bits masked off, as MetalLB accepts them
        ("192.0.2.10-192.0.2.20", (4, BASE4 + 10, BASE4 + 20)),
        (" 192.0.2.10 - 192.0.2.20 ", (4, BASE4 + 10, BASE4 + 20)),
        ("192.0.2.9", (4, BASE4 + 9, BASE4 + 9)),
        ("192.0.2.9/32", (4, BASE4 + 9, BASE4 + 9)),
        ("2001:db8::/64", (6, BASE6, BASE6 + (1 << 64) - 1)),
        ("2001:db8::1-2001:db8::ff", (6, BASE6 + 1, BASE6 + 0xFF)),
    ],
)
def test_parse_range_accepts(text: str, expected: tuple[int, int, int]) -> None:
    assert parse_range(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("192.0.2.0/33", "invalid CIDR"),
        ("192.0.2.20-192.0.2.10", "start is after end"),
        ("192.0.2.1-2001:db8::1", "mixes IPv4 and IPv6"),
        ("192.0.2.1-banana", "both ends"),
        ("banana", "expected CIDR"),
    ],
)
def test_parse_range_rejects_with_the_text(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment) as info:
        parse_range(text)
    if text.strip():
        assert repr(text) in str(info.value)


def test_parse_ip() -> None:
    assert parse_ip(" 2001:DB8::1 ") == ipaddress.IPv6Address("2001:db8::1")
    with pytest.raises(ValueError, match="'nope'"):
        parse_ip("nope")


def test_to_ip_round_trips() -> None:
    assert str(to_ip(4, BASE4 + 5)) == "192.0.2.5"
    assert str(to_ip(6, BASE6 + 5)) == "2001:db8::5"


# --- IPSet -----------------------------------------------------------------------------------------


def test_from_ranges_merges_overlapping_and_adjacent() -> None:
    s = IPSet.from_ranges(["192.0.2.0-192.0.2.9", "192.0.2.10/31", "192.0.2.5-192.0.2.6", "192.0.2.100"])
    assert s.v4 == ((BASE4, BASE4 + 11), (BASE4 + 100, BASE4 + 100))
    assert s.v6 == ()
    assert s.families == (4,)
    assert s.size(4) == 13
    assert s.size(6) == 0


def test_membership_by_text_object_and_int() -> None:
    s = IPSet.from_ranges(["192.0.2.10-192.0.2.20", "2001:db8::/126"])
    assert "192.0.2.10" in s
    assert "192.0.2.20" in s
    assert "192.0.2.21" not in s
    assert "192.0.2.9" not in s
    assert ipaddress.IPv6Address("2001:db8::3") in s
    assert "2001:db8::4" not in s
    assert "not an ip" not in s
    assert 42 not in s
    assert s.contains_int(4, BASE4 + 15)
    assert not s.contains_int(6, BASE4 + 15)
    assert s.families == (4, 6)


def test_first_overlap() -> None:
    a = IPSet.from_ranges(["192.0.2.0-192.0.2.10", "2001:db8::/120"])
    b = IPSet.from_ranges(["192.0.2.8-192.0.2.30"])
    c = IPSet.from_ranges(["192.0.2.11-192.0.2.30", "2001:db8::80/121"])
    assert a.first_overlap(b) == ipaddress.IPv4Address("192.0.2.8")
    assert a.first_overlap(c) == ipaddress.IPv6Address("2001:db8::80")
    assert b.first_overlap(IPSet()) is None


def test_huge_sets_are_cheap() -> None:
    s = IPSet.from_ranges(["2001:db8::/64", "2001:db8:0:1::/64", "10.0.0.0/8"])
    assert s.v6 == ((BASE6, BASE6 + (1 << 65) - 1),)
    assert s.size(6) == 1 << 65
    assert s.size(4) == 1 << 24
    assert "2001:db8:0:1:ffff:ffff:ffff:ffff" in s
    assert "2001:db8:0:2::" not in s


# --- buggy addresses --------------------------------------------------------------------------------


def test_is_buggy() -> None:
    assert is_buggy(4, BASE4)
    assert is_buggy(4, BASE4 + 255)
    assert not is_buggy(4, BASE4 + 1)
    assert not is_buggy(6, BASE6)  # IPv6 has no broadcast address confusion
    assert not is_buggy(6, BASE6 + 255)


@given(st.integers(0, 5000), st.integers(0, 1500), st.sampled_from([4, 6]))
def test_count_buggy_matches_brute_force(first: int, length: int, version: int) -> None:
    last = first + length
    assert count_buggy(version, first, last) == sum(is_buggy(version, v) for v in range(first, last + 1))


def test_count_buggy_large_and_empty() -> None:
    assert count_buggy(4, 0, (1 << 32) - 1) == 2 * (1 << 24)
    assert count_buggy(4, 10, 5) == 0


# --- SortedInts -------------------------------------------------------------------------------------


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 40)), max_size=80), st.integers(0, 45), st.integers(0, 45))
def test_sorted_ints_matches_a_set(ops: list[tuple[bool, int]], probe: int, span: int) -> None:
    model: set[int] = set()
    s = SortedInts()
    for add, value in ops:
        if add:
            s.add(value)
            model.add(value)
        else:
            s.discard(value)
            model.discard(value)
    assert list(s) == sorted(model)
    assert len(s) == len(model)
    assert (probe in s) == (probe in model)
    assert bool(s) == bool(model)
    assert s.next_member(probe) == min((v for v in model if v >= probe), default=None)
    gap = probe
    while gap in model:
        gap += 1
    assert s.next_gap(probe) == gap
    lo, hi = probe, probe + span
    clipped = [v for start, end in s.runs_in(lo, hi) for v in range(start, end + 1)]
    assert clipped == sorted(v for v in model if lo <= v <= hi)
    runs = list(s.runs_in(-1, 100))
    # Runs are maximal: no two touch, so the structure stays as small as the number of gaps.
    assert all(a_end + 1 < b_start for (_, a_end), (b_start, _) in itertools.pairwise(runs))


def test_sorted_ints_constructor_and_idempotence() -> None:
    s = SortedInts([5, 3, 4, 4, 10])
    assert list(s.runs_in(0, 100)) == [(3, 5), (10, 10)]
    s.discard(7)
    s.discard(4)
    assert list(s) == [3, 5, 10]


# --- lowest_free -------------------------------------------------------------------------------------

# Small ranges straddling a .255/.0 boundary so avoid-buggy-ips matters.
_small_ranges = st.lists(
    st.tuples(st.integers(240, 275), st.integers(0, 12)).map(lambda t: (BASE4 + t[0], BASE4 + t[0] + t[1])),
    min_size=1,
    max_size=4,
)


@settings(max_examples=200)
@given(_small_ranges, st.sets(st.integers(BASE4 + 235, BASE4 + 290), max_size=30), st.booleans())
def test_lowest_free_matches_brute_force(ranges: list[tuple[int, int]], used: set[int], avoid: bool) -> None:
    s = IPSet.from_ranges(f"{to_ip(4, a)}-{to_ip(4, b)}" for a, b in ranges)
    members = sorted({v for a, b in ranges for v in range(a, b + 1)})
    expected = next((v for v in members if v not in used and not (avoid and is_buggy(4, v))), None)
    assert s.lowest_free(4, SortedInts(used), avoid) == expected
    assert s.lowest_free(6, SortedInts(used), avoid) is None


class CountingInts(SortedInts):
    """SortedInts that counts gap look-ups: the cost measure of lowest_free, independent of the clock."""

    calls = 0

    def next_gap(self, value: int) -> int:
        self.calls += 1
        return super().next_gap(value)


def test_lowest_free_in_a_64_never_walks_the_range() -> None:
    s = IPSet.from_ranges(["2001:db8::/64", "2001:db8:0:5::/64"])
    used = CountingInts(BASE6 + i for i in range(1000))
    assert s.lowest_free(6, used) == BASE6 + 1000
    assert used.calls <= 2  # the used run is skipped in one step, not address by address

    # Used addresses spread over the top of the first /64: the search still jumps straight past them.
    top = BASE6 + (1 << 64) - 1
    spread = CountingInts([BASE6 + 1, top - 1, top])
    assert s.lowest_free(6, spread) == BASE6
    spread.add(BASE6)
    assert s.lowest_free(6, spread) == BASE6 + 2
    assert spread.calls <= 4


def test_lowest_free_moves_to_the_next_interval() -> None:
    s = IPSet.from_ranges(["192.0.2.255", "192.0.3.0", "192.0.3.10-192.0.3.11"])
    assert s.lowest_free(4, SortedInts(), avoid_buggy=True) == BASE4 + 256 + 10
    assert s.lowest_free(4, SortedInts(), avoid_buggy=False) == BASE4 + 255
    assert s.lowest_free(4, SortedInts([BASE4 + 255, BASE4 + 256, BASE4 + 266])) == BASE4 + 267
    assert s.lowest_free(4, SortedInts([BASE4 + 255, BASE4 + 256, BASE4 + 266, BASE4 + 267])) is None


def test_lowest_free_avoiding_buggy_in_a_big_v4_pool() -> None:
    s = IPSet.from_ranges(["10.0.0.0/8"])
    first = int(ipaddress.IPv4Address("10.0.0.0"))
    assert s.lowest_free(4, SortedInts(), avoid_buggy=True) == first + 1
    used = SortedInts(range(first + 1, first + 255))
    assert s.lowest_free(4, used, avoid_buggy=True) == first + 257
