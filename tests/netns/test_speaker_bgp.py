"""The speaker in BGP mode end to end on the real kernel: three node namespaces run ``lbspeaker speaker``
against the in-process API test server and peer with a BIRD 2 router on the same lab switch, whose
RIB we read back. The Services' status is written by the test (no controller needed).

Router 192.0.2.1 AS 64501; speakers AS 64500 at 192.0.2.11-13; the bgp pool is 203.0.113.0/28. The
peer's password comes from a Secret (``password-secret``), so the speaker's Secret read and TCP-MD5
are exercised too. The lab (prefix "sbg") is deleted afterwards, also on failure.
"""

from __future__ import annotations

import base64
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from lbspeaker_testkit.bird import BirdNeighbor, BirdRouter, render_bird_config, wait_until
from lbspeaker_testkit.speaker_lab import NAMESPACE, SpeakerLab, wait_for

from lbspeaker.kube.rest import path_for
from tests.netns.bgp_lab import set_config, speaker_lab_marks, wait_paths

pytestmark = speaker_lab_marks()

ROUTER = "192.0.2.1"
ROUTER_ASN = 64501
NODE_ASN = 64500
PASSWORD = "lab-md5-pw"  # a test value
NODES = {"node1": "192.0.2.11", "node2": "192.0.2.12", "node3": "192.0.2.13"}
CONFIG = f"""\
address-pools:
- name: bgp
  protocol: bgp
  addresses: [203.0.113.0/28]
peers:
- peer-address: {ROUTER}
  peer-asn: {ROUTER_ASN}
  my-asn: {NODE_ASN}
  password-secret: {{name: bgp-auth, key: password}}
"""


class BgpSpeakerLab:
    def __init__(self, spk: SpeakerLab, router: BirdRouter, work: Path) -> None:
        self.spk = spk
        self.router = router
        self.work = work

    def start_speaker(self, node: str) -> None:
        self.spk.start_speaker(node, "--bgp-workdir", str(self.work / node), wait=False)

    def established(self, node: str) -> bool:
        status = self.router.protocols().get(node)
        return status is not None and status.established

    def paths(self, prefix: str, nodes: set[str], timeout: float = 30.0) -> dict[str, str | None]:
        """Wait until exactly ``nodes`` announce ``prefix``; their next hops by node."""
        found = wait_paths(self.router, prefix, nodes, timeout=timeout)
        return {node: path.next_hop for node, path in found.items()}


@pytest.fixture(scope="module")
def lab() -> Iterator[BgpSpeakerLab]:
    work = Path(tempfile.mkdtemp(prefix="lbs-sbg-"))  # short: ExaBGP's API socket lives in the workdirs
    try:
        with SpeakerLab("sbg") as spk:
            assert spk.lab is not None
            set_config(spk.rest, CONFIG)
            spk.rest.request("POST", path_for("v1", "secrets", NAMESPACE), body={
                "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bgp-auth"},
                "data": {"password": base64.b64encode(PASSWORD.encode()).decode()}})
            host = spk.lab.add_host("r", ipv4=f"{ROUTER}/24")
            neighbors = [BirdNeighbor(name=node, address=ip, asn=NODE_ASN, local_address=ROUTER, password=PASSWORD)
                         for node, ip in NODES.items()]
            router = BirdRouter(spk.lab, host, work / "bird", render_bird_config(ROUTER, ROUTER_ASN, neighbors))
            try:
                made = BgpSpeakerLab(spk, router, work)
                for node in spk.node_names:
                    made.start_speaker(node)
                for node in spk.node_names:
                    spk.wait_ready(node, timeout=60)
                wait_until(lambda: all(made.established(n) for n in NODES), timeout=60,
                           what="BGP sessions of every node")
                yield made
            finally:
                router.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_cluster_policy_is_announced_by_every_node(lab: BgpSpeakerLab) -> None:
    spk = lab.spk
    spk.service("web", ["203.0.113.2"], endpoints=["node1"])
    try:
        hops = lab.paths("203.0.113.2/32", set(NODES))
        assert hops == NODES
        wait_for("a bgp nodeAssigned Event from every node", lambda: len(
            {e.get("message") for e in spk.events("web", "nodeAssigned") if ", bgp, " in (e.get("message") or "")})
            == 3, timeout=10)
    finally:
        spk.delete_service("web")
    lab.paths("203.0.113.2/32", set())


def test_local_policy_is_announced_only_where_a_ready_endpoint_runs(lab: BgpSpeakerLab) -> None:
    spk = lab.spk
    spk.service("local", ["203.0.113.3"], local=True, endpoints=["node2"])
    try:
        assert lab.paths("203.0.113.3/32", {"node2"}) == {"node2": NODES["node2"]}
        spk.set_endpoints("local", ["node3"])
        assert lab.paths("203.0.113.3/32", {"node3"}) == {"node3": NODES["node3"]}
        spk.set_endpoints("local", ["node3"], ready=False)
        lab.paths("203.0.113.3/32", set())
    finally:
        spk.delete_service("local")


def test_deleting_the_service_withdraws_the_route(lab: BgpSpeakerLab) -> None:
    spk = lab.spk
    spk.service("gone", ["203.0.113.4"], endpoints=["node3"])
    try:
        lab.paths("203.0.113.4/32", set(NODES))
    finally:
        spk.delete_service("gone")
    lab.paths("203.0.113.4/32", set())
    assert all(proc.alive() for proc in spk.speakers.values())


def test_sigterm_leaves_the_routes_to_graceful_restart(lab: BgpSpeakerLab) -> None:
    """A speaker stopped with SIGTERM (a restart or upgrade) does not withdraw: the router keeps its
    path as stale under graceful restart until the new speaker announces it again."""
    spk = lab.spk
    spk.service("gr", ["203.0.113.5"], endpoints=["node1"])
    try:
        lab.paths("203.0.113.5/32", set(NODES))
        assert spk.speakers["node3"].terminate(timeout=30) == 0
        wait_until(lambda: not lab.established("node3"), timeout=30, what="node3's session to go down")
        assert set(lab.paths("203.0.113.5/32", set(NODES), timeout=1)) == set(NODES)
        lab.start_speaker("node3")
        spk.wait_ready("node3", timeout=60)
        wait_until(lambda: lab.established("node3"), timeout=60, what="node3's session back")
        lab.paths("203.0.113.5/32", set(NODES))
    finally:
        spk.delete_service("gr")
        if not spk.speakers["node3"].alive():
            lab.start_speaker("node3")
    lab.paths("203.0.113.5/32", set())
