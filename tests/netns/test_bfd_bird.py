"""BFD end to end against BIRD 2's ``protocol bfd`` and ``bfd on`` in its BGP protocols.

Three node namespaces run ``lbspeaker speaker`` against the in-process API test server; the router
(192.0.2.1, AS 64501) runs BFD at 300 ms x 3 towards each of them and ties every BGP session to its
BFD session. node1 and node2 peer single hop (RFC 5881, UDP 3784); node3 is labelled for a second
peer entry with ``ebgp-multihop``, so its BGP and BFD sessions are multihop (RFC 5883, UDP 4784).
The speakers' profiles ask for the same 300 ms x 3; the multihop one accepts a TTL down to 60, as
BIRD sends multihop BFD with the system TTL (64), not 255. BIRD helps with graceful restart (restart
time 120 s, the speaker's), so only BFD can take a silent node out of its RIB within a second.

What is asserted is the router's view: ``show bfd sessions``, its RIB and its kernel's ECMP route.
The lab (prefix "bfd") is deleted afterwards, also on failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from lbspeaker_testkit.bird import BirdBfd, BirdNeighbor, BirdRouter, render_bird_config, wait_until
from lbspeaker_testkit.netns import run
from lbspeaker_testkit.speaker_lab import SpeakerLab

from lbspeaker.speaker.lease import BFD_ANNOTATION, parse_bfd_annotation
from tests.netns.bgp_lab import paths_by_protocol, set_config, speaker_lab_marks, wait_paths

pytestmark = speaker_lab_marks()

ROUTER = "192.0.2.1"
ROUTER_ASN = 64501
NODE_ASN = 64500
NODES = {"node1": "192.0.2.11", "node2": "192.0.2.12", "node3": "192.0.2.13"}
PREFIX = "203.0.113.2/32"
CONFIG = f"""\
bfd-profiles:
- {{name: fast, receive-interval: 300, transmit-interval: 300, detect-multiplier: 3}}
- {{name: fast-multihop, receive-interval: 300, transmit-interval: 300, detect-multiplier: 3, minimum-ttl: 60}}
address-pools:
- {{name: bgp, protocol: bgp, addresses: [203.0.113.0/28]}}
peers:
- peer-address: {ROUTER}
  peer-asn: {ROUTER_ASN}
  my-asn: {NODE_ASN}
  bfd-profile: fast
  node-selectors: [{{match-expressions: [{{key: multihop, operator: DoesNotExist}}]}}]
- peer-address: {ROUTER}
  peer-asn: {ROUTER_ASN}
  my-asn: {NODE_ASN}
  ebgp-multihop: true
  bfd-profile: fast-multihop
  node-selectors: [{{match-labels: {{multihop: "yes"}}}}]
"""


class Lab:
    def __init__(self, spk: SpeakerLab, router: BirdRouter, work: Path) -> None:
        self.spk = spk
        self.router = router
        self.work = work

    def start(self, node: str) -> None:
        self.spk.start_speaker(node, "--bgp-workdir", str(self.work / node), wait=False)

    def bfd_up(self, nodes: set[str]) -> bool:
        """Up at the router, with the profile's timers in force (the Poll Sequence after Up is over)."""
        sessions = self.router.bfd_detail()
        return all(sessions.get(NODES[n]) == ("Up", 0.9) for n in nodes)

    def kill(self, node: str) -> None:
        """The node dies: its link goes down, then every process in its namespace is SIGKILLed."""
        host = self.spk.hosts[node]
        self.spk.set_link(node, "eth0", False)
        for pid in run(["ip", "netns", "pids", host.name]).stdout.split():
            os.kill(int(pid), signal.SIGKILL)
        self.spk.speakers[node].proc.wait(10)

    def revive(self, node: str) -> None:
        self.spk.set_link(node, "eth0", True)
        self.start(node)
        self.spk.wait_ready(node, timeout=60)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    work = Path(tempfile.mkdtemp(prefix="lbs-bfd-"))  # short: ExaBGP's API socket lives in the workdirs
    try:
        with SpeakerLab("bfd", nodes=3) as spk:
            assert spk.lab is not None
            set_config(spk.rest, CONFIG)
            spk.patch_node("node3", {"metadata": {"labels": {"multihop": "yes"}}})
            host = spk.lab.add_host("r", ipv4=f"{ROUTER}/24")
            neighbors = [BirdNeighbor(name=node, address=ip, asn=NODE_ASN, local_address=ROUTER, bfd=True,
                                      multihop=node == "node3") for node, ip in NODES.items()]
            router = BirdRouter(spk.lab, host, work / "bird",
                                render_bird_config(ROUTER, ROUTER_ASN, neighbors, BirdBfd(300, 300, 3)))
            try:
                made = Lab(spk, router, work)
                spk.service("web", ["203.0.113.2"], endpoints=["node1"])
                for node in NODES:
                    made.start(node)
                for node in NODES:
                    spk.wait_ready(node, timeout=60)
                yield made
            finally:
                router.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def up(lab: Lab) -> Lab:
    """Every node alive, every BFD session Up, the Service's route from all three."""
    for node in NODES:
        proc = lab.spk.speakers.get(node)
        if proc is None or not proc.alive():
            lab.revive(node)
    wait_until(lambda: lab.bfd_up(set(NODES)), 30, what="every BFD session Up at the router")
    wait_paths(lab.router, PREFIX, set(NODES), timeout=30)
    return lab


