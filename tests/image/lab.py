"""A node and a pod network for running the built image like a cluster would: the API test server behind
TLS with a service account token, a node namespace, a pod namespace, a client and a BIRD router.

Containers reach the API server the in-cluster way: ``KUBERNETES_SERVICE_HOST``/``PORT`` name
``127.0.0.1:6443`` in their own network namespace, which ``Lab.forward_loopback`` relays to a
``TlsFront`` in the root namespace; it terminates TLS with a certificate of a throw-away CA (the
``ca.crt`` of the mounted service account directory) and relays to the API test server, which
requires the service account's bearer token.

Addresses (lab switch 192.0.2.0/24): router .1, node ``node1`` .11, the controller pod .50, client
.100. Everything (containers, relays, namespaces, files) is removed by ``close``, also on failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

from lbspeaker_testkit.apiserver import APIServer
from lbspeaker_testkit.kubeutil import Cluster
from lbspeaker_testkit.netns import Host, Lab, in_netns, run

from tests.image import kubelet

REPO = Path(__file__).resolve().parents[2]
CONTAINERS_CONF = REPO / "hack" / "image" / "containers.conf"
API_PORT_IN_PODS = 6443
NODE = "node1"
NODE_IP = "192.0.2.11"
CONTROLLER_IP = "192.0.2.50"
CLIENT_IP = "192.0.2.100"
ROUTER_IP = "192.0.2.1"


def podman(*args: str, check: bool = True, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}
    proc = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, env=env, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def make_ca(directory: Path) -> tuple[Path, Path]:
    """A self-signed CA certificate for 127.0.0.1 (CN kubernetes) and its key, made with openssl."""
    cert, key = directory / "ca.crt", directory / "ca.key"
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "1", "-subj", "/CN=kubernetes", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)])
    return cert, key


class TlsFront:
    """A TLS server on 127.0.0.1 (root namespace) relaying each connection as plain TCP to ``target``.

    Pods reach it through ``Lab.forward_loopback``, which carries the TLS bytes untouched from their
    namespace's 127.0.0.1:6443, so TLS runs end to end between the pod's client and this server.
    """

    def __init__(self, target: tuple[str, int], cert: Path, key: Path) -> None:
        self._target = target
        self._ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._ctx.load_cert_chain(cert, key)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tls-front", daemon=True)
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self._ctx), self._loop).result(10)
        self.port: int = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, ssl.SSLError):
                pass
            finally:
                with contextlib.suppress(OSError, ssl.SSLError, RuntimeError):
                    dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    def close(self) -> None:
        async def stop() -> None:
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def http_get(netns: str, ip: str, port: int, path: str, timeout: float = 3.0) -> tuple[int, str]:
    """GET ``http://ip:port/path`` from inside ``netns`` (as a kubelet probe would); (0, "") if nothing answers."""
    result: list[tuple[int, str]] = []

    def get() -> None:
        try:
            with in_netns(netns):
                sock = socket.create_connection((ip, port), timeout=timeout)
        except OSError:
            return
        with sock:
            try:
                sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {ip}\r\n\r\n".encode())
                chunks = []
                while data := sock.recv(65536):
                    chunks.append(data)
            except OSError:
                return
        head, _, body = b"".join(chunks).decode(errors="replace").partition("\r\n\r\n")
        with contextlib.suppress(IndexError, ValueError):
            result.append((int(head.split(" ", 2)[1]), body))

    t = threading.Thread(target=get)
    t.start()
    t.join()
    return result[0] if result else (0, "")


