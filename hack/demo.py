#!/usr/bin/env python3
"""`make demo`: a whole lbspeaker cluster lab on this machine, shown step by step.

What it builds (and tears down at the end, also on Ctrl-C or an error, its temporary directory included):
- the API test server, or the cluster named by $DEMO_KUBECONFIG (then everything goes into namespace
  lbspeaker-demo under loadBalancerClass lbspeaker.io/demo, with Node objects lbspeaker-demo-node-N,
  and all of it is deleted at the end; the lab's nodes are network namespaces here either way, and
  reach the cluster's API server through a relay on their loopback). $KUBECONFIG is ignored, and the
  demo says so: a cluster is used only when asked for by name;
- three "nodes", each a network namespace on a private switch, running a real `lbspeaker speaker`;
  each node also runs a tiny HTTP server answering "hello from node-N" for the Service IPs, standing in
  for kube-proxy (the VIP sits on the node's loopback with strict ARP, as kube-proxy's IPVS mode does,
  so only the speaker answers ARP for it);
- the controller, the example pools from deploy/examples/, a layer 2 LoadBalancer Service;
- a "client" namespace that reaches the Service IP over the switch.

It prints the Services with their EXTERNAL-IP and owner, the client's `curl` answers, the router's
table as BIRD shows it, then kills the owner's speaker and prints how long the client went without
an answer, whether the client saw the new owner's gratuitous ARP and what its neighbour entry holds.

Only documentation addresses (192.0.2.0/24, 203.0.113.0/24, 2001:db8::/32) are used, inside
namespaces this script creates.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lbspeaker_testkit.apiserver import APIServer  # noqa: E402
from lbspeaker_testkit.bird import BirdNeighbor, BirdRouter, bird_available, render_bird_config  # noqa: E402
from lbspeaker_testkit.kubeutil import free_port, rest_for  # noqa: E402
from lbspeaker_testkit.netns import Host, Lab  # noqa: E402

from lbspeaker.kube.rest import ApiError, Rest, path_for  # noqa: E402
from lbspeaker.kube.timefmt import parse_time  # noqa: E402

NODE_IPS = ("192.0.2.11", "192.0.2.12", "192.0.2.13")
RELAY_PORT = 16443  # where node namespaces reach a real cluster's API server


@dataclass
class Setup:
    """Where the demo puts things: the defaults on the API test server, a corner of its own on a real cluster."""

    ns: str = "lbspeaker-system"
    app_ns: str = "default"
    lb_class: str | None = None
    node_prefix: str = ""
    real: bool = False

    def args(self) -> list[str]:
        return ["--namespace", self.ns, *(["--lb-class", self.lb_class] if self.lb_class else [])]
CLIENT_IP = "192.0.2.100"
ROUTER_IP = "192.0.2.1"
BOLD, DIM, RESET = ("\033[1m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "", "")

HTTP_SERVER = r"""
import http.server, socketserver, sys
name = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"hello from {name}\n".encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer(("0.0.0.0", 80), H).serve_forever()
"""


def step(text: str) -> None:
    print(f"\n{BOLD}==> {text}{RESET}", flush=True)


def info(text: str) -> None:
    print(f"    {text}", flush=True)


def need(tool: str, package: str) -> None:
    if shutil.which(tool) is None:
        sys.exit(f"demo: '{tool}' is missing; install the Debian package {package} (make demo does)")


def wait(fn: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = fn()
        if got:
            return got
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")


def apply(rest: Any, obj: dict[str, Any]) -> None:
    kind = obj["kind"]
    resource = {"ConfigMap": "configmaps", "Secret": "secrets", "Service": "services", "Node": "nodes",
                "Namespace": "namespaces", "EndpointSlice": "endpointslices"}[kind]
    api = "discovery.k8s.io/v1" if kind == "EndpointSlice" else "v1"
    ns = obj["metadata"].get("namespace") if kind not in ("Node", "Namespace") else None
    try:
        rest.request("POST", path_for(api, resource, ns), body=obj)
    except ApiError as exc:
        if not exc.conflict:
            raise


def main() -> int:
    if os.geteuid() != 0:
        sys.exit("demo: run as root (network namespaces need it): sudo make demo")
    for tool, pkg in (("ip", "iproute2"), ("arping", "iputils-arping"), ("curl", "curl")):
        need(tool, pkg)
    started = time.monotonic()
    procs: list[subprocess.Popen[bytes]] = []
    speakers: dict[str, subprocess.Popen[bytes]] = {}  # by node name; also in procs
    server: APIServer | None = None
    lab: Lab | None = None
    rest: Rest | None = None
    created: list[tuple[str, str | None, str]] = []  # deleted at the end on a real cluster
    tmp: Path | None = None
    ok = False
    try:
        tmp = Path(tempfile.mkdtemp(prefix="lbspeaker-demo-"))
        step("API server")
        real = os.environ.get("DEMO_KUBECONFIG")
        if real and not os.path.isfile(real.split(os.pathsep)[0]):
            raise SystemExit(f"demo: DEMO_KUBECONFIG={real}: the file does not exist")
        if not real and os.environ.get("KUBECONFIG"):
            info(f"KUBECONFIG={os.environ['KUBECONFIG']} is ignored: the demo runs on its own API test server; "
                 "to run it on that cluster, say so: make demo DEMO_KUBECONFIG=PATH")
        if real:
            # A real cluster: everything goes into a namespace of its own, under a loadBalancerClass of its
            # own, with Node objects named lbspeaker-demo-node-N; all of it is deleted at the end.
            kubeconfig = real.split(os.pathsep)[0]
            setup = Setup(ns="lbspeaker-demo", app_ns="lbspeaker-demo", lb_class="lbspeaker.io/demo",
                          node_prefix="lbspeaker-demo-", real=True)
            info(f"the cluster of DEMO_KUBECONFIG={kubeconfig}; demo objects go to namespace {setup.ns} "
                 f"and class {setup.lb_class}")
            relay_target, node_kubeconfig = _relay_kubeconfig(kubeconfig, tmp / "node-kubeconfig")
        else:
            server = APIServer(host="127.0.0.1", port=0)
            server.start()
            kubeconfig = str(tmp / "kubeconfig")
            server.write_kubeconfig(kubeconfig)
            setup = Setup()
            relay_target, node_kubeconfig = ("127.0.0.1", server.port), kubeconfig
            info(f"lbspeaker_testkit API server at {server.url}; kubeconfig {kubeconfig}")
        rest = rest_for(kubeconfig)
        created.append(("namespaces", None, setup.ns))
        apply(rest, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": setup.ns}})
        if setup.app_ns != "default":
            apply(rest, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": setup.app_ns}})
        apply(rest, {"apiVersion": "v1", "kind": "Secret",
                     "metadata": {"name": "lbspeaker-memberlist", "namespace": setup.ns}, "type": "Opaque",
                     "data": {"secretkey": base64.b64encode(os.urandom(32)).decode()}})
        nodes = {f"{setup.node_prefix}node-{i}": ip for i, ip in enumerate(NODE_IPS, start=1)}

        step("Nodes: three network namespaces on one switch, and a client")
        lab = Lab("demo")
        hosts: dict[str, Host] = {}
        for i, (node, ip) in enumerate(nodes.items(), start=1):
            hosts[node] = lab.add_host(f"n{i}", f"{ip}/24", f"2001:db8::{10 + i}/64")
            created.append(("nodes", None, node))
            apply(rest, {"apiVersion": "v1", "kind": "Node",
                         "metadata": {"name": node, "labels": {"kubernetes.io/hostname": node}},
                         "status": {"addresses": [{"type": "InternalIP", "address": ip}],
                                    "conditions": [{"type": "Ready", "status": "True"}]}})
            info(f"{node}: {ip} (mac {hosts[node].mac}) in namespace {hosts[node].name}")
        client = lab.add_host("cl", f"{CLIENT_IP}/24")
        info(f"client: {CLIENT_IP} in namespace {client.name}")

        bgp_ok, bgp_why = _bgp_available()
        router: BirdRouter | None = None
        if bgp_ok:
            # The router of deploy/examples/bgp-pool.yaml: 192.0.2.1, AS 64501; the nodes are AS 64500.
            rt = lab.add_host("rt", f"{ROUTER_IP}/24")
            # Forward, and spread flows over the ECMP next hops by ports too, so several curls from one
            # client reach several nodes.
            rt.run(["sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.fib_multipath_hash_policy=1"])
            # The sessions use TCP-MD5 with the password of Secret bgp-auth, as the example config says.
            password = base64.b64encode(os.urandom(18)).decode()
            apply(rest, {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                         "metadata": {"name": "bgp-auth", "namespace": setup.ns},
                         "data": {"password": base64.b64encode(password.encode()).decode()}})
            router = BirdRouter(lab, rt, tmp / "bird", render_bird_config(
                ROUTER_IP, 64501, [BirdNeighbor(name=node.replace("-", "_"), address=ip, asn=64500,
                                                local_address=ROUTER_IP, password=password)
                                   for node, ip in nodes.items()]))
            client.run(["ip", "route", "add", "203.0.113.0/24", "via", ROUTER_IP])
            info(f"router: BIRD 2 at {ROUTER_IP} (AS 64501) in namespace {rt.name}, peering with the three nodes "
                 f"(TCP-MD5, the password of Secret {setup.ns}/bgp-auth)")

        step("Pools from deploy/examples/ and the controller")
        import yaml

        for example in sorted((ROOT / "deploy" / "examples").glob("*.yaml")):
            obj = yaml.safe_load(example.read_text())
            obj["metadata"]["namespace"] = setup.ns
            if example.name.startswith("bgp") and not bgp_ok:
                info(f"{example.name}: skipped ({bgp_why})")
                continue
            apply(rest, obj)
            info(f"applied {example.name}")
        ctl_log = open(tmp / "controller.log", "wb")  # noqa: SIM115 - lives as long as the process
        ctl_port = free_port()
        t0 = time.monotonic()
        ctl = subprocess.Popen([sys.executable, "-m", "controller", "--kubeconfig", kubeconfig,
                                "--metrics-addr", f"127.0.0.1:{ctl_port}", *setup.args()],
                               stdout=ctl_log, stderr=subprocess.STDOUT)
        procs.append(ctl)
        wait(lambda: _ready(ctl, ctl_port), 60, "the controller's /readyz")
        info(f"controller ready in {time.monotonic() - t0:.2f}s: caches synced, pools loaded "
             f"(log {tmp / 'controller.log'})")

        step("Speakers, one per node")
        speaker_ok = _speaker_available()
        if not speaker_ok:
            info("the speaker program is not built yet: showing IP assignment only")
        for node, host in hosts.items():
            lab.forward_loopback(host, relay_target, port=RELAY_PORT if setup.real else None)
            # Strict ARP, as kube-proxy's IPVS mode needs: the node's kernel must not answer ARP for the
            # VIP it holds on loopback; only the elected speaker does.
            host.run(["sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2"])
            if speaker_ok:
                log = open(tmp / f"speaker-{node}.log", "wb")  # noqa: SIM115
                workdir = tmp / f"bgp-{node}"
                speakers[node] = lab.popen(host, [sys.executable, "-m", "lbspeaker.cli", "speaker", "--node-name", node,
                                                  "--kubeconfig", node_kubeconfig, "--metrics-addr", "127.0.0.1:7472",
                                                  *setup.args(),
                                                  *(["--bgp-workdir", str(workdir)] if bgp_ok else [])],
                                           stdout=log, stderr=subprocess.STDOUT)
                procs.append(speakers[node])
                info(f"{node}: speaker started (log {tmp / f'speaker-{node}.log'})")

        step("A LoadBalancer Service")
        svc: dict[str, Any] = {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "hello", "namespace": setup.app_ns},
            "spec": {"type": "LoadBalancer", "selector": {"app": "hello"},
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}
        if setup.lb_class:
            svc["spec"]["loadBalancerClass"] = setup.lb_class
        t0 = time.monotonic()
        apply(rest, svc)
        apply(rest, {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
                     "metadata": {"name": "hello-1", "namespace": setup.app_ns,
                                  "labels": {"kubernetes.io/service-name": "hello"}},
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
                     "endpoints": [{"addresses": [ip], "nodeName": node, "conditions": {"ready": True}}
                                   for node, ip in nodes.items()]})
        vip = wait(lambda: _ips(rest, setup.app_ns, "hello"), 30, "an EXTERNAL-IP")[0]
        info(f"EXTERNAL-IP {vip} assigned {time.monotonic() - t0:.2f}s after the Service was created")
        _show_services(kubeconfig, setup)
        for node, host in hosts.items():
            host.run(["ip", "addr", "add", f"{vip}/32", "dev", "lo"])
            procs.append(lab.popen(host, [sys.executable, "-c", HTTP_SERVER, node],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

        if not speaker_ok:
            step("Done (assignment only)")
            return 0

        step("Traffic from the client")
        owner = wait(lambda: _curl(client, vip), 20, "an answer from the Service IP")
        info(f"curl http://{vip}/  ->  {owner!r}")
        owner_node = owner.removeprefix("hello from ")
        info(f"client's neighbour entry: {_neigh(client, vip)}")
        info(f"{owner_node}'s MAC is {hosts[owner_node].mac}")

        if router is not None:
            step("A BGP Service, through the router")
            bsvc = json.loads(json.dumps(svc))
            bsvc["metadata"]["name"] = "hello-bgp"
            bsvc["metadata"]["annotations"] = {"lbspeaker.io/address-pool": "routed"}
            t0 = time.monotonic()
            apply(rest, bsvc)
            slice_ = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
                      "metadata": {"name": "hello-bgp-1", "namespace": setup.app_ns,
                                   "labels": {"kubernetes.io/service-name": "hello-bgp"}},
                      "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
                      "endpoints": [{"addresses": [ip], "nodeName": node, "conditions": {"ready": True}}
                                    for node, ip in nodes.items()]}
            apply(rest, slice_)
            bvip = wait(lambda: _ips(rest, setup.app_ns, "hello-bgp"), 30, "an EXTERNAL-IP from the bgp pool")[0]
            for host in hosts.values():
                host.run(["ip", "addr", "add", f"{bvip}/32", "dev", "lo"])
            paths = wait(lambda: (lambda r: r if len(r) == len(nodes) else None)(
                router.routes(f"{bvip}/32").get(f"{bvip}/32", [])), 60, "the route on the router from every node")
            info(f"EXTERNAL-IP {bvip}; the router learned {bvip}/32 from {len(paths)} nodes "
                 f"{time.monotonic() - t0:.2f}s after the Service was created:")
            info(f"{DIM}$ birdc show route {bvip}/32{RESET}")
            for line in router.birdc("show", "route", f"{bvip}/32").splitlines()[1:]:  # after "BIRD ... ready."
                info(f"{DIM}{line.expandtabs()}{RESET}")
            info(f"{DIM}$ ip route show {bvip}/32   (the router's kernel: one route, a next hop per node){RESET}")
            for line in router.kernel_route(f"{bvip}/32").rstrip().splitlines():
                info(f"{DIM}{line.expandtabs()}{RESET}")
            answers = collections.Counter(a for a in (_curl(client, bvip) for _ in range(12)) if a)
            info(f"12 x curl http://{bvip}/ through the router, spread over the nodes by ECMP:")
            for answer, count in sorted(answers.items()):
                info(f"  {answer!r} x {count}")

        step(f"Failover: SIGKILL the speaker of {owner_node}")
        victim = speakers[owner_node]
        # Stop answering for the VIP on the dead node too, as a dead node would.
        hosts[owner_node].run(["ip", "addr", "del", f"{vip}/32", "dev", "lo"])
        arp = ArpWatch(lab, client) if shutil.which("tcpdump") else None
        t0, killed_at = time.monotonic(), time.time()
        victim.send_signal(signal.SIGKILL)
        new = wait(lambda: (lambda a: a if a and owner_node not in a else None)(_curl(client, vip, 0.3)), 20,
                   "another node to answer", interval=0.02)
        gap = time.monotonic() - t0
        new_node = new.removeprefix("hello from ")
        info(f"curl http://{vip}/  ->  {new!r}  after {gap:.2f}s without an answer")
        time.sleep(1.2)  # the new owner repeats its gratuitous ARP twice, 0.5 s apart
        neigh_mac, new_mac = _neigh_mac(client, vip), hosts[new_node].mac.lower()
        moved = "now the new owner's MAC" if neigh_mac == new_mac else f"not {new_node}'s MAC {new_mac}"
        info(f"client's neighbour entry: {_neigh(client, vip)}: {moved}")
        if arp is not None:
            info(_arp_story(arp.stop(), vip, new_mac, client.mac, killed_at, neigh_mac))
        wait(lambda: _reported(rest, setup.app_ns, "hello", new_node, killed_at), 10,
             f"{new_node}'s nodeAssigned Event for the takeover")
        _show_services(kubeconfig, setup)
        step(f"Done in {time.monotonic() - started:.0f}s")
        ok = True
        return 0
    finally:
        if not ok and tmp is not None:
            _show_log_tails(tmp)
        step("Tearing down")
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(5)
            if p.poll() is None:
                p.kill()
        if lab is not None:
            lab.close()
        if server is not None:
            server.stop()
        elif rest is not None:
            for resource, ns, name in reversed(created):
                with contextlib.suppress(ApiError):
                    rest.request("DELETE", path_for("v1", resource, ns, name))
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        info(f"namespaces, processes, the API server and {tmp} are gone")


def _relay_kubeconfig(kubeconfig: str, out: Path) -> tuple[tuple[str, int], str]:
    """A copy of ``kubeconfig`` for processes in node namespaces, whose API server address is the relay on
    their loopback; TLS still checks the real server's name. Returns (real server host and port, path)."""
    import yaml

    doc = yaml.safe_load(Path(kubeconfig).read_text())
    context = next(c for c in doc["contexts"] if c["name"] == doc["current-context"])["context"]
    cluster = next(c for c in doc["clusters"] if c["name"] == context["cluster"])["cluster"]
    url = urllib.parse.urlsplit(cluster["server"])
    host = url.hostname or "127.0.0.1"
    port = url.port or (443 if url.scheme == "https" else 80)
    cluster["server"] = f"{url.scheme}://127.0.0.1:{RELAY_PORT}{url.path}"
    if url.scheme == "https":
        cluster.setdefault("tls-server-name", host)
    for entry in doc["clusters"]:
        if entry["name"] == context["cluster"]:
            entry["cluster"] = cluster
    out.write_text(yaml.safe_dump(doc))
    out.chmod(0o600)
    return (host, port), str(out)