def test_sessions_come_up_single_hop_and_multihop_and_are_reported(up: Lab) -> None:
    detail = up.router.birdc("show", "bfd", "sessions")
    assert "192.0.2.13" in detail and "---" in detail.split("192.0.2.13")[1].split("\n")[0]  # multihop: no iface
    for node in NODES:
        speaker = up.spk.speakers[node]
        wait_until(lambda speaker=speaker: speaker.metric("lbspeaker_speaker_bfd_session_up",  # type: ignore[misc]
                                                          f'peer="{ROUTER}"') == 1.0, 10, what=f"{node} metric")

    def annotations() -> bool:
        found = up.spk.lease_annotations()
        return all(parse_bfd_annotation(found.get(f"speaker-{n}", {}).get(BFD_ANNOTATION, "")) == {ROUTER: "up"}
                   for n in NODES)

    wait_until(annotations, 15, what="the BFD state on every speaker Lease")


def test_a_dead_node_leaves_the_router_within_a_second(up: Lab) -> None:
    # Graceful restart would keep its path for 120 s and the hold timer only fires after 90 s: only
    # BFD Down (C bit clear: our BFD shares fate with our control plane) takes it out at once.
    started = time.monotonic()
    up.kill("node2")
    wait_paths(up.router, PREFIX, {"node1", "node3"}, timeout=5)
    took = time.monotonic() - started
    assert took < 1.5, took
    assert up.router.bfd_sessions()[NODES["node2"]] == "Down"
    wait_until(lambda: up.router.kernel_route(PREFIX).count("nexthop via") == 2, 5, what="two ECMP next hops")
    assert "192.0.2.12" not in up.router.kernel_route(PREFIX)
    up.revive("node2")
    wait_until(lambda: up.bfd_up({"node2"}), 30, what="node2's BFD back")
    wait_paths(up.router, PREFIX, set(NODES), timeout=30)


def test_the_multihop_session_also_takes_its_node_out(up: Lab) -> None:
    started = time.monotonic()
    up.kill("node3")
    wait_paths(up.router, PREFIX, {"node1", "node2"}, timeout=5)
    assert time.monotonic() - started < 1.5


def test_speaker_restart_bfd_down_wins_over_graceful_restart(up: Lab) -> None:
    """Documented choice (README, BGP mode): with a bfd-profile, a speaker that stops (SIGTERM, an
    upgrade) stops its BFD sessions without AdminDown; the router's detection time runs out and it drops
    the node, although graceful restart would have kept its routes. They come back with the speaker."""
    proc = up.spk.speakers["node1"]
    started = time.monotonic()
    assert proc.terminate(timeout=30) == 0
    wait_paths(up.router, PREFIX, {"node2", "node3"}, timeout=5)
    assert time.monotonic() - started < 2.5
    assert "BFD session down" in up.router.protocol_detail("node1") or \
        up.router.bfd_sessions()[NODES["node1"]] == "Down"
    up.start("node1")
    up.spk.wait_ready("node1", timeout=60)
    wait_paths(up.router, PREFIX, set(NODES), timeout=30)
    assert set(paths_by_protocol(up.router, PREFIX)) == set(NODES)
