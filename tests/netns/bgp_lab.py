"""Lab for the BGP network tests: one BIRD router and lbspeaker BGP nodes, each in its own namespace.

Addresses: the lab link is 192.0.2.0/24 and 2001:db8:1::/64 (router .1 / ::1, node i at .1i / ::1i);
announced service routes come from 203.0.113.0/24 and 2001:db8:ff::/48. Each node runs the
standalone speaker (``python -m lbspeaker.bgp``) driven through a JSON config file and SIGHUP, and
reports its sessions and counters in a status file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from lbspeaker_testkit.bird import BirdBfd, BirdNeighbor, BirdRouter, bird_available, render_bird_config, wait_until
from lbspeaker_testkit.netns import Host, Lab
from lbspeaker_testkit.speaker_lab import NAMESPACE

import lbspeaker
from lbspeaker.bgp.model import Advertisement, BgpPeer
from lbspeaker.kube.rest import MERGE_PATCH, Rest, path_for

REPO_ROOT = Path(lbspeaker.__file__).resolve().parent.parent
ROUTER_ASN = 64512
NODE_ASN = 64500
ROUTER_V4 = "192.0.2.1"
ROUTER_V6 = "2001:db8:1::1"


def skip_reason() -> str | None:
    """Why the BGP network tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "iproute2 (ip) not installed"
    missing = bird_available()
    if missing:
        return missing
    if importlib.util.find_spec("exabgp") is None:
        return "exabgp not installed (pip install exabgp==5.0.15)"
    if shutil.which("tcpdump") is None:
        return "tcpdump not installed (the keepalive test watches the router's link with it)"
    return None


def speaker_lab_marks() -> list[pytest.MarkDecorator]:
    """The skip marks of tests that run the whole speaker (``lbspeaker speaker`` in node namespaces,
    against the in-process API test server) beside a BIRD router."""
    reason = skip_reason()
    return [
        pytest.mark.skipif(reason is not None, reason=reason or ""),
        pytest.mark.skipif(bool(os.environ.get("LBSPEAKER_TEST_KUBECONFIG")),
                           reason="speakers run in lab namespaces that cannot reach a real cluster's API server"),
    ]


def set_config(rest: Rest, text: str) -> None:
    """Replace the speaker lab's pool configuration (ConfigMap ``config``)."""
    rest.request("PATCH", path_for("v1", "configmaps", NAMESPACE, "config"), content_type=MERGE_PATCH,
                 body={"data": {"config": text}})


def node_v4(index: int) -> str:
    return f"192.0.2.{10 + index}"


def node_v6(index: int) -> str:
    return f"2001:db8:1::{10 + index}"


def _jsonable(obj: BgpPeer | Advertisement) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(obj).items()}


class SpeakerNode:
    """A standalone speaker process in a node namespace."""

    def __init__(self, lab: Lab, host: Host, workdir: Path, *, graceful_stop: bool, extra_args: list[str]) -> None:
        self.lab = lab
        self.host = host
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "speaker.json"
        self.status_path = workdir / "status.json"
        self.log_path = workdir / "speaker.log"
        self.config_path.write_text(json.dumps({"peers": [], "routes": []}))
        self._log = self.log_path.open("ab")
        env = dict(os.environ)
        env["PYTHONPATH"] = f"{REPO_ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}".rstrip(os.pathsep)
        args = [
            sys.executable,
            "-m",
            "lbspeaker.bgp",
            "--workdir",
            str(workdir / "exabgp"),
            "--router-id",
            str(host.ipv4.ip) if host.ipv4 else "192.0.2.250",
            "--node-name",
            host.name,
            "--config",
            str(self.config_path),
            "--status-file",
            str(self.status_path),
            "--graceful-restart-time",
            "60",
            *extra_args,
        ]
        if graceful_stop:
            args.append("--graceful-stop")
        self.proc = lab.popen(host, args, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=str(workdir))

    def configure(self, peers: list[BgpPeer], routes: list[Advertisement]) -> None:
        """Replace the node's peers and routes (takes effect on the SIGHUP sent here)."""
        data = {"peers": [_jsonable(p) for p in peers], "routes": [_jsonable(r) for r in routes]}
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.config_path)
        # SIGHUP before the speaker installed its handler would kill it: the status file is
        # written only once the handlers are in place.
        wait_until(lambda: self.status_path.exists() or self.status(), 20.0, what=f"{self.host.name} speaker start")
        self.proc.send_signal(signal.SIGHUP)

    def status(self) -> dict[str, Any]:
        if self.proc.poll() is not None:
            raise RuntimeError(f"speaker exited with {self.proc.returncode}: {self.log_tail()}")
        try:
            data: dict[str, Any] = json.loads(self.status_path.read_text())
        except (OSError, ValueError):
            return {}
        return data

    def session_state(self, peer: str) -> str | None:
        state = self.status().get("sessions", {}).get(peer)
        return state["state"] if state else None

    def wait_session(self, peer: str, state: str = "established", timeout: float = 30.0) -> None:
        wait_until(lambda: self.session_state(peer) == state, timeout, what=f"{self.host.name} session {peer} {state}")

    def stat(self, key: str) -> int | None:
        value = self.status().get("stats", {}).get(key)
        return int(value) if value is not None else None

    def wait_stat(self, key: str, value: int, timeout: float = 10.0) -> None:
        """Wait until a counter reaches ``value`` (the status file lags the speaker by a fraction of a second)."""
        wait_until(lambda: self.stat(key) == value, timeout, what=f"{self.host.name} {key} == {value}")

    def exabgp_pid(self) -> int | None:
        pid = self.status().get("exabgp_pid")
        return int(pid) if pid else None

    def log_tail(self, size: int = 4000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-size:]
        return ""

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()
        return self.proc.returncode


