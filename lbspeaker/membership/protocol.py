"""Heartbeat wire format: encode, authenticate, decode and replay-check speaker heartbeats.

One UDP datagram, big-endian, authenticated end to end with HMAC-SHA256 under a key shared by all
speakers (from a Kubernetes Secret)::

    offset  size  field
    0       2     magic b"LB"
    2       1     version (1)
    3       1     flags: 0x01 LEAVING (graceful shutdown: count me dead now),
                         0x02 WARMING (started, not announcing yet: do not count me alive),
                         0x04 QUIET (I hear no heartbeats from anyone: my heard-set means nothing)
    4       8     incarnation: random 64-bit, chosen once per process, so a restart is recognised
    12      8     sequence number: starts at 1, +1 per datagram of this incarnation
    20      8     timestamp: sender's wall clock, milliseconds since the Unix epoch
    28      1     length of the node name (1-253)
    29      2     length of the heard-set (0 = not reported, or 128)
    31      n     node name, UTF-8
    31+n    h     heard-set: Bloom filter (1024 bits, 3 hashes) of the nodes the sender heard lately
    end-32  32    HMAC-SHA256(key, every byte before it)

Unknown flag bits are ignored so that flags can be added without a version bump; anything else
incompatible bumps the version, and the MAC stays the last 32 bytes in every version.

Decoding never raises: every failure becomes ``Rejected(reason)`` so the caller can count it.
Checks run cheapest first and the MAC is verified (``hmac.compare_digest``) before any field is
trusted. Several keys may be accepted at once for key rotation; encoding signs with one key.

Replay protection (``ReplayGuard``) keeps, per node, the current incarnation and the highest
sequence number accepted from it:

* same incarnation: the sequence number must be higher than the last accepted one;
* different incarnation: it replaces the current one (the node restarted) only if its timestamp is
  not older than the first one seen from the current incarnation, which a replay of an earlier
  process cannot satisfy. The replaced incarnation is retired and its datagrams rejected thereafter,
  so a LEAVING sent by a dead process can never be replayed against its successor;
* with ``max_skew`` set, a timestamp further than that from the receiver's wall clock is rejected.
  This bounds how long a captured datagram stays useful to a receiver that has never seen its
  sender (e.g. one that restarted). It needs node clocks within ``max_skew`` of each other, which
  Kubernetes needs anyway for certificates; a skewed node shows up in the ``clock-skew`` count.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "FILTER_SIZE",
    "MAX_SIZE",
    "MIN_KEY_SIZE",
    "VERSION",
    "Decoder",
    "Heartbeat",
    "RejectReason",
    "Rejected",
    "ReplayGuard",
    "encode",
    "filter_contains",
    "heard_filter",
    "new_incarnation",
    "parse",
    "validate_keys",
]

MAGIC = b"LB"
VERSION = 1
FLAG_LEAVING = 0x01
FLAG_WARMING = 0x02
FLAG_QUIET = 0x04

_HEADER = struct.Struct(">2sBBQQQBH")
MAC_SIZE = 32
MAX_NAME = 253
FILTER_SIZE = 128
_FILTER_BITS = FILTER_SIZE * 8
MIN_SIZE = _HEADER.size + 1 + MAC_SIZE
MAX_SIZE = _HEADER.size + MAX_NAME + FILTER_SIZE + MAC_SIZE
MIN_KEY_SIZE = 16
_U64 = (1 << 64) - 1

RejectReason = Literal[
    "truncated",
    "oversize",
    "magic",
    "version",
    "mac",
    "malformed",
    "replay",
    "stale-incarnation",
    "clock-skew",
]


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """One decoded heartbeat. ``timestamp`` is the sender's wall clock in seconds (ms resolution)."""

    node: str
    incarnation: int
    seq: int
    timestamp: float
    leaving: bool = False
    warming: bool = False
    quiet: bool = False
    heard: bytes = b""

    def hears(self, node: str) -> bool | None:
        """Whether the sender reports hearing ``node``; ``None`` when it reports nothing usable.

        A Bloom filter can say yes wrongly (about 2% with 100 nodes) but never no wrongly.
        """
        if self.quiet or not self.heard:
            return None
        return filter_contains(self.heard, node)


