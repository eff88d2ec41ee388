"""The membership detector on a simulated network (real detectors, real datagrams, simulated clock).

Each test names the rule it holds; deleting that rule from ``detector.py`` makes it fail.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from lbspeaker_testkit.membership_sim import Cut, Simulation

from lbspeaker.membership import wire
from lbspeaker.membership.detector import Member, Timing
from lbspeaker.membership.ring import Ring, needed_acks, quorum
from lbspeaker.membership.wire import VOTE, Item

T = Timing()  # 0.1 s heartbeats, dead after 0.5 s, fence after 0.4 s
NAMES = [f"n{i}" for i in range(8)]


def steps(sim: Simulation, seconds: float, check: Callable[[Simulation], None] | None = None,
          step: float = 0.005) -> None:
    end = sim.now + seconds
    while sim.now < end:
        sim.run_until(min(end, sim.now + step))
        if check is not None:
            check(sim)


def until(sim: Simulation, cond: Callable[[Simulation], bool], limit: float, step: float = 0.005) -> float:
    t0 = sim.now
    while sim.now < t0 + limit:
        if cond(sim):
            return sim.now - t0
        sim.run_until(sim.now + step)
    raise AssertionError(f"not within {limit}s")


def warm(names: list[str] = NAMES) -> Simulation:
    return warmed(Simulation(names, seed=7))


def warmed(sim: Simulation) -> Simulation:
    """``sim`` once every node answers."""
    until(sim, lambda s: len(s.answering()) == len(s.nodes), 5.0)
    return sim


def no_double(subject: str) -> Callable[[Simulation], None]:
    """While ``subject`` answers, nobody may count it dead (they would take its IPs)."""
    def check(sim: Simulation) -> None:
        node = sim.nodes[subject]
        if node.up and node.detector.answering:
            doubters = [n.name for n in sim.live() if n.name != subject and not n.detector.is_alive(subject)]
            assert not doubters, f"{subject} answers while {doubters} count it dead at {sim.now:.3f}"
    return check


def test_quorum_and_acks_always_overlap() -> None:
    for k in range(2, 9):
        assert quorum(k) + needed_acks(k) == k + 1
        assert quorum(k) > k // 2
    assert (quorum(1), needed_acks(1), quorum(0), needed_acks(0)) == (1, 1, 0, 0)


def test_rings_are_symmetric_and_small() -> None:
    ring = Ring(f"node-{i}" for i in range(500))
    for name in ring.members:
        nbrs = ring.neighbours(name)
        assert 2 <= len(nbrs) <= 4 and name not in nbrs
        assert all(name in ring.neighbours(n) for n in nbrs)
    assert Ring(["a", "b", "c"]).neighbours("a") == {"b", "c"}
    assert Ring(["a"]).neighbours("a") == frozenset()
    assert Ring(["a", "b"]).neighbours("zz") == frozenset()


def test_a_cluster_comes_up_and_stays_up_under_loss() -> None:
    sim = warmed(Simulation(NAMES, seed=7, loss=0.02))
    steps(sim, 20.0, step=0.05)
    assert sorted(sim.answering()) == NAMES
    assert all(n.detector.alive() == frozenset(NAMES) for n in sim.live())
    assert sum(n.detector.stats["fences"] for n in sim.live()) == 0
    # Packet rate: one datagram per neighbour per interval, plus a little gossip.
    per_node = [n.sent / sim.now for n in sim.live()]
    assert max(per_node) < 4 / T.interval * 1.5


def test_a_dead_node_is_counted_dead_by_everyone_within_dead_after() -> None:
    sim = warm()
    steps(sim, 1.0)
    sim.kill("n3")
    t0 = sim.now
    # Not before its neighbours had a full dead_after of silence (less one interval of last contact)...
    steps(sim, T.dead_after - T.interval - 0.02)
    assert all(n.detector.is_alive("n3") for n in sim.live())
    # ...and by everyone soon after.
    took = until(sim, lambda s: not s.considered_alive("n3"), 1.0) + (sim.now - t0 - 0) * 0
    assert sim.now - t0 <= T.dead_after + T.interval + 0.05, took
    assert sorted(sim.answering()) == [n for n in NAMES if n != "n3"]


def test_a_node_cut_off_stops_answering_before_anyone_takes_over() -> None:
    """Fencing: the split brain of the issue (membership traffic dropped both ways, all else fine)."""
    sim = warm()
    steps(sim, 1.0)
    cut = sim.cut(Cut(frozenset({"n2"}), frozenset(NAMES) - {"n2"}))
    steps(sim, 1.5, no_double("n2"))
    assert not sim.nodes["n2"].detector.answering
    assert not sim.considered_alive("n2")
    assert sim.nodes["n2"].detector.stats["votes"] == 0  # it heard nobody: it abstained
    sim.heal(cut)
    until(sim, lambda s: s.nodes["n2"].detector.answering and len(s.considered_alive("n2")) == 7, 3.0)
    steps(sim, 2.0, no_double("n2"))


@pytest.mark.parametrize("direction", ["out", "in"])
def test_a_one_way_cut_also_fences(direction: str) -> None:
    sim = warm()
    steps(sim, 1.0)
    others = frozenset(NAMES) - {"n5"}
    src, dst = (frozenset({"n5"}), others) if direction == "out" else (others, frozenset({"n5"}))
    sim.cut(Cut(src, dst, both=False))
    steps(sim, 1.5, no_double("n5"))
    assert not sim.nodes["n5"].detector.answering and not sim.considered_alive("n5")


def test_one_vote_is_refuted_and_never_kills() -> None:
    sim = warm()
    steps(sim, 1.0)
    target = sim.nodes["n4"].detector
    voter = sorted(sim.ring_neighbours("n4"))[0] if hasattr(sim, "ring_neighbours") else \
        sorted(sim.nodes["n0"].detector.ring.neighbours("n4"))[0]
    before = target.version
    for node in sim.live():  # as if the vote had been flooded
        node.detector.receive(wire.Message(voter, sim.nodes[voter].boot, sim.nodes[voter].detector.version,
                                           seq=10**9, items=(Item(VOTE, "n4", 1, before, voter=voter),)),
                              sim.now)
    steps(sim, 1.0, no_double("n4"))
    assert target.version > before and target.answering
    assert all(n.detector.is_alive("n4") for n in sim.live())


def test_a_graceful_leave_is_known_at_once() -> None:
    sim = warm()
    steps(sim, 1.0)
    det = sim.nodes["n1"].detector
    out = det.leave(sim.now) + det.flush(sim.now)
    for o in out:
        sim._send(sim.nodes["n1"], o, wire.encode(o.message, b"simulated-cluster-key-0123456789", o.to))
    sim.kill("n1")
    took = until(sim, lambda s: not s.considered_alive("n1"), 0.2, step=0.001)
    assert took < 0.05
    assert sum(n.detector.stats["votes"] for n in sim.live()) == 0


def test_replayed_datagrams_are_rejected_and_cannot_keep_a_dead_node_alive() -> None:
    sim = warm()
    steps(sim, 1.0)
    captured = sim.tap("n6")
    steps(sim, 1.0)
    sim.untap("n6")
    sim.kill("n6")
    t0 = sim.now
    replayed = 0
    while sim.now < t0 + 1.5:
        for to, raw in captured[replayed:replayed + 20]:
            if sim.nodes[to].up:
                sim.replay(to, raw, "n6")
        replayed += 20
        sim.run_until(sim.now + 0.02)
    assert not sim.considered_alive("n6")
    rejected = sum(n.detector.rejected.get("replay", 0) for n in sim.live())
    assert rejected > 0


def test_a_restarted_node_rejoins_with_a_higher_boot_and_its_old_datagrams_are_refused() -> None:
    sim = warm()
    steps(sim, 1.0)
    captured = sim.tap("n7")
    steps(sim, 0.5)
    sim.untap("n7")
    sim.kill("n7")
    until(sim, lambda s: not s.considered_alive("n7"), 1.0)
    sim.restart("n7")
    until(sim, lambda s: s.nodes["n7"].detector.answering and len(s.considered_alive("n7")) == 7, 3.0)
    for to, raw in captured:
        sim.replay(to, raw, "n7")
    assert sum(n.detector.rejected.get("stale-boot", 0) for n in sim.live()) >= len(captured)
    assert len(sim.considered_alive("n7")) == 7


def test_a_restarted_node_learns_the_dead_from_its_neighbours_before_answering() -> None:
    # every Lease says "claiming": only the sync can tell the restarted node n0 died
    sim = warmed(Simulation(NAMES, seed=7, warm=True))
    steps(sim, 1.0)
    sim.kill("n0")
    until(sim, lambda s: not s.considered_alive("n0"), 1.0)
    sim.restart("n3")
    det = sim.nodes["n3"].detector
    until(sim, lambda s: s.nodes["n3"].detector.answering, 3.0, step=0.001)
    assert not det.is_alive("n0")  # the sync told it: its election will not wait for a dead owner


def test_two_neighbours_dying_together_are_both_found() -> None:
    names = [f"m{i:02d}" for i in range(12)]
    sim = warm(names)
    steps(sim, 1.0)
    ring = sim.nodes[names[0]].detector.ring
    a = names[3]
    b = sorted(ring.neighbours(a))[0]
    sim.kill(a)
    sim.kill(b)
    until(sim, lambda s: not s.considered_alive(a) and not s.considered_alive(b), 3.0)
    assert len(sim.answering()) == 10


def test_an_expired_lease_settles_a_silent_member() -> None:
    sim = warm()
    steps(sim, 1.0)
    for name in ("n1", "n2", "n3"):  # more of n0's neighbours than a quorum allows... and n0 itself
        sim.kill(name)
    sim.kill("n0")
    steps(sim, 2.0)
    members = dict(sim.members)
    for name in ("n0", "n1", "n2", "n3"):
        members[name] = Member(addr=members[name].addr, boot=1, expired=True)
    sim.set_members(members)
    steps(sim, 0.2)
    for name in ("n0", "n1", "n2", "n3"):
        assert not sim.considered_alive(name)


class FakeApi:
    """The API server's part in two-member mode: Lease writes with optimistic concurrency."""

    def __init__(self, sim: Simulation, reachable: set[str]) -> None:
        self.sim = sim
        self.reachable = reachable
        self.written: dict[str, float] = {name: -100.0 for name in sim.nodes}  # last write, as observed
        self.marked: dict[str, tuple[int, int]] = {}

    def __call__(self, sim: Simulation) -> None:
        for node in sim.live():
            det = node.detector
            if node.name not in self.reachable:
                continue
            if det.wants_witness(sim.now):
                if self.marked.get(node.name, (0, 0))[0] == det.boot and self.marked[node.name][1] >= det.v_start:
                    det.told_dead(*self.marked[node.name], sim.now)
                else:
                    self.written[node.name] = sim.now
                    det.witness_ack(sim.now)
            for subject, boot, version in list(det.witness_votes):
                if sim.now - self.written[subject] >= T.dead_after:  # the OCC write succeeds
                    self.marked[subject] = (boot, version)
                    det.witness_vote_done(subject, boot, version, sim.now)


