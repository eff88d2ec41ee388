"""A discrete-event simulator for the membership detector: real ``Detector`` objects, real datagrams
(encoded, MAC'd and decoded by ``lbspeaker.membership.wire``), a simulated clock and network.

The network delays each datagram by ``delay`` plus up to ``jitter``, drops it with probability
``loss``, and drops everything a ``Cut`` blocks (a partition, or one direction of one link). Nodes can
be killed (they go silent at once, as power loss would) and restarted with a higher boot number.
A node is woken at its detector's ``next_deadline`` and whenever a datagram reaches it, which is what
``lbspeaker.membership.transport`` does on a real socket.

Used by ``tests/unit/membership`` (small clusters, exact assertions) and by
``hack/bench/membership_sim.py`` (thousands of nodes, figures). Deterministic for a given seed.
"""

from __future__ import annotations

import heapq
import itertools
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from lbspeaker.membership import wire
from lbspeaker.membership.detector import Detector, Member, Outgoing, Timing

KEY = b"simulated-cluster-key-0123456789"


@dataclass
class Cut:
    """Drop datagrams from a node in ``src`` to a node in ``dst`` (both directions if ``both``)."""

    src: frozenset[str]
    dst: frozenset[str]
    both: bool = True

    def blocks(self, a: str, b: str) -> bool:
        return (a in self.src and b in self.dst) or (self.both and b in self.src and a in self.dst)


@dataclass
class SimNode:
    name: str
    detector: Detector
    up: bool = True
    boot: int = 1
    cpu: float = 0.0  # seconds of CPU spent in this node's membership code
    sent: int = 0
    received: int = 0
    wake_at: float = float("inf")


@dataclass(order=True)
class _Event:
    at: float
    order: int
    kind: str = field(compare=False)
    node: str = field(compare=False)
    data: bytes = field(compare=False, default=b"")
    src: str = field(compare=False, default="")