@dataclass(frozen=True, slots=True)
class Rejected:
    """Why a datagram was not accepted; ``reason`` is a fixed, low-cardinality label for metrics."""

    reason: RejectReason


def new_incarnation() -> int:
    """A fresh random 64-bit incarnation number, chosen once at process start."""
    return secrets.randbits(64)


def validate_keys(keys: bytes | Sequence[bytes]) -> tuple[bytes, ...]:
    """Normalise one key or a list of keys (first = signing key); raise ValueError if unusable.

    Error messages describe the problem, never the key material.
    """
    candidates = (keys,) if isinstance(keys, bytes | bytearray) else tuple(keys)
    if not candidates:
        raise ValueError("no heartbeat key given")
    result = []
    for index, key in enumerate(candidates):
        if not isinstance(key, bytes | bytearray):
            raise ValueError(f"heartbeat key #{index} is not bytes")
        if len(key) < MIN_KEY_SIZE:
            raise ValueError(f"heartbeat key #{index} is {len(key)} bytes, at least {MIN_KEY_SIZE} are needed")
        result.append(bytes(key))
    return tuple(result)


def _filter_positions(node: str) -> tuple[int, int, int]:
    digest = hashlib.blake2b(node.encode("utf-8"), digest_size=6, person=b"lbspeaker/heard1").digest()
    return (
        int.from_bytes(digest[0:2], "big") % _FILTER_BITS,
        int.from_bytes(digest[2:4], "big") % _FILTER_BITS,
        int.from_bytes(digest[4:6], "big") % _FILTER_BITS,
    )


def heard_filter(nodes: Iterable[str]) -> bytes:
    """The Bloom filter carried in a heartbeat for the set of nodes the sender hears."""
    bits = bytearray(FILTER_SIZE)
    for node in nodes:
        for pos in _filter_positions(node):
            bits[pos >> 3] |= 1 << (pos & 7)
    return bytes(bits)


def filter_contains(bits: bytes, node: str) -> bool:
    """Whether ``node`` may be in the filter (false positives possible, false negatives not)."""
    if len(bits) != FILTER_SIZE:
        return False
    return all(bits[pos >> 3] & (1 << (pos & 7)) for pos in _filter_positions(node))


def _mac(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, body, hashlib.sha256).digest()


def encode(msg: Heartbeat, key: bytes) -> bytes:
    """Serialise and sign ``msg``. Raises ValueError for a message that could not be decoded back."""
    name = msg.node.encode("utf-8")
    if not 1 <= len(name) <= MAX_NAME:
        raise ValueError(f"node name must be 1-{MAX_NAME} bytes of UTF-8, got {len(name)}")
    if len(msg.heard) not in (0, FILTER_SIZE):
        raise ValueError(f"heard-set must be 0 or {FILTER_SIZE} bytes, got {len(msg.heard)}")
    stamp = round(msg.timestamp * 1000)
    for label, value in (("incarnation", msg.incarnation), ("seq", msg.seq), ("timestamp", stamp)):
        if not 0 <= value <= _U64:
            raise ValueError(f"{label} out of the unsigned 64-bit range")
    flags = (
        (FLAG_LEAVING if msg.leaving else 0) | (FLAG_WARMING if msg.warming else 0) | (FLAG_QUIET if msg.quiet else 0)
    )
    body = (
        _HEADER.pack(MAGIC, VERSION, flags, msg.incarnation, msg.seq, stamp, len(name), len(msg.heard))
        + name
        + msg.heard
    )
    return body + _mac(key, body)


def parse(data: bytes | bytearray | memoryview, keys: Sequence[bytes]) -> Heartbeat | Rejected:
    """Verify and decode one datagram without replay checks. Never raises."""
    try:
        return _parse(data, keys)
    except Exception:  # a decoder bug must cost one datagram, never the receiver thread
        return Rejected("malformed")


