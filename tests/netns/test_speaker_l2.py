"""The L2 speaker end to end on the real kernel: three node namespaces run ``lbspeaker speaker`` against
the in-process API test server, a client namespace ARPs / solicits for the external IPs.

The expected owner is always computed with the same pure election the speakers run, so every test
checks that exactly the elected node answers. Why the takeover test gives the client a neighbour entry
first and watches its outgoing frames: see tests/netns/test_l2_responder.py (a gratuitous ARP only
updates an existing entry, to STALE; a resolution would make it REACHABLE and show a request).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest
from lbspeaker_testkit.kubeutil import ControllerProcess
from lbspeaker_testkit.speaker_lab import NAMESPACE, SVC_NS, SpeakerLab, wait_for

from lbspeaker import election
from lbspeaker.l2 import packets
from tests.netns.test_l2_responder import Capture

pytestmark = [
    pytest.mark.skipif(any(shutil.which(t) is None for t in ("arping", "ndisc6", "ping")),
                       reason="needs arping (iputils-arping), ndisc6 and ping"),
    pytest.mark.skipif(bool(os.environ.get("LBSPEAKER_TEST_KUBECONFIG")),
                       reason="speakers run in lab namespaces that cannot reach a real cluster's API server"),
]

ALL = ("node1", "node2", "node3")
SUBNETS = "lbspeaker.io/subnets"


@pytest.fixture(scope="module")
def spk() -> Iterator[SpeakerLab]:
    with SpeakerLab("spk") as made:
        for node in made.node_names:
            made.start_speaker(node, wait=False)
        for node in made.node_names:
            made.wait_ready(node)
        yield made


@pytest.fixture
def lab(spk: SpeakerLab) -> Iterator[SpeakerLab]:
    """The shared lab with every speaker running and counting all three nodes alive."""
    spk.ensure_all()
    settle(spk)
    try:
        yield spk
    finally:
        spk.api.resume()


def settle(spk: SpeakerLab, members: int = 3) -> None:
    for node, proc in spk.speakers.items():
        if proc.alive():
            wait_for(f"{node} to count {members} live members", proc.counts_members(members), 20, 0.1)


def owner_mac(spk: SpeakerLab, ip: str, candidates: tuple[str, ...] = ALL) -> tuple[str, str]:
    node = election.owner(ip, candidates)
    assert node is not None
    return node, spk.mac(node)


def answered_by(spk: SpeakerLab, ip: str, mac: str, count: int = 2) -> bool:
    return spk.arping(ip, count=count) == [mac] * count


# --- answering --------------------------------------------------------------------------------------------


def test_only_the_elected_node_answers_arp_and_ndp(lab: SpeakerLab) -> None:
    ip4, ip6 = "192.0.2.201", "2001:db8::1001"
    lab.service("answer", [ip4, ip6], endpoints=ALL)
    try:
        node4, mac4 = owner_mac(lab, ip4)
        node6, mac6 = owner_mac(lab, ip6)
        wait_for(f"{node4} to answer for {ip4}", lambda: answered_by(lab, ip4, mac4, 1), 10)
        assert lab.arping(ip4, count=2) == [mac4, mac4]
        assert wait_for(f"{node6} to answer for {ip6}", lambda: lab.ndisc(ip6), 10) == [mac6]
        event = wait_for("nodeAssigned", lambda: lab.events("answer", "nodeAssigned"), 10)
        assert any(f"node {node4}, layer2, interface eth0" in e["message"] for e in event)
        assert lab.leases() >= {f"speaker-{n}" for n in ALL}
    finally:
        lab.delete_service("answer")
    wait_for("the IP to go silent once the Service is gone", lambda: lab.arping(ip4, count=1) == [], 10)


def test_service_without_ready_endpoints_is_not_announced(lab: SpeakerLab) -> None:
    ip = "192.0.2.202"
    lab.service("noready", [ip], endpoints=())
    try:
        assert lab.arping(ip, count=2) == []
        lab.set_endpoints("noready", ["node2"])
        _, mac = owner_mac(lab, ip)
        wait_for("the IP to be announced once an endpoint is ready", lambda: answered_by(lab, ip, mac, 1), 10)
    finally:
        lab.delete_service("noready")


def test_ips_spread_evenly_over_three_nodes(lab: SpeakerLab) -> None:
    base = int(ipaddress.IPv6Address("2001:db8::1100"))
    ips = [str(ipaddress.IPv6Address(base + i)) for i in range(300)]
    names = [f"spread{i}" for i in range(30)]
    for i, name in enumerate(names):
        lab.service(name, ips[i * 10:(i + 1) * 10], endpoints=ALL)
    try:
        def counts() -> dict[str, float] | None:
            got = {n: lab.speakers[n].metric("lbspeaker_speaker_announced_ips", 'protocol="layer2"') or 0.0
                   for n in ALL}
            return got if sum(got.values()) == 300 else None

        owned = wait_for("300 IPs announced in total", counts, 20, 0.2)
        expected = {n: sum(1 for ip in ips if election.owner(ip, ALL) == n) for n in ALL}
        assert owned == expected
        for node, count in owned.items():
            assert 0.20 * 300 <= count <= 0.47 * 300, (node, count)
        # Spot-check with real solicitations that the metric is what the wire says.
        for ip in ips[:3]:
            assert lab.ndisc(ip) == [owner_mac(lab, ip)[1]]
    finally:
        for name in names:
            lab.delete_service(name)


def test_shared_ip_is_one_election_over_the_intersection(lab: SpeakerLab) -> None:
    ip = "192.0.2.203"
    # Local on both: A may go to node1/node2, B to node2/node3; only node2 serves both.
    lab.service("share-a", [ip], local=True, endpoints=["node1", "node2"], shared="k", ports=(80,))
    lab.service("share-b", [ip], local=True, endpoints=["node2", "node3"], shared="k", ports=(443,))
    try:
        wait_for("node2 alone to answer", lambda: answered_by(lab, ip, lab.mac("node2")), 10)
        lab.set_endpoints("share-b", ["node1", "node3"])
        wait_for("node1 alone to answer", lambda: answered_by(lab, ip, lab.mac("node1")), 10)
    finally:
        lab.delete_service("share-a")
        lab.delete_service("share-b")


def test_local_policy_owner_moves_with_the_endpoint(lab: SpeakerLab) -> None:
    ip = "192.0.2.204"
    hashed = election.owner(ip, ALL)
    first, second = [n for n in ALL if n != hashed][:2]  # neither is the owner the hash alone would pick
    lab.service("local", [ip], local=True, endpoints=[first])
    try:
        wait_for(f"{first} to answer", lambda: answered_by(lab, ip, lab.mac(first)), 10)
        lab.set_endpoints("local", [second])
        wait_for(f"{second} to answer", lambda: answered_by(lab, ip, lab.mac(second)), 10)
        lab.set_endpoints("local", [second], ready=False)
        wait_for("nobody to answer without a ready endpoint", lambda: lab.arping(ip, count=1) == [], 10)
    finally:
        lab.delete_service("local")


def test_excluded_node_gives_up_its_ips(lab: SpeakerLab) -> None:
    ip = "192.0.2.205"
    owner, mac = owner_mac(lab, ip)
    lab.service("exclude", [ip], endpoints=ALL)
    label = "node.kubernetes.io/exclude-from-external-load-balancers"
    try:
        wait_for(f"{owner} to answer", lambda: answered_by(lab, ip, mac), 10)
        lab.patch_node(owner, {"metadata": {"labels": {label: ""}}})
        rest = tuple(n for n in ALL if n != owner)
        wait_for("another node to answer", lambda: answered_by(lab, ip, owner_mac(lab, ip, rest)[1]), 10)
    finally:
        lab.patch_node(owner, {"metadata": {"labels": {label: None}}})
        lab.delete_service("exclude")


def test_interface_down_takes_the_node_out_for_that_subnet(lab: SpeakerLab) -> None:
    """Data-path health: eth1 (198.51.100.0/24) goes down on the owner; heartbeats still flow on eth0,
    so only the Lease's up-interface subnets can move the IP to another node."""
    macs = {}
    for i, node in enumerate(ALL, start=1):
        macs[node] = lab.add_link(node, "eth1", f"198.51.100.{10 + i}/24")
    lab.client.run(["ip", "addr", "add", "198.51.100.100/24", "dev", "eth0"])
    wait_for("every Lease to publish 198.51.100.0/24", lambda: all(
        "198.51.100.0/24" in a.get(SUBNETS, "") for name, a in lab.lease_annotations().items()
        if name.startswith("speaker-")), 10)
    ip = "198.51.100.201"
    owner = election.owner(ip, ALL)
    assert owner is not None
    heir = election.owner(ip, tuple(n for n in ALL if n != owner))
    assert heir is not None
    lab.service("datapath", [ip], endpoints=ALL)
    try:
        wait_for(f"{owner} to answer from eth1", lambda: answered_by(lab, ip, macs[owner], 1), 10)
        lab.set_link(owner, "eth1", False)
        wait_for(f"{heir} to take over from eth1", lambda: answered_by(lab, ip, macs[heir], 1), 5)
        assert f"speaker-{owner}" in lab.leases() and lab.speakers[owner].alive()
        assert "198.51.100.0/24" not in lab.lease_annotations()[f"speaker-{owner}"].get(SUBNETS, "")
        lab.set_link(owner, "eth1", True)
        wait_for(f"{owner} to take the IP back", lambda: answered_by(lab, ip, macs[owner], 1), 5)
    finally:
        lab.delete_service("datapath")