def test_two_nodes_fail_over_through_the_api_server() -> None:
    sim = warm(["a", "b"])
    api = FakeApi(sim, {"a", "b"})
    sim.observers.append(api)
    steps(sim, 1.0)
    sim.kill("b")
    took = until(sim, lambda s: not s.nodes["a"].detector.is_alive("b"), 2.0)
    assert took <= T.dead_after + 0.2
    steps(sim, 1.0)
    assert sim.nodes["a"].detector.answering


def test_two_nodes_cut_apart_both_keep_their_own_and_neither_takes_the_other() -> None:
    sim = warm(["a", "b"])
    api = FakeApi(sim, {"a", "b"})
    sim.observers.append(api)
    steps(sim, 1.0)
    sim.cut(Cut(frozenset({"a"}), frozenset({"b"})))

    def neither_counted_dead(s: Simulation) -> None:
        no_double("a")(s)
        no_double("b")(s)

    steps(sim, 3.0, neither_counted_dead)
    assert sim.nodes["a"].detector.answering and sim.nodes["b"].detector.answering


def test_two_nodes_without_the_api_server_stop_rather_than_guess() -> None:
    sim = warm(["a", "b"])
    steps(sim, 1.0)
    sim.kill("b")
    steps(sim, 1.0)
    assert not sim.nodes["a"].detector.answering  # a cannot tell a dead peer from a cut link
    assert sim.nodes["a"].detector.is_alive("b")  # and does not take b's IPs either


