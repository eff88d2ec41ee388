"""Who is alive, decided by partial monitoring: a pure state machine, driven by a clock the caller gives.

Nothing here does I/O or reads a clock: ``transport`` feeds it datagrams and time on a real socket,
``hack/bench/membership_sim.py`` on a simulated network. One ``Detector`` per speaker.

Monitoring. Members (layer2-eligible speakers, from their Leases) sit on two hash rings
(``ring``); each exchanges one datagram per ``interval`` with each of its (up to four) neighbours, so
a node's packet rate does not depend on the cluster's size. Every datagram echoes the last sequence
number received from its recipient: that proves it fresh (a replay echoes an old number or an old boot,
and is useless — no clock window is involved) and tells the recipient "I hear you".

Verdicts. A neighbour that has not received a fresh datagram from ``D`` for ``dead_after`` votes against
``D``'s current state version, and the vote is flooded to every member (forwarded once by each, at
once, and piggybacked on a few more datagrams). Any member that holds ``quorum(k)`` votes from ``D``'s
``k`` neighbours concludes ``D`` dead, and floods that conclusion. Dead members leave the rings, so
their neighbours get new ones.

Fencing (why two nodes never answer for one IP). ``D`` keeps claiming its IPs only while at least
``needed_acks(k)`` neighbours have echoed a datagram ``D`` sent less than ``fence_after`` ago and have
not voted against the versions of ``D`` still in play. Such a neighbour received ``D``'s datagram at
most ``fence_after`` ago, so it cannot vote before ``dead_after`` (> ``fence_after``) has passed; and
``needed_acks(k) + quorum(k) = k + 1``, so while ``D`` claims, fewer than ``quorum(k)`` votes against it
can exist anywhere and nobody can conclude it dead. A node cut off from its neighbours therefore stops
answering (``answering`` turns False) ``dead_after - fence_after`` before anyone takes its IPs, and
``valid_until`` tells the responder the last instant that is safe even if this thread stalls.
A vote against our current version (a neighbour missed us for a while) is refuted by bumping the
version, which restarts the count without a gap. Joining (and coming back after a fence) announces
the claim first and answers only ``join_grace`` later, so the others have let go of the IPs.

Two members (``k == 1``): there is no majority, so the API server is the third vote. A member that
no longer hears its peer keeps claiming only while it keeps writing its own Lease (``wants_witness``:
each successful write, optimistic-concurrency checked, is an ack valid for ``fence_after``), and a
vote against the peer counts only once written into the peer's Lease under the same check, which
fails while the peer is still writing (``witness_votes``/``witness_vote_done``). The speaker does the
API part. Without the API server, two members that lose each other both stop answering: two nodes
cannot tell a dead peer from a cut link alone.

Backstop: a member whose Lease expired (``Member.expired``, observed while the API was reachable) and
that is silent or already suspected is dead, for the case where too many of its neighbours died with
it to make a quorum.

Cost: per datagram O(items); a tick is O(neighbours + pending items); memory O(members) (one state
record each) plus per-neighbour bookkeeping. Ring rebuilds O(N log N), only when the member list
or the dead set changes.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from lbspeaker.membership import wire
from lbspeaker.membership.ring import Ring, needed_acks, quorum
from lbspeaker.membership.wire import DEAD, STATE, VOTE, Item, Message

__all__ = ["Detector", "Member", "Outgoing", "Timing"]

_SYNC_REQ = wire.FLAG_SYNC
_SYNC_DONE = wire.FLAG_SYNCED
_SELF_FLAGS = wire.FLAG_SERVING | wire.FLAG_LEAVING
_SYNC_LIMIT = 4096  # items one sync request may cost the member asked
_HEADER_BUDGET = 80  # bytes reserved in a datagram for everything but the items


@dataclass(frozen=True)
class Timing:
    """Membership timings. ``fence_after`` and ``vote_grace`` derive from the others."""

    interval: float = 0.1  # one datagram to each neighbour this often
    dead_after: float = 0.5  # a neighbour silent this long gets our vote
    join_grace: float | None = None  # claim announced -> we answer; default 2 intervals
    retransmit: int = 3  # each gossip item rides on this many datagrams per neighbour
    resync_every: float = 30.0  # anti-entropy: ask one neighbour for its view this often

    def __post_init__(self) -> None:
        if self.interval <= 0:
            raise ValueError("heartbeat interval must be positive")
        if self.dead_after < 3 * self.interval:
            raise ValueError("dead-after must be at least 3 heartbeat intervals")
        if self.retransmit < 1:
            raise ValueError("retransmit must be at least 1")

    @property
    def fence_after(self) -> float:
        """Acks older than this no longer keep us claiming: ``dead_after`` minus a safety margin."""
        return self.dead_after - max(self.interval, 0.05)

    @property
    def grace(self) -> float:
        return 2 * self.interval if self.join_grace is None else self.join_grace

    @property
    def vote_grace(self) -> float:
        """A new neighbour gets this long to reach us before we may vote against it."""
        return self.dead_after + 2 * self.interval


@dataclass(frozen=True)
class Member:
    """A member as its Lease shows it."""

    addr: tuple[str, int] | None
    boot: int = 0  # the boot number in its Lease
    version: int = 0  # the state version its Lease records
    serving: bool = False  # whether that version claims its IPs
    expired: bool = False  # the Lease expired while the API server was reachable


class Outgoing(NamedTuple):
    to: str
    addr: tuple[str, int]
    message: Message


@dataclass(slots=True)
class _Known:
    """What we know of a member's own state."""

    boot: int = 0
    version: int = 0
    flags: int = 0
    dead: tuple[int, int] | None = None  # (boot, version) concluded dead
    votes: dict[str, tuple[int, int]] | None = None  # voter -> (boot, version); None: no votes (memory)
    heard: bool = False  # any datagram of its current boot reached us