def _bgp_available() -> tuple[bool, str]:
    missing = bird_available()
    if missing:
        return False, missing
    try:
        import exabgp  # noqa: F401
    except ImportError:
        return False, "exabgp is not installed (pip install exabgp)"
    return True, ""


def _speaker_available() -> bool:
    try:
        import lbspeaker.speaker.main  # noqa: F401
    except ImportError:
        return False
    return True


def _ips(rest: Any, ns: str, name: str) -> list[str]:
    svc = rest.get(path_for("v1", "services", ns, name))
    return [i["ip"] for i in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []]


def _show_services(kubeconfig: str, setup: Setup) -> None:
    if shutil.which("kubectl"):
        out = subprocess.run(["kubectl", "--kubeconfig", kubeconfig, "get", "svc", "-A"], capture_output=True,
                             text=True, check=False).stdout
        info(f"{DIM}$ kubectl get svc -A{RESET}")
        for line in out.splitlines():
            info(line)
    out = subprocess.run([sys.executable, "-m", "lbspeaker.cli", "status", "--kubeconfig", kubeconfig,
                          "--namespace", setup.ns, *(["--lb-class", setup.lb_class] if setup.lb_class else [])],
                         capture_output=True, text=True, check=False).stdout
    info(f"{DIM}$ lbspeaker status{RESET}")
    for line in out.splitlines():
        info(line)


