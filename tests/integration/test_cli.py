"""The `lbspeaker` command line as a user runs it: `status` against the API server, `config check` on files,
and every command's one-line errors (no kubeconfig, a missing file, an unreachable or refusing API server)."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from lbspeaker_testkit.apiserver import APIServer
from lbspeaker_testkit.kubeconfig import write_kubeconfig
from lbspeaker_testkit.kubeutil import Cluster, free_port, lb_service, pool_configmap, unique

from lbspeaker import election
from lbspeaker.kube.events import EventRecorder
from lbspeaker.kube.rest import MERGE_PATCH, ApiError, path_for
from lbspeaker.objects import SERVICE_NAME_LABEL
from lbspeaker.speaker.lease import LEASE_API, SUBNETS_ANNOTATION, lease_name


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lbspeaker.cli", *args], capture_output=True, text=True,
                          timeout=60, check=False, env=env)


def one_line_error(proc: subprocess.CompletedProcess[str], *, logs_before: bool = False) -> str:
    """The single error line of a failed command (exit status 1, no traceback); a long-running program may
    have logged before it (``logs_before``), the error is then its last line."""
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 or (logs_before and " INFO " in lines[0]), proc.stderr
    return lines[-1]


def clean_env(home: Path) -> dict[str, str]:
    """The environment of a user with no Kubernetes configuration at all, outside any pod."""
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST",
                                                             "KUBERNETES_SERVICE_PORT")}
    return {**env, "HOME": str(home)}


def test_status_shows_pools_and_services(kubeconfig: str, namespace: str) -> None:
    cluster = Cluster(kubeconfig)
    lb_class = f"lbspeaker.io/{unique('status')}"
    cluster.create(namespace, "configmaps", pool_configmap("""
address-pools:
- name: web
  protocol: layer2
  addresses: [192.0.2.40-192.0.2.43]
"""))
    for name, ip in (("front", "192.0.2.41"), ("back", None)):
        cluster.create(namespace, "services", lb_service(name, lb_class=lb_class))
        if ip:
            cluster.rest.request("PATCH", path_for("v1", "services", namespace, name, "status"),
                                 content_type=MERGE_PATCH,
                                 body={"status": {"loadBalancer": {"ingress": [{"ip": ip}]}}})
    proc = run_cli("status", "--kubeconfig", kubeconfig, "--namespace", namespace, "--lb-class", lb_class)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    pool_line = next(line for line in lines if line.startswith("web "))
    assert pool_line.split()[1:5] == ["layer2", "IPv4", "1", "4"], pool_line
    front = next(line for line in lines if f"{namespace} " in line and " front " in line)
    assert "192.0.2.41" in front and " web" in front
    back = next(line for line in lines if f"{namespace} " in line and " back " in line)
    assert "<pending>" in back


def test_config_check_cli(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("""apiVersion: v1
kind: ConfigMap
metadata: {name: config, namespace: lbspeaker-system}
data:
  config: |
    address-pools:
    - name: default
      protocol: layer2
      addresses: [192.0.2.10-192.0.2.12, 2001:db8::/120]
""")
    ok = run_cli("config", "check", str(good))
    assert ok.returncode == 0, ok.stderr
    assert "default" in ok.stdout and "layer2" in ok.stdout and "256" in ok.stdout and "3" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("""address-pools:
- name: default
  protocol: layer3
  addresses: [192.0.2.0/33]
  colour: blue