def _parse(data: bytes | bytearray | memoryview, keys: Sequence[bytes]) -> Heartbeat | Rejected:
    if not isinstance(data, bytes):
        data = bytes(data)
    if len(data) < MIN_SIZE:
        return Rejected("truncated")
    if len(data) > MAX_SIZE:
        return Rejected("oversize")
    magic, version, flags, incarnation, seq, stamp, name_len, heard_len = _HEADER.unpack_from(data)
    if magic != MAGIC:
        return Rejected("magic")
    if version != VERSION:
        return Rejected("version")
    body, mac = data[:-MAC_SIZE], data[-MAC_SIZE:]
    if not any(hmac.compare_digest(_mac(key, body), mac) for key in keys):
        return Rejected("mac")
    # Authenticated from here on; the checks below guard against a buggy (not a hostile) sender.
    if not 1 <= name_len <= MAX_NAME or heard_len not in (0, FILTER_SIZE):
        return Rejected("malformed")
    if len(body) != _HEADER.size + name_len + heard_len:
        return Rejected("malformed")
    start = _HEADER.size
    try:
        node = body[start : start + name_len].decode("utf-8")
    except UnicodeDecodeError:
        return Rejected("malformed")
    return Heartbeat(
        node=node,
        incarnation=incarnation,
        seq=seq,
        timestamp=stamp / 1000,
        leaving=bool(flags & FLAG_LEAVING),
        warming=bool(flags & FLAG_WARMING),
        quiet=bool(flags & FLAG_QUIET),
        heard=body[start + name_len :],
    )


@dataclass(slots=True)
class _Seen:
    incarnation: int
    seq: int
    first_timestamp: float
    retired: OrderedDict[int, None] = field(default_factory=OrderedDict)


class ReplayGuard:
    """Per-node replay state: accepts each (node, incarnation, seq) at most once and in order.

    Memory is bounded: at most ``max_nodes`` nodes (least recently heard forgotten first) and
    ``retired_per_node`` retired incarnations each. Only authenticated datagrams reach the guard.
    """

    def __init__(self, *, max_skew: float | None = 30.0, max_nodes: int = 4096, retired_per_node: int = 8) -> None:
        self._max_skew = max_skew
        self._max_nodes = max_nodes
        self._retired_per_node = retired_per_node
        self._seen: OrderedDict[str, _Seen] = OrderedDict()

    def check(self, msg: Heartbeat, wall_now: float) -> Rejected | None:
        """Accept ``msg`` (record it, return None) or return why it is refused."""
        if self._max_skew is not None and abs(msg.timestamp - wall_now) > self._max_skew:
            return Rejected("clock-skew")
        seen = self._seen.get(msg.node)
        if seen is None:
            self._seen[msg.node] = _Seen(msg.incarnation, msg.seq, msg.timestamp)
            if len(self._seen) > self._max_nodes:
                self._seen.popitem(last=False)
            return None
        if msg.incarnation == seen.incarnation:
            if msg.seq <= seen.seq:
                return Rejected("replay")
            seen.seq = msg.seq
        elif msg.incarnation in seen.retired or msg.timestamp < seen.first_timestamp:
            return Rejected("stale-incarnation")
        else:
            seen.retired[seen.incarnation] = None
            while len(seen.retired) > self._retired_per_node:
                seen.retired.popitem(last=False)
            seen.incarnation, seen.seq, seen.first_timestamp = msg.incarnation, msg.seq, msg.timestamp
        self._seen.move_to_end(msg.node)
        return None

    def forget(self, node: str) -> None:
        """Drop all state for ``node`` (e.g. its Lease was deleted and it may come back much later)."""
        self._seen.pop(node, None)


class Decoder:
    """Stateful receiver side: MAC check with any of the accepted keys, then replay checks."""

    def __init__(self, keys: bytes | Sequence[bytes], *, max_skew: float | None = 30.0) -> None:
        self._keys = validate_keys(keys)
        self._guard = ReplayGuard(max_skew=max_skew)

    def set_keys(self, keys: bytes | Sequence[bytes]) -> None:
        """Replace the accepted keys (rotation); replay state is kept."""
        self._keys = validate_keys(keys)

    def forget(self, node: str) -> None:
        """Drop the replay state of ``node``."""
        self._guard.forget(node)

    def decode(self, data: bytes | bytearray | memoryview, wall_now: float) -> Heartbeat | Rejected:
        """Verify, decode and replay-check one datagram. Never raises."""
        result = parse(data, self._keys)
        if isinstance(result, Rejected):
            return result
        refused = self._guard.check(result, wall_now)
        return result if refused is None else refused
