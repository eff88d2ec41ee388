"""Tests of the heartbeat wire format: round trip, authentication, replay protection, robustness."""

from __future__ import annotations

import hashlib
import hmac
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lbspeaker.membership import protocol
from lbspeaker.membership.protocol import Decoder, Heartbeat, Rejected, ReplayGuard

KEY = b"k" * 32
OTHER_KEY = b"o" * 32
NOW = 1_700_000_000.0

names = st.text(min_size=1, max_size=40).filter(lambda s: 1 <= len(s.encode()) <= protocol.MAX_NAME)
u64 = st.integers(min_value=0, max_value=2**64 - 1)


def beat(node: str = "node-a", seq: int = 1, incarnation: int = 7, timestamp: float = NOW, **kw: object) -> Heartbeat:
    return Heartbeat(node=node, incarnation=incarnation, seq=seq, timestamp=timestamp, **kw)  # type: ignore[arg-type]


@given(
    node=names,
    incarnation=u64,
    seq=u64,
    millis=st.integers(min_value=0, max_value=2**53),
    leaving=st.booleans(),
    warming=st.booleans(),
    quiet=st.booleans(),
    heard=st.one_of(st.just(b""), st.binary(min_size=protocol.FILTER_SIZE, max_size=protocol.FILTER_SIZE)),
)
def test_round_trip(
    node: str, incarnation: int, seq: int, millis: int, leaving: bool, warming: bool, quiet: bool, heard: bytes
) -> None:
    msg = Heartbeat(node, incarnation, seq, millis / 1000, leaving, warming, quiet, heard)
    data = protocol.encode(msg, KEY)
    assert len(data) <= protocol.MAX_SIZE
    assert protocol.parse(data, [KEY]) == msg


def test_layout_is_as_documented() -> None:
    data = protocol.encode(beat(leaving=True, quiet=True), KEY)
    magic, version, flags, inc, seq, stamp, name_len, heard_len = struct.unpack_from(">2sBBQQQBH", data)
    assert (magic, version, flags, inc, seq, stamp, name_len, heard_len) == (
        b"LB",
        1,
        0x05,
        7,
        1,
        int(NOW * 1000),
        6,
        0,
    )
    assert data[31:37] == b"node-a"
    assert data[-32:] == hmac.new(KEY, data[:-32], hashlib.sha256).digest()


def test_every_flipped_bit_is_rejected() -> None:
    data = protocol.encode(beat(heard=protocol.heard_filter(["node-b"])), KEY)
    for index in range(len(data)):
        for bit in range(8):
            tampered = bytearray(data)
            tampered[index] ^= 1 << bit
            result = protocol.parse(bytes(tampered), [KEY])
            assert isinstance(result, Rejected), (index, bit)


def test_wrong_key_is_rejected_and_rotation_accepts_either() -> None:
    data = protocol.encode(beat(), KEY)
    assert protocol.parse(data, [OTHER_KEY]) == Rejected("mac")
    assert isinstance(protocol.parse(data, [OTHER_KEY, KEY]), Heartbeat)
    decoder = Decoder([OTHER_KEY])
    assert decoder.decode(data, NOW) == Rejected("mac")
    decoder.set_keys([OTHER_KEY, KEY])
    assert decoder.decode(data, NOW) == beat()


def test_size_limits() -> None:
    data = protocol.encode(beat(), KEY)
    for cut in range(protocol.MIN_SIZE):
        assert protocol.parse(data[:cut], [KEY]) == Rejected("truncated")
    # Cut above the minimum size: the MAC no longer lines up.
    assert protocol.parse(data[:-1], [KEY]) == Rejected("mac")
    assert protocol.parse(data + b"\0" * (protocol.MAX_SIZE + 1), [KEY]) == Rejected("oversize")


def test_wrong_magic_and_version() -> None:
    data = bytearray(protocol.encode(beat(), KEY))
    data[0:2] = b"XX"
    assert protocol.parse(bytes(data), [KEY]) == Rejected("magic")
    # A correctly signed datagram of another version is still refused.
    body = bytearray(protocol.encode(beat(), KEY)[:-32])
    body[2] = 2
    assert protocol.parse(bytes(body) + hmac.new(KEY, bytes(body), hashlib.sha256).digest(), [KEY]) == Rejected(
        "version"
    )


