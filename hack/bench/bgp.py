"""Benchmark the BGP layer in its own namespace lab (run as root): prints figures, asserts nothing.

A BIRD 2 router and one node share a lab link; in the node namespace a ``BgpSpeaker`` (ExaBGP
underneath) has an IPv4 and an IPv6 session to the router. The clock runs from just before
``set_routes`` is called to the route's presence (or absence) in BIRD's RIB, polled over BIRD's
control socket every 2 ms (so figures include up to 2 ms of polling granularity).

1. Announce latency: 100 IPv4 /32 routes added one at a time. Target: p50 <= 0.5 s.
2. Withdraw latency: the same 100 removed one at a time. Target: p99 <= 1 s.
3. Bulk: 1,020 IPv4 routes (every /25../32 of two TEST-NETs), then 5,000 IPv6 /128 routes, each in
   one ``set_routes`` until BIRD holds all (target for 5,000: <= 10 s), then all withdrawn at once
   until BIRD holds none. ExaBGP 5 packs many IPv4 prefixes into one UPDATE but sends every IPv6
   prefix in an UPDATE of its own, so IPv6 is the slow case.

Every loop is bounded in count and time; the lab is deleted on the way out, also on failure.
Usage: ``sudo python3 hack/bench/bgp.py``.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from lbspeaker_testkit.bird import BirdControl, BirdNeighbor, BirdRouter, render_bird_config  # noqa: E402
from lbspeaker_testkit.netns import Lab  # noqa: E402

from lbspeaker.bgp import BgpSpeaker  # noqa: E402
from lbspeaker.bgp.model import Advertisement, BgpPeer  # noqa: E402

SINGLE = 100
BULK = 5000
POLL = 0.002
ROUTER_ASN = 64512
NODE_ASN = 64500


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def wait(probe: Callable[[], bool], timeout: float) -> float:
    """Seconds until ``probe`` holds (polled every POLL); raises TimeoutError."""
    start = time.perf_counter()
    while not probe():
        if time.perf_counter() - start > timeout:
            raise TimeoutError(f"not reached within {timeout} s")
        time.sleep(POLL)
    return time.perf_counter() - start


def timed(action: Callable[[], None], probe: Callable[[], bool], timeout: float) -> float:
    start = time.perf_counter()
    action()
    wait(probe, timeout)
    return time.perf_counter() - start


def absent(ctl: BirdControl, prefix: str) -> bool:
    return not ctl.has_route(prefix)


def report(name: str, values: list[float], target: str) -> None:
    print(
        f"{name:<28} n={len(values):<5} p50={percentile(values, 50) * 1000:8.1f} ms"
        f"  p99={percentile(values, 99) * 1000:8.1f} ms  max={max(values) * 1000:8.1f} ms   target {target}"
    )


def inner(bird_socket: str, workdir: str) -> int:
    """Runs inside the node namespace."""
    speaker = BgpSpeaker("bench-node", "192.0.2.11", workdir)
    speaker.set_peers(
        [
            BgpPeer(peer_address="192.0.2.1", peer_asn=ROUTER_ASN, my_asn=NODE_ASN),
            BgpPeer(peer_address="2001:db8:1::1", peer_asn=ROUTER_ASN, my_asn=NODE_ASN),
        ]
    )
    speaker.start()
    try:
        wait(lambda: all(s.established for s in speaker.sessions().values()), 30)
        with BirdControl(Path(bird_socket)) as ctl:
            routes: list[Advertisement] = []
            announce: list[float] = []
            for i in range(1, SINGLE + 1):
                prefix = f"203.0.113.{i}/32"
                routes.append(Advertisement(prefix=prefix, communities=("65000:1",)))
                snapshot = list(routes)
                announce.append(timed(partial(speaker.set_routes, snapshot), partial(ctl.has_route, prefix), 10))
            withdraw: list[float] = []
            while routes:
                prefix = routes.pop(0).prefix
                snapshot = list(routes)
                withdraw.append(timed(partial(speaker.set_routes, snapshot), partial(absent, ctl, prefix), 10))
            report(f"announce, {SINGLE} x 1 route", announce, "p50 <= 500 ms")
            report(f"withdraw, {SINGLE} x 1 route", withdraw, "p99 <= 1000 ms")

            base4 = ctl.route_count("master4")
            bulk4 = [
                Advertisement(prefix=str(net))
                for parent in (ipaddress.ip_network("198.51.100.0/24"), ipaddress.ip_network("203.0.113.0/24"))
                for length in range(25, 33)
                for net in parent.subnets(new_prefix=length)
            ]
            up4 = timed(lambda: speaker.set_routes(bulk4), lambda: ctl.route_count("master4") >= base4 + len(bulk4), 60)
            down4 = timed(lambda: speaker.set_routes([]), lambda: ctl.route_count("master4") <= base4, 60)
            n4 = len(bulk4)
            print(f"bulk announce {n4} IPv4 routes {up4:8.2f} s  ({n4 / up4:7.0f} routes/s)")
            print(f"bulk withdraw {n4} IPv4 routes {down4:8.2f} s  ({n4 / down4:7.0f} routes/s)")

            base = ctl.route_count("master6")
            bulk = [Advertisement(prefix=f"2001:db8:ff::{i:x}/128") for i in range(1, BULK + 1)]
            up = timed(lambda: speaker.set_routes(bulk), lambda: ctl.route_count("master6") >= base + BULK, 120)
            down = timed(lambda: speaker.set_routes([]), lambda: ctl.route_count("master6") <= base, 120)
            stats = speaker.stats()
            print(f"bulk announce {BULK} IPv6 routes {up:7.2f} s  ({BULK / up:7.0f} routes/s)   target <= 10 s")
            print(f"bulk withdraw {BULK} IPv6 routes {down:7.2f} s  ({BULK / down:7.0f} routes/s)")
            print(
                f"ExaBGP sent {stats.get('updates_sent', 0)} UPDATE messages for"
                f" {stats.get('routes_announced', 0)} announced and {stats.get('routes_withdrawn', 0)} withdrawn"
                f" routes, in {stats.get('commands_sent', 0)} commands ({stats.get('command_errors', 0)} refused)"
            )
    finally:
        speaker.stop(graceful=False)
    return 0


def outer() -> int:
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="lbs-bgp-bench-") as tmp, Lab("bgp") as lab:
        router_host = lab.add_host("r", ipv4="192.0.2.1/24", ipv6="2001:db8:1::1/64")
        node = lab.add_host("n1", ipv4="192.0.2.11/24", ipv6="2001:db8:1::11/64")
        neighbors = [
            BirdNeighbor(name="n1", address="192.0.2.11", asn=NODE_ASN, local_address="192.0.2.1"),
            BirdNeighbor(name="n1v6", address="2001:db8:1::11", asn=NODE_ASN, local_address="2001:db8:1::1"),
        ]
        config = render_bird_config("192.0.2.1", ROUTER_ASN, neighbors)
        router = BirdRouter(lab, router_host, Path(tmp) / "bird", config)
        try:
            env = dict(os.environ, PYTHONPATH=str(REPO))
            proc = lab.popen(
                node,
                [sys.executable, __file__, "--inner", str(router.socket_path), str(Path(tmp) / "node")],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            try:
                out, err = proc.communicate(timeout=600)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
            sys.stdout.write(out.decode())
            if proc.returncode != 0:
                sys.stderr.write(err.decode()[-4000:])
            return proc.returncode or 0
        finally:
            router.stop()


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--inner":
        sys.exit(inner(sys.argv[2], sys.argv[3]))
    sys.exit(outer())
