"""The server as a whole: kubectl compatibility, discovery, auth, request counters, outages, the CLI.

kubectl tests skip (with the reason) when kubectl is not installed; server-only features use the
``api_server``/``make_api_server`` fixtures, which skip on a real cluster.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from lbspeaker_testkit.kubeconfig import write_kubeconfig

# The v37 client's models make every field Optional; tests check values at runtime, so client
# handles are typed loosely here rather than guarded with `is not None` on every access.
Api = Any

KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed on this machine")
NO_IMPLEMENTATION = "lbspeaker.io/test-none"


def kubectl(kubeconfig: str, tmp_path: Path, *args: str, stdin: str | None = None) -> str:
    assert KUBECTL is not None
    proc = subprocess.run(
        [KUBECTL, f"--kubeconfig={kubeconfig}", f"--cache-dir={tmp_path / 'kcache'}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"kubectl {' '.join(args)} failed: {proc.stderr}"
    return proc.stdout


@needs_kubectl
def test_kubectl_get_services_shows_external_ips(
    kubeconfig: str, core_v1: Api, namespace: str, tmp_path: Path
) -> None:
    for name in ("lb-ready", "lb-pending"):
        core_v1.create_namespaced_service(
            namespace,
            {
                "metadata": {"name": name},
                "spec": {
                    "type": "LoadBalancer",
                    "loadBalancerClass": NO_IMPLEMENTATION,
                    "ports": [{"port": 80}],
                },
            },
        )
    core_v1.patch_namespaced_service_status(
        "lb-ready",
        namespace,
        {"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}, {"ip": "2001:db8::10"}]}}},
    )
    out = kubectl(kubeconfig, tmp_path, "get", "svc", "-A")
    lines = [line.split() for line in out.splitlines()]
    assert lines[0] == ["NAMESPACE", "NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    rows = {(cols[0], cols[1]): cols for cols in lines[1:]}
    ready, pending = rows[(namespace, "lb-ready")], rows[(namespace, "lb-pending")]
    assert ready[2] == "LoadBalancer" and ready[4] == "192.0.2.10,2001:db8::10"
    assert pending[4] == "<pending>"
    assert ready[5].startswith("80:") and ready[5].endswith("/TCP")


@needs_kubectl
def test_kubectl_apply_configmap_and_service(
    kubeconfig: str, core_v1: Api, namespace: str, tmp_path: Path
) -> None:
    manifest = f"""
apiVersion: v1
kind: ConfigMap
metadata: {{name: config, namespace: {namespace}}}
data:
  config: |
    address-pools: []
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {namespace}}}
spec:
  type: LoadBalancer
  loadBalancerClass: {NO_IMPLEMENTATION}
  selector: {{app: web}}
  ports:
  - {{name: http, port: 80, targetPort: 8080}}
  - {{name: https, port: 443, targetPort: 8443}}
