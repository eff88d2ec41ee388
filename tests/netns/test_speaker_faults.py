"""Partial faults on the real kernel, with real speaker processes: the cases the speaker core was measured
failing under, each run the way an operator (or an attacker) would cause it.

* the owner's membership traffic dropped on the switch, both ways (an nft bridge rule on its port),
  while everything else works: it must stop answering before another node starts — never two MACs;
* the API server restored to an older state: the speakers follow the server, changes after it count;
* the API server accepting connections and never answering: failover still works on membership alone;
* two nodes: the survivor takes over through the API server in well under the Lease duration.

Namespaces are this file's own (prefixes ``spkf``/``spk2``) and go away at the end, also on failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest
from lbspeaker_testkit.arp_probe import Prober
from lbspeaker_testkit.netns import run
from lbspeaker_testkit.speaker_lab import HEARTBEAT_PORT, SpeakerLab, wait_for

from lbspeaker import election

pytestmark = [
    pytest.mark.skipif(any(shutil.which(t) is None for t in ("arping", "nft")),
                       reason="needs arping (iputils-arping) and nft (nftables)"),
    pytest.mark.skipif(bool(os.environ.get("LBSPEAKER_TEST_KUBECONFIG")),
                       reason="speakers run in lab namespaces that cannot reach a real cluster's API server"),
]

ALL = ("node1", "node2", "node3")


@pytest.fixture(scope="module")
def spk() -> Iterator[SpeakerLab]:
    with SpeakerLab("spkf") as made:
        for node in made.node_names:
            made.start_speaker(node, wait=False)
        for node in made.node_names:
            made.wait_ready(node)
        yield made


@pytest.fixture
def lab(spk: SpeakerLab) -> Iterator[SpeakerLab]:
    spk.ensure_all()
    for node, proc in spk.speakers.items():
        wait_for(f"{node} to count 3 live members", proc.counts_members(3), 20, 0.1)
    try:
        yield spk
    finally:
        spk.api.answer_again()
        spk.api.resume()


def drop_membership(spk: SpeakerLab, node: str) -> str:
    """An nft rule on the switch: drop every membership datagram to or from ``node``'s port."""
    assert spk.lab is not None
    port = spk.hosts[node].switch_port
    table = f"cut{port}"
    rules = (f"table bridge {table} {{\n chain forward {{\n"
             f"  type filter hook forward priority 0; policy accept;\n"
             f"  iifname \"{port}\" udp dport {HEARTBEAT_PORT} drop\n"
             f"  oifname \"{port}\" udp dport {HEARTBEAT_PORT} drop\n }}\n}}\n")
    subprocess.run(["ip", "netns", "exec", spk.lab.switch, "nft", "-f", "-"], input=rules, text=True, check=True,
                   capture_output=True)
    return table


def restore_membership(spk: SpeakerLab, table: str) -> None:
    assert spk.lab is not None
    run(["ip", "netns", "exec", spk.lab.switch, "nft", "delete", "table", "bridge", table])


def test_a_node_cut_off_from_membership_stops_before_another_starts(lab: SpeakerLab) -> None:
    ip = "192.0.2.221"
    lab.service("cut", [ip], endpoints=ALL)
    owner = election.owner(ip, ALL)
    assert owner is not None
    heir = election.owner(ip, tuple(n for n in ALL if n != owner))
    assert heir is not None
    try:
        wait_for(f"{owner} to answer", lambda: lab.arping(ip, count=1) == [lab.mac(owner)], 10)
        prober = Prober(lab.client, ip, limit=12).start()
        time.sleep(0.5)
        t0 = time.monotonic()
        table = drop_membership(lab, owner)
        try:
            wait_for(f"{heir} to take over", lambda: prober.gap(lab.mac(owner), lab.mac(heir), t0) is not None, 5)
            time.sleep(2.0)  # the partition lasts: the cut-off node must stay silent all along
            assert prober.overlap(t0) == 0.0, f"two answerers: {prober.replies[-40:]}"
            gap, took = prober.gap(lab.mac(owner), lab.mac(heir), t0) or (0, 0)
            assert took < 1.5 and gap < 1.0, (gap, took)
            code, text = lab.speakers[owner].http("/readyz")
            assert code == 503 and "membership" in text  # the cut-off node knows it is out
            assert lab.events("cut", "DuplicateAnswer") == []
        finally:
            restore_membership(lab, table)
        # Healed: the owner comes back and gets its IP back, still never two at once.
        t1 = time.monotonic()
        wait_for(f"{owner} to answer again", lambda: prober.replies and prober.replies[-1][1] == lab.mac(owner), 8)
        time.sleep(0.5)
        prober.stop()
        assert prober.overlap(t1) == 0.0, f"two answerers after healing: {prober.replies[-40:]}"
    finally:
        lab.delete_service("cut")


