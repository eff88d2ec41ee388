"""Per-IP owner election for L2 mode by rendezvous (highest-random-weight) hashing.

Every speaker runs the same pure computation over the same inputs (the live, eligible nodes for an IP)
and gets the same owner, so no locking or coordination is needed beyond agreeing on who is alive.

How the owner is chosen:

* ``score(node, ip)`` is the first 8 bytes of BLAKE2b (personalised ``lbspeaker/hrw1``) over the
  length-prefixed UTF-8 node name followed by the packed address bytes, read as a big-endian integer.
  It depends on nothing but its arguments, so it is identical across processes, machines and Python
  versions (``hash()`` is never used: it is salted per process).
* The IP is canonicalised first (``ipaddress`` packed bytes), so ``2001:db8::1`` and ``2001:DB8:0::1``
  are the same key. An IPv4-mapped IPv6 address (``::ffff:192.0.2.1``) is a different key from the
  IPv4 address; a Service carries one or the other, never both.
* The owner is the candidate with the highest score. Equal scores (a 64-bit collision, in practice
  never) go to the lexicographically smallest node name, so the answer never depends on the order
  the candidates are given in.
* Removing a node moves only the IPs it owned; adding one moves only the IPs it now wins. This is
  what keeps failover and node joins from reshuffling unrelated addresses.

Services sharing one IP (``allow-shared-ip``) are a single election key, the IP, so they always land on
the same node: there is exactly one ARP/NDP answerer per address. The caller must therefore pass, for
a shared IP, the nodes eligible for *all* Services on it.

An address that does not parse raises ``ValueError``: addresses reach the election only after the
controller has validated them, so a bad one is a bug worth surfacing.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
from collections.abc import Callable, Iterable, Mapping

__all__ = ["Scorer", "ip_key", "owner", "owners", "score"]

_PERSON = b"lbspeaker/hrw1"
_DIGEST_SIZE = 8


def ip_key(ip: str) -> bytes:
    """Canonical bytes of an address: 4 bytes for IPv4, 16 for IPv6 (any zone id is ignored)."""
    # inet_pton is ~20x faster than ipaddress and yields the same bytes for every address it accepts;
    # ipaddress handles what it refuses (zone ids) and raises the ValueError for real garbage.
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            return socket.inet_pton(family, ip)
        except (OSError, ValueError):
            continue
    return ipaddress.ip_address(ip).packed


def _primed(node: str) -> hashlib.blake2b:
    # A hasher primed with the node's part of the message: copying it and feeding only the IP bytes
    # costs about half of hashing the whole message afresh, which matters for owners() over many IPs.
    raw = node.encode("utf-8")
    # The length prefix makes (node, ip) -> message injective whatever characters a name holds.
    return hashlib.blake2b(len(raw).to_bytes(4, "big") + raw, digest_size=_DIGEST_SIZE, person=_PERSON)


def _digest(primed: hashlib.blake2b, key: bytes) -> bytes:
    h = primed.copy()
    h.update(key)
    return h.digest()


def score(node: str, ip: str) -> int:
    """The rendezvous weight of ``node`` for ``ip``: a stable unsigned 64-bit integer."""
    return int.from_bytes(_digest(_primed(node), ip_key(ip)), "big")


def _best(key: bytes, candidates: Iterable[str], primed: dict[str, hashlib.blake2b]) -> str | None:
    best_node: str | None = None
    best_digest = b""
    # Inlined hashing: this loop is the whole cost of owners() and calls are dear in CPython.
    for node in candidates:
        hasher = primed.get(node)
        if hasher is None:
            hasher = primed[node] = _primed(node)
        hasher = hasher.copy()
        hasher.update(key)
        digest = hasher.digest()
        # Equal-length big-endian digests compare as bytes exactly as their integers do.
        if best_node is None or digest > best_digest or (digest == best_digest and node < best_node):
            best_node, best_digest = node, digest
    return best_node


def owner(ip: str, candidates: Iterable[str]) -> str | None:
    """The candidate with the highest ``score`` for ``ip``; ``None`` when there are no candidates."""
    return _best(ip_key(ip), candidates, {})


def owners(
    ips: Iterable[str],
    eligible: Mapping[str, Iterable[str]] | Callable[[str], Iterable[str]],
) -> dict[str, str]:
    """Owner of every IP in ``ips``, keyed by the IP string exactly as given.

    ``eligible`` gives the candidate nodes of each IP, as a mapping (a missing IP has no candidates)
    or a function. IPs without any candidate are left out of the result.
    """
    primed: dict[str, hashlib.blake2b] = {}
    lookup: Callable[[str], Iterable[str]]
    if isinstance(eligible, Mapping):
        table = eligible

        def lookup(ip: str) -> Iterable[str]:
            return table.get(ip, ())
    else:
        lookup = eligible

    result: dict[str, str] = {}
    for ip in ips:
        if ip not in result:
            chosen = _best(ip_key(ip), lookup(ip), primed)
            if chosen is not None:
                result[ip] = chosen
    return result


class Scorer:
    """Rendezvous digests with the per-node hashers kept between calls (for incremental elections).

    ``digest(node, key)`` orders exactly as ``score`` does (equal-length big-endian bytes), and
    ``best(key, candidates)`` returns the winner and its digest, ties to the smaller name as ``owner``.
    Memory: one primed hasher per node seen.
    """

    def __init__(self) -> None:
        self._primed: dict[str, hashlib.blake2b] = {}

    def digest(self, node: str, key: bytes) -> bytes:
        hasher = self._primed.get(node)
        if hasher is None:
            hasher = self._primed[node] = _primed(node)
        return _digest(hasher, key)

    def best(self, key: bytes, candidates: Iterable[str]) -> tuple[str | None, bytes]:
        winner = _best(key, candidates, self._primed)
        return winner, (self.digest(winner, key) if winner is not None else b"")

    def beats(self, node: str, digest: bytes, owner: str | None, owner_digest: bytes) -> bool:
        """Whether ``node`` (with ``digest``) wins over the current owner (with ``owner_digest``)."""
        if owner is None:
            return True
        return digest > owner_digest or (digest == owner_digest and node < owner)