def _ready(proc: subprocess.Popen[bytes], port: int) -> bool:
    if proc.poll() is not None:
        raise RuntimeError(f"the controller exited with status {proc.returncode}")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def _reported(rest: Any, ns: str, name: str, node: str, since: float) -> bool:
    """Whether ``node``'s speaker has reported (nodeAssigned Event on the Service) a takeover since ``since``."""
    events = rest.get(path_for("v1", "events", ns), fieldSelector=f"involvedObject.name={name},reason=nodeAssigned")
    return any((e.get("source") or {}).get("host") == node and (parse_time(e.get("lastTimestamp")) or 0) >= int(since)
               for e in events.get("items") or [])


class ArpWatch:
    """tcpdump on the client's interface: the ARP frames it receives, with their times (epoch seconds)."""

    def __init__(self, lab: Lab, client: Host) -> None:
        self.lines: list[str] = []
        self.proc = lab.popen(client, ["tcpdump", "-i", "eth0", "-n", "-e", "-l", "-tt", "-Q", "in", "arp"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        time.sleep(0.5)  # tcpdump needs a moment before it captures

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace").strip())

    def stop(self) -> list[tuple[float, str, str, str]]:
        """(time, source MAC, destination MAC, the ARP text) of every frame seen."""
        self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        self._reader.join(5)
        frames = []
        for line in self.lines:
            head, _, arp = line.partition(": ")
            parts = head.replace(",", "").split()
            try:
                frames.append((float(parts[0]), parts[1].lower(), parts[3].lower(), arp))
            except (IndexError, ValueError):
                continue
        return frames


def _arp_story(frames: list[tuple[float, str, str, str]], vip: str, new_mac: str, client_mac: str, killed_at: float,
               neigh_mac: str | None) -> str:
    """What the client's captured ARP traffic says about how its neighbour entry moved, checked, not assumed."""
    gratuitous = [t for t, src, dst, arp in frames
                  if src == new_mac.lower() and dst == "ff:ff:ff:ff:ff:ff" and vip in arp and t >= killed_at]
    answers = [t for t, src, dst, arp in frames
               if src == new_mac.lower() and dst == client_mac.lower() and f"Reply {vip}" in arp and t >= killed_at]
    if not gratuitous:
        return "the client saw no gratuitous ARP from the new owner" + (
            f" (it re-resolved {vip} itself: {len(answers)} answer(s))" if answers else "")
    first = gratuitous[0]
    said = (f"the client saw {len(gratuitous)} gratuitous ARP(s) for {vip} from the new owner, the first "
            f"{first - killed_at:.2f}s after the kill")
    if neigh_mac == new_mac and not [t for t in answers if t < first]:
        said += "; its neighbour entry moved on that, before any answer to a request of its own"
    elif answers:
        said += f"; it also asked for {vip} itself and got {len(answers)} answer(s)"
    return said


def _show_log_tails(tmp: Path) -> None:
    """The last lines of each program's log, before the directory goes: the demo failed."""
    for log_file in sorted(tmp.glob("*.log")):
        lines = log_file.read_text(errors="replace").splitlines()[-15:]
        if lines:
            info(f"{DIM}--- last lines of {log_file.name}{RESET}")
            for line in lines:
                info(f"{DIM}{line}{RESET}")


def _curl(client: Host, vip: str, timeout: float = 1.0) -> str | None:
    res = client.run(["curl", "-s", "--max-time", str(timeout), f"http://{vip}/"], check=False)
    return res.stdout.strip() or None


def _neigh_mac(client: Host, vip: str) -> str | None:
    out = client.run(["ip", "-j", "neigh", "show", vip], check=False).stdout
    try:
        entries = json.loads(out or "[]")
    except ValueError:
        return None
    return str(entries[0].get("lladdr", "")).lower() or None if entries else None


def _neigh(client: Host, vip: str) -> str:
    out = client.run(["ip", "-j", "neigh", "show", vip], check=False).stdout
    try:
        entries = json.loads(out or "[]")
    except ValueError:
        return out.strip()
    return ", ".join(f"{e.get('lladdr', '?')} {'/'.join(e.get('state', []))}" for e in entries) or "(none)"


if __name__ == "__main__":
    from lbspeaker.cmdline import error_message

    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        message = error_message(exc)
        if message is None:
            raise
        sys.exit(f"demo: {message}")