class Container:
    """One container started from a deploy/ manifest with ``kubelet.podman_run_args``."""

    def __init__(self, name: str, workload: dict[str, Any], probe_netns: str, probe_ip: str) -> None:
        self.name = name
        self.workload = workload
        self.probe_netns = probe_netns
        self.probe_ip = probe_ip

    def inspect(self, fmt: str) -> str:
        return podman("inspect", "--format", fmt, self.name).stdout.strip()

    def pid(self) -> int:
        return int(self.inspect("{{.State.Pid}}"))

    def running(self) -> bool:
        return self.inspect("{{.State.Running}}") == "true"

    def logs(self) -> str:
        proc = podman("logs", self.name, check=False)
        return (proc.stdout + proc.stderr)[-6000:]

    def probe(self, kind: str) -> tuple[int, str]:
        (probe,) = [p for p in kubelet.probes(self.workload) if p.kind == kind]
        return http_get(self.probe_netns, self.probe_ip, probe.port, probe.path)

    def proc_status(self) -> dict[str, str]:
        """/proc/PID/status of the container's main process, as the host sees it."""
        fields = {}
        for line in Path(f"/proc/{self.pid()}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            fields[key] = value.strip()
        return fields

    def mounts(self) -> dict[str, set[str]]:
        """The container's mount points and their options, from /proc/PID/mountinfo."""
        out = {}
        for line in Path(f"/proc/{self.pid()}/mountinfo").read_text().splitlines():
            parts = line.split()
            out[parts[4]] = set(parts[5].split(","))
        return out

    def writable_paths(self) -> set[str]:
        """Where the container may write, the kernel's own filesystems (/dev, /proc, /sys) aside."""
        return {p for p, opts in self.mounts().items()
                if "rw" in opts and not p.startswith(("/dev", "/proc", "/sys"))}


class ImageLab:
    """The API test server, TLS fronts, the node, pod, client and router namespaces; containers on demand."""

    def __init__(self, image: str) -> None:
        self.image = image
        self.run_id = secrets.token_hex(3)
        self.dir = Path(tempfile.mkdtemp(prefix="lbs-img-"))
        self.token = secrets.token_urlsafe(32)
        self.api = APIServer(host="127.0.0.1", port=0, token=self.token)
        self.api.start()
        self.lab: Lab | None = None
        self.front: TlsFront | None = None
        self.containers: list[Container] = []
        try:
            self.cluster = Cluster(str(self.api.write_kubeconfig(self.dir / "kubeconfig")))
            self.cert, self.key = make_ca(self.dir)
            self.lab = Lab("img")
            self.router = self.lab.add_host("r", ipv4=f"{ROUTER_IP}/24")
            self.node = self.lab.add_host("n1", ipv4=f"{NODE_IP}/24")
            self.pod = self.lab.add_host("ctl", ipv4=f"{CONTROLLER_IP}/24")
            self.client = self.lab.add_host("c", ipv4=f"{CLIENT_IP}/24")
            self.front = TlsFront(("127.0.0.1", self.api.port), self.cert, self.key)
            for host in (self.node, self.pod):
                self.lab.forward_loopback(host, ("127.0.0.1", self.front.port), port=API_PORT_IN_PODS)
        except BaseException:
            self.close()
            raise

    def service_account(self, name: str, namespace: str) -> Path:
        """The projected service account directory a kubelet mounts: token, ca.crt, namespace (world-readable)."""
        sa = self.dir / f"sa-{name}"
        sa.mkdir(mode=0o755)
        (sa / "token").write_text(self.token)
        shutil.copy(self.cert, sa / "ca.crt")
        (sa / "namespace").write_text(namespace)
        for f in sa.iterdir():
            f.chmod(0o644)
        sa.chmod(0o755)
        self.dir.chmod(0o755)
        return sa

    def start(self, workload: dict[str, Any], pod_name: str, host: Host, *, host_network: bool) -> Container:
        """Start the workload's container as pod ``pod_name`` on ``node1``; ``host`` is the pod's namespace."""
        namespace = workload["metadata"]["namespace"]
        ctx = kubelet.PodContext(
            pod_name=pod_name, namespace=namespace, node_name=NODE,
            node_netns=f"/run/netns/{self.node.name}", host_ip=NODE_IP,
            pod_netns=None if host_network else f"/run/netns/{host.name}",
            pod_ip=None if host_network else str(host.ipv4.ip) if host.ipv4 else None,
            service_account_dir=str(self.service_account(pod_name, namespace)),
            api_host="127.0.0.1", api_port=API_PORT_IN_PODS)
        name = f"lbs-img-{self.run_id}-{pod_name}"
        args = kubelet.podman_run_args(workload, self.image, name, ctx)
        container = Container(name, workload, probe_netns=self.node.name,
                              probe_ip=NODE_IP if host_network else str(ctx.pod_ip))
        self.containers.append(container)
        podman("run", *args)
        return container

    def arping(self, ip: str, count: int = 2) -> list[str]:
        """MACs that answered ``count`` ARP requests from the client, lower case."""
        out = self.client.run(["arping", "-c", str(count), "-w", str(count + 2), "-I", "eth0", ip],
                              check=False).stdout
        return [line.split("[", 1)[1].split("]", 1)[0].lower() for line in out.splitlines() if "reply from" in line]

    def close(self) -> None:
        for container in self.containers:
            with contextlib.suppress(Exception):
                podman("rm", "--force", "--time", "0", container.name, check=False)
        if self.lab is not None:
            self.lab.close()
        if self.front is not None:
            self.front.close()
        self.api.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> ImageLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

