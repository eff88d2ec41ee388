"""A lab for the L2 speaker on the real kernel: the API test server, three node namespaces running
``lbspeaker speaker``, and a client namespace that resolves the external IPs.

Used by tests/netns/test_speaker*.py and hack/bench/l2_failover.py. Each node namespace reaches the
in-process API server on its own 127.0.0.1 through ``Lab.forward_loopback``, so one kubeconfig (the
server's port on 127.0.0.1) serves the root namespace and every node. Metrics of a speaker are read
by connecting from inside its namespace. ``close`` stops everything and deletes every namespace.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from lbspeaker.kube.client import load_api_client
from lbspeaker.kube.rest import MERGE_PATCH, ApiError, Rest, path_for
from lbspeaker_testkit.apiserver import APIServer
from lbspeaker_testkit.netns import Host, Lab, in_netns, run

NAMESPACE = "lbspeaker-system"
SVC_NS = "spk-apps"
METRICS_PORT = 7472
HEARTBEAT_PORT = 7946
POOLS = """\
address-pools:
- name: l2v4
  protocol: layer2
  addresses: [192.0.2.200-192.0.2.250]
- name: l2v6
  protocol: layer2
  addresses: [2001:db8::1000/116]
- name: l2second
  protocol: layer2
  addresses: [198.51.100.200-198.51.100.250]
"""
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def wait_for(what: str, check: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05) -> Any:
    """Poll until ``check()`` is truthy (bounded); the failure names what was awaited."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def http_in(host: Host, port: int, path: str, timeout: float = 3.0) -> tuple[int, str]:
    """GET ``http://127.0.0.1:port/path`` from inside ``host``'s namespace: (status, body), (0, "") if down."""
    made: list[socket.socket] = []

    def connect() -> None:
        with in_netns(host.name), contextlib.suppress(OSError):
            made.append(socket.create_connection(("127.0.0.1", port), timeout=timeout))

    t = threading.Thread(target=connect)
    t.start()
    t.join()
    if not made:
        return 0, ""
    sock = made[0]
    try:
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    except OSError:
        return 0, ""
    finally:
        sock.close()
    raw = b"".join(chunks).decode(errors="replace")
    head, _, body = raw.partition("\r\n\r\n")
    try:
        return int(head.split(" ", 2)[1]), body
    except (IndexError, ValueError):
        return 0, ""


class SpeakerProc:
    """One ``lbspeaker speaker`` process in a node namespace; its log goes to a file."""

    def __init__(self, lab: Lab, host: Host, node: str, kubeconfig: str, *extra: str) -> None:
        self.host = host
        self.node = node
        fd, self.log_path = tempfile.mkstemp(prefix=f"spk-{node}-", suffix=".log")
        self._log = os.fdopen(fd, "wb")
        cmd = [sys.executable, "-m", "lbspeaker.cli", "speaker", "--node-name", node, "--kubeconfig", kubeconfig,
               "--metrics-addr", f"127.0.0.1:{METRICS_PORT}", "--heartbeat-addr", f":{HEARTBEAT_PORT}",
               "--log-level", "debug", *extra]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = lab.popen(host, cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=REPO)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def http(self, path: str) -> tuple[int, str]:
        return http_in(self.host, METRICS_PORT, path)

    def metric(self, name: str, labels: str = "") -> float | None:
        code, text = self.http("/metrics")
        if code != 200:
            return None
        want = f"{name}{{{labels}}} " if labels else f"{name} "
        for line in text.splitlines():
            if line.startswith(want):
                return float(line.rsplit(" ", 1)[1])
        return None

    def counts_members(self, members: int) -> Callable[[], bool]:
        """A probe for ``wait_for``: does this speaker count ``members`` live members (by its metric)?"""
        return lambda: self.metric("lbspeaker_speaker_live_members") == members

    def ready(self) -> bool:
        return self.http("/readyz")[0] == 200

    def answers_ready(self, text: str) -> Callable[[], bool]:
        """A probe for ``wait_for``: does /readyz answer 200 with exactly ``text``?"""
        return lambda: self.http("/readyz") == (200, text)

    def logs(self, tail: int = 6000) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")[-tail:]

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
        self.proc.wait(10)
        self._log.close()

    def terminate(self, timeout: float = 15.0) -> int:
        if self.alive():
            self.proc.terminate()
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(5)
        self._log.close()
        return code


