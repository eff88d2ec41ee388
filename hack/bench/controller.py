#!/usr/bin/env python3
"""Controller benchmark against the API test server: assignment rate, restart resync, peak RSS.

Runs the API test server and the controller as separate processes (as in a cluster), then:
1. baseline: a minimal client (one keep-alive HTTP connection, hand-written JSON) PATCHes the
   status of N LoadBalancer Services; its rate is the server's limit for status writes;
2. the controller running, N Services are created and the clock runs until every one has an IP
   (seen through a watch); prints Services/s and the ratio to the baseline;
   (2a: the Services exist and the pool ConfigMap arrives: the controller's own rate; 2b: Services
   created while it runs, where the server also pays for the creates);
3. the controller is restarted with the N Services assigned: time until it is ready again (first
   pass done), and the number of status writes it made (must be 0);
4. the controller's peak RSS.

Targets (issue 2): ratio >= 0.5, resync <= 5 s, RSS <= 150 MB.
Usage: python hack/bench/controller.py [--services 2000]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

NS = "bench"
CONFIG = """
address-pools:
- name: bench
  protocol: layer2
  addresses: [198.51.100.0/24, 2001:db8:be::/64]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Api:
    """A minimal keep-alive JSON client: one connection per thread."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.local = threading.local()

    def conn(self) -> http.client.HTTPConnection:
        c = getattr(self.local, "c", None)
        if c is None:
            c = self.local.c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        return c

    def call(self, method: str, path: str, body: object = None, ctype: str = "application/json") -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": ctype, "Accept": "application/json"} if data else {"Accept": "application/json"}
        c = self.conn()
        try:
            c.request(method, path, body=data, headers=headers)
            resp = c.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException):
            c.close()
            self.local.c = None
            raise
        if resp.status >= 300:
            raise RuntimeError(f"{method} {path}: {resp.status} {raw[:200]!r}")
        if not raw:
            return {}
        answer: dict[str, Any] = json.loads(raw)
        return answer


def service(name: str, lb_class: str | None) -> dict[str, Any]:
    # IPv6 single-stack: the documentation ranges hold only 768 IPv4 addresses, and a /64 pool shows
    # that allocation never walks the range.
    spec: dict[str, Any] = {"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}],
                            "selector": {"app": name}, "ipFamilies": ["IPv6"], "ipFamilyPolicy": "SingleStack"}
    if lb_class:
        spec["loadBalancerClass"] = lb_class
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec}


def create_many(api: Api, names: list[str], lb_class: str | None, threads: int = 2) -> float:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as ex:
        list(ex.map(lambda n: api.call("POST", f"/api/v1/namespaces/{NS}/services", service(n, lb_class)), names))
    return time.perf_counter() - t0


def metrics_text(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            body: bytes = r.read()
            return body.decode()
    except OSError:
        return ""


def metric(port: int, name: str) -> float:
    total = 0.0
    for line in metrics_text(port).splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_controller(kubeconfig: str, mport: int, log: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "controller", "--kubeconfig", kubeconfig, "--namespace", NS,
                             "--metrics-addr", f"127.0.0.1:{mport}", "--log-level", "warning",
                             *os.environ.get("BENCH_CONTROLLER_ARGS", "").split()],
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT)


def start_ready(kubeconfig: str, mport: int, log: str, procs: list[subprocess.Popen[bytes]]
                ) -> subprocess.Popen[bytes]:
    """Start the controller and wait until /readyz says its first pass is done."""
    ctl = start_controller(kubeconfig, mport, log)
    procs.append(ctl)
    while not ready(mport):
        if ctl.poll() is not None:
            raise RuntimeError(f"controller exited; see {log}")
        time.sleep(0.02)
    return ctl


def wait_all_assigned(port: int, names: set[str], timeout: float) -> float:
    """Watch Services until all of ``names`` have an IP; return when that happened (perf_counter).

    A watch, not polling: listing thousands of Services in a loop would load the server more than the
    controller does.
    """
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request("GET", f"/api/v1/namespaces/{NS}/services?watch=true&timeoutSeconds={int(timeout)}")
    resp = conn.getresponse()
    waiting = set(names)
    try:
        while waiting:
            line = resp.readline()
            if not line:
                break
            ev = json.loads(line)
            obj = ev.get("object") or {}
            if (obj.get("status") or {}).get("loadBalancer", {}).get("ingress"):
                waiting.discard(obj["metadata"]["name"])
        if waiting:
            raise TimeoutError(f"{len(waiting)} of {len(names)} Services got no IP in {timeout}s")
        return time.perf_counter()
    finally:
        conn.close()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--services", type=int, default=2000)
    args = ap.parse_args()
    n = args.services
    tmp = tempfile.mkdtemp(prefix="lbs-bench-")
    kubeconfig = os.path.join(tmp, "kubeconfig")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "lbspeaker_testkit.apiserver", "--listen", f"127.0.0.1:{port}",
                               "--kubeconfig-out", kubeconfig, "--history-size", str(4 * n + 1000)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs: list[subprocess.Popen[bytes]] = [server]
    try:
        api = Api(port)
        deadline = time.monotonic() + 30
        while True:
            try:
                api.call("GET", "/version")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        api.call("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        api.call("POST", f"/api/v1/namespaces/{NS}/configmaps",
                 {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "config"}, "data": {"config": CONFIG}})

        # 1. Baseline: a minimal client PATCHes N statuses (Services of a class the controller ignores).
        base_names = [f"base-{i:05d}" for i in range(n)]
        create_s = create_many(api, base_names, "example.com/not-ours")
        t0 = time.perf_counter()
        for i, name in enumerate(base_names):
            api.call("PATCH", f"/api/v1/namespaces/{NS}/services/{name}/status",
                     {"status": {"loadBalancer": {"ingress": [{"ip": f"2001:db8:be::{i:x}"}]}}},
                     "application/merge-patch+json")
        base_rate = n / (time.perf_counter() - t0)
        print(f"baseline: minimal client creates {n / create_s:.0f} Services/s and PATCHes {base_rate:.0f} statuses/s")
        for name in base_names:
            api.call("DELETE", f"/api/v1/namespaces/{NS}/services/{name}")

        # 2a. Controller throughput alone: N pending Services exist, the controller is running but has no
        #     configuration; the pool ConfigMap is applied and the clock runs until every Service has an IP.
        api.call("DELETE", f"/api/v1/namespaces/{NS}/configmaps/config")
        mport = free_port()
        log = os.path.join(tmp, "controller.log")
        ctl = start_controller(kubeconfig, mport, log)
        procs.append(ctl)
        pending = [f"pend-{i:05d}" for i in range(n)]
        create_many(api, pending, None)
        time.sleep(1.0)
        result: list[float] = []
        watcher = threading.Thread(target=lambda: result.append(wait_all_assigned(port, set(pending), 300)))
        watcher.start()
        time.sleep(0.2)
        cpu0 = cpu_seconds(server.pid), cpu_seconds(ctl.pid)
        t0 = time.perf_counter()
        api.call("POST", f"/api/v1/namespaces/{NS}/configmaps",
                 {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "config"}, "data": {"config": CONFIG}})
        watcher.join()
        if not result:
            raise RuntimeError("not every pending Service got an IP")
        catch_rate = n / (result[0] - t0)
        cpu1 = cpu_seconds(server.pid), cpu_seconds(ctl.pid)
        print(f"controller alone: {n} pending Services assigned in {result[0] - t0:.2f}s = {catch_rate:.0f} "
              f"Services/s; ratio to baseline PATCH rate {catch_rate / base_rate:.2f} (target >= 0.5); "
              f"CPU used: API server {cpu1[0] - cpu0[0]:.2f}s, controller {cpu1[1] - cpu0[1]:.2f}s")
        rss_catch_up = peak_rss_mb(ctl.pid)
        ctl.send_signal(signal.SIGTERM)
        ctl.wait(30)
        for name in pending:
            api.call("DELETE", f"/api/v1/namespaces/{NS}/services/{name}")

        # 2b. End to end: the controller running, N Services are created; time until all have an IP.
        #     The server also serves the N creates here, so this ratio is bounded by about 0.5.
        ctl = start_ready(kubeconfig, mport, log, procs)
        names = [f"svc-{i:05d}" for i in range(n)]
        result = []
        watcher = threading.Thread(target=lambda: result.append(wait_all_assigned(port, set(names), 300)))
        watcher.start()
        time.sleep(0.2)  # let the watch open before the first create
        t0 = time.perf_counter()
        create_many(Api(port), names, None)
        watcher.join()
        if not result:
            raise RuntimeError("not every Service got an IP")
        done = result[0]
        rate = n / (done - t0)
        print(f"end to end: {n} Services created and assigned in {done - t0:.2f}s = {rate:.0f} Services/s; "
              f"ratio to baseline PATCH rate {rate / base_rate:.2f}")

        rss_assign = peak_rss_mb(ctl.pid)

        # 3. Restart: time to resync N assigned Services, and the writes it made.
        ctl.send_signal(signal.SIGTERM)
        ctl.wait(30)
        t0 = time.perf_counter()
        ctl = start_ready(kubeconfig, mport, log, procs)
        resync = time.perf_counter() - t0
        time.sleep(1.0)
        writes = metric(mport, "lbspeaker_controller_status_writes_total")
        rss = max(rss_catch_up, rss_assign, peak_rss_mb(ctl.pid))
        print(f"restart: ready after {resync:.2f}s including process start (target <= 5 s); "
              f"status writes after restart: {writes:.0f} (must be 0)")
        print(f"controller peak RSS: {rss:.0f} MB (target <= 150 MB)")
        ok = catch_rate / base_rate >= 0.5 and resync <= 5 and rss <= 150 and writes == 0
        print("RESULT:", "all targets met" if ok else "target(s) missed")
        return 0
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()


if __name__ == "__main__":
    sys.exit(main())