def signed(body: bytes) -> bytes:
    return body + hmac.new(KEY, body, hashlib.sha256).digest()


def test_signed_but_malformed_is_rejected() -> None:
    header = struct.Struct(">2sBBQQQBH")
    # Declared name longer than what follows.
    assert protocol.parse(signed(header.pack(b"LB", 1, 0, 1, 1, 1, 10, 0) + b"abc"), [KEY]) == Rejected("malformed")
    # Heard-set of a size that is neither 0 nor FILTER_SIZE.
    assert protocol.parse(signed(header.pack(b"LB", 1, 0, 1, 1, 1, 1, 3) + b"abcd"), [KEY]) == Rejected("malformed")
    # Name that is not UTF-8.
    assert protocol.parse(signed(header.pack(b"LB", 1, 0, 1, 1, 1, 2, 0) + b"\xff\xfe"), [KEY]) == Rejected("malformed")
    # Empty name.
    assert protocol.parse(signed(header.pack(b"LB", 1, 0, 1, 1, 1, 0, 0) + b"x"), [KEY]) == Rejected("malformed")


def test_unknown_flags_are_ignored() -> None:
    body = bytearray(protocol.encode(beat(), KEY)[:-32])
    body[3] = 0x80 | 0x01
    result = protocol.parse(signed(bytes(body)), [KEY])
    assert isinstance(result, Heartbeat)
    assert result.leaving and not result.warming and not result.quiet


@given(data=st.binary(max_size=protocol.MAX_SIZE + 64))
def test_fuzz_never_raises(data: bytes) -> None:
    result = Decoder([KEY]).decode(data, NOW)
    assert isinstance(result, Rejected)


@given(data=st.data())
def test_fuzz_mutations_of_a_valid_datagram_never_raise(data: st.DataObject) -> None:
    valid = protocol.encode(beat(heard=protocol.heard_filter(["x"])), KEY)
    mutated = bytearray(valid)
    for _ in range(data.draw(st.integers(1, 8))):
        index = data.draw(st.integers(0, len(mutated) - 1))
        mutated[index] = data.draw(st.integers(0, 255))
    result = protocol.parse(bytes(mutated), [KEY])
    assert isinstance(result, Rejected) or bytes(mutated) == valid


def test_parse_never_raises_on_odd_input_types() -> None:
    assert protocol.parse(memoryview(protocol.encode(beat(), KEY)), [KEY]) == beat()
    assert protocol.parse(None, [KEY]) == Rejected("malformed")  # type: ignore[arg-type]


def test_encode_refuses_what_cannot_be_decoded() -> None:
    with pytest.raises(ValueError):
        protocol.encode(beat(node=""), KEY)
    with pytest.raises(ValueError):
        protocol.encode(beat(node="n" * 254), KEY)
    with pytest.raises(ValueError):
        protocol.encode(beat(seq=2**64), KEY)
    with pytest.raises(ValueError):
        protocol.encode(beat(heard=b"\0" * 3), KEY)


def test_keys_are_validated_without_echoing_them() -> None:
    with pytest.raises(ValueError, match="at least 16"):
        protocol.validate_keys(b"short-secret")
    try:
        protocol.validate_keys([KEY, b"tiny-secret-key"])
    except ValueError as exc:
        assert "tiny-secret-key" not in str(exc)
    else:
        pytest.fail("short key accepted")
    with pytest.raises(ValueError):
        protocol.validate_keys([])
    assert protocol.validate_keys(KEY) == (KEY,)


# ---- replay protection ------------------------------------------------------------------------


