"""Membership datagrams: encode, authenticate and decode (bounded, never raising).

One UDP datagram from one member to one neighbour, big-endian, authenticated with HMAC-SHA256 (first
16 bytes) under a key shared by all speakers (from a Kubernetes Secret). The MAC also covers the
*recipient's* name, which is not sent: a datagram captured on its way to one node fails the MAC at
every other node. Layout::

    0    2  magic b"LM"
    2    1  version (2)
    3    1  flags: 0x01 SERVING (the sender claims its IPs), 0x02 LEAVING (graceful exit),
                   0x04 SYNC (send me what you know that the Leases do not say),
                   0x08 SYNCED (the last datagram of such a reply)
    4    8  boot: the sender's boot number (from its Lease; +1 at every start)
    12   4  version of the sender's state (+1 at every change of its claim, and to refute a vote)
    16   8  seq: +1 per datagram of this boot, over all recipients
    24   8  echo boot   } the recipient's boot and seq of the last datagram the sender received from it:
    32   8  echo seq    } proof of freshness (no clock involved) and the "I hear you" of the recipient
    40   4  your version: the recipient's state version as the sender knows it
    44   4  voted: the highest version of the recipient's state the sender has voted against (0: none)
    48   1  number of items (<= MAX_ITEMS)
    49   1+n  sender name (1-253 bytes UTF-8, length first)
    ...     items, each: kind (1), subject (1+n), boot (8), version (4), then
                STATE: flags (1) | VOTE: voter (1+n) | DEAD: nothing
    end-16 16 HMAC-SHA256(key, len(recipient) || recipient || every byte before)[:16]

Decoding checks the size and the MAC before anything else (``hmac.compare_digest``), against every key
in use (rotation: sign with the first, accept any). Every length is bounded, so a datagram can never
make the decoder allocate more than ``MAX_SIZE``. Rejections carry a reason for the metrics.

Cost: one HMAC over at most ``MAX_SIZE`` bytes per datagram each way, a few microseconds.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "DEAD",
    "FLAG_LEAVING",
    "FLAG_SERVING",
    "FLAG_SYNC",
    "FLAG_SYNCED",
    "MAX_ITEMS",
    "MAX_SIZE",
    "MIN_KEY_SIZE",
    "STATE",
    "VOTE",
    "Item",
    "Message",
    "Rejected",
    "decode",
    "encode",
    "item_size",
    "validate_keys",
]

MAGIC = b"LM"
VERSION = 2
FLAG_SERVING = 0x01
FLAG_LEAVING = 0x02
FLAG_SYNC = 0x04
FLAG_SYNCED = 0x08

STATE = 1
VOTE = 2
DEAD = 3

_HEADER = struct.Struct(">2sBBQIQQQIIB")
_ITEM_TAIL = struct.Struct(">QI")
MAC_SIZE = 16
MAX_NAME = 253
MAX_SIZE = 1200  # fits an IPv6 minimum-MTU path with room for headers
MAX_ITEMS = 48
MIN_KEY_SIZE = 16
_U32 = (1 << 32) - 1
_U64 = (1 << 64) - 1

RejectReason = Literal["truncated", "oversize", "magic", "version", "mac", "malformed"]


@dataclass(frozen=True, slots=True)
class Item:
    """A piece of gossip about ``subject``: its own state (STATE), a vote against it (VOTE), or the
    conclusion that it is dead (DEAD), for its state ``(boot, version)``."""

    kind: int
    subject: str
    boot: int
    version: int
    flags: int = 0  # STATE only
    voter: str = ""  # VOTE only

    @property
    def key(self) -> tuple[int, str, int, int, int, str]:
        return (self.kind, self.subject, self.boot, self.version, self.flags, self.voter)


@dataclass(frozen=True, slots=True)
class Message:
    sender: str
    boot: int
    version: int
    seq: int
    flags: int = 0
    echo_boot: int = 0
    echo_seq: int = 0
    your_version: int = 0
    voted: int = 0
    items: tuple[Item, ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: RejectReason


def validate_keys(keys: bytes | Sequence[bytes]) -> tuple[bytes, ...]:
    """The keys as a tuple (first signs, all verify); each at least ``MIN_KEY_SIZE`` bytes."""
    out = (keys,) if isinstance(keys, bytes) else tuple(keys)
    if not out:
        raise ValueError("no heartbeat key")
    for key in out:
        if len(key) < MIN_KEY_SIZE:
            raise ValueError(f"heartbeat key shorter than {MIN_KEY_SIZE} bytes")
    return out


def _name(text: str) -> bytes:
    raw = text.encode("utf-8")
    if not 1 <= len(raw) <= MAX_NAME:
        raise ValueError(f"node name of {len(raw)} bytes (1-{MAX_NAME})")
    return bytes([len(raw)]) + raw


@functools.lru_cache(maxsize=1 << 14)  # an item goes out several times, to several neighbours
def _item_bytes(item: Item) -> bytes:
    out = bytes([item.kind]) + _name(item.subject) + _ITEM_TAIL.pack(item.boot & _U64, item.version & _U32)
    if item.kind == STATE:
        out += bytes([item.flags & 0xFF])
    elif item.kind == VOTE:
        out += _name(item.voter)
    return out


def item_size(item: Item) -> int:
    """Bytes ``item`` takes in a datagram (to fill datagrams up to ``MAX_SIZE``)."""
    return len(_item_bytes(item))


def _mac(key: bytes, recipient: str, body: bytes) -> bytes:
    to = recipient.encode("utf-8")
    return hmac.digest(key, bytes([len(to) & 0xFF]) + to + body, hashlib.sha256)[:MAC_SIZE]


def encode(msg: Message, key: bytes, recipient: str) -> bytes:
    """The datagram for ``recipient``; raises ValueError if it would exceed ``MAX_SIZE`` or a field is out of range."""
    if len(msg.items) > MAX_ITEMS:
        raise ValueError(f"{len(msg.items)} items (at most {MAX_ITEMS})")
    body = _HEADER.pack(MAGIC, VERSION, msg.flags & 0xFF, msg.boot & _U64, msg.version & _U32, msg.seq & _U64,
                        msg.echo_boot & _U64, msg.echo_seq & _U64, msg.your_version & _U32, msg.voted & _U32,
                        len(msg.items))
    body += _name(msg.sender) + b"".join(_item_bytes(i) for i in msg.items)
    if len(body) + MAC_SIZE > MAX_SIZE:
        raise ValueError(f"datagram of {len(body) + MAC_SIZE} bytes (at most {MAX_SIZE})")
    return body + _mac(key, recipient, body)


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int) -> None:
        self.data = data
        self.pos = pos

    def name(self) -> str:
        n = self.data[self.pos]
        if not 1 <= n <= MAX_NAME or self.pos + 1 + n > len(self.data):
            raise ValueError("bad name length")
        raw = self.data[self.pos + 1:self.pos + 1 + n]
        self.pos += 1 + n
        return raw.decode("utf-8")  # UnicodeDecodeError is a ValueError

    def take(self, st: struct.Struct) -> tuple[int, ...]:
        if self.pos + st.size > len(self.data):
            raise ValueError("truncated")
        values = st.unpack_from(self.data, self.pos)
        self.pos += st.size
        return values

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise ValueError("truncated")
        self.pos += 1
        return self.data[self.pos - 1]


def decode(data: bytes, keys: Sequence[bytes], recipient: str) -> Message | Rejected:
    """The message in ``data`` if it is well formed and authentic for ``recipient``; never raises."""
    if len(data) > MAX_SIZE:
        return Rejected("oversize")
    if len(data) < _HEADER.size + 2 + MAC_SIZE:
        return Rejected("truncated")
    if data[:2] != MAGIC:
        return Rejected("magic")
    if data[2] != VERSION:
        return Rejected("version")
    body, tag = data[:-MAC_SIZE], data[-MAC_SIZE:]
    if not any(hmac.compare_digest(_mac(key, recipient, body), tag) for key in keys):
        return Rejected("mac")
    try:
        (_, _, flags, boot, version, seq, echo_boot, echo_seq, your_version, voted,
         count) = _HEADER.unpack_from(body, 0)
        if count > MAX_ITEMS:
            raise ValueError("too many items")
        reader = _Reader(body, _HEADER.size)
        sender = reader.name()
        items: list[Item] = []
        for _ in range(count):
            kind = reader.byte()
            if kind not in (STATE, VOTE, DEAD):
                raise ValueError("unknown item kind")
            subject = reader.name()
            ib, iv = reader.take(_ITEM_TAIL)
            if kind == STATE:
                items.append(Item(STATE, subject, ib, iv, flags=reader.byte()))
            elif kind == VOTE:
                items.append(Item(VOTE, subject, ib, iv, voter=reader.name()))
            else:
                items.append(Item(DEAD, subject, ib, iv))
        if reader.pos != len(body):
            raise ValueError("trailing bytes")
    except (ValueError, IndexError, struct.error):
        return Rejected("malformed")
    return Message(sender, boot, version, seq, flags, echo_boot, echo_seq, your_version, voted, tuple(items))
