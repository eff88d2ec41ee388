"""The speaker without the memberlist Secret: no heartbeats, liveness from Leases alone, said in /readyz.

Also: a speaker whose Lease is deleted behind its back recreates it. Runs in its own lab (prefix
"spk"), because the missing Secret is a property of the whole cluster.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
from lbspeaker_testkit.speaker_lab import NAMESPACE, SpeakerLab, wait_for

from lbspeaker import election

pytestmark = [
    pytest.mark.skipif(shutil.which("arping") is None, reason="needs arping (iputils-arping)"),
    pytest.mark.skipif(bool(os.environ.get("LBSPEAKER_TEST_KUBECONFIG")),
                       reason="speakers run in lab namespaces that cannot reach a real cluster's API server"),
]

ALL = ("node1", "node2", "node3")


@pytest.fixture(scope="module")
def spk() -> Iterator[SpeakerLab]:
    with SpeakerLab("spk", secret=False) as made:
        for node in made.node_names:
            made.start_speaker(node, wait=False)
        for node in made.node_names:
            made.wait_ready(node)
        yield made


def test_without_the_secret_readyz_says_so_and_leases_still_elect(spk: SpeakerLab) -> None:
    code, text = spk.speakers["node1"].http("/readyz")
    assert code == 200 and "no membership" in text and "Leases only" in text
    ip = "192.0.2.230"
    spk.service("nohb", [ip], endpoints=ALL)
    owner = election.owner(ip, ALL)
    assert owner is not None
    wait_for(f"{owner} to answer", lambda: spk.arping(ip, count=1) == [spk.mac(owner)], 10)
    heir = election.owner(ip, tuple(n for n in ALL if n != owner))
    assert heir is not None
    assert spk.speakers[owner].terminate() == 0  # releases its Lease: the only signal peers get
    wait_for(f"{heir} to take over", lambda: spk.arping(ip, count=1) == [spk.mac(heir)], 5)
    assert spk.released(owner)  # released, not deleted: its boot number stays for the next start


def test_a_deleted_lease_is_recreated(spk: SpeakerLab) -> None:
    node = next(n for n in ALL if spk.speakers[n].alive())
    spk.rest.request("DELETE", f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/speaker-{node}")
    wait_for("the Lease to come back", lambda: f"speaker-{node}" in spk.leases(), 10)


def test_a_secret_created_after_the_speakers_switches_them_to_membership(spk: SpeakerLab) -> None:
    """The usual install order (apply deploy/, then create the Secret): no restart is needed."""
    import base64

    from lbspeaker.kube.rest import path_for

    spk.ensure_all()
    key = base64.b64encode(os.urandom(32)).decode()
    spk.rest.request("POST", path_for("v1", "secrets", NAMESPACE), body={
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "lbspeaker-memberlist"},
        "data": {"secretkey": key}})
    for node in ALL:
        proc = spk.speakers[node]
        wait_for(f"{node} to join membership", proc.answers_ready("ok\n"), 20, 0.2)
        wait_for(f"{node} to count 3 members", proc.counts_members(3), 20, 0.1)
    ip = "192.0.2.231"
    spk.service("joined", [ip], endpoints=ALL)
    owner = election.owner(ip, ALL)
    heir = election.owner(ip, tuple(n for n in ALL if n != owner))
    assert owner is not None and heir is not None
    wait_for(f"{owner} to answer", lambda: spk.arping(ip, count=1) == [spk.mac(owner)], 10)
    spk.speakers[owner].kill()
    # Membership, not a Lease expiry (40 s): the heir answers within a couple of seconds.
    wait_for(f"{heir} to take over", lambda: spk.arping(ip, count=1) == [spk.mac(heir)], 3, 0.1)
