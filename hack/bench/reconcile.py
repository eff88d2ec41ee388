"""The speaker's reconcile at scale: from a node's death to its heirs announcing, computed.

Builds the layer2 state of a cluster of ``--nodes`` nodes and ``--ips`` Services (one IP each, every
node eligible: the worst case for the election), then kills the node holding the most IPs and times,
on each of its heirs (the nodes that now win one of its IPs), the path a real speaker runs: the
liveness change is recorded (``reconcile.Pending``), the loop thread wakes (``reconcile.Loop``), the
election updates incrementally (``speaker.layer2.Election``) and ``Layer2Protocol`` hands the new IPs to
the announcer — whose first call is where the first gratuitous ARP goes out (the announcer here
records the call instead of sending). Target: <= 50 ms at 1,000 nodes x 10,000 IPs.

Also prints what the same state costs to build (a speaker start, or a config change), a join, a
Service change, and the process's peak RSS.

    python hack/bench/reconcile.py --nodes 1000 --ips 10000
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import os
import resource
import statistics
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from lbspeaker.config.parse import parse_config
from lbspeaker.objects import NodeView, ServiceView
from lbspeaker.speaker.layer2 import Layer2Protocol
from lbspeaker.speaker.lease import Link
from lbspeaker.speaker.protocol import Changes, Snapshot
from lbspeaker.speaker.reconcile import Loop, Pending, Work

NET = ipaddress.ip_network("2001:db8::/64")


class RecordingAnnouncer:
    """Stands in for ``L2Announcer``: records when each IP is first handed over."""

    def __init__(self) -> None:
        self.first: dict[str, float] = {}
        self.event = threading.Event()
        self.watch: set[str] = set()

    def update(self, desired: Mapping[str, Sequence[str]]) -> None:
        now = time.perf_counter()
        for ip in desired:
            self.first.setdefault(ip, now)
        if self.watch and self.watch <= desired.keys():
            self.event.set()

    def interfaces_for(self, ip: str) -> list[str]:
        return ["eth0"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--ips", type=int, default=10000)
    ap.add_argument("--heirs", type=int, default=3, help="heirs whose speaker is simulated (each its own state)")
    args = ap.parse_args()

    cfg = parse_config("address-pools:\n- name: p\n  protocol: layer2\n  addresses: [2001:db8::/64]\n")
    names = [f"node-{i:05d}" for i in range(args.nodes)]
    nodes = {n: NodeView(n, {}, False) for n in names}
    links = {n: Link((NET,), True) for n in names}
    base = int(NET.network_address) + 0x1000
    services = {f"apps/svc-{i:05d}": ServiceView(f"apps/svc-{i:05d}", (str(ipaddress.IPv6Address(base + i)),),
                                                 False, frozenset(), True) for i in range(args.ips)}
    alive = frozenset(names)

    def snap(node: str, alive_set: frozenset[str], svcs: Mapping[str, ServiceView] = services) -> Snapshot:
        return Snapshot(node=node, config=cfg, nodes=nodes, services=svcs, links=links, alive=alive_set, secrets={})

    # A first speaker: the full build, as at start or after a config change.
    gc.collect()
    probe = Layer2Protocol(names[0], RecordingAnnouncer(), answering=lambda: True)
    started = time.perf_counter()
    probe.reconcile(snap(names[0], alive), Changes(everything=True))
    build = time.perf_counter() - started
    by_owner = probe.election.by_owner
    victim = max(by_owner, key=lambda n: len(by_owner[n]))
    held = sorted(by_owner[victim])
    after = alive - {victim}
    heirs: dict[str, list[str]] = {}
    for ip in held:
        rec = probe.election.ips[ip]
        winner, _ = probe.election.scorer.best(rec.key, after)
        assert winner is not None
        heirs.setdefault(winner, []).append(ip)
    print(f"{args.nodes} nodes x {args.ips} IPs: full build {build:.2f}s ({args.nodes * args.ips / build / 1e6:.1f} M "
          f"candidate hashes/s); {victim} holds {len(held)} IPs, {len(heirs)} heirs", flush=True)

    # The death, on each simulated heir: recorded -> loop thread -> election -> announcer.
    took: list[float] = []
    for heir in sorted(heirs)[: args.heirs]:
        announcer = RecordingAnnouncer()
        proto = Layer2Protocol(heir, announcer, answering=lambda: True)
        proto.reconcile(snap(heir, alive), Changes(everything=True))
        pending = Pending()
        state = {"alive": alive}

        def step(work: Work, proto: Layer2Protocol = proto, heir: str = heir,
                 state: dict[str, frozenset[str]] = state) -> None:
            if work.liveness:
                proto.reconcile(snap(heir, state["alive"]), Changes(liveness=frozenset({victim})))

        loop = Loop(pending, step, tick=5.0)
        loop.start()
        announcer.watch = set(heirs[heir])
        announcer.event.clear()
        recomputed = proto.election.recomputed
        t0 = time.perf_counter()
        state["alive"] = after
        pending.flag("liveness")
        if not announcer.event.wait(10):
            raise SystemExit(f"{heir} never announced its new IPs")
        first = min(announcer.first[ip] for ip in heirs[heir]) - t0
        last = max(announcer.first[ip] for ip in heirs[heir]) - t0
        loop.stop()
        took.append(first)
        print(f"heir {heir}: {len(heirs[heir])} new IPs; death -> first announcement {first * 1000:.1f} ms "
              f"(all of them {last * 1000:.1f} ms); IPs recomputed {proto.election.recomputed - recomputed}",
              flush=True)

    # A join (the victim comes back) and a Service change, on the probe.
    started = time.perf_counter()
    probe.reconcile(snap(names[0], after), Changes(liveness=frozenset({victim})))
    death = time.perf_counter() - started
    started = time.perf_counter()
    probe.reconcile(snap(names[0], alive), Changes(liveness=frozenset({victim})))
    join = time.perf_counter() - started
    changed = dict(services)
    key = next(iter(changed))
    changed[key] = replace(changed[key], local=True, ready_nodes=frozenset(names[:3]))
    started = time.perf_counter()
    probe.reconcile(snap(names[0], alive, changed), Changes(services=frozenset({key})))
    service = time.perf_counter() - started
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"on one speaker: a death {death * 1000:.1f} ms, a join {join * 1000:.1f} ms, one Service change "
          f"{service * 1000:.2f} ms; peak RSS of this process (holding {1 + min(args.heirs, len(heirs))} "
          f"speakers' state) {rss:.0f} MB")
    print(f"RESULT nodes={args.nodes} ips={args.ips} death_to_first_announcement_ms_max={max(took) * 1000:.1f} "
          f"p50={statistics.median(took) * 1000:.1f} full_build_s={build:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
