#!/usr/bin/env python3
"""BFD timer jitter under load (root): why the speaker runs BFD in a process of its own.

A node namespace runs a worker process that stands in for a busy speaker: ``--load`` threads doing
reconcile-like work (pure-Python loops over dicts, and ``json.loads`` of a 20 MB watch-event-sized
document, one C call that holds the interpreter lock for its whole length). Next to that load, the
worker runs one BFD session at 300 ms x 3 towards a BIRD 2 router (a static BFD neighbour) either

- ``process``: as the speaker does, through ``BfdDaemon`` (the ``python -m lbspeaker.bfd`` child), or
- ``thread``: the same ``Engine`` in a thread of the loaded process (what a design without the
  separate process would do).

The router's namespace records, with tcpdump timestamps, every packet the node sends: the gaps must lie
in 225-300 ms (300 ms less 0-25 % jitter, RFC 5880 6.8.7). A gap above 300 ms is a late packet; above
900 ms the router declares the session down (counted from BIRD's log). Printed per scenario: gaps
p50 / p99 / max, late packets, max lateness, session downs at the router.

Packets go only between the lab's namespaces (192.0.2.0/24); the lab is deleted on the way out.
Usage: sudo python3 hack/bench/bfd_jitter.py [--seconds 30] [--load 2]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from lbspeaker_testkit.bird import BirdBfd, BirdRouter, render_bird_config, wait_until  # noqa: E402
from lbspeaker_testkit.netns import Lab  # noqa: E402

from lbspeaker.bfd import BfdDaemon, Engine, SessionKey, SessionSpec, Timers  # noqa: E402

ROUTER, NODE = "192.0.2.1", "192.0.2.11"
TIMERS = Timers(desired_min_tx=300_000, required_min_rx=300_000, detect_mult=3)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# ---- the worker (runs inside the node namespace) ------------------------------------------------------


def burn(stop: threading.Event, blob: str) -> None:
    """Reconcile-like work: Python loops over dicts, and long C calls that keep the interpreter lock."""
    table = {f"svc-{i}": {"ips": [f"203.0.113.{i % 250}"], "ready": i % 3 != 0} for i in range(20_000)}
    while not stop.is_set():
        announced = sorted(k for k, v in table.items() if v["ready"] and v["ips"])
        table[announced[0]]["ready"] = True
        json.loads(blob)


def worker(mode: str, load: int, seconds: float) -> int:
    stop = threading.Event()
    blob = json.dumps([{"metadata": {"name": f"s{i}", "labels": {"a": "b" * 40}}, "spec": {"ports": [80, 443]}}
                       for i in range(150_000)])
    spec = SessionSpec(SessionKey(peer=ROUTER, local=NODE), TIMERS)
    threads = [threading.Thread(target=burn, args=(stop, blob), daemon=True) for _ in range(load)]
    daemon: BfdDaemon | None = None
    engine: Engine | None = None
    if mode == "process":
        daemon = BfdDaemon()
        daemon.set_sessions([spec])
    else:
        engine = Engine()
        engine.configure([spec])

        def loop() -> None:
            assert engine is not None
            while not stop.is_set():
                engine.run_once(0.5)

        threading.Thread(target=loop, daemon=True).start()
    for thread in threads:
        thread.start()
    print("worker running", flush=True)
    time.sleep(seconds)
    stop.set()
    if daemon is not None:
        daemon.stop()
    return 0


# ---- the benchmark --------------------------------------------------------------------------------


def scenario(lab: Lab, router: BirdRouter, mode: str, load: int, seconds: float) -> dict[str, float]:
    node = lab.hosts["n1"]
    proc = lab.popen(node, [sys.executable, __file__, "--worker", mode, "--load", str(load),
                            "--seconds", str(seconds + 8)],
                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout is not None
    proc.stdout.readline()
    wait_until(lambda: router.bfd_sessions().get(NODE) == "Up", 20, what="the BFD session Up")
    time.sleep(2)  # past the Poll Sequence that switches to 300 ms
    log_before = router.log_path.read_text(errors="replace")
    capture = router.host.run(["timeout", str(seconds), "tcpdump", "-l", "-n", "-tt", "-i", "eth0",
                               f"udp dst port 3784 and src {NODE}"], check=False, timeout=seconds + 20).stdout
    log_after = router.log_path.read_text(errors="replace")[len(log_before):]
    proc.wait(seconds + 30)
    wait_until(lambda: router.bfd_sessions().get(NODE) != "Up", 10, what="the session down after the worker")
    stamps = [float(line.split(" ", 1)[0]) for line in capture.splitlines() if re.match(r"^\d+\.\d+ ", line)]
    gaps = [(b - a) * 1000 for a, b in itertools.pairwise(stamps)]
    downs = len(re.findall(r"Session to 192\.0\.2\.11 changed state from Up to Down", log_after))
    late = [g - 300 for g in gaps if g > 300]
    return {"packets": len(stamps), "p50": pct(gaps, .5), "p99": pct(gaps, .99), "max": max(gaps),
            "min": min(gaps), "late": len(late), "max_late": max(late, default=0.0), "downs": downs}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--load", type=int, default=2, help="busy threads in the speaker stand-in")
    ap.add_argument("--worker", choices=["process", "thread"])
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, args.load, args.seconds)
    work = Path(tempfile.mkdtemp(prefix="lbs-jit-"))
    with Lab("bfj") as lab:
        lab.add_host("n1", ipv4=f"{NODE}/24")
        host = lab.add_host("r", ipv4=f"{ROUTER}/24")
        config = render_bird_config(ROUTER, 64501, [], BirdBfd(300, 300, 3, neighbors=(NODE,)))
        config = config.replace("log stderr all;", "log stderr all;\ndebug protocols { events };")
        router = BirdRouter(lab, host, work / "bird", config)
        try:
            print(f"BFD 300 ms x 3 from a node to BIRD, {args.seconds:.0f} s per scenario, gaps at the router:")
            for mode, load in (("process", 0), ("process", args.load), ("thread", 0), ("thread", args.load)):
                r = scenario(lab, router, mode, load, args.seconds)
                print(f"  BFD in a {mode:7s}, {load} busy threads: {r['packets']:.0f} packets, gaps p50 {r['p50']:.0f} "
                      f"ms, p99 {r['p99']:.0f} ms, min {r['min']:.0f} ms, max {r['max']:.0f} ms; {r['late']:.0f} late "
                      f"(> 300 ms, worst +{r['max_late']:.0f} ms); session downs at the router: {r['downs']:.0f}",
                      flush=True)
        finally:
            router.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