""")
    res = run_cli("config", "check", str(bad))
    assert res.returncode == 1
    assert "address-pools[0].protocol" in res.stderr and "layer3" in res.stderr
    assert "address-pools[0].addresses[0]" in res.stderr and "192.0.2.0/33" in res.stderr
    assert "colour" in res.stderr
    missing = run_cli("config", "check", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 1 and "nope.yaml" in missing.stderr


# -- status: the speakers' reports and the reasons ------------------------------------------------------------


def _now(delta: float = 0.0) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=delta)


@pytest.fixture
def made_nodes(cluster_rest: Cluster) -> Iterator[Callable[[str], str]]:
    """Node objects with names of this test's own, deleted afterwards (Nodes are cluster-wide)."""
    names: list[str] = []

    def make(short: str) -> str:
        name = unique(f"status-{short}")
        cluster_rest.rest.request("POST", path_for("v1", "nodes"), body={
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}})
        names.append(name)
        return name

    try:
        yield make
    finally:
        for name in names:
            with contextlib.suppress(ApiError):
                cluster_rest.rest.request("DELETE", path_for("v1", "nodes", None, name))


@pytest.fixture
def cluster_rest(kubeconfig: str) -> Cluster:
    return Cluster(kubeconfig)


def _lease(cluster: Cluster, namespace: str, node: str, renewed: datetime) -> None:
    cluster.rest.request("POST", path_for(LEASE_API, "leases", namespace), body={
        "apiVersion": LEASE_API, "kind": "Lease",
        "metadata": {"name": lease_name(node), "labels": {"app.kubernetes.io/component": "speaker"},
                     "annotations": {SUBNETS_ANNOTATION: "192.0.2.0/24"}},
        "spec": {"holderIdentity": node, "leaseDurationSeconds": 60,
                 "renewTime": renewed.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}})


def _service(cluster: Cluster, namespace: str, name: str, ip: str, lb_class: str, ready: dict[str, bool],
             local: bool = False) -> dict[str, object]:
    svc = cluster.create(namespace, "services", lb_service(name, lb_class=lb_class,
                                                           traffic_policy="Local" if local else None))
    cluster.rest.request("PATCH", path_for("v1", "services", namespace, name, "status"), content_type=MERGE_PATCH,
                         body={"status": {"loadBalancer": {"ingress": [{"ip": ip}]}}})
    cluster.rest.request("POST", path_for("discovery.k8s.io/v1", "endpointslices", namespace), body={
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
        "metadata": {"name": f"{name}-1", "labels": {SERVICE_NAME_LABEL: name}},
        "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
        "endpoints": [{"addresses": [f"10.0.0.{i}"], "nodeName": node, "conditions": {"ready": ok}}
                      for i, (node, ok) in enumerate(ready.items(), start=1)]})
    return svc


def _cells(stdout: str, namespace: str, name: str) -> tuple[str, str]:
    """(ANNOUNCED-BY, DETAIL) of a Service's row."""
    lines = stdout.splitlines()
    head = next(line for line in lines if line.startswith("NAMESPACE "))
    by, detail = head.index("ANNOUNCED-BY"), head.index("DETAIL")
    row = next(line for line in lines if line.split()[:2] == [namespace, name])
    return row[by:detail].strip(), row[detail:].strip()