@dataclass(slots=True)
class _Peer:
    """A contact: a neighbour, or a member that sent to us lately."""

    since: float  # when it became our neighbour (or first wrote to us)
    boot: int = 0  # its boot, from its datagrams
    seq: int = 0  # highest seq of that boot we accepted
    window: int = 0  # bit i set: seq - 1 - i was accepted too (an anti-replay window, as in IPsec)
    last_heard: float | None = None  # last datagram from it we accepted (fresh or not)
    last_fresh: float | None = None  # last fresh datagram from it (it echoed one of ours)
    ack_at: float | None = None  # send time of our datagram it echoed last
    ack_version: int = 0  # our version it knows
    ack_voted: int = 0  # highest version of ours it voted against
    voted: tuple[int, int] = (0, 0)  # its (boot, version) we voted against last
    next_send: float = 0.0
    pending: dict[tuple[int, str, int, int, int, str], list[object]] = field(default_factory=dict)
    sync_asked: float | None = None  # when we last asked it for a sync
    synced: bool = False  # its sync reached us
    sync_owed: set[tuple[int, str, int, int, int, str]] | None = None  # it asked: items still to send


_WINDOW = 64


def _accept_seq(peer: _Peer, seq: int) -> bool:
    """Accept each seq once: newer than any seen, or one of the last ``_WINDOW`` not seen yet (reordered)."""
    if seq > peer.seq:
        shift = seq - peer.seq
        peer.window = ((peer.window << shift) | (1 << (shift - 1))) & ((1 << _WINDOW) - 1) if shift <= _WINDOW else 0
        peer.seq = seq
        return True
    back = peer.seq - seq
    if back == 0 or back > _WINDOW or peer.window >> (back - 1) & 1:
        return False
    peer.window |= 1 << (back - 1)
    return True


