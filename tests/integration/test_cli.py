"""The `lbspeaker` command line as a user runs it: `status` against the API server, `config check` on files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from lbspeaker_testkit.kubeutil import Cluster, lb_service, pool_configmap, unique

from lbspeaker.kube.rest import MERGE_PATCH, path_for


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lbspeaker.cli", *args], capture_output=True, text=True,
                          timeout=60, check=False)


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
