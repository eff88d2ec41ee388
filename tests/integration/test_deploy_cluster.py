"""deploy/ against a real cluster (LBSPEAKER_TEST_KUBECONFIG): server-side dry run, and the controller
running with nothing but its own ServiceAccount's token, so the RBAC in deploy/ is proven sufficient.

The API test server enforces no RBAC and issues no ServiceAccount tokens, so these tests need a real
kube-apiserver; on the test server they skip and say so. The RBAC rules are also checked offline
against the code in tests/unit/test_deploy_rbac.py.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from lbspeaker.kube.rest import ApiError, path_for
from tests.integration.kubeutil import Cluster, controller, lb_service, pool_configmap, unique

REAL = os.environ.get("LBSPEAKER_TEST_KUBECONFIG")
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"

pytestmark = pytest.mark.skipif(
    not REAL, reason="needs a real cluster (LBSPEAKER_TEST_KUBECONFIG): the API test server enforces no RBAC"
)


def test_manifests_pass_server_side_dry_run() -> None:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    proc = subprocess.run(["kubectl", "--kubeconfig", str(REAL), "apply", "--dry-run=server", "-k", str(DEPLOY)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr


def test_controller_works_with_only_its_service_account(tmp_path: Path, namespace: str) -> None:
    """Bind deploy/'s controller rules to a fresh ServiceAccount and run the controller with its token."""
    assert REAL is not None
    cluster = Cluster(REAL)
    rest = cluster.rest
    sa = unique("lbs-ctl")
    rest.request("POST", path_for("v1", "serviceaccounts", namespace),
                 body={"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa}})
    made: list[tuple[str, str | None, str]] = []
    try:
        for doc in yaml.safe_load_all((DEPLOY / "controller-rbac.yaml").read_text()):
            if not doc or doc["kind"] not in ("ClusterRole", "Role", "ClusterRoleBinding", "RoleBinding"):
                continue
            name = f"{sa}-{doc['metadata']['name']}"
            doc["metadata"] = {"name": name}
            if doc["kind"].endswith("Binding"):
                doc["roleRef"]["name"] = f"{sa}-{doc['roleRef']['name']}"
                doc["subjects"] = [{"kind": "ServiceAccount", "name": sa, "namespace": namespace}]
            ns = None if doc["kind"].startswith("Cluster") else namespace
            resource = {"ClusterRole": "clusterroles", "Role": "roles", "ClusterRoleBinding": "clusterrolebindings",
                        "RoleBinding": "rolebindings"}[doc["kind"]]
            rest.request("POST", path_for("rbac.authorization.k8s.io/v1", resource, ns), body=doc)
            made.append((resource, ns, name))
        token = rest.request("POST", path_for("v1", "serviceaccounts", namespace, sa, "token"),
                             body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                                   "spec": {"expirationSeconds": 3600}})["status"]["token"]
        kc = yaml.safe_load(Path(REAL).read_text())
        ctx = next(c for c in kc["contexts"] if c["name"] == kc["current-context"])["context"]
        clus = next(c for c in kc["clusters"] if c["name"] == ctx["cluster"])
        sa_kubeconfig = tmp_path / "sa-kubeconfig"
        sa_kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "sa",
            "clusters": [clus], "users": [{"name": "sa", "user": {"token": token}}],
            "contexts": [{"name": "sa", "context": {"cluster": clus["name"], "user": "sa"}}]}))
        lb_class = f"lbspeaker.io/{unique('rbac')}"
        cluster.create(namespace, "configmaps", pool_configmap("""
address-pools:
- name: rbac
  protocol: layer2
  addresses: [192.0.2.60-192.0.2.61]
"""))
        with controller(str(sa_kubeconfig), namespace, lb_class, "--leader-elect"):
            cluster.create(namespace, "services", lb_service("rbac", lb_class=lb_class))
            assert cluster.wait_ips(namespace, "rbac", timeout=60) == ["192.0.2.60"]
            assert cluster.wait_event(namespace, "rbac", "IPAllocated", timeout=30)
    finally:
        for resource, ns, name in reversed(made):
            with contextlib.suppress(ApiError):
                rest.request("DELETE", path_for("rbac.authorization.k8s.io/v1", resource, ns, name))
