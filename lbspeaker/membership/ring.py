"""Who watches whom: every member's neighbours on two hash rings, and the quorum rules over them.

Each member gets two positions from a hash of its name; on each ring it is the neighbour of its
predecessor and its successor. A member's neighbours are the (up to four) members adjacent to it on
either ring. The relation is symmetric (if A is B's neighbour, B is A's), so one datagram each way per
heartbeat interval serves both as "I am alive" and as "I hear you". The rings are drawn from the
member list alone, so every node computes the same neighbours for everyone, and a change of membership
moves only the neighbours of the members next to it. Two independent rings mean that members dying
together (a rack) are rarely all neighbours of one survivor.

Quorum: a member with ``k`` neighbours is declared dead when ``quorum(k)`` of them vote against it;
it may keep announcing only while ``needed_acks(k)`` of them confirm that they hear it, and
``quorum(k) + needed_acks(k) == k + 1`` — so a member that still announces can never be outvoted
(see ``detector``). ``k == 1`` (a two-member cluster) has no majority: the API server is the
tie-breaker there (``detector``'s witness mode).

Cost: building a ring is O(N log N) (N members, names hashed once each); a neighbour query is O(1).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable

__all__ = ["Ring", "needed_acks", "quorum"]

_PERSON = b"lbspeaker/ring1"


def _positions(name: str) -> tuple[int, int]:
    digest = hashlib.blake2b(name.encode("utf-8"), digest_size=16, person=_PERSON).digest()
    return int.from_bytes(digest[:8], "big"), int.from_bytes(digest[8:], "big")


def quorum(k: int) -> int:
    """Votes needed to declare dead a member with ``k`` neighbours (a strict majority; 1 when k is 1)."""
    return k // 2 + 1 if k >= 2 else k


def needed_acks(k: int) -> int:
    """Neighbours that must confirm hearing a member with ``k`` neighbours for it to keep announcing."""
    return k - quorum(k) + 1 if k >= 2 else k


class Ring:
    """The two rings over a fixed member list (immutable: ``Ring.of`` shares equal ones)."""

    @staticmethod
    @functools.lru_cache(maxsize=4)
    def of(members: frozenset[str]) -> Ring:
        """The ring over ``members``; the same object for the same set (many detectors in one process,
        as in the simulator, then share one instead of holding N copies)."""
        return Ring(members)

    def __init__(self, members: Iterable[str]) -> None:
        names = sorted(set(members))
        self.members = frozenset(names)
        keyed = [(_positions(n), n) for n in names]
        self._rings: list[tuple[list[tuple[int, str]], dict[str, int]]] = []
        for i in (0, 1):
            order = sorted(((pos[i], n) for pos, n in keyed))
            self._rings.append((order, {n: j for j, (_, n) in enumerate(order)}))

    def __len__(self) -> int:
        return len(self.members)

    def neighbours(self, name: str) -> frozenset[str]:
        """``name``'s neighbours; none when ``name`` is not a member."""
        out: set[str] = set()
        for order, index in self._rings:
            j = index.get(name)
            if j is None:
                return frozenset()
            n = len(order)
            out.add(order[(j - 1) % n][1])
            out.add(order[(j + 1) % n][1])
        out.discard(name)
        return frozenset(out)