def test_a_lone_member_answers_alone() -> None:
    sim = warm(["solo"])
    assert sim.answering() == ["solo"]


def test_acks_from_neighbours_that_voted_against_us_do_not_keep_us_answering() -> None:
    """The clean-ack rule: a neighbour that voted against a version still in play is not a witness
    for us, even though it hears us now — its vote may be one of a quorum somewhere."""
    from lbspeaker.membership.detector import Detector

    names = ["d", "a", "b", "c", "e"]
    det = Detector("d", T, now=0.0, seed=1)
    det.set_members({n: Member(addr=(n, 1), boot=1) for n in names}, 0.0)
    det.start(1, 0.0)
    det.set_ready(True)
    assert len(det.neighbours) >= 3  # two of them voted: fewer than needed_acks remain
    det.version = det.v_start = 5
    det.claim = det.answering = True
    det.claim_at = -10.0
    voters, silent = sorted(det.neighbours)[:2], sorted(det.neighbours)[2:]
    now = 10.0
    for name in voters:  # fresh acks, but from neighbours that voted against version 5
        p = det.peers[name]
        p.ack_at, p.ack_version, p.ack_voted, p.since = now - 0.05, 5, 5, 0.0
    for name in silent:  # their acks are stale and they still know us at version 5
        p = det.peers[name]
        p.ack_at, p.ack_version, p.ack_voted, p.since = now - 1.0, 5, 0, 0.0
    det.tick(now)
    assert not det.answering and not det.claim
    assert det.stats["fences"] == 1


