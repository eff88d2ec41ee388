#!/usr/bin/env python3
"""End-to-end BGP benchmark (root): from a Service status to the route in a real router's RIB.

Two node namespaces run real `lbspeaker speaker` processes against the API test server; a third runs
BIRD 2 as the router (192.0.2.1 and 2001:db8::1, AS 64501) peering with both. The clock starts just
before the status write (the controller's job, done here by the benchmark so only the speaker is
measured) and stops when BIRD's RIB holds the prefix, polled over its control socket every 2 ms.

1. 100 Services one at a time (IPv4 /32): p50, p99 of status-to-RIB. Target p50 <= 0.5 s.
2. The same 100 deleted one at a time: p50, p99 of delete-to-withdrawn. Target p99 <= 1 s.
3. 5,000 Services (IPv6 /128, the documentation ranges hold too few IPv4 addresses), all statuses
   written as fast as the API server takes them: time until BIRD holds all 5,000, from the first and
   from the last status write. Target <= 10 s. (The Python API test server, also streaming every write
   to both speakers, accepts about 550 writes/s here: most of the first-write figure is its time.)

Every loop is bounded in count and time; the lab is deleted on the way out, also on failure.
Usage: sudo python3 hack/bench/bgp_speaker.py [--bulk 5000]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import ipaddress
import json
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import lbspeaker_testkit.speaker_lab as speaker_lab  # noqa: E402
from lbspeaker_testkit.bird import BirdControl, BirdNeighbor, BirdRouter, render_bird_config  # noqa: E402
from lbspeaker_testkit.kubeconfig import write_kubeconfig  # noqa: E402
from lbspeaker_testkit.speaker_lab import NAMESPACE, SVC_NS, SpeakerLab, wait_for  # noqa: E402

from lbspeaker.kube.rest import MERGE_PATCH, path_for  # noqa: E402

ROUTER4, ROUTER6 = "192.0.2.1", "2001:db8::1"
CONFIG = f"""
peers:
- {{peer-address: {ROUTER4}, peer-asn: 64501, my-asn: 64500}}
- {{peer-address: "{ROUTER6}", peer-asn: 64501, my-asn: 64500}}
address-pools:
- name: v4
  protocol: bgp
  addresses: [203.0.113.0/24]
- name: v6
  protocol: bgp
  addresses: ["2001:db8:ff::/112"]
