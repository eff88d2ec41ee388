"""Benchmark of `lbspeaker` start-up: wall time of `--help`, `config check FILE` and `status`, and their imports.

Usage: python3 hack/bench/cli_startup.py [--repeat 7] [--tree PATH]

Each command runs as a new process (`python -m lbspeaker.cli ...`) ``--repeat`` times; the median and the
fastest wall time are printed, with the time Python spends importing (the sum of ``-X importtime``'s
top-level entries, from one more run) and ``python -c pass`` as the floor. `status` reads an API test
server started here, holding the pools of deploy/examples/ and a few Services. ``--tree`` measures the
source tree at PATH instead of this checkout (e.g. an older commit from ``git archive``), with the same
virtualenv's packages.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from lbspeaker_testkit.apiserver import APIServer  # noqa: E402
from lbspeaker_testkit.kubeutil import rest_for  # noqa: E402

from lbspeaker.kube.rest import MERGE_PATCH, path_for  # noqa: E402


def run(tree: Path, args: list[str], importtime: bool = False) -> tuple[float, float]:
    """(wall seconds, seconds importing) of one process running ``args``."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    env.pop("KUBECONFIG", None)
    cmd = [sys.executable, *(["-X", "importtime"] if importtime else []), *args]
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=120, check=False)
    wall = time.perf_counter() - started
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(args)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    imported = 0.0
    if importtime:
        for line in proc.stderr.splitlines():
            # "import time: self [us] | cumulative | imported package"; top-level entries have no indent.
            if line.startswith("import time:") and "|" in line:
                _, cumulative, name = line.split("|", 2)
                if cumulative.strip().isdigit() and not name.startswith("  "):
                    imported += int(cumulative) / 1e6
    return wall, imported


def seed(kubeconfig: str) -> None:
    import yaml

    rest = rest_for(kubeconfig)
    rest.request("POST", path_for("v1", "namespaces"), body={"metadata": {"name": "lbspeaker-system"}})
    for example in sorted((ROOT / "deploy" / "examples").glob("*.yaml")):
        obj = yaml.safe_load(example.read_text())
        rest.request("POST", path_for("v1", "configmaps", "lbspeaker-system"), body=obj)
    for i in range(5):
        rest.request("POST", path_for("v1", "services", "default"), body={
            "metadata": {"name": f"web{i}"},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}]}})
        rest.request("PATCH", path_for("v1", "services", "default", f"web{i}", "status"), content_type=MERGE_PATCH,
                     body={"status": {"loadBalancer": {"ingress": [{"ip": f"192.0.2.{241 + i}"}]}}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--tree", type=Path, default=ROOT, help="source tree to measure (default: this checkout)")
    args = parser.parse_args()
    tree = args.tree.resolve()

    server = APIServer(host="127.0.0.1", port=0)
    server.start()
    try:
        with tempfile.TemporaryDirectory(prefix="lbspeaker-bench-") as tmp:
            kubeconfig = str(server.write_kubeconfig(Path(tmp) / "kubeconfig"))
            seed(kubeconfig)
            example = str(ROOT / "deploy" / "examples" / "layer2-pool.yaml")
            commands = {
                "python -c pass": ["-c", "pass"],
                "lbspeaker --help": ["-m", "lbspeaker.cli", "--help"],
                "lbspeaker config check FILE": ["-m", "lbspeaker.cli", "config", "check", example],
                "lbspeaker status": ["-m", "lbspeaker.cli", "status", "--kubeconfig", kubeconfig],
            }
            print(f"tree {tree}; {args.repeat} runs each; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
            print(f"{'command':30} {'median':>8} {'fastest':>8} {'imports':>8}")
            for label, argv in commands.items():
                walls = [run(tree, argv)[0] for _ in range(args.repeat)]
                _, imported = run(tree, argv, importtime=True)
                print(f"{label:30} {statistics.median(walls):7.3f}s {min(walls):7.3f}s {imported:7.3f}s")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
