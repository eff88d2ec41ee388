"""Membership at scale: a discrete-event simulation that drives the real detector and election code.

Every node runs ``lbspeaker.membership.detector.Detector``; every datagram is encoded, MAC'd and
decoded by ``lbspeaker.membership.wire``; owners are chosen by ``lbspeaker.election``. The network is
simulated (``lbspeaker_testkit.membership_sim``): per-datagram delay 0.5-1 ms, random loss ``--loss``,
partitions, node deaths. The clock is simulated too, so the run takes longer than the time it shows
(about 10 ms of this machine per node per simulated second).

Scenario, after the cluster is warm (every node answering, as in a running cluster):
1. ``--steady`` seconds of normal operation: packet rate, CPU, false positives;
2. ``--deaths`` nodes die one by one (silent at once); time until every live node counts each dead;
3. ``--partitions`` times, one node (an owner of sampled IPs) loses its membership traffic both ways
   (the split brain of the issue: its datagrams are dropped, nothing else changes) for 2 s and comes
   back: when it stops answering, when every node counts it dead, and for how long two nodes both
   answered for one of its IPs (double_owner_ms, summed over its IPs, per partition).

Prints details, then the last line:
``RESULT nodes=N pps_per_node=X cpu_ms_per_s=Y detect_p50_ms=A detect_p99_ms=B false_positives=C double_owner_ms=D``
(pps_per_node: datagrams a node sends per second, each way; cpu_ms_per_s: CPU per node per second in
the membership code, encoding included; double_owner_ms: the worst partition event.)

    python hack/bench/membership_sim.py --nodes 1000 --loss 0.01
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from lbspeaker_testkit.membership_sim import Cut, Simulation

from lbspeaker import election
from lbspeaker.membership.detector import Timing

STEP = 0.005  # seconds of simulated time between checks


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ranked(names: list[str], ip: str) -> list[str]:
    """``names`` by rendezvous score for ``ip``, highest first."""
    return sorted(names, key=lambda n: -election.score(n, ip))


class Owners:
    """Per sampled IP, every node ranked by its rendezvous score: a node's view of the owner is the
    first node of the ranking it counts alive (it may be itself)."""

    def __init__(self, names: list[str], count: int) -> None:
        self.ips = [f"198.51.100.{i % 250 + 1}" if i < 250 else f"2001:db8::{i:x}" for i in range(count)]
        self.ranking = {ip: ranked(names, ip) for ip in self.ips}

    def owned_by(self, node: str, sim: Simulation) -> list[str]:
        return [ip for ip in self.ips if self.view_owner(ip, node, sim) == node]

    def view_owner(self, ip: str, node: str, sim: Simulation) -> str | None:
        det = sim.nodes[node].detector
        for candidate in self.ranking[ip]:
            if det.is_alive(candidate):
                return candidate
        return None

    def claimants(self, ip: str, sim: Simulation, limit: int = 4) -> list[str]:
        """Nodes answering for ``ip`` right now (only the top of the ranking can)."""
        out = []
        for candidate in self.ranking[ip][:limit]:
            node = sim.nodes[candidate]
            if node.up and node.detector.answering and self.view_owner(ip, candidate, sim) == candidate:
                out.append(candidate)
        return out


def counted_alive_by_all(sim: Simulation, subject: str) -> bool:
    return all(n.detector.is_alive(subject) for n in sim.live() if n.name != subject)


def counted_dead_by_all(sim: Simulation, subject: str) -> bool:
    return not any(n.detector.is_alive(subject) for n in sim.live() if n.name != subject)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--loss", type=float, default=0.01, help="datagram loss probability (default 0.01)")
    ap.add_argument("--steady", type=float, default=3.0, help="seconds of normal operation measured")
    ap.add_argument("--deaths", type=int, default=5)
    ap.add_argument("--partitions", type=int, default=2)
    ap.add_argument("--ips", type=int, default=400, help="sampled IPs for the owner checks")
    ap.add_argument("--interval", type=float, default=Timing.interval)
    ap.add_argument("--dead-after", type=float, default=Timing.dead_after)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    timing = Timing(interval=args.interval, dead_after=args.dead_after)
    names = [f"node-{i:05d}" for i in range(args.nodes)]
    wall = time.monotonic()
    sim = Simulation(names, timing=timing, seed=args.seed, loss=args.loss, warm=True)
    owners = Owners(names, args.ips)
    print(f"{args.nodes} nodes, loss {args.loss:.1%}, heartbeat {timing.interval}s, dead-after "
          f"{timing.dead_after}s (fence after {timing.fence_after:.2f}s)", flush=True)

    # 1. Steady state.
    sim.run_until(1.0)  # settle: the first datagrams carry no echo yet
    sent0 = {n.name: n.sent for n in sim.nodes.values()}
    recv0 = {n.name: n.received for n in sim.nodes.values()}
    cpu0 = {n.name: n.cpu for n in sim.nodes.values()}
    start = sim.now
    false_positives = 0
    unexpected: set[str] = set()
    while sim.now < start + args.steady:
        sim.run_until(sim.now + 0.05)
        for n in sim.live():
            if not n.detector.answering and n.name not in unexpected:
                unexpected.add(n.name)
    span = sim.now - start
    pps = statistics.mean((n.sent - sent0[n.name]) / span for n in sim.nodes.values())
    pps_in = statistics.mean((n.received - recv0[n.name]) / span for n in sim.nodes.values())
    cpu = statistics.mean((n.cpu - cpu0[n.name]) / span * 1000 for n in sim.nodes.values())
    votes = sum(n.detector.stats["votes"] for n in sim.nodes.values())
    dead = [n.name for n in sim.live() if not counted_alive_by_all(sim, n.name)]
    false_positives += len(unexpected) + len(dead)
    print(f"steady {span:.1f}s: {pps:.1f} datagrams/s sent and {pps_in:.1f} received per node, "
          f"{cpu:.2f} ms CPU per node per s; votes cast {votes}, nodes stopped answering {len(unexpected)}, "
          f"counted dead while alive {len(dead)}", flush=True)

    # 2. Deaths.
    detect: list[float] = []
    rng_names = [n for n in names[1::max(1, args.nodes // (args.deaths + args.partitions + 1))]]
    victims = rng_names[:args.deaths]
    for victim in victims:
        sim.kill(victim)
        t0 = sim.now
        while sim.now < t0 + 5 and not counted_dead_by_all(sim, victim):
            sim.run_until(sim.now + STEP)
        took = sim.now - t0
        detect.append(took)
        others = [n for n in sim.live() if not n.detector.answering]
        false_positives += len(others)
        print(f"death of {victim}: every live node counts it dead after {took * 1000:.0f} ms"
              f"{'' if not others else f'; {len(others)} live nodes stopped answering'}", flush=True)
        sim.run_until(sim.now + 0.5)

    # 3. Partitions of an owner's membership traffic.
    worst_double = 0.0
    survivors = [n for n in names if sim.nodes[n].up]
    picked = [n for n in survivors if owners.owned_by(n, sim)][: args.partitions]
    for node in picked:
        ips = owners.owned_by(node, sim)
        rest = frozenset(survivors) - {node}
        cut = sim.cut(Cut(frozenset({node}), rest))
        t0 = sim.now
        fenced = everyone = None
        double = 0.0
        while sim.now < t0 + 2.0:
            sim.run_until(sim.now + STEP)
            if fenced is None and not sim.nodes[node].detector.answering:
                fenced = sim.now - t0
            if everyone is None and counted_dead_by_all(sim, node):
                everyone = sim.now - t0
            double += STEP * sum(1 for ip in ips if len(owners.claimants(ip, sim)) > 1)
        orphans = [ip for ip in ips if not owners.claimants(ip, sim)]
        sim.heal(cut)
        t1 = sim.now
        back = None
        while sim.now < t1 + 5:
            sim.run_until(sim.now + STEP)
            if sim.nodes[node].detector.answering and counted_alive_by_all(sim, node):
                back = sim.now - t1
                break
        stopped = [n for n in sim.live() if not n.detector.answering and n.name != node]
        false_positives += len(stopped)
        worst_double = max(worst_double, double)
        print(f"partition of {node} ({len(ips)} sampled IPs): it stopped answering after "
              f"{(fenced or float('nan')) * 1000:.0f} ms, every node counted it dead after "
              f"{(everyone or float('nan')) * 1000:.0f} ms, two answerers for {double * 1000:.0f} ms, "
              f"IPs without an answerer at the end {len(orphans)}; healed: answering again and counted "
              f"alive by all after {(back or float('nan')) * 1000:.0f} ms", flush=True)

    print(f"simulated {sim.now:.1f}s in {time.monotonic() - wall:.0f}s of wall time; "
          f"{sim.delivered} datagrams delivered, {sim.dropped} dropped", flush=True)
    print(f"RESULT nodes={args.nodes} pps_per_node={pps:.1f} cpu_ms_per_s={cpu:.2f} "
          f"detect_p50_ms={pct(detect, 0.5) * 1000:.0f} detect_p99_ms={pct(detect, 0.99) * 1000:.0f} "
          f"false_positives={false_positives} double_owner_ms={worst_double * 1000:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