class Simulation:
    """A cluster of ``names`` on a simulated network."""

    def __init__(self, names: Iterable[str], *, timing: Timing | None = None, seed: int = 1,
                 delay: float = 0.0005, jitter: float = 0.0005, loss: float = 0.0,
                 ready: bool = True, warm: bool = False) -> None:
        self.timing = timing or Timing()
        self.rng = random.Random(seed)
        self.delay = delay
        self.jitter = jitter
        self.loss = loss
        self.now = 0.0
        self.cuts: list[Cut] = []
        self._events: list[_Event] = []
        self._order = itertools.count()
        self.nodes: dict[str, SimNode] = {}
        self.members: dict[str, Member] = {}
        self.observers: list[Callable[[Simulation], None]] = []
        self.taps: dict[str, list[tuple[str, bytes]]] = {}  # node -> (recipient, datagram) it sent
        self.delivered = 0
        self.dropped = 0
        for name in names:
            # warm: every Lease already records its speaker claiming at version 2, as in a running cluster
            self.members[name] = Member(addr=(name, 7946), boot=1, version=2 if warm else 0, serving=warm)
        for i, name in enumerate(self.members):
            det = Detector(name, self.timing, now=0.0, seed=seed * 100003 + i)
            node = self.nodes[name] = SimNode(name, det)
            det.set_members(self.members, 0.0)
            det.start(1, 0.0)
            det.set_ready(ready)
            if warm:
                _warm(det)
            self._wake(node, self.rng.uniform(0, self.timing.interval))

    # -- control -------------------------------------------------------------------------------------

    def run_until(self, until: float) -> None:
        while self._events and self._events[0].at <= until:
            ev = heapq.heappop(self._events)
            self.now = ev.at
            node = self.nodes.get(ev.node)
            if node is None or not node.up:
                continue
            if ev.kind == "wake":
                if ev.at != node.wake_at:
                    continue  # superseded
                node.wake_at = float("inf")
                self._run(node, None, "")
            else:
                self._run(node, ev.data, ev.src)
            for observe in self.observers:
                observe(self)
        self.now = until

    def kill(self, name: str) -> None:
        """The node goes silent at once (power loss, SIGKILL with the link down)."""
        self.nodes[name].up = False

    def restart(self, name: str) -> None:
        """A new process on the node: a higher boot, published in its Lease, empty memory."""
        old = self.nodes[name]
        boot = old.boot + 1
        self.members[name] = Member(addr=(name, 7946), boot=boot)
        for node in self.nodes.values():
            if node.up and node.name != name:
                node.detector.set_members(self.members, self.now)
                self._wake(node, self.now)
        det = Detector(name, self.timing, now=self.now, seed=boot * 7919 + len(name))
        det.set_members(self.members, self.now)
        det.start(boot, self.now)
        det.set_ready(True)
        self.nodes[name] = SimNode(name, det, boot=boot)
        self._wake(self.nodes[name], self.now)

    def set_members(self, members: dict[str, Member]) -> None:
        """A new member list seen by every live node at once (a Lease change observed everywhere)."""
        self.members = dict(members)
        for node in self.nodes.values():
            if node.up:
                node.detector.set_members(self.members, self.now)
                self._wake(node, self.now)

    def tap(self, name: str) -> list[tuple[str, bytes]]:
        """Record every datagram ``name`` sends from now on (as an attacker on the wire would)."""
        return self.taps.setdefault(name, [])

    def untap(self, name: str) -> None:
        self.taps.pop(name, None)

    def replay(self, recipient: str, data: bytes, sender: str) -> None:
        """Deliver ``data`` to ``recipient`` now, as if ``sender`` had just sent it again."""
        self._run(self.nodes[recipient], data, sender)

    def cut(self, cut: Cut) -> Cut:
        self.cuts.append(cut)
        return cut

    def heal(self, cut: Cut) -> None:
        self.cuts.remove(cut)

    # -- views ---------------------------------------------------------------------------------------

    def live(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.up]

    def considered_alive(self, subject: str) -> list[str]:
        """Live nodes (other than ``subject``) that count ``subject`` alive."""
        return [n.name for n in self.live() if n.name != subject and subject in n.detector.alive()]

    def answering(self) -> list[str]:
        return [n.name for n in self.live() if n.detector.answering]

    # -- internals -----------------------------------------------------------------------------------

    def _wake(self, node: SimNode, at: float) -> None:
        if at < node.wake_at:
            node.wake_at = at
            heapq.heappush(self._events, _Event(at, next(self._order), "wake", node.name))

    def _run(self, node: SimNode, data: bytes | None, src: str) -> None:
        det = node.detector
        started = time.process_time()
        if data is not None:
            node.received += 1
            msg = wire.decode(data, (KEY,), node.name)
            if isinstance(msg, wire.Rejected):
                det.reject(msg.reason)
            else:
                det.receive(msg, self.now)
        out = det.tick(self.now)
        encoded = [(o, wire.encode(o.message, KEY, o.to)) for o in out]
        node.cpu += time.process_time() - started
        for o, raw in encoded:
            self._send(node, o, raw)
        self._wake(node, det.next_deadline(self.now))

    def _send(self, node: SimNode, out: Outgoing, raw: bytes) -> None:
        node.sent += 1
        tapped = self.taps.get(node.name)
        if tapped is not None:
            tapped.append((out.to, raw))
        if self.loss and self.rng.random() < self.loss:
            self.dropped += 1
            return
        if any(c.blocks(node.name, out.to) for c in self.cuts):
            self.dropped += 1
            return
        at = self.now + self.delay + self.rng.random() * self.jitter
        self.delivered += 1
        heapq.heappush(self._events, _Event(at, next(self._order), "recv", out.to, raw, node.name))


def _warm(det: Detector) -> None:
    """Put a freshly started detector in the state a long-running one has: synced, acked, answering.

    Only for simulating large clusters without paying for everyone joining at once (which is O(N^2)
    gossip); every datagram after this runs through the real code. White-box by necessity.
    """
    det.version = det.v_start = 2
    det.claim = det.answering = True
    det.claim_at = -10.0
    det.valid_until = det.timing.fence_after
    for known in det.known.values():
        known.heard = True
    for name in det.neighbours:
        peer = det.peers[name]
        peer.since = -10.0
        peer.boot = 1
        peer.synced = True
        peer.sync_asked = -10.0
        peer.last_heard = peer.last_fresh = peer.ack_at = 0.0
        peer.ack_version = 2
    det.epoch += 1
