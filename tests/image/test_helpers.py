"""The image tests' own helpers, without building anything: the manifest-to-podman translation, docker
reference normalisation, and the API test server's bearer token check the in-cluster client relies on."""

from __future__ import annotations

import copy
import urllib.error
import urllib.request
from typing import Any

import pytest
from lbspeaker_testkit.apiserver import APIServer

from tests.image import archive, kubelet

CTX = kubelet.PodContext(pod_name="p-1", namespace="lbspeaker-system", node_name="node1",
                         node_netns="/run/netns/n1", host_ip="192.0.2.11", pod_netns="/run/netns/pod",
                         pod_ip="192.0.2.50", service_account_dir="/tmp/sa", api_host="127.0.0.1", api_port=6443)


def _load(name: str) -> dict[str, Any]:
    return kubelet.deployed(*{"speaker.yaml": ("DaemonSet", "speaker"),
                              "controller.yaml": ("Deployment", "controller")}[name])


def _pairs(args: list[str], flag: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args[:-1]) if a == flag]


def test_speaker_gets_the_daemonsets_settings() -> None:
    args = kubelet.podman_run_args(_load("speaker.yaml"), "IMG", "spk", CTX)
    assert _pairs(args, "--network") == ["ns:/run/netns/n1"], "hostNetwork: the node's namespace"
    assert _pairs(args, "--user") == ["0:0"]
    assert _pairs(args, "--cap-drop") == ["all"] and sorted(_pairs(args, "--cap-add")) == ["NET_ADMIN", "NET_RAW"]
    assert "--read-only" in args and "--read-only-tmpfs=false" in args
    assert _pairs(args, "--security-opt") == ["no-new-privileges"]
    assert sorted(_pairs(args, "--mount")) == [
        "type=tmpfs,destination=/run/lbspeaker,tmpfs-mode=1777,tmpfs-size=16777216",
        "type=tmpfs,destination=/tmp,tmpfs-mode=1777,tmpfs-size=16777216"]
    assert _pairs(args, "--volume") == [f"/tmp/sa:{kubelet.SERVICE_ACCOUNT_DIR}:ro"]
    assert sorted(_pairs(args, "--env")) == ["KUBERNETES_SERVICE_HOST=127.0.0.1", "KUBERNETES_SERVICE_PORT=6443",
                                             "LBSPEAKER_NAMESPACE=lbspeaker-system", "NODE_NAME=node1"]
    assert _pairs(args, "--memory") == [str(384 << 20)] and _pairs(args, "--cpus") == ["1"]
    assert _pairs(args, "--stop-timeout") == ["2"]
    assert args[-2:] == ["IMG", "speaker"]


def test_controller_gets_the_deployments_settings() -> None:
    args = kubelet.podman_run_args(_load("controller.yaml"), "IMG", "ctl", CTX)
    assert _pairs(args, "--network") == ["ns:/run/netns/pod"], "no hostNetwork: the pod's own namespace"
    assert _pairs(args, "--user") == ["65532:65532"]
    assert _pairs(args, "--cap-drop") == ["all"] and _pairs(args, "--cap-add") == []
    assert "--read-only" in args and _pairs(args, "--security-opt") == ["no-new-privileges"]
    assert sorted(_pairs(args, "--env"))[-2:] == ["LBSPEAKER_NAMESPACE=lbspeaker-system", "POD_NAME=p-1"]
    assert _pairs(args, "--mount") == []
    assert args[-3:] == ["IMG", "controller", "--leader-elect"]
    assert kubelet.probes(_load("controller.yaml")) == [kubelet.Probe("liveness", "/healthz", 7472),
                                                       kubelet.Probe("readiness", "/readyz", 7472)]


@pytest.mark.parametrize("change, error", [
    (lambda c, s: c["securityContext"].update(privileged=True), "privileged"),
    (lambda c, s: c["securityContext"]["capabilities"].update(drop=["NET_RAW"]), "drop ALL"),
    (lambda c, s: s["volumes"].append({"name": "host", "hostPath": {"path": "/"}}) or
     c["volumeMounts"].append({"name": "host", "mountPath": "/host"}), "emptyDir only"),
    (lambda c, s: c["env"].append({"name": "X", "valueFrom": {"secretKeyRef": {"name": "a", "key": "b"}}}),
     "only values and fieldRefs"),
    (lambda c, s: c["securityContext"].update(runAsNonRoot=True), "runAsNonRoot"),
    (lambda c, s: c.update(command=["sh"]), "command"),
])
def test_fields_it_cannot_give_are_refused(change: Any, error: str) -> None:
    workload = copy.deepcopy(_load("speaker.yaml"))
    spec = kubelet.pod_spec(workload)
    change(kubelet.only_container(spec), spec)
    with pytest.raises(kubelet.Unsupported, match=error):
        kubelet.podman_run_args(workload, "IMG", "x", CTX)


def test_reference_normalisation_follows_docker_rules() -> None:
    assert archive.normalize_reference("lbspeaker:dev") == "docker.io/library/lbspeaker:dev"
    assert archive.normalize_reference("lbspeaker") == "docker.io/library/lbspeaker:latest"
    assert archive.normalize_reference("me/lbspeaker:1") == "docker.io/me/lbspeaker:1"
    assert archive.normalize_reference("registry.example.com:5000/lbspeaker:0.1.0") == \
        "registry.example.com:5000/lbspeaker:0.1.0"
    assert archive.normalize_reference("localhost/lbspeaker:dev") == "localhost/lbspeaker:dev"


@pytest.mark.parametrize("header, code", [
    ("Bearer tok-1", 200), ("bearer tok-1", 200), ("BEARER tok-1", 200),
    ("Bearer tok-2", 401), ("Basic tok-1", 401), ("", 401), ("Bearer", 401),
])
def test_api_server_takes_the_bearer_scheme_in_any_case(header: str, code: int) -> None:
    """kube-apiserver lower-cases the scheme before comparing it; the Python client's in-cluster
    config sends "bearer <token>", so a server that insisted on "Bearer" would refuse every pod."""
    with APIServer(token="tok-1") as server:
        request = urllib.request.Request(f"{server.url}/api/v1/namespaces", headers={"Authorization": header})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                got = response.status
        except urllib.error.HTTPError as exc:
            got = exc.code
    assert got == code