class Detector:
    """The membership state machine of one speaker (see the module docstring)."""

    def __init__(self, name: str, timing: Timing | None = None, *, now: float, seed: int | None = None) -> None:
        self.name = name
        self.timing = timing or Timing()
        self._rng = random.Random(seed if seed is not None else hash(name))
        self.members: dict[str, Member] = {}
        self.known: dict[str, _Known] = {}
        self.peers: dict[str, _Peer] = {}
        self.ring = Ring(())
        self.neighbours: frozenset[str] = frozenset()
        self._ring_key: tuple[frozenset[str], frozenset[str]] | None = None
        # Ourselves.
        self.boot = 0
        self.version = 0
        self.claim = False  # our state says we claim our IPs
        self.answering = False  # we answer for them (claim + grace + acks)
        self.left = False
        self.ready = False  # the speaker's caches are synced: we may claim
        self.v_start = 0  # the version our current claim began with
        self.claim_at = 0.0
        self.fenced_at: float | None = None
        self.last_fence_reason = ""
        self.valid_until = float("-inf")  # answering is safe until then, by the acks held
        self.witness_at: float | None = None  # send time of our last successful Lease write (k == 1)
        self.witness_votes: set[tuple[str, int, int]] = set()  # (peer, boot, version) to write
        self._seq = 0
        self._sent: dict[int, tuple[float, str]] = {}  # seq -> (send time, recipient)
        self._started = False
        self._next_resync = now + self.timing.resync_every
        self._last_prune = now
        self.epoch = 0  # bumped whenever alive() or answering may have changed
        self._alive_cache: tuple[int, frozenset[str]] = (-1, frozenset())
        self.stats: dict[str, int] = {"sent": 0, "received": 0, "votes": 0, "fences": 0, "refutes": 0,
                                      "dead": 0, "forwarded": 0}
        self.rejected: dict[str, int] = {}

    # -- inputs from the speaker ---------------------------------------------------------------------

    def start(self, boot: int, now: float) -> None:
        """Begin taking part with boot number ``boot`` (from our Lease: higher than any before)."""
        if boot <= 0:
            raise ValueError("boot must be positive")
        self.boot = boot
        self.version = 1
        self._started = True
        for peer in self.peers.values():
            peer.sync_asked = None
            peer.synced = False
        self._changed()

    def set_ready(self, ready: bool) -> None:
        """Whether the speaker may claim at all (caches synced, configuration loaded)."""
        if ready != self.ready:
            self.ready = ready
            self._changed()

    def set_members(self, members: Mapping[str, Member], now: float) -> None:
        """The current member list (layer2-eligible speakers with a held Lease), ourselves included if we are one."""
        old = self.members
        self.members = dict(members)
        for name, member in self.members.items():
            known = self.known.get(name)
            if known is None:
                known = self.known[name] = _Known()
            prev = old.get(name)
            if prev is None or prev.boot != member.boot:
                peer = self.peers.get(name)
                if peer is not None:
                    peer.since = now  # a restarted member gets a fresh grace before our vote
            if (member.boot, member.version) > (known.boot, known.version) and name != self.name:
                # The Lease is newer than anything we heard: take it as the baseline.
                self._set_state(known, member.boot, member.version,
                                wire.FLAG_SERVING if member.serving else 0)
        for name in list(self.known):
            if name not in self.members and name != self.name:
                del self.known[name]
        self._rebuild(now)
        self._conclude_expired(now)
        self._changed()

    def witness_ack(self, sent_at: float) -> None:
        """Our Lease write sent at ``sent_at`` succeeded unchanged by anyone else (two-member mode)."""
        if self.witness_at is None or sent_at > self.witness_at:
            self.witness_at = sent_at

    def witness_vote_done(self, subject: str, boot: int, version: int, now: float) -> None:
        """Our vote against ``subject`` was written into its Lease: it is dead (two-member mode)."""
        self.witness_votes.discard((subject, boot, version))
        known = self.known.get(subject)
        if known is not None and (known.boot, known.version) == (boot, version):
            self._conclude(subject, known, now)

    def told_dead(self, boot: int, version: int, now: float) -> None:
        """Our Lease carries a peer's vote against our (boot, version): stop claiming at once."""
        if boot == self.boot and version >= self.v_start and self.claim:
            self._fence(now, "voted dead in our Lease")

    # -- the network ---------------------------------------------------------------------------------

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def receive(self, msg: Message, now: float) -> None:
        """A datagram addressed to us that passed the MAC."""
        sender = msg.sender
        member = self.members.get(sender)
        if sender == self.name:
            self.reject("self")
            return
        if member is None:
            self.reject("not-a-member")
            return
        if msg.boot < member.boot:
            self.reject("stale-boot")
            return
        peer = self.peers.get(sender)
        if peer is None:
            peer = self.peers[sender] = _Peer(since=now, next_send=now)
        if msg.boot < peer.boot:
            self.reject("stale-boot")
            return
        if msg.boot > peer.boot:
            peer.boot, peer.seq, peer.window = msg.boot, 0, 0
            peer.synced = False
        if not _accept_seq(peer, msg.seq):
            self.reject("replay")
            return
        peer.last_heard = now
        self.stats["received"] += 1
        sent = self._sent.get(msg.echo_seq) if msg.echo_boot == self.boot and self._started else None
        if sent is not None and sent[1] == sender and sent[0] >= now - 2 * self.timing.dead_after:
            peer.last_fresh = now
            if peer.ack_at is None or sent[0] >= peer.ack_at:
                peer.ack_at = sent[0]
                peer.ack_version = msg.your_version
                peer.ack_voted = msg.voted
        changed = self._apply(Item(STATE, sender, msg.boot, msg.version, flags=msg.flags & _SELF_FLAGS),
                              now, via=sender)
        known = self.known.get(sender)
        if known is not None and known.boot == msg.boot:
            known.heard = True
        for item in msg.items:
            changed |= self._apply(item, now, via=sender)
        if msg.flags & _SYNC_REQ:
            self._queue_sync(sender, peer)
        if msg.flags & _SYNC_DONE and peer.sync_asked is not None:
            peer.synced = True
        if changed:
            self._changed()

    def tick(self, now: float) -> list[Outgoing]:
        """Advance to ``now``: votes, our own state, and the datagrams due now."""
        if now - self._last_prune > self.timing.dead_after:
            self._prune(now)
        if self._started and not self.left:
            self._vote(now)
            self._own_state(now)
            if now >= self._next_resync and self.neighbours:
                self._next_resync = now + self.timing.resync_every * self._rng.uniform(0.8, 1.2)
                peer = self.peers.get(self._rng.choice(sorted(self.neighbours)))
                if peer is not None:
                    peer.sync_asked, peer.synced = None, False  # ask again: anti-entropy
        return self._outgoing(now)

    def leave(self, now: float) -> list[Outgoing]:
        """Graceful exit: stop answering now, and tell every contact (send the result a few times)."""
        self.answering = False
        self.valid_until = float("-inf")
        if self._started and not self.left:
            self.left = True
            self.claim = False
            self.version += 1
            self._broadcast(self._self_item(), now, exclude=None)
        self._changed()
        return self._outgoing(now, force=True)

    def flush(self, now: float) -> list[Outgoing]:
        """A datagram to every contact now (repeats of a leave go out this way)."""
        return self._outgoing(now, force=True)

    def next_deadline(self, now: float) -> float:
        """When ``tick`` must run next (a datagram, a vote or a fence falls due)."""
        due = min((p.next_send for n, p in self.peers.items() if self._is_contact(n, p, now)), default=now + 1.0)
        if self.claim:
            due = min(due, self.valid_until if self.answering else self.claim_at + self.timing.grace)
            if not self.answering and now >= self.claim_at + self.timing.grace:
                due = min(due, self.claim_at + self.timing.grace + self.timing.fence_after + 1e-6)
        for name in self.neighbours:
            peer = self.peers.get(name)
            known = self.known.get(name)
            if peer is None or known is None or peer.voted >= (known.boot, known.version):
                continue
            due = min(due, max(peer.since + self.timing.vote_grace,
                               (peer.last_fresh or peer.since) + self.timing.dead_after))
        # ``tick`` has just run: whatever is still overdue is waiting for something else (a datagram),
        # so look again shortly rather than at once.
        return due if due > now else now + min(0.01, self.timing.interval / 4)

    # -- outputs -------------------------------------------------------------------------------------

    def alive(self) -> frozenset[str]:
        """Members that claim their IPs and are not dead, ourselves included while we claim ours."""
        if self._alive_cache[0] == self.epoch:
            return self._alive_cache[1]
        out = {name for name in self.members if name != self.name and self._alive(name)}
        if self.claim and self.name in self.members:
            out.add(self.name)
        result = frozenset(out)
        self._alive_cache = (self.epoch, result)
        return result

    def is_alive(self, name: str) -> bool:
        """Whether ``name`` is in ``alive()``, in O(1)."""
        if name == self.name:
            return self.claim and name in self.members
        return name in self.members and self._alive(name)

    def wants_witness(self, now: float) -> bool:
        """Two-member mode: our peer's acks are going stale, so keep writing our Lease (see module doc)."""
        if not (self.claim and len(self.neighbours) == 1):
            return False
        (peer_name,) = self.neighbours
        peer = self.peers.get(peer_name)
        fresh = peer is not None and peer.ack_at is not None and peer.ack_at >= now - self.timing.fence_after / 2
        return not fresh

    def states(self) -> dict[str, str]:
        """A one-word state per member (and ourselves), for status and metrics."""
        out: dict[str, str] = {}
        for name in self.members:
            if name == self.name:
                continue
            known = self.known.get(name)
            if known is None or (not known.heard and not known.flags):
                out[name] = "unknown"
            elif known.dead == (known.boot, known.version):
                out[name] = "dead"
            elif known.flags & wire.FLAG_LEAVING:
                out[name] = "left"
            elif known.flags & wire.FLAG_SERVING:
                out[name] = "alive"
            else:
                out[name] = "joining"
        out[self.name] = ("left" if self.left else "answering" if self.answering else
                          "claiming" if self.claim else "fenced" if self.fenced_at is not None else "joining")
        return out

    # -- rules ---------------------------------------------------------------------------------------

    def _changed(self) -> None:
        self.epoch += 1

    def _alive(self, name: str) -> bool:
        known = self.known.get(name)
        member = self.members.get(name)
        if known is None or member is None or known.boot < member.boot:
            return False
        if known.dead == (known.boot, known.version):
            return False
        return bool(known.flags & wire.FLAG_SERVING) and not known.flags & wire.FLAG_LEAVING

    def _in_ring(self, name: str) -> bool:
        known = self.known.get(name)
        if known is None:
            return True
        return not (known.dead == (known.boot, known.version) or known.flags & wire.FLAG_LEAVING)

    def _rebuild(self, now: float) -> None:
        """Recompute the rings if the member list or the dead/left set changed."""
        ringed = frozenset(n for n in self.members if n == self.name or self._in_ring(n))
        key = (frozenset(self.members), ringed)
        if key == self._ring_key:
            return
        self._ring_key = key
        self.ring = Ring.of(ringed)
        old = self.neighbours
        self.neighbours = self.ring.neighbours(self.name)
        for name in self.neighbours - old:
            peer = self.peers.get(name)
            if peer is None:
                self.peers[name] = _Peer(since=now, next_send=now)
            else:
                peer.since = now  # a new neighbour gets its grace before our vote
                peer.next_send = now
        for name in old - self.neighbours:
            peer = self.peers.get(name)
            if peer is not None and not self._is_contact(name, peer, now):
                del self.peers[name]

    def _is_contact(self, name: str, peer: _Peer, now: float) -> bool:
        if name in self.neighbours:
            return True
        # A member that writes to us although we are not its neighbour (our views differ for a moment,
        # or it is coming back after being declared dead): answer, so that it hears us and can rejoin.
        return name in self.members and peer.last_heard is not None and now - peer.last_heard <= self.timing.dead_after

    def _set_state(self, known: _Known, boot: int, version: int, flags: int) -> None:
        if boot != known.boot:
            known.votes = None
            known.heard = False
        known.boot, known.version, known.flags = boot, version, flags
        if known.votes:
            known.votes = {v: bv for v, bv in known.votes.items() if bv >= (boot, version)} or None

    def _apply(self, item: Item, now: float, via: str | None) -> bool:
        """Take one piece of gossip; forward it if it taught us something. Returns whether it did."""
        if item.subject == self.name:
            return self._about_us(item, now)
        known = self.known.get(item.subject)
        if known is None:
            return False  # not a member (yet): its Lease will tell us, and it will tell us itself
        mine = (known.boot, known.version)
        theirs = (item.boot, item.version)
        new = False
        if item.kind == STATE:
            if theirs > mine:
                self._set_state(known, item.boot, item.version, item.flags & _SELF_FLAGS)
                new = True
        elif item.kind == VOTE:
            if theirs >= mine and (known.votes or {}).get(item.voter, (0, 0)) < theirs:
                if theirs > mine:  # a version we have not heard of: same claim as before on the same boot
                    self._set_state(known, item.boot, item.version, known.flags if item.boot == known.boot else 0)
                known.votes = {**(known.votes or {}), item.voter: theirs}
                new = True
                self._count_votes(item.subject, known, now)
        elif item.kind == DEAD and theirs >= mine and (known.dead is None or known.dead < theirs):
            if theirs > mine:
                self._set_state(known, item.boot, item.version, 0)
            known.dead = theirs
            new = True
            self.stats["dead"] += 1
            self._rebuild(now)
        if new:
            self.stats["forwarded"] += 1
            self._broadcast(item, now, exclude=via)
        return new

    def _about_us(self, item: Item, now: float) -> bool:
        if item.boot != self.boot or not self._started:
            return False
        if item.kind == DEAD and item.version >= self.v_start and self.claim:
            self._fence(now, "concluded dead by the others")
            return True
        if item.kind in (VOTE, DEAD) and item.version >= self.version and not self.left:
            # Refute: a new version restarts the count (our acks keep the old one below a quorum).
            self.version = item.version + 1
            self.stats["refutes"] += 1
            self._broadcast(self._self_item(), now, exclude=None)
            return True
        return False

    def _count_votes(self, subject: str, known: _Known, now: float) -> None:
        at = (known.boot, known.version)
        if known.dead == at:
            return
        voters = self.ring.neighbours(subject)
        k = len(voters)
        if k < 2:
            return  # two members: only the API server can settle it (witness mode)
        votes = sum(1 for voter, bv in (known.votes or {}).items() if bv == at and voter in voters)
        if votes >= quorum(k):
            self._conclude(subject, known, now)

    def _conclude(self, subject: str, known: _Known, now: float) -> None:
        at = (known.boot, known.version)
        known.dead = at
        self.stats["dead"] += 1
        self._broadcast(Item(DEAD, subject, at[0], at[1]), now, exclude=None)
        self._rebuild(now)
        self._changed()

    def _conclude_expired(self, now: float) -> None:
        for name, member in self.members.items():
            if not member.expired or name == self.name:
                continue
            known = self.known.get(name)
            if known is None or known.dead == (known.boot, known.version):
                continue
            at = (known.boot, known.version)
            if not known.heard or any(bv == at for bv in (known.votes or {}).values()):
                self._conclude(name, known, now)

    def _vote(self, now: float) -> None:
        t = self.timing
        # Neighbours we heard within a few intervals: if none but the one we doubt, the trouble is
        # more likely ours (our receive path, a stall) than theirs, and we abstain.
        fresh_others = [n for n in self.neighbours
                        if (p := self.peers.get(n)) is not None and p.last_fresh is not None
                        and now - p.last_fresh < 3 * t.interval]
        for name in self.neighbours:
            peer = self.peers.get(name)
            known = self.known.get(name)
            if peer is None or known is None or known.dead == (known.boot, known.version):
                continue
            if now - peer.since < t.vote_grace:
                continue
            if peer.last_fresh is not None and now - peer.last_fresh < t.dead_after:
                continue
            at = (known.boot, known.version)
            if peer.voted >= at:
                continue
            if len(self.neighbours) >= 2 and not [n for n in fresh_others if n != name]:
                continue
            peer.voted = at
            self.stats["votes"] += 1
            if len(self.neighbours) == 1 and len(self.ring.neighbours(name)) == 1:
                self.witness_votes.add((name, known.boot, known.version))
                continue
            vote = Item(VOTE, name, known.boot, known.version, voter=self.name)
            known.votes = {**(known.votes or {}), self.name: (known.boot, known.version)}
            self._broadcast(vote, now, exclude=None)
            self._count_votes(name, known, now)
            self._changed()

    def _acks(self, now: float) -> list[float]:
        """Send times of the acks that keep our claim (newest first), per the fencing rule."""
        floor = max(self.v_start, min((self.peers[n].ack_version for n in self.neighbours if n in self.peers),
                                      default=self.version))
        out = []
        horizon = now - self.timing.fence_after
        for name in self.neighbours:
            peer = self.peers.get(name)
            if peer is None or peer.ack_at is None or peer.ack_at < horizon:
                continue
            if peer.ack_version < self.v_start or peer.ack_voted >= floor:
                continue
            out.append(peer.ack_at)
        if len(self.neighbours) == 1 and self.witness_at is not None and self.witness_at >= horizon:
            out.append(self.witness_at)
        return sorted(out, reverse=True)

    def _own_state(self, now: float) -> None:
        t = self.timing
        eligible = self.ready and self.name in self.members
        need = needed_acks(len(self.neighbours))
        if self.claim:
            if not eligible:
                self._fence(now, "no longer eligible")
                return
            for name in self.neighbours:
                peer = self.peers.get(name)
                if peer is not None and peer.ack_voted >= self.version:
                    self.version = peer.ack_voted + 1  # refute while keeping the claim
                    self.stats["refutes"] += 1
                    self._broadcast(self._self_item(), now, exclude=None)
            acks = self._acks(now)
            if self.answering:
                if len(acks) < need:
                    self._fence(now, f"{len(acks)} of {need} needed neighbours confirm hearing us")
                    return
                self.valid_until = acks[need - 1] + t.fence_after if need else float("inf")
            elif len(acks) >= need and now >= self.claim_at + t.grace:
                self.answering = True
                self.valid_until = acks[need - 1] + t.fence_after if need else float("inf")
                self._changed()
            elif now > self.claim_at + t.grace + t.fence_after:
                # The others count us alive and let our IPs go; if our claim is not confirmed, retract it.
                self._fence(now, "claim not confirmed by enough neighbours")
            return
        if not eligible:
            return
        if self.neighbours and not any(p.synced for n in self.neighbours if (p := self.peers.get(n)) is not None):
            return  # learn what the Leases do not say (who is dead, fenced, joining) before claiming
        horizon = now - t.fence_after
        since = self.fenced_at if self.fenced_at is not None else float("-inf")
        fresh = sum(1 for n in self.neighbours if (p := self.peers.get(n)) is not None
                    and p.ack_at is not None and p.ack_at >= max(horizon, since))
        if fresh < need and not (len(self.neighbours) == 1 and self.witness_at is not None
                                 and self.witness_at >= max(horizon, since)):
            return
        self.version += 1
        self.claim = True
        self.v_start = self.version
        self.claim_at = now
        self._broadcast(self._self_item(), now, exclude=None)
        self._changed()

    def _fence(self, now: float, why: str) -> None:
        self.answering = False
        self.valid_until = float("-inf")
        if self.claim:
            self.claim = False
            self.version += 1
            self.fenced_at = now
            self.stats["fences"] += 1
            self.last_fence_reason = why
            self._broadcast(self._self_item(), now, exclude=None)
        self._changed()

    def _self_item(self) -> Item:
        flags = (wire.FLAG_SERVING if self.claim else 0) | (wire.FLAG_LEAVING if self.left else 0)
        return Item(STATE, self.name, self.boot, self.version, flags=flags)

    # -- datagrams -----------------------------------------------------------------------------------

    def _broadcast(self, item: Item, now: float, exclude: str | None) -> None:
        """Queue ``item`` for every contact but ``exclude``, to go out now."""
        for name, peer in self.peers.items():
            if name == exclude or not self._is_contact(name, peer, now):
                continue
            peer.pending[item.key] = [item, self.timing.retransmit]
            peer.next_send = now

    def _queue_sync(self, name: str, peer: _Peer) -> None:
        """Everything we know that its Lease does not say, for a member that asked."""
        owed: set[tuple[int, str, int, int, int, str]] = set()
        for subject, known in self.known.items():
            member = self.members.get(subject)
            if member is None or subject == name:
                continue
            baseline = (member.boot, member.version, wire.FLAG_SERVING if member.serving else 0)
            items = []
            if known.dead is not None:
                items.append(Item(DEAD, subject, known.dead[0], known.dead[1]))
            if (known.boot, known.version, known.flags) != baseline and (known.boot, known.version) > (0, 0):
                items.append(Item(STATE, subject, known.boot, known.version, flags=known.flags))
            for item in items:
                peer.pending.setdefault(item.key, [item, 1])
                owed.add(item.key)
            if len(owed) >= _SYNC_LIMIT:
                break
        peer.sync_owed = owed
        peer.next_send = float("-inf")

    def _outgoing(self, now: float, force: bool = False) -> list[Outgoing]:
        out: list[Outgoing] = []
        if not self._started:
            return out
        for name, peer in list(self.peers.items()):
            if not (force or now >= peer.next_send):
                continue
            if not self._is_contact(name, peer, now):
                continue
            member = self.members.get(name)
            if member is None or member.addr is None:
                continue
            # A sync reply may need several datagrams: send them back to back, bounded.
            for _ in range(1 + (_SYNC_LIMIT // wire.MAX_ITEMS if peer.sync_owed is not None else 0)):
                out.append(Outgoing(name, member.addr, self._message(name, peer, now)))
                if not peer.pending or peer.sync_owed is None:
                    break
            jitter = self._rng.uniform(0.9, 1.0)
            peer.next_send = now + self.timing.interval * jitter
        self.stats["sent"] += len(out)
        return out

    def _message(self, name: str, peer: _Peer, now: float) -> Message:
        self._seq += 1
        self._sent[self._seq] = (now, name)
        items: list[Item] = []
        budget = wire.MAX_SIZE - _HEADER_BUDGET - len(self.name.encode())
        for key, entry in list(peer.pending.items()):
            if len(items) >= wire.MAX_ITEMS:
                break
            item = entry[0]
            assert isinstance(item, Item)
            size = wire.item_size(item)
            if size > budget:
                break
            budget -= size
            items.append(item)
            remaining = int(entry[1]) - 1  # type: ignore[call-overload]
            if remaining <= 0:
                del peer.pending[key]
            else:
                entry[1] = remaining
        flags = (wire.FLAG_SERVING if self.claim else 0) | (wire.FLAG_LEAVING if self.left else 0)
        if name in self.neighbours and not peer.synced and (
                peer.sync_asked is None or now - peer.sync_asked > 3 * self.timing.interval):
            flags |= _SYNC_REQ  # asked again until the answer arrives: datagrams get lost
            peer.sync_asked = now
        if peer.sync_owed is not None:
            peer.sync_owed.intersection_update(peer.pending)
            if not peer.sync_owed:
                flags |= _SYNC_DONE
                peer.sync_owed = None
        known = self.known.get(name)
        return Message(
            sender=self.name, boot=self.boot, version=self.version, seq=self._seq, flags=flags,
            echo_boot=peer.boot, echo_seq=peer.seq,
            your_version=known.version if known is not None and known.boot == peer.boot else 0,
            voted=peer.voted[1] if peer.voted[0] == peer.boot else 0,
            items=tuple(items),
        )

    def _prune(self, now: float) -> None:
        self._last_prune = now
        horizon = now - 2 * self.timing.dead_after
        for seq in [s for s, (at, _) in self._sent.items() if at < horizon]:
            del self._sent[seq]
        for name in [n for n, p in self.peers.items() if not self._is_contact(n, p, now)]:
            del self.peers[name]