class SpeakerLab:
    """API server + Lab("spk") with nodes n1..nN (192.0.2.1N/24, 2001:db8::1N/64) and client c (.100)."""

    def __init__(self, prefix: str = "spk", nodes: int = 3, secret: bool = True,
                 speaker_args: Sequence[str] = ()) -> None:
        self.speaker_args = tuple(speaker_args)  # extra flags for every speaker this lab starts
        self.api = APIServer(host="127.0.0.1", port=0)
        self.api.start()
        self.lab: Lab | None = None
        self.dir = tempfile.mkdtemp(prefix="spklab-")
        self.speakers: dict[str, SpeakerProc] = {}
        try:
            self.kubeconfig = str(self.api.write_kubeconfig(os.path.join(self.dir, "kubeconfig")))
            self.rest = Rest(load_api_client(self.kubeconfig))
            self.lab = Lab(prefix)
            self.hosts: dict[str, Host] = {}
            self.node_names = [f"node{i}" for i in range(1, nodes + 1)]
            for i, name in enumerate(self.node_names, start=1):
                host = self.lab.add_host(f"n{i}", ipv4=f"192.0.2.{10 + i}/24", ipv6=f"2001:db8::{10 + i}/64")
                self.lab.forward_loopback(host, ("127.0.0.1", self.api.port))
                self.hosts[name] = host
            self.client = self.lab.add_host("c", ipv4="192.0.2.100/24", ipv6="2001:db8::100/64")
            self._setup_cluster(secret)
        except BaseException:
            self.close()
            raise

    # -- cluster objects ---------------------------------------------------------------------------------
    def _setup_cluster(self, secret: bool) -> None:
        for ns in (NAMESPACE, SVC_NS):
            self.rest.request("POST", path_for("v1", "namespaces"),
                              body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        if secret:
            key = base64.b64encode(os.urandom(32)).decode()
            self.rest.request("POST", path_for("v1", "secrets", NAMESPACE), body={
                "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "lbspeaker-memberlist"},
                "data": {"secretkey": key}})
        self.rest.request("POST", path_for("v1", "configmaps", NAMESPACE), body={
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "config"}, "data": {"config": POOLS}})
        for name, host in self.hosts.items():
            self.rest.request("POST", path_for("v1", "nodes"), body={
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}})
            assert host.ipv4 is not None
            self.rest.request("PATCH", path_for("v1", "nodes", None, name, "status"), content_type=MERGE_PATCH, body={
                "status": {"addresses": [{"type": "InternalIP", "address": str(host.ipv4.ip)},
                                         {"type": "Hostname", "address": name}]}})

    def patch_node(self, name: str, body: dict[str, Any], status: bool = False) -> None:
        self.rest.request("PATCH", path_for("v1", "nodes", None, name, "status" if status else None),
                          content_type=MERGE_PATCH, body=body)

    def service(self, name: str, ips: Sequence[str] = (), *, local: bool = False, endpoints: Iterable[str] = ("node1",),
                shared: str | None = None, ports: Sequence[int] = (80,)) -> None:
        """A LoadBalancer Service with (if ``ips``) its status written directly, and an EndpointSlice
        with one ready endpoint per node named in ``endpoints``."""
        spec: dict[str, Any] = {"type": "LoadBalancer", "selector": {"app": name},
                                "ports": [{"name": f"p{p}", "protocol": "TCP", "port": p} for p in ports]}
        if local:
            spec["externalTrafficPolicy"] = "Local"
        annotations = {"lbspeaker.io/allow-shared-ip": shared} if shared else {}
        self.rest.request("POST", path_for("v1", "services", SVC_NS), body={
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "annotations": annotations},
            "spec": spec})
        if ips:
            self.set_status(name, ips)
        self.set_endpoints(name, endpoints)

    def set_status(self, name: str, ips: Sequence[str]) -> None:
        self.rest.request("PATCH", path_for("v1", "services", SVC_NS, name, "status"), content_type=MERGE_PATCH,
                          body={"status": {"loadBalancer": {"ingress": [{"ip": ip} for ip in ips]}}})

    def set_endpoints(self, name: str, nodes: Iterable[str], ready: bool = True) -> None:
        body: dict[str, Any] = {
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{name}-eps", "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [f"10.244.{i}.10"], "nodeName": node, "conditions": {"ready": ready}}
                          for i, node in enumerate(nodes, start=1)],
            "ports": [{"name": "p80", "protocol": "TCP", "port": 8080}],
        }
        path = path_for("discovery.k8s.io/v1", "endpointslices", SVC_NS)
        try:
            current = self.rest.get(f"{path}/{name}-eps")
        except ApiError as exc:
            if not exc.not_found:
                raise
            self.rest.request("POST", path, body=body)
            return
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        self.rest.request("PUT", f"{path}/{name}-eps", body=body)

    def delete_service(self, name: str) -> None:
        with contextlib.suppress(ApiError):
            self.rest.request("DELETE", path_for("v1", "services", SVC_NS, name))
        with contextlib.suppress(ApiError):
            self.rest.request("DELETE", path_for("discovery.k8s.io/v1", "endpointslices", SVC_NS, f"{name}-eps"))

    def events(self, name: str, reason: str) -> list[dict[str, Any]]:
        items = self.rest.get(path_for("v1", "events", SVC_NS), fieldSelector=f"involvedObject.name={name}")
        return [e for e in items.get("items") or [] if e.get("reason") == reason]

    def released(self, node: str) -> bool:
        """Whether ``node``'s speaker Lease is released (a graceful exit): no holder, state ``left``."""
        lease = self.rest.get(path_for("coordination.k8s.io/v1", "leases", NAMESPACE, f"speaker-{node}"))
        annotations = lease["metadata"].get("annotations") or {}
        return not (lease.get("spec") or {}).get("holderIdentity") and annotations.get("lbspeaker.io/state") == "left"

    def leases(self) -> set[str]:
        items = self.rest.get(path_for("coordination.k8s.io/v1", "leases", NAMESPACE)).get("items") or []
        return {i["metadata"]["name"] for i in items}

    # -- speakers ----------------------------------------------------------------------------------------
    def start_speaker(self, node: str, *extra: str, wait: bool = True) -> SpeakerProc:
        assert self.lab is not None
        old = self.speakers.get(node)
        if old is not None and old.alive():
            raise RuntimeError(f"speaker on {node} already running")
        proc = SpeakerProc(self.lab, self.hosts[node], node, self.kubeconfig, *self.speaker_args, *extra)
        self.speakers[node] = proc
        if wait:
            self.wait_ready(node)
        return proc

    def wait_ready(self, node: str, timeout: float = 30.0) -> None:
        proc = self.speakers[node]

        def ready() -> bool:
            if not proc.alive():
                raise AssertionError(f"speaker {node} exited with {proc.proc.returncode}:\n{proc.logs()}")
            return proc.ready()

        wait_for(f"speaker {node} ready", ready, timeout, interval=0.1)

    def ensure_all(self) -> None:
        """Every node runs a ready speaker (restarting those a test killed)."""
        for node in self.node_names:
            proc = self.speakers.get(node)
            if proc is None or not proc.alive():
                self.start_speaker(node, wait=False)
        for node in self.node_names:
            self.wait_ready(node)

    def add_link(self, node: str, ifname: str, cidr: str) -> str:
        """A second interface ``ifname`` on the lab switch for ``node``, with ``cidr``; returns its MAC."""
        assert self.lab is not None
        host, switch = self.hosts[node], self.lab.switch
        port, tmp = f"q{node[-1]}{ifname[-1]}", f"{self.lab.prefix}t"
        run(["ip", "-n", switch, "link", "add", port, "type", "veth", "peer", "name", tmp])
        run(["ip", "-n", switch, "link", "set", tmp, "netns", host.name])
        run(["ip", "-n", host.name, "link", "set", tmp, "name", ifname])
        run(["ip", "-n", switch, "link", "set", port, "master", "br0", "up"])
        run(["ip", "-n", host.name, "link", "set", ifname, "up"])
        run(["ip", "-n", host.name, "addr", "add", cidr, "dev", ifname])
        return run(["ip", "netns", "exec", host.name, "cat", f"/sys/class/net/{ifname}/address"]).stdout.strip()

    def set_link(self, node: str, ifname: str, up: bool) -> None:
        run(["ip", "-n", self.hosts[node].name, "link", "set", ifname, "up" if up else "down"])

    def lease_annotations(self) -> dict[str, dict[str, str]]:
        items = self.rest.get(path_for("coordination.k8s.io/v1", "leases", NAMESPACE)).get("items") or []
        return {i["metadata"]["name"]: i["metadata"].get("annotations") or {} for i in items}

    def mac(self, node: str) -> str:
        return self.hosts[node].mac

    def node_of_mac(self, mac: str) -> str | None:
        return next((n for n, h in self.hosts.items() if h.mac == mac), None)

    # -- client side --------------------------------------------------------------------------------------
    def arping(self, ip: str, count: int = 2) -> list[str]:
        """MACs that answered ``count`` ARP requests from the client, lower case."""
        out = self.client.run(["arping", "-c", str(count), "-w", str(count + 2), "-I", "eth0", ip], check=False).stdout
        return [line.split("[", 1)[1].split("]", 1)[0].lower() for line in out.splitlines() if "reply from" in line]

    def ndisc(self, ip: str) -> list[str]:
        """The distinct MACs that answered the client's solicitations for ``ip`` (ndisc6 -m prints every answer)."""
        out = self.client.run(["ndisc6", "-m", "-r", "2", "-w", "1000", ip, "eth0"], check=False).stdout
        return sorted({line.split(":", 1)[1].strip().lower() for line in out.splitlines()
                       if "link-layer address:" in line})

    def neighbour(self, ip: str) -> tuple[str | None, list[str]]:
        entries = json.loads(self.client.run(["ip", "-j", "neigh", "show", ip, "dev", "eth0"]).stdout or "[]")
        if not entries:
            return None, []
        return entries[0].get("lladdr"), entries[0].get("state", [])

    def resolve(self, ip: str) -> None:
        self.client.run(["ping", "-6" if ":" in ip else "-4", "-c", "1", "-W", "1", ip], check=False)

    def close(self) -> None:
        for proc in self.speakers.values():
            with contextlib.suppress(Exception):
                proc.kill()
        if self.lab is not None:
            self.lab.close()
        self.api.stop()

    def __enter__(self) -> SpeakerLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
