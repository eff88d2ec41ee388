"""deploy/ against a real cluster (LBSPEAKER_TEST_KUBECONFIG): server-side dry run, and the controller and
the speaker running with nothing but their own ServiceAccount's token, so the RBAC in deploy/ is proven
sufficient.

The API test server enforces no RBAC and issues no ServiceAccount tokens, so these tests need a real
kube-apiserver; on the test server they skip and say so. The RBAC rules are also checked offline
against the code in tests/unit/deploy/test_rbac.py.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml
from lbspeaker_testkit.kubeutil import Cluster, controller, free_port, lb_service, pool_configmap, unique, wait_for

from lbspeaker.kube.rest import ApiError, Rest, path_for

REAL = os.environ.get("LBSPEAKER_TEST_KUBECONFIG")
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"

pytestmark = pytest.mark.skipif(
    not REAL, reason="needs a real cluster (LBSPEAKER_TEST_KUBECONFIG): the API test server enforces no RBAC"
)


def test_manifests_pass_server_side_dry_run() -> None:
    """A server-side dry run creates nothing, so on a fresh cluster every namespaced object would fail
    with `namespaces "lbspeaker-system" not found`: the Namespace is applied for real first (and removed
    again if this test created it), then the rest is dry-run."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    kubectl = ["kubectl", "--kubeconfig", str(REAL)]
    rendered = subprocess.run([*kubectl, "kustomize", str(DEPLOY)], capture_output=True, text=True, timeout=60,
                              check=True).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    namespaces = [d for d in docs if d["kind"] == "Namespace"]
    rest = [d for d in docs if d["kind"] != "Namespace"]
    assert namespaces and rest
    api = Cluster(str(REAL)).rest
    created = [ns["metadata"]["name"] for ns in namespaces
               if _missing(api, path_for("v1", "namespaces", None, ns["metadata"]["name"]))]
    try:
        applied = subprocess.run([*kubectl, "apply", "-f", "-"], input=yaml.safe_dump_all(namespaces),
                                 capture_output=True, text=True, timeout=60, check=False)
        assert applied.returncode == 0, applied.stderr
        proc = subprocess.run([*kubectl, "apply", "--dry-run=server", "-f", "-"], input=yaml.safe_dump_all(rest),
                              capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.count("(server dry run)") == len(rest), proc.stdout
    finally:
        for name in created:
            subprocess.run([*kubectl, "delete", "namespace", name, "--wait=false"], capture_output=True,
                           timeout=60, check=False)


def _missing(rest: Rest, path: str) -> bool:
    try:
        rest.get(path)
    except ApiError as exc:
        if exc.not_found:
            return True
        raise
    return False


def _service_account_kubeconfig(rest: Rest, namespace: str, rbac_file: str, tmp_path: Path,
                                made: list[tuple[str, str | None, str]]) -> str:
    """A ServiceAccount bound to the rules of ``deploy/<rbac_file>`` (copied under fresh names, Roles in
    ``namespace``), and a kubeconfig holding nothing but its token."""
    assert REAL is not None
    sa = unique("lbs-sa")
    rest.request("POST", path_for("v1", "serviceaccounts", namespace),
                 body={"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa}})
    kinds = {"ClusterRole": "clusterroles", "Role": "roles", "ClusterRoleBinding": "clusterrolebindings",
             "RoleBinding": "rolebindings"}
    for doc in yaml.safe_load_all((DEPLOY / rbac_file).read_text()):
        if not doc or doc["kind"] not in kinds:
            continue
        name = f"{sa}-{doc['metadata']['name'].replace(':', '-')}"
        doc["metadata"] = {"name": name}
        if doc["kind"].endswith("Binding"):
            doc["roleRef"]["name"] = f"{sa}-{doc['roleRef']['name'].replace(':', '-')}"
            doc["subjects"] = [{"kind": "ServiceAccount", "name": sa, "namespace": namespace}]
        ns = None if doc["kind"].startswith("Cluster") else namespace
        rest.request("POST", path_for("rbac.authorization.k8s.io/v1", kinds[doc["kind"]], ns), body=doc)
        made.append((kinds[doc["kind"]], ns, name))
    token = rest.request("POST", path_for("v1", "serviceaccounts", namespace, sa, "token"),
                         body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                               "spec": {"expirationSeconds": 3600}})["status"]["token"]
    kc = yaml.safe_load(Path(REAL).read_text())
    ctx = next(c for c in kc["contexts"] if c["name"] == kc["current-context"])["context"]
    clus = next(c for c in kc["clusters"] if c["name"] == ctx["cluster"])
    path = tmp_path / f"{sa}-kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [clus], "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": clus["name"], "user": "sa"}}]}))
    return str(path)


def _delete_all(rest: Rest, made: list[tuple[str, str | None, str]]) -> None:
    for resource, ns, name in reversed(made):
        with contextlib.suppress(ApiError):
            rest.request("DELETE", path_for("rbac.authorization.k8s.io/v1", resource, ns, name))


def test_controller_works_with_only_its_service_account(tmp_path: Path, namespace: str) -> None:
    assert REAL is not None
    cluster = Cluster(REAL)
    made: list[tuple[str, str | None, str]] = []
    try:
        kubeconfig = _service_account_kubeconfig(cluster.rest, namespace, "controller-rbac.yaml", tmp_path, made)
        lb_class = f"lbspeaker.io/{unique('rbac')}"
        cluster.create(namespace, "configmaps", pool_configmap("""
address-pools:
- name: rbac
  protocol: layer2
  addresses: [192.0.2.60-192.0.2.61]
"""))
        with controller(kubeconfig, namespace, lb_class, "--leader-elect"):
            cluster.create(namespace, "services", lb_service("rbac", lb_class=lb_class))
            assert cluster.wait_ips(namespace, "rbac", timeout=60) == ["192.0.2.60"]
            assert cluster.wait_event(namespace, "rbac", "IPAllocated", timeout=30)
    finally:
        _delete_all(cluster.rest, made)


def test_speaker_works_with_only_its_service_account(tmp_path: Path, namespace: str) -> None:
    """The speaker syncs every cache, reads the memberlist Secret and holds its Lease with its own token.

    It runs on this machine with a class no Service uses, heartbeats on loopback and no interface
    allowed, so it announces nothing on the machine's network.
    """
    if os.geteuid() != 0:
        pytest.skip("the speaker opens packet sockets: needs root")
    assert REAL is not None
    cluster = Cluster(REAL)
    made: list[tuple[str, str | None, str]] = []
    proc: subprocess.Popen[bytes] | None = None
    try:
        kubeconfig = _service_account_kubeconfig(cluster.rest, namespace, "speaker-rbac.yaml", tmp_path, made)
        cluster.create(namespace, "secrets", {"apiVersion": "v1", "kind": "Secret",
                                              "metadata": {"name": "lbspeaker-memberlist"},
                                              "data": {"secretkey": base64.b64encode(os.urandom(32)).decode()}})
        cluster.create(namespace, "configmaps", pool_configmap("""
address-pools:
- name: rbac
  protocol: layer2
  addresses: [192.0.2.62/32]
"""))
        node = unique("lbs-rbac-node")
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "lbspeaker.cli", "speaker", "--node-name", node, "--kubeconfig", kubeconfig,
             "--namespace", namespace, "--lb-class", f"lbspeaker.io/{unique('none')}", "--interfaces", "^$",
             "--heartbeat-addr", "127.0.0.1:0", "--metrics-addr", f"127.0.0.1:{port}",
             "--bgp-workdir", str(tmp_path / "bgp")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
                    return bool(resp.status == 200)
            except OSError:
                return False

        wait_for(ready, 60, what="speaker /readyz under its own ServiceAccount")
        assert cluster.rest.get(path_for("coordination.k8s.io/v1", "leases", namespace, f"speaker-{node}"))
        proc.terminate()
        assert proc.wait(30) == 0
        with pytest.raises(ApiError):
            cluster.rest.get(path_for("coordination.k8s.io/v1", "leases", namespace, f"speaker-{node}"))
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        _delete_all(cluster.rest, made)