class BgpLab:
    """A Lab with a router namespace ``r`` and node namespaces ``n1``..``nN``. Context manager."""

    def __init__(self, workdir: Path, nodes: int = 2) -> None:
        self.workdir = workdir
        self.lab = Lab("bgp")
        self.speakers: list[SpeakerNode] = []
        self.router: BirdRouter | None = None
        try:
            self.router_host = self.lab.add_host("r", ipv4=f"{ROUTER_V4}/24", ipv6=f"{ROUTER_V6}/64")
            self.nodes = [
                self.lab.add_host(f"n{i}", ipv4=f"{node_v4(i)}/24", ipv6=f"{node_v6(i)}/64")
                for i in range(1, nodes + 1)
            ]
        except BaseException:
            self.lab.close()
            raise

    def start_router(self, neighbors: list[BirdNeighbor], bfd: BirdBfd | None = None) -> BirdRouter:
        config = render_bird_config(ROUTER_V4, ROUTER_ASN, neighbors, bfd)
        self.router = BirdRouter(self.lab, self.router_host, self.workdir / "bird", config)
        return self.router

    def start_speaker(
        self, index: int, *, graceful_stop: bool = False, extra_args: list[str] | None = None
    ) -> SpeakerNode:
        host = self.nodes[index - 1]
        node = SpeakerNode(
            self.lab, host, self.workdir / f"n{index}", graceful_stop=graceful_stop, extra_args=extra_args or []
        )
        self.speakers.append(node)
        return node

    def close(self) -> None:
        for speaker in self.speakers:
            with contextlib.suppress(Exception):
                speaker.stop(timeout=10)
        if self.router is not None:
            with contextlib.suppress(Exception):
                self.router.stop()
        self.lab.close()

    def __enter__(self) -> BgpLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def router_neighbor(index: int, *, v6: bool = False, asn: int = NODE_ASN, **kwargs: Any) -> BirdNeighbor:
    """The router's side of the session with node ``index``."""
    return BirdNeighbor(
        name=f"n{index}{'v6' if v6 else ''}",
        address=node_v6(index) if v6 else node_v4(index),
        asn=asn,
        local_address=ROUTER_V6 if v6 else ROUTER_V4,
        **kwargs,
    )


def node_peer(*, v6: bool = False, my_asn: int = NODE_ASN, **kwargs: Any) -> BgpPeer:
    """The node's side: a peer definition towards the router."""
    return BgpPeer(peer_address=ROUTER_V6 if v6 else ROUTER_V4, peer_asn=ROUTER_ASN, my_asn=my_asn, **kwargs)


def paths_by_protocol(router: BirdRouter, prefix: str) -> dict[str, Any]:
    """protocol name -> path of ``prefix`` in the router's RIB."""
    return {path.protocol: path for path in router.routes(prefix).get(prefix, [])}


def wait_paths(router: BirdRouter, prefix: str, protocols: set[str], timeout: float = 20.0) -> dict[str, Any]:
    """Wait until exactly the given protocols hold a path for ``prefix``; return those paths."""

    def probe() -> dict[str, Any] | None:
        paths = paths_by_protocol(router, prefix)
        return paths if set(paths) == protocols else None

    if not protocols:
        deadline = time.monotonic() + timeout
        while paths_by_protocol(router, prefix):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{prefix} still in the RIB after {timeout} s")
            time.sleep(0.1)
        return {}
    result: dict[str, Any] = wait_until(probe, timeout, what=f"{prefix} from {sorted(protocols)}")
    return result


def bgp_message_times(host: Host, source: str, seconds: float) -> list[tuple[float, int]]:
    """(arrival time, BGP message type) of the BGP messages ``host`` receives from ``source`` over
    ``seconds`` (tcpdump on its eth0; time.time() stamps). Keepalives are type 4."""
    out = host.run(
        ["timeout", str(seconds), "tcpdump", "-l", "-n", "-tt", "-v", "-i", "eth0",
         f"tcp port 179 and src {source}"],
        check=False, timeout=seconds + 10,
    ).stdout
    found: list[tuple[float, int]] = []
    stamp = 0.0
    for line in out.splitlines():
        head = line.split(" ", 1)[0]
        if head.replace(".", "", 1).isdigit():
            stamp = float(head)
        # tcpdump -v decodes each BGP message on its own line: "Keepalive Message (4), length: 19"
        if "Message (" in line:
            kind = line.split("Message (", 1)[1].split(")", 1)[0]
            if kind.isdigit():
                found.append((stamp, int(kind)))
    return found