"""


class ProcessAPIServer:
    """The API test server in a process of its own, as a real API server would be: run in this
    process, it would share one interpreter lock with the benchmark's own clients and polling."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        with socket.socket() as sock:
            sock.bind((host, port))
            self.port = int(sock.getsockname()[1])
        self.url = f"http://{host}:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "lbspeaker_testkit.apiserver", "--listen",
                                      f"127.0.0.1:{self.port}", "--history-size", "50000"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return
            time.sleep(0.05)
        raise RuntimeError("the API test server did not start")

    def write_kubeconfig(self, path: str) -> Path:
        return Path(write_kubeconfig(path, self.url))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def wait_route(ctl: BirdControl, prefix: str, present: bool, timeout: float = 10.0) -> float:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if ctl.has_route(prefix) == present:
            return time.perf_counter()
        time.sleep(0.002)
    raise TimeoutError(f"{prefix} still {'absent' if present else 'present'} after {timeout}s")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--single", type=int, default=100)
    ap.add_argument("--bulk", type=int, default=5000)
    args = ap.parse_args()
    # Deliberately swapped for a stand-in of another type (only the calls the lab makes): the lab then runs
    # the API server in a process of its own. The kit does not export the name, hence attr-defined.
    speaker_lab.APIServer = ProcessAPIServer  # type: ignore[attr-defined,assignment]
    lab = SpeakerLab("spkg", nodes=2)
    router: BirdRouter | None = None
    try:
        assert lab.lab is not None
        rt = lab.lab.add_host("rt", ipv4=f"{ROUTER4}/24", ipv6=f"{ROUTER6}/64")
        neighbors = []
        for i, host in enumerate(lab.hosts.values(), start=1):
            assert host.ipv4 is not None and host.ipv6 is not None
            neighbors.append(BirdNeighbor(name=f"n{i}v4", address=str(host.ipv4.ip), asn=64500, local_address=ROUTER4))
            neighbors.append(BirdNeighbor(name=f"n{i}v6", address=str(host.ipv6.ip), asn=64500, local_address=ROUTER6))
        router = BirdRouter(lab.lab, rt, Path(lab.dir) / "bird", render_bird_config(ROUTER4, 64501, neighbors))
        lab.rest.request("PATCH", path_for("v1", "configmaps", NAMESPACE, "config"), content_type=MERGE_PATCH,
                         body={"data": {"config": CONFIG}})
        for node in lab.node_names:
            lab.start_speaker(node, "--bgp-workdir", f"{lab.dir}/bgp-{node}")
        wait_for("every BGP session established",
                 lambda: all(p.established for p in router.protocols().values() if p.name.startswith("n")) and
                 len([p for p in router.protocols().values() if p.name.startswith("n")]) == len(neighbors), 60)
        print(f"{len(neighbors)} sessions established (2 nodes x IPv4 + IPv6)")
        ctl = BirdControl(router.socket_path)

        # 1 + 2: one Service at a time.
        v4 = list(ipaddress.ip_network("203.0.113.0/24").hosts())[: args.single]
        adds: list[float] = []
        for i, ip in enumerate(v4):
            lab.service(f"s{i}", endpoints=("node1",))
            t0 = time.perf_counter()
            lab.set_status(f"s{i}", [str(ip)])
            adds.append(wait_route(ctl, f"{ip}/32", True) - t0)
        print(f"status -> RIB, {len(adds)} Services: p50 {pct(adds, .5) * 1000:.0f} ms, "
              f"p99 {pct(adds, .99) * 1000:.0f} ms (target p50 <= 500 ms)")
        dels: list[float] = []
        for i, ip in enumerate(v4):
            t0 = time.perf_counter()
            lab.delete_service(f"s{i}")
            dels.append(wait_route(ctl, f"{ip}/32", False) - t0)
        print(f"delete -> withdrawn, {len(dels)} Services: p50 {pct(dels, .5) * 1000:.0f} ms, "
              f"p99 {pct(dels, .99) * 1000:.0f} ms (target p99 <= 1000 ms)")

        # 3: bulk. Services and endpoints first (not timed), then every status at once.
        n = args.bulk
        v6 = [str(ipaddress.IPv6Address("2001:db8:ff::1") + i) for i in range(n)]
        def create(i: int) -> None:
            # No node ports: a cluster has only 2,768 of them, fewer than the Services made here.
            lab.rest.request("POST", path_for("v1", "services", SVC_NS), body={
                "apiVersion": "v1", "kind": "Service", "metadata": {"name": f"b{i}"},
                "spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": False, "selector": {"app": "b"},
                         "ports": [{"name": "p80", "protocol": "TCP", "port": 80}]}})
            lab.set_endpoints(f"b{i}", ("node1",))

        with ThreadPoolExecutor(4) as ex:
            list(ex.map(create, range(n)))
        base = ctl.route_count()
        t0 = time.perf_counter()

        # A lean client (one keep-alive connection per thread, hand-written JSON) stands in for the
        # controller, so that the clock measures the API server and the speakers, not this process.
        local = threading.local()

        def write(i: int) -> None:
            conn = getattr(local, "conn", None)
            if conn is None:
                conn = local.conn = http.client.HTTPConnection("127.0.0.1", lab.api.port, timeout=30)
            body = json.dumps({"status": {"loadBalancer": {"ingress": [{"ip": v6[i]}]}}})
            conn.request("PATCH", path_for("v1", "services", SVC_NS, f"b{i}", "status"), body=body,
                         headers={"Content-Type": MERGE_PATCH})
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                raise RuntimeError(f"status write {i}: {resp.status}")

        with ThreadPoolExecutor(2) as ex:
            list(ex.map(write, range(n)))
        written = time.perf_counter() - t0
        deadline = time.perf_counter() + 120
        while ctl.route_count() - base < n and time.perf_counter() < deadline:
            time.sleep(0.05)
        total = time.perf_counter() - t0
        got = ctl.route_count() - base
        print(f"{n} Services: the API test server took {written:.1f}s to accept the {n} status writes; the router "
              f"held {got} of {n} routes {total:.1f}s after the first write, {total - written:.1f}s after the last "
              f"(target <= 10 s)")
        ok = pct(adds, .5) <= 0.5 and pct(dels, .99) <= 1.0 and got >= n and total <= 10
        if not ok and got >= n and total - written <= 10:
            print("note: only the API test server's write rate keeps the first-write figure above 10 s")
        print("RESULT:", "all targets met" if ok else "target(s) missed")
        ctl.close()
        return 0
    finally:
        if router is not None:
            router.stop()
        lab.close()


if __name__ == "__main__":
    sys.exit(main())
