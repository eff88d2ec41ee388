"""deploy/: the kustomization renders, every object is valid Kubernetes, and the pods are locked down.

``render()`` applies the few kustomize features deploy/kustomization.yaml uses (resources, namespace,
images) in Python, so these tests run without kubectl; when kubectl is there, its rendering must be
the same. The other deploy tests (RBAC, scripts) import ``render`` from here.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).parents[3]
DEPLOY = ROOT / "deploy"
NAMESPACE = "lbspeaker-system"
# A recent schema the kubernetes-validate package ships; strict mode rejects unknown fields.
SCHEMA_VERSION = "1.33.0"
KUSTOMIZE_KEYS = {"apiVersion", "kind", "namespace", "resources", "images"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding"}

Obj = dict[str, Any]


def kustomization() -> Obj:
    doc: Obj = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    return doc


def _containers(obj: Obj) -> Iterator[Obj]:
    spec = obj.get("spec", {}).get("template", {}).get("spec", {})
    yield from spec.get("initContainers", []) or []
    yield from spec.get("containers", []) or []


def _retag(image: str, images: list[Obj]) -> str:
    name, _, tag = image.partition(":")
    for entry in images:
        if entry["name"] == name:
            return f"{entry.get('newName', name)}:{entry.get('newTag', tag)}"
    return image


def render() -> list[Obj]:
    """The objects `kubectl kustomize deploy/` produces, for the features our kustomization uses."""
    kust = kustomization()
    unknown = set(kust) - KUSTOMIZE_KEYS
    assert not unknown, f"render() does not implement kustomization keys {sorted(unknown)}: extend it"
    objs: list[Obj] = []
    for resource in kust["resources"]:
        path = DEPLOY / resource
        assert path.is_file(), f"kustomization lists {resource}, which is not a file in deploy/"
        objs += [copy.deepcopy(d) for d in yaml.safe_load_all(path.read_text()) if d]
    for obj in objs:
        if obj["kind"] not in CLUSTER_SCOPED and "namespace" in kust:
            obj["metadata"]["namespace"] = kust["namespace"]
        for c in _containers(obj):
            c["image"] = _retag(c["image"], kust.get("images", []))
    return objs


def by_kind(objs: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: list[Obj], kind: str, name: str) -> Obj:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected exactly one {kind} {name}, found {len(found)}"
    return found[0]


def _key(o: Obj) -> tuple[str, str, str, str]:
    return (o["apiVersion"], o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"])


OBJECTS = render()


# -- rendering ---------------------------------------------------------------------------------------

def test_kustomization_lists_every_manifest_in_deploy() -> None:
    listed = set(kustomization()["resources"])
    on_disk = {p.name for p in DEPLOY.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk, "every deploy/*.yaml is installed by `kubectl apply -k deploy/`, and only those"


def test_render_contains_the_whole_install_and_no_pool() -> None:
    kinds = {(o["kind"], o["metadata"]["name"]) for o in OBJECTS}
    assert {("Namespace", NAMESPACE), ("ServiceAccount", "controller"), ("ServiceAccount", "speaker"),
            ("Deployment", "controller"), ("DaemonSet", "speaker")} <= kinds
    assert not by_kind(OBJECTS, "ConfigMap"), "pools are the user's: deploy/examples/ shows them"
    assert not by_kind(OBJECTS, "Secret"), "the memberlist key must be generated per cluster, never shipped"
    assert len({_key(o) for o in OBJECTS}) == len(OBJECTS), "duplicate objects"
    for o in OBJECTS:
        if o["kind"] not in CLUSTER_SCOPED:
            assert o["metadata"]["namespace"] == NAMESPACE, _key(o)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_kustomize_agrees_with_render() -> None:
    out = subprocess.run(["kubectl", "kustomize", str(DEPLOY)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    theirs = {_key(o): o for o in yaml.safe_load_all(out.stdout) if o}
    ours = {_key(o): o for o in OBJECTS}
    assert theirs.keys() == ours.keys()
    for key, obj in ours.items():
        assert theirs[key] == obj, f"{key} renders differently with kubectl"


def test_images_entry_points_at_lbspeaker() -> None:
    images = kustomization()["images"]
    assert [i["name"] for i in images] == ["lbspeaker"]
    for kind in ("Deployment", "DaemonSet"):
        for o in by_kind(OBJECTS, kind):
            assert [c["image"] for c in _containers(o)] == ["lbspeaker:dev"]


# -- schema ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("obj", OBJECTS, ids=lambda o: f"{o['kind']}/{o['metadata']['name']}")
def test_object_is_valid_kubernetes_in_strict_mode(obj: Obj) -> None:
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is not installed (pip install -e .[dev])")
    try:
        kubernetes_validate.validate(obj, SCHEMA_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {str(exc).splitlines()[0]}")


def test_schema_validation_catches_a_misspelt_field() -> None:
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is not installed (pip install -e .[dev])")
    bad = copy.deepcopy(one(OBJECTS, "DaemonSet", "speaker"))
    bad["spec"]["template"]["spec"]["hostNetworking"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, SCHEMA_VERSION, strict=True)


# -- pods --------------------------------------------------------------------------------------------

def _pod(kind: str, name: str) -> Obj:
    spec: Obj = one(OBJECTS, kind, name)["spec"]["template"]["spec"]
    return spec


def _container(kind: str, name: str) -> Obj:
    containers = _pod(kind, name)["containers"]
    assert len(containers) == 1
    c: Obj = containers[0]
    return c


def _env(c: Obj) -> dict[str, Obj]:
    return {e["name"]: e for e in c.get("env", [])}


def _common_container_checks(c: Obj, pod: Obj) -> None:
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc.get("privileged", False) is False
    seccomp = sc.get("seccompProfile") or pod["securityContext"]["seccompProfile"]
    assert seccomp == {"type": "RuntimeDefault"}
    ports = {p["name"]: p for p in c["ports"]}
    assert ports["monitoring"]["containerPort"] == 7472 and ports["monitoring"]["protocol"] == "TCP"
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "monitoring"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "monitoring"}
    for kind in ("requests", "limits"):
        assert set(c["resources"][kind]) == {"cpu", "memory"}


def test_controller_deployment_is_locked_down() -> None:
    dep = one(OBJECTS, "Deployment", "controller")
    pod, c = _pod("Deployment", "controller"), _container("Deployment", "controller")
    assert dep["spec"]["replicas"] == 1
    assert pod["serviceAccountName"] == "controller"
    assert not pod.get("hostNetwork", False)
    _common_container_checks(c, pod)
    assert c["args"] == ["controller", "--leader-elect"]
    uid = c["securityContext"].get("runAsUser", pod["securityContext"].get("runAsUser"))
    assert pod["securityContext"]["runAsNonRoot"] is True and uid not in (None, 0)
    assert "add" not in c["securityContext"]["capabilities"]
    assert _env(c)["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert dep["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == "7472"


def test_speaker_daemonset_has_only_the_network_capabilities_it_needs() -> None:
    ds = one(OBJECTS, "DaemonSet", "speaker")
    pod, c = _pod("DaemonSet", "speaker"), _container("DaemonSet", "speaker")
    assert pod["serviceAccountName"] == "speaker"
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert pod["terminationGracePeriodSeconds"] == 2
    _common_container_checks(c, pod)
    assert c["args"] == ["speaker"]
    assert sorted(c["securityContext"]["capabilities"]["add"]) == ["NET_ADMIN", "NET_RAW"]
    assert c["securityContext"]["runAsUser"] == 0, "raw sockets: capabilities are effective only for uid 0"
    assert _env(c)["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    ports = {p["name"]: p for p in c["ports"]}
    assert ports["heartbeat"]["containerPort"] == 7946 and ports["heartbeat"]["protocol"] == "UDP"
    labels = ds["spec"]["template"]["metadata"]["labels"]
    assert ds["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_speaker_runs_on_control_plane_nodes() -> None:
    tolerated = {(t.get("key"), t.get("effect")) for t in _pod("DaemonSet", "speaker")["tolerations"]
                 if t.get("operator") == "Exists"}
    assert ("node-role.kubernetes.io/control-plane", "NoSchedule") in tolerated
    assert ("node-role.kubernetes.io/master", "NoSchedule") in tolerated


def test_speaker_writable_paths_are_emptydirs() -> None:
    """A read-only root: ExaBGP's workdir and /tmp are the only places the speaker writes."""
    pod, c = _pod("DaemonSet", "speaker"), _container("DaemonSet", "speaker")
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert set(mounts) == {"/run/lbspeaker", "/tmp"}
    for name in mounts.values():
        assert "emptyDir" in volumes[name], "no host path is mounted into the speaker"


def test_no_pod_mounts_host_paths_or_runs_privileged() -> None:
    for kind in ("Deployment", "DaemonSet"):
        for o in by_kind(OBJECTS, kind):
            pod = o["spec"]["template"]["spec"]
            assert all("hostPath" not in v for v in pod.get("volumes", [])), o["metadata"]["name"]
            assert not pod.get("hostPID") and not pod.get("hostIPC")
            for c in _containers(o):
                assert not c["securityContext"].get("privileged", False)


def test_namespace_admits_the_speaker() -> None:
    """hostNetwork and NET_RAW are beyond the baseline Pod Security level."""
    labels = one(OBJECTS, "Namespace", NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"
