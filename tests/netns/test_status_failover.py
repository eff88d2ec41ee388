"""`lbspeaker status` next to real speakers: right after a hard failover it names the node that now
answers ARP, while the dead owner's Lease is still current (the election over Leases would still name
the dead node). Three node namespaces run ``lbspeaker speaker``; the client ARPs for the IP."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest
from lbspeaker_testkit.speaker_lab import NAMESPACE, SVC_NS, SpeakerLab, wait_for

from lbspeaker import election
from lbspeaker.kube.rest import path_for
from lbspeaker.kube.timefmt import parse_time

pytestmark = [
    pytest.mark.skipif(shutil.which("arping") is None, reason="needs arping (iputils-arping)"),
    pytest.mark.skipif(bool(os.environ.get("LBSPEAKER_TEST_KUBECONFIG")),
                       reason="speakers run in lab namespaces that cannot reach a real cluster's API server"),
]

ALL = ("node1", "node2", "node3")
IP = "192.0.2.230"


def status(lab: SpeakerLab) -> tuple[str, str]:
    """(ANNOUNCED-BY, DETAIL) of the Service's row in `lbspeaker status`."""
    proc = subprocess.run([sys.executable, "-m", "lbspeaker.cli", "status", "--kubeconfig", lab.kubeconfig,
                           "--namespace", NAMESPACE], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    head = next(line for line in lines if line.startswith("NAMESPACE "))
    by, detail = head.index("ANNOUNCED-BY"), head.index("DETAIL")
    row = next(line for line in lines if line.split()[:3] == [SVC_NS, "web", IP])
    return row[by:detail].strip(), row[detail:].strip()


def lease_current(lab: SpeakerLab, node: str) -> bool:
    lease = lab.rest.get(path_for("coordination.k8s.io/v1", "leases", NAMESPACE, f"speaker-{node}"))
    renewed = parse_time(lease["spec"]["renewTime"])
    return renewed is not None and renewed + float(lease["spec"]["leaseDurationSeconds"]) > time.time()


def test_status_names_the_new_owner_right_after_a_hard_failover() -> None:
    with SpeakerLab("sts") as lab:
        for node in ALL:
            lab.start_speaker(node, wait=False)
        for node in ALL:
            lab.wait_ready(node)
        for node in ALL:
            wait_for(f"{node} to count 3 live members", lab.speakers[node].counts_members(3), 20, 0.1)
        owner = election.owner(IP, ALL)
        heir = election.owner(IP, [n for n in ALL if n != owner])
        assert owner is not None and heir is not None
        lab.service("web", [IP], endpoints=ALL)
        wait_for(f"{owner} to answer", lambda: lab.arping(IP, count=1) == [lab.mac(owner)], 10)
        wait_for(f"{owner}'s nodeAssigned Event",
                 lambda: [e for e in lab.events("web", "nodeAssigned") if (e.get("source") or {}).get("host") == owner],
                 10)
        by, detail = status(lab)
        assert by == owner and detail.startswith("reported "), (by, detail)

        time.sleep(1.1)  # Event times have whole seconds: the takeover must not share the first report's
        lab.speakers[owner].kill()
        wait_for(f"{heir} to answer after {owner} was killed", lambda: lab.arping(IP, count=1) == [lab.mac(heir)], 10)
        by, detail = status(lab)
        assert lease_current(lab, owner), "the scenario needs the dead owner's Lease to be still current"
        assert by == heir and detail.startswith("reported "), (by, detail)