def test_replayed_and_reordered_datagrams_are_rejected() -> None:
    decoder = Decoder([KEY])
    first, second = protocol.encode(beat(seq=1), KEY), protocol.encode(beat(seq=2), KEY)
    assert isinstance(decoder.decode(first, NOW), Heartbeat)
    assert decoder.decode(first, NOW) == Rejected("replay")
    assert isinstance(decoder.decode(second, NOW), Heartbeat)
    assert decoder.decode(first, NOW) == Rejected("replay")
    assert decoder.decode(second, NOW) == Rejected("replay")
    # Sequence numbers are per node: another node's seq 1 is fine.
    assert isinstance(decoder.decode(protocol.encode(beat(node="node-b", seq=1), KEY), NOW), Heartbeat)


def test_restart_is_accepted_and_the_old_incarnation_is_retired() -> None:
    guard = ReplayGuard()
    assert guard.check(beat(incarnation=1, seq=50), NOW) is None
    assert guard.check(beat(incarnation=2, seq=1, timestamp=NOW + 5), NOW + 5) is None
    # The old process's LEAVING, replayed (or late), must not kill its successor.
    assert guard.check(beat(incarnation=1, seq=51, leaving=True), NOW + 6) == Rejected("stale-incarnation")
    assert guard.check(beat(incarnation=2, seq=2, timestamp=NOW + 6), NOW + 6) is None


def test_incarnation_older_than_the_current_one_is_rejected() -> None:
    guard = ReplayGuard()
    assert guard.check(beat(incarnation=2, seq=10, timestamp=NOW), NOW) is None
    # A datagram of a process that ran before the current one started (never seen by us).
    assert guard.check(beat(incarnation=9, seq=99, timestamp=NOW - 3), NOW) == Rejected("stale-incarnation")


def test_clock_skew_window() -> None:
    guard = ReplayGuard(max_skew=30)
    assert guard.check(beat(timestamp=NOW - 31), NOW) == Rejected("clock-skew")
    assert guard.check(beat(timestamp=NOW + 31), NOW) == Rejected("clock-skew")
    assert guard.check(beat(timestamp=NOW - 29), NOW) is None
    assert ReplayGuard(max_skew=None).check(beat(node="b", timestamp=0), NOW) is None


def test_guard_memory_is_bounded() -> None:
    guard = ReplayGuard(max_nodes=3, retired_per_node=2)
    for i in range(10):
        assert guard.check(beat(node=f"n{i}"), NOW) is None
    assert len(guard._seen) == 3
    for inc in range(10):
        assert guard.check(beat(node="n9", incarnation=100 + inc, timestamp=NOW + inc), NOW) is None
    assert len(guard._seen["n9"].retired) == 2


@given(seqs=st.lists(st.integers(1, 50), min_size=1, max_size=40))
def test_guard_accepts_exactly_the_strictly_increasing_subsequence(seqs: list[int]) -> None:
    guard = ReplayGuard()
    accepted = [s for s in seqs if guard.check(beat(seq=s), NOW) is None]
    expected, top = [], 0
    for s in seqs:
        if s > top:
            expected.append(s)
            top = s
    assert accepted == expected


# ---- heard-set --------------------------------------------------------------------------------


@given(members=st.sets(names, max_size=100), other=names)
def test_heard_filter_has_no_false_negatives(members: set[str], other: str) -> None:
    bits = protocol.heard_filter(members)
    assert len(bits) == protocol.FILTER_SIZE
    assert all(protocol.filter_contains(bits, m) for m in members)
    if not members:
        assert not protocol.filter_contains(bits, other)


def test_heard_filter_false_positive_rate_is_low() -> None:
    bits = protocol.heard_filter(f"member-{i}" for i in range(100))
    false_positives = sum(protocol.filter_contains(bits, f"outsider-{i}") for i in range(10_000))
    assert false_positives < 400  # about 1.6% expected


def test_hears_is_unknown_without_a_filter_or_when_quiet() -> None:
    bits = protocol.heard_filter(["me"])
    assert beat(heard=bits).hears("me") is True
    assert beat(heard=protocol.heard_filter(["other"])).hears("me") is False
    assert beat().hears("me") is None
    assert beat(heard=bits, quiet=True).hears("me") is None


def test_incarnations_are_random_64_bit() -> None:
    values = {protocol.new_incarnation() for _ in range(100)}
    assert len(values) == 100
    assert all(0 <= v < 2**64 for v in values)