def test_status_names_the_reporting_speaker_and_says_why_an_ip_is_not_announced(
        kubeconfig: str, namespace: str, cluster_rest: Cluster, made_nodes: Callable[[str], str]) -> None:
    cluster = cluster_rest
    lb_class = f"lbspeaker.io/{unique('status')}"
    cluster.create(namespace, "configmaps", pool_configmap("""
address-pools:
- name: lan
  protocol: layer2
  addresses: [192.0.2.40-192.0.2.47]
"""))
    a, b, c = made_nodes("a"), made_nodes("b"), made_nodes("c")
    for node in (a, b):
        _lease(cluster, namespace, node, _now())
    _lease(cluster, namespace, c, _now(-3600))  # c's speaker is gone
    ip = "192.0.2.41"
    web = _service(cluster, namespace, "web", ip, lb_class, {a: True, b: True, c: True})
    _service(cluster, namespace, "idle", "192.0.2.42", lb_class, {a: False, b: False})
    _service(cluster, namespace, "pinned", "192.0.2.43", lb_class, {c: True}, local=True)

    # The speakers' own reports, written as a speaker writes them. The elected node reported first;
    # the other one took over since (its Lease and the elected one's are both current).
    elected = election.owner(ip, (a, b))
    other = b if elected == a else a
    assert elected is not None
    for node in (elected, other):
        time.sleep(1.1)  # Event times have whole seconds: one apart, the order is unambiguous
        rec = EventRecorder(cluster.rest, "lbspeaker-speaker", node)
        rec.start()
        rec.record(web, "Normal", "nodeAssigned", f"announcing from node {node}, layer2, interface eth0")
        assert rec.flush(10)
        rec.stop()
    controller = EventRecorder(cluster.rest, "lbspeaker-controller")  # not a speaker: never a report
    controller.start()
    controller.record(web, "Normal", "nodeAssigned", "not from a speaker")
    assert controller.flush(10)
    controller.stop()

    proc = run_cli("status", "--kubeconfig", kubeconfig, "--namespace", namespace, "--lb-class", lb_class)
    assert proc.returncode == 0, proc.stderr
    by, detail = _cells(proc.stdout, namespace, "web")
    assert by == other and detail.startswith("reported ") and detail.endswith("s ago")
    assert _cells(proc.stdout, namespace, "idle") == ("<none>", "no ready endpoint")
    assert _cells(proc.stdout, namespace, "pinned") == (
        "<none>", f"no eligible node (no ready endpoint on the node: {','.join(sorted((a, b)))}; "
                  f"no speaker (no current speaker Lease): {c})")
    assert "nodeAssigned Events" in proc.stdout


# -- one-line errors ------------------------------------------------------------------------------------------