def test_a_rewound_api_server_is_followed(lab: SpeakerLab) -> None:
    """etcd restored to an older state: what the server says now is the truth, and what comes after counts."""
    old_ip, gone_ip, new_ip = "192.0.2.222", "192.0.2.223", "192.0.2.224"
    lab.service("old", [old_ip], endpoints=ALL)
    try:
        wait_for("old to be answered", lambda: len(lab.arping(old_ip, count=1)) == 1, 10)
        snapshot = lab.api.snapshot()
        lab.delete_service("old")
        lab.service("gone", [gone_ip], endpoints=ALL)
        wait_for("gone to be answered", lambda: len(lab.arping(gone_ip, count=1)) == 1, 10)
        wait_for("old to be withdrawn", lambda: lab.arping(old_ip, count=1) == [], 10)
        lab.api.restart(snapshot)  # back in time: "old" exists again, "gone" never did
        wait_for("old to be answered again", lambda: len(lab.arping(old_ip, count=1)) == 1, 30, 0.5)
        wait_for("gone to be withdrawn", lambda: lab.arping(gone_ip, count=1) == [], 30, 0.5)
        lab.service("new", [new_ip], endpoints=ALL)
        wait_for("a change after the rewind to count", lambda: len(lab.arping(new_ip, count=1)) == 1, 15)
    finally:
        for name in ("old", "gone", "new"):
            lab.delete_service(name)


def test_failover_works_while_the_api_server_hangs(lab: SpeakerLab) -> None:
    ip = "192.0.2.225"
    lab.service("hang", [ip], endpoints=ALL)
    owner = election.owner(ip, ALL)
    heir = election.owner(ip, tuple(n for n in ALL if n != owner))
    assert owner is not None and heir is not None
    try:
        wait_for(f"{owner} to answer", lambda: lab.arping(ip, count=1) == [lab.mac(owner)], 10)
        lab.api.stop_answering()  # accepts connections, reads requests, never replies
        time.sleep(1.0)
        prober = Prober(lab.client, ip, limit=10).start()
        time.sleep(0.3)
        t0 = time.monotonic()
        lab.speakers[owner].kill()
        wait_for(f"{heir} to take over", lambda: prober.gap(lab.mac(owner), lab.mac(heir), t0) is not None, 5)
        prober.stop()
        gap = prober.gap(lab.mac(owner), lab.mac(heir), t0)
        assert gap is not None and gap[1] < 1.5, gap
        # The survivors keep answering through a long hang: nothing is withdrawn.
        time.sleep(3.0)
        assert lab.arping(ip, count=1) == [lab.mac(heir)]
    finally:
        lab.api.answer_again()
        lab.delete_service("hang")


@pytest.fixture
def pair() -> Iterator[SpeakerLab]:
    with SpeakerLab("spk2", nodes=2) as made:
        for node in made.node_names:
            made.start_speaker(node, wait=False)
        for node in made.node_names:
            made.wait_ready(node)
        yield made


def test_two_nodes_fail_over_in_well_under_a_lease_duration(pair: SpeakerLab) -> None:
    nodes = ("node1", "node2")
    ip = "192.0.2.226"
    pair.service("two", [ip], endpoints=nodes)
    owner = election.owner(ip, nodes)
    other = next(n for n in nodes if n != owner)
    assert owner is not None
    wait_for(f"{owner} to answer", lambda: pair.arping(ip, count=1) == [pair.mac(owner)], 15)
    prober = Prober(pair.client, ip, limit=10).start()
    time.sleep(0.3)
    t0 = time.monotonic()
    pair.speakers[owner].kill()
    wait_for(f"{other} to take over", lambda: prober.gap(pair.mac(owner), pair.mac(other), t0) is not None, 8)
    prober.stop()
    gap = prober.gap(pair.mac(owner), pair.mac(other), t0)
    assert gap is not None and gap[1] < 2.0, gap  # was ~9.5 s (Lease expiry); the API server broke the tie