# --- failover -----------------------------------------------------------------------------------------


def test_sigterm_hands_over_by_gratuitous_announcement_alone(lab: SpeakerLab) -> None:
    ip4 = "192.0.2.206"
    lab.service("handoff", [ip4], endpoints=ALL)
    owner, mac = owner_mac(lab, ip4)
    try:
        wait_for(f"{owner} to answer", lambda: answered_by(lab, ip4, mac, 1), 10)
        lab.resolve(ip4)
        assert lab.neighbour(ip4)[0] == mac
        _, heir_mac = owner_mac(lab, ip4, tuple(n for n in ALL if n != owner))
        capture = Capture(lab.client)
        try:
            capture.drain()
            capture.frames.clear()
            assert lab.speakers[owner].terminate() == 0
            wait_for("the client's entry to move to the heir", lambda: lab.neighbour(ip4)[0] == heir_mac, 5)
            assert lab.neighbour(ip4)[1] == ["STALE"]  # set by an announcement, not a resolution
            asked = [f for f in capture.parsed(outgoing=True)
                     if isinstance(f, packets.ArpPacket | packets.NeighborSolicitation)]
            assert asked == [], "the client asked, so the flip may not be the announcement's doing"
        finally:
            capture.close()
        assert lab.released(owner)  # released, not deleted: its boot number stays for the next start
        assert lab.arping(ip4, count=2) == [heir_mac] * 2
    finally:
        lab.delete_service("handoff")