COMMANDS = {
    "status": ["status"],
    "controller": ["controller", "--metrics-addr", "127.0.0.1:0"],
    "speaker": ["speaker", "--node-name", "n1", "--metrics-addr", "127.0.0.1:0", "--heartbeat-addr", "127.0.0.1:0"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_missing_kubeconfig_file_is_named(command: str, tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent"
    extra = ["--bgp-workdir", str(tmp_path / "bgp")] if command == "speaker" else []
    line = one_line_error(run_cli(*COMMANDS[command], *extra, "--kubeconfig", str(missing)))
    assert line == f"lbspeaker {command}: kubeconfig {missing}: the file does not exist"


def test_a_missing_kubeconfig_file_from_the_environment_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent"
    line = one_line_error(run_cli("status", env={**clean_env(tmp_path), "KUBECONFIG": str(missing)}))
    assert line == f"lbspeaker status: kubeconfig {missing} (from $KUBECONFIG): the file does not exist"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_no_kubernetes_configuration_at_all(command: str, tmp_path: Path) -> None:
    extra = ["--bgp-workdir", str(tmp_path / "bgp")] if command == "speaker" else []
    line = one_line_error(run_cli(*COMMANDS[command], *extra, env=clean_env(tmp_path)))
    assert line == (f"lbspeaker {command}: no Kubernetes configuration: not running in a pod, $KUBECONFIG is not "
                    f"set and {tmp_path}/.kube/config does not exist; pass --kubeconfig PATH")


def test_a_kubeconfig_that_is_not_one(tmp_path: Path) -> None:
    bad = tmp_path / "kubeconfig"
    bad.write_text("clusters: [\n")
    line = one_line_error(run_cli("status", "--kubeconfig", str(bad)))
    assert line.startswith(f"lbspeaker status: kubeconfig {bad}: ") and "line 2" in line
    bad.write_text("")
    assert "is empty" in one_line_error(run_cli("status", "--kubeconfig", str(bad)))
    assert one_line_error(run_cli("status", "--kubeconfig", str(tmp_path))).endswith(f"{tmp_path}: not a file")


def test_status_against_an_unreachable_api_server(tmp_path: Path) -> None:
    port = free_port()  # nobody listens there
    kc = write_kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{port}")
    line = one_line_error(run_cli("status", "--kubeconfig", str(kc)))
    assert line == (f"lbspeaker status: cannot reach the Kubernetes API server at http://127.0.0.1:{port}: "
                    f"Connection refused (kubeconfig {kc})")


def test_status_refused_by_the_api_server(make_api_server: Callable[..., tuple[APIServer, str]],
                                          tmp_path: Path) -> None:
    server, good = make_api_server(token="the-right-token")
    doc = yaml.safe_load(Path(good).read_text())
    doc["users"][0]["user"]["token"] = "a-wrong-token"
    wrong = tmp_path / "wrong"
    wrong.write_text(yaml.safe_dump(doc))
    line = one_line_error(run_cli("status", "--kubeconfig", str(wrong)))
    assert line.startswith(f"lbspeaker status: the Kubernetes API server at {server.url} refused GET /api/v1/")
    assert "401 Unauthorized" in line and str(wrong) in line


def test_config_check_of_a_missing_file_is_one_line(tmp_path: Path) -> None:
    line = one_line_error(run_cli("config", "check", str(tmp_path / "nope.yaml")))
    assert "nope.yaml" in line


def test_a_metrics_port_in_use_is_one_line(kubeconfig: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_line_error(run_cli("controller", "--kubeconfig", kubeconfig, "--metrics-addr", f"127.0.0.1:{port}"),
                              logs_before=True)
    assert line == f"lbspeaker controller: cannot listen on 127.0.0.1:{port}: Address already in use"


# -- the README's Development cluster, command by command ---------------------------------------------------

README = Path(__file__).parents[2] / "README.md"


def _development_cluster_block() -> list[str]:
    text = README.read_text()
    section = text[text.index("## Development"):]
    start = section.index("A cluster of your own")
    block = section[start:].split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="needs kubectl")
def test_the_readme_development_commands_work_in_their_order(
        make_api_server: Callable[..., tuple[APIServer, str]]) -> None:
    lines = _development_cluster_block()
    assert lines[0].startswith(".venv/bin/python -m lbspeaker_testkit.apiserver ") and lines[0].endswith("&")
    _, kc = make_api_server()  # the first line, in-process
    controller: subprocess.Popen[bytes] | None = None
    try:
        for line in lines[1:]:
            words = shlex.split(line.rstrip("&").replace("/tmp/kc", kc))
            if words[0] == ".venv/bin/lbspeaker":
                words = [sys.executable, "-m", "lbspeaker.cli", *words[1:]]
            if line.endswith("&"):
                assert words[3] == "controller", line
                words[words.index("--metrics-addr") + 1] = f"127.0.0.1:{free_port()}"
                controller = subprocess.Popen(words, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                continue
            proc = subprocess.run(words, capture_output=True, text=True, timeout=60, check=False)
            assert proc.returncode == 0, (line, proc.stderr)
        assert controller is not None and words[3] == "status"

        def assigned() -> str | None:
            out = subprocess.run(words, capture_output=True, text=True, timeout=60, check=False).stdout
            row = next((r.split() for r in out.splitlines() if r.split()[:2] == ["default", "web"]), [])
            return out if row[2:4] == ["192.0.2.240", "default"] else None

        deadline = time.monotonic() + 30
        while not assigned():
            assert time.monotonic() < deadline, "status never showed web with an IP of the example pool"
            time.sleep(0.5)
    finally:
        if controller is not None:
            controller.terminate()
            controller.wait(10)


def test_a_bad_metrics_address_of_the_speaker_is_one_line(kubeconfig: str, tmp_path: Path) -> None:
    # Checked while the flags are parsed: a usage error (exit 2) naming the flag, no traceback.
    proc = run_cli("speaker", "--node-name", "n1", "--kubeconfig", kubeconfig, "--metrics-addr", "::1:7472",
                   "--heartbeat-addr", "127.0.0.1:0", "--bgp-workdir", str(tmp_path / "bgp"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].endswith(
        "error: argument --metrics-addr: '::1:7472': an IPv6 address needs brackets, for example [::1]:7472")