"""
    path = tmp_path / "m.yaml"
    path.write_text(manifest)
    out = kubectl(kubeconfig, tmp_path, "apply", "-f", str(path))
    assert "configmap/config created" in out and "service/web created" in out
    node_ports = {p.port: p.node_port for p in core_v1.read_namespaced_service("web", namespace).spec.ports}

    path.write_text(
        manifest.replace("targetPort: 8080", "targetPort: 8081").replace(
            "address-pools: []", "address-pools: [x]"
        )
    )
    out = kubectl(kubeconfig, tmp_path, "apply", "-f", str(path))
    assert "configmap/config configured" in out and "service/web configured" in out
    svc = core_v1.read_namespaced_service("web", namespace)
    assert [(p.port, p.target_port) for p in svc.spec.ports] == [(80, 8081), (443, 8443)]
    assert {p.port: p.node_port for p in svc.spec.ports} == node_ports
    assert core_v1.read_namespaced_config_map("config", namespace).data == {"config": "address-pools: [x]\n"}
    assert "unchanged" in kubectl(kubeconfig, tmp_path, "apply", "-f", str(path))


@needs_kubectl
def test_kubectl_imperative_create_and_delete(
    kubeconfig: str, core_v1: Api, namespace: str, tmp_path: Path
) -> None:
    kubectl(kubeconfig, tmp_path, "-n", namespace, "create", "configmap", "cm", "--from-literal=a=b")
    kubectl(kubeconfig, tmp_path, "-n", namespace, "create", "secret", "generic", "sec", "--from-literal=k=v")
    kubectl(kubeconfig, tmp_path, "-n", namespace, "create", "service", "loadbalancer", "lb", "--tcp=80:8080")
    assert core_v1.read_namespaced_config_map("cm", namespace).data == {"a": "b"}
    assert core_v1.read_namespaced_secret("sec", namespace).data == {"k": "dg=="}
    svc = core_v1.read_namespaced_service("lb", namespace)
    assert svc.spec.type == "LoadBalancer" and svc.spec.ports[0].target_port == 8080
    kubectl(kubeconfig, tmp_path, "-n", namespace, "delete", "configmap", "cm")
    with pytest.raises(ApiException) as err:
        core_v1.read_namespaced_config_map("cm", namespace)
    assert err.value.status == 404


@needs_kubectl
def test_kubectl_discovery(kubeconfig: str, tmp_path: Path) -> None:
    out = kubectl(kubeconfig, tmp_path, "api-resources")
    rows = {cols[0]: cols for cols in (line.split() for line in out.splitlines()[1:])}
    assert rows["services"][1] == "svc" and rows["services"][-1] == "Service"
    assert rows["leases"][-1] == "Lease" and rows["endpointslices"][-1] == "EndpointSlice"
    assert "coordination.k8s.io/v1" in kubectl(kubeconfig, tmp_path, "api-versions").split()


def test_request_counts(api_server: Any, core_v1: Api, namespace: str) -> None:
    core_v1.create_namespaced_service(
        namespace, {"metadata": {"name": "c"}, "spec": {"ports": [{"port": 80}]}}
    )
    api_server.reset_counts()
    core_v1.read_namespaced_service("c", namespace)
    core_v1.read_namespaced_service("c", namespace)
    core_v1.list_namespaced_service(namespace)
    core_v1.patch_namespaced_service_status("c", namespace, {"metadata": {"labels": {"a": "b"}}})
    counts = api_server.request_counts()
    assert counts == {("get", "services"): 2, ("list", "services"): 1, ("patch", "services", "status"): 1}
    api_server.reset_counts()
    assert api_server.request_counts() == {}


def test_pause_drops_connections_and_resume_keeps_state(make_api_server: Any) -> None:
    server, kubeconfig = make_api_server(bookmark_interval=60)
    api = config.new_client_from_config(kubeconfig)
    api.configuration.retries = False
    core_v1: Api = client.CoreV1Api(api)
    core_v1.create_namespaced_config_map("default", {"metadata": {"name": "kept"}})
    port = server.port
    rv = core_v1.list_namespaced_config_map("default").metadata.resource_version

    ended = threading.Event()
    watch_error: list[BaseException] = []

    def watch_until_dropped() -> None:
        watcher_api: Api = client.CoreV1Api(config.new_client_from_config(kubeconfig))
        try:
            for _ in watch.Watch().stream(
                watcher_api.list_namespaced_config_map, "default", resource_version=rv, timeout_seconds=60
            ):
                pass
        except Exception as exc:  # the dropped connection surfaces as a protocol error
            watch_error.append(exc)
        finally:
            ended.set()

    thread = threading.Thread(target=watch_until_dropped, daemon=True)
    thread.start()
    while server.watch_count() == 0 and thread.is_alive():
        threading.Event().wait(0.01)
    server.pause()
    assert ended.wait(30), "the open watch was not dropped by pause()"
    with pytest.raises(urllib3.exceptions.HTTPError):
        core_v1.read_namespaced_config_map("kept", "default", _request_timeout=5)

    server.resume()
    assert server.port == port
    assert core_v1.read_namespaced_config_map("kept", "default").metadata.name == "kept"


def test_bearer_token_is_required_when_configured(make_api_server: Any, tmp_path: Path) -> None:
    server, kubeconfig = make_api_server(token="s3cret")
    core_v1: Api = client.CoreV1Api(config.new_client_from_config(kubeconfig))
    assert core_v1.read_namespace("default").metadata.name == "default"

    anonymous = write_kubeconfig(tmp_path / "anon", server.url)
    with pytest.raises(ApiException) as err:
        client.CoreV1Api(config.new_client_from_config(str(anonymous))).read_namespace("default")
    assert err.value.status == 401


def test_command_line_server(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "cli-kubeconfig"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")]
        ),
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lbspeaker_testkit.apiserver",
            "--listen",
            "127.0.0.1:0",
            "--kubeconfig-out",
            str(kubeconfig),
            "--history-size",
            "100",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        core_v1: Api = client.CoreV1Api(config.new_client_from_config(str(kubeconfig)))
        assert core_v1.api_client.configuration.host == url
        assert "default" in [n.metadata.name for n in core_v1.list_namespace().items]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