def test_sigkill_of_the_owner_fails_over(lab: SpeakerLab) -> None:
    ip = "192.0.2.207"
    lab.service("kill", [ip], endpoints=ALL)
    owner, mac = owner_mac(lab, ip)
    try:
        wait_for(f"{owner} to answer", lambda: answered_by(lab, ip, mac, 1), 10)
        heir, heir_mac = owner_mac(lab, ip, tuple(n for n in ALL if n != owner))
        lab.speakers[owner].kill()
        wait_for(f"{heir} to answer after {owner} was killed", lambda: answered_by(lab, ip, heir_mac, 1), 5)
        assert lab.arping(ip, count=2) == [heir_mac] * 2
    finally:
        lab.delete_service("kill")


def test_api_outage_keeps_announcing_and_failover_still_works(lab: SpeakerLab) -> None:
    ip = "192.0.2.208"
    lab.service("outage", [ip], endpoints=ALL)
    owner, mac = owner_mac(lab, ip)
    try:
        wait_for(f"{owner} to answer", lambda: answered_by(lab, ip, mac, 1), 10)
        lab.api.pause()
        assert lab.arping(ip, count=3) == [mac] * 3
        heir, heir_mac = owner_mac(lab, ip, tuple(n for n in ALL if n != owner))
        lab.speakers[owner].kill()
        wait_for(f"{heir} to take over while the API is down", lambda: answered_by(lab, ip, heir_mac, 1), 5)
        assert lab.arping(ip, count=2) == [heir_mac] * 2
        for node in ALL:
            if node != owner:
                assert lab.speakers[node].alive(), lab.speakers[node].logs()
    finally:
        lab.api.resume()
        lab.delete_service("outage")


# --- with the controller, and bad neighbours ------------------------------------------------------------


def test_ip_assigned_by_the_controller_is_announced_by_its_owner(lab: SpeakerLab) -> None:
    ctl = ControllerProcess(lab.kubeconfig, NAMESPACE, None).start()
    try:
        lab.service("ctl", (), endpoints=ALL)
        ips = wait_for("the controller to assign an IP", lambda: _status_ips(lab, "ctl"), 20)
        ip = ips[0]
        assert ipaddress.ip_address(ip) in ipaddress.ip_network("192.0.2.0/24")
        _, mac = owner_mac(lab, ip)
        wait_for("the owner to answer for the controller's IP", lambda: answered_by(lab, ip, mac, 1), 10)
    finally:
        lab.delete_service("ctl")
        ctl.stop(signal.SIGTERM)


def test_another_mac_answering_raises_a_warning_event(lab: SpeakerLab) -> None:
    ip = "192.0.2.209"
    lab.service("dup", [ip], endpoints=ALL)
    owner, mac = owner_mac(lab, ip)
    assert lab.lab is not None
    try:
        wait_for(f"{owner} to answer", lambda: answered_by(lab, ip, mac, 1), 10)
        rogue = lab.lab.popen(lab.client, [sys.executable, "-m", "lbspeaker.l2", "--interface", "eth0", "--ip", ip],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            event = wait_for("a DuplicateAnswer event", lambda: lab.events("dup", "DuplicateAnswer"), 10)
            assert lab.client.mac in event[0]["message"] and event[0]["type"] == "Warning"
            seen = lab.speakers[owner].metric("lbspeaker_speaker_duplicates_seen_total")
            assert seen is not None and seen >= 1
        finally:
            rogue.terminate()
            rogue.wait(10)
    finally:
        lab.delete_service("dup")


def _status_ips(lab: SpeakerLab, name: str) -> list[str]:
    svc = lab.rest.get(f"/api/v1/namespaces/{SVC_NS}/services/{name}")
    return [i["ip"] for i in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []]