def test_in_two_member_mode_a_vote_alone_never_concludes() -> None:
    sim = warm(["a", "b"])
    steps(sim, 1.0)
    a = sim.nodes["a"].detector
    b_boot, b_version = sim.nodes["b"].boot, sim.nodes["b"].detector.version
    a.receive(wire.Message("b", b_boot, b_version, seq=10**9,
                           items=(Item(VOTE, "b", b_boot, b_version, voter="a"),)), sim.now)
    assert a.is_alive("b")  # only a write into b's Lease (the API server's vote) can settle it


def test_a_restarted_node_answers_only_after_the_others_count_it_alive() -> None:
    """Join grace: claim first, answer later, so the nodes holding its IPs have let go."""
    names = [f"j{i:02d}" for i in range(20)]
    sim = warmed(Simulation(names, seed=7, delay=0.002, jitter=0.002))
    steps(sim, 1.0)
    sim.kill("j05")
    until(sim, lambda s: not s.considered_alive("j05"), 1.0)
    sim.restart("j05")
    steps(sim, 1.5, no_double_rejoin("j05"), step=0.0005)
    assert sim.nodes["j05"].detector.answering


def no_double_rejoin(subject: str) -> Callable[[Simulation], None]:
    def check(sim: Simulation) -> None:
        node = sim.nodes[subject]
        if node.detector.answering:
            slow = [n.name for n in sim.live() if n.name != subject and not n.detector.is_alive(subject)]
            assert not slow, f"{subject} answers while {slow} do not count it alive yet"
    return check


def test_datagrams_of_an_older_boot_than_the_lease_shows_are_refused() -> None:
    sim = warm()
    steps(sim, 1.0)
    captured = sim.tap("n7")
    steps(sim, 0.3)
    sim.untap("n7")
    sim.kill("n7")
    members = dict(sim.members)
    members["n7"] = Member(addr=members["n7"].addr, boot=2)  # its new process wrote its Lease
    sim.set_members(members)
    before = sum(n.detector.rejected.get("stale-boot", 0) for n in sim.live())
    for to, raw in captured[-5:]:
        sim.replay(to, raw, "n7")
    assert sum(n.detector.rejected.get("stale-boot", 0) for n in sim.live()) == before + 5
