"""`make demo` (hack/demo.py) run as a user runs it: what it prints is what happened.

One full run on the API test server (about 15 s): the BGP table as BIRD prints it, the curl answers
counted, the gratuitous ARP seen in a capture, the assignment timed from the Service's creation,
`lbspeaker status` naming the node that answers after the failover, $KUBECONFIG ignored with a line
saying so, and nothing left behind. And a run that fails early still removes its temporary directory.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]

pytestmark = pytest.mark.skipif(any(shutil.which(t) is None for t in ("arping", "curl")),
                                reason="the demo needs arping (iputils-arping) and curl")


def demo(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "DEMO_KUBECONFIG")}
    return subprocess.run([sys.executable, "hack/demo.py"], cwd=ROOT, env={**base, **env}, capture_output=True,
                          text=True, timeout=300, check=False)


def test_the_demo_shows_what_happened_and_leaves_nothing_behind() -> None:
    proc = demo({"KUBECONFIG": "/nonexistent/kubeconfig"})
    out = proc.stdout
    assert proc.returncode == 0, out[-4000:] + proc.stderr[-4000:]
    assert "KUBECONFIG=/nonexistent/kubeconfig is ignored" in out and "DEMO_KUBECONFIG=PATH" in out
    assert re.search(r"controller ready in \d+\.\d\ds", out)
    assert re.search(r"EXTERNAL-IP \S+ assigned \d+\.\d\ds after the Service was created", out)
    # Failover: the node that answers curl is the one `lbspeaker status` names.
    new = re.search(r"->  'hello from (node-\d)'  after \d+\.\d\ds without an answer", out)
    assert new, out
    after = out[new.end():]
    row = next(line.split() for line in after.splitlines() if line.split()[:3] == ["default", "hello", "192.0.2.240"])
    assert row[4] == new.group(1) and row[5] == "reported", row
    assert "now the new owner's MAC" in after
    assert re.search(r"the client saw \d+ gratuitous ARP\(s\) for 192\.0\.2\.240 from the new owner", after)
    if "BGP Service" in out:
        # BIRD's layout: the next hop under each route, indented; continuation routes aligned.
        route = r"\n {4}203\.0\.113\.\d+/32 +unicast \[node_\d.*"
        assert re.search(route + r"\n {12}via 192\.0\.2\.1\d on eth0\n {25}unicast", out), out
        assert re.search(r"\n {12}nexthop via 192\.0\.2\.1\d dev eth0", out)
        assert "['hello" not in out and re.search(r"'hello from node-\d' x \d+", out)
    tmp = re.search(r"and (/\S+lbspeaker-demo-\S+) are gone", out)
    assert tmp and not Path(tmp.group(1)).exists()
    prefix = re.search(r"in namespace (demo[0-9a-f]{4})-n1", out)
    assert prefix is not None
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert prefix.group(1) not in left


def test_a_failed_demo_removes_its_temporary_directory(tmp_path: Path) -> None:
    unreachable = tmp_path / "kubeconfig"
    unreachable.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "http://127.0.0.1:{_closed_port()}"}}}}]
users: [{{name: u, user: {{}}}}]
contexts: [{{name: x, context: {{cluster: c, user: u}}}}]
current-context: x
""")
    proc = demo({"DEMO_KUBECONFIG": str(unreachable)})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("demo: cannot reach the Kubernetes API server at http://127.0.0.1:")
    tmp = re.search(r"and (/\S+lbspeaker-demo-\S+) are gone", proc.stdout)
    assert tmp, proc.stdout
    assert not Path(tmp.group(1)).exists()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
