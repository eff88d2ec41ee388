"""The speaker's BGP peers coming and going as an operator changes things, against a real BIRD 2.

One node namespace runs ``lbspeaker speaker`` against the in-process API test server and peers with
a BIRD router (192.0.2.1, AS 64501) over TCP-MD5, the password from a Secret. Every test starts from
the same state (the base config, the Secret, an Established session with the Service's route) and
changes one thing the way an operator would: the peer taken out of the config and put back, the
node's label that selects the peer removed and added, my-asn changed and changed back, the Secret
deleted and recreated, a typo in the Secret's name, a wrong password corrected. What is asserted is
the router's RIB and session: no route lost for good, no stale path left behind, no needless reset.
The lab (prefix "sbl") is deleted afterwards, also on failure.
"""

from __future__ import annotations

import base64
import shutil
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from lbspeaker_testkit.bird import BirdNeighbor, BirdRouter, render_bird_config, wait_until
from lbspeaker_testkit.speaker_lab import NAMESPACE, SpeakerLab

from lbspeaker.kube.rest import ApiError, path_for
from tests.netns.bgp_lab import paths_by_protocol, set_config, speaker_lab_marks, wait_paths

pytestmark = speaker_lab_marks()

ROUTER = "192.0.2.1"
ROUTER_ASN = 64501
NODE_ASN = 64500
PASSWORD = "lab-md5-lifecycle"  # a test value
NODE = "node1"
PREFIX = "203.0.113.2/32"


def config(*, my_asn: int = NODE_ASN, secret: str = "bgp-auth", selector: bool = False, peer: bool = True) -> str:
    text = "address-pools:\n- name: bgp\n  protocol: bgp\n  addresses: [203.0.113.0/28]\n"
    if peer:
        text += (f"peers:\n- peer-address: {ROUTER}\n  peer-asn: {ROUTER_ASN}\n  my-asn: {my_asn}\n"
                 f"  hold-time: 30s\n  password-secret: {{name: {secret}, key: password}}\n")
        if selector:
            text += "  node-selectors: [{match-labels: {bgp: 'on'}}]\n"
    return text


class Lab:
    def __init__(self, spk: SpeakerLab, router: BirdRouter, work: Path) -> None:
        self.spk = spk
        self.router = router
        self.work = work

    def start_speaker(self) -> None:
        self.spk.start_speaker(NODE, "--bgp-workdir", str(self.work / NODE), wait=False)
        self.spk.wait_ready(NODE, timeout=60)

    def set_config(self, text: str) -> None:
        set_config(self.spk.rest, text)

    def set_secret(self, password: str | None) -> None:
        path = path_for("v1", "secrets", NAMESPACE)
        try:
            self.spk.rest.request("DELETE", f"{path}/bgp-auth")
        except ApiError as exc:
            if not exc.not_found:
                raise
        if password is not None:
            self.spk.rest.request("POST", path, body={
                "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bgp-auth"},
                "data": {"password": base64.b64encode(password.encode()).decode()}})

    def label(self, on: bool) -> None:
        self.spk.patch_node(NODE, {"metadata": {"labels": {"bgp": "on" if on else None}}})

    def established(self) -> bool:
        status = self.router.protocols().get(NODE)
        return status is not None and status.established

    def since(self) -> float:
        """When the session last changed state, per the router (BIRD stamps the protocol and its
        channel a millisecond apart, hence a float to compare with some slack)."""
        text = self.router.protocols()[NODE].since
        return datetime.fromisoformat(text).timestamp()

    def same_session(self, since: float) -> bool:
        return self.established() and abs(self.since() - since) < 0.5

    def announced(self, timeout: float = 20.0) -> None:
        wait_paths(self.router, PREFIX, {NODE}, timeout=timeout)

    def withdrawn(self, timeout: float) -> None:
        wait_paths(self.router, PREFIX, set(), timeout=timeout)

    def stays(self, seconds: float) -> None:
        """The route stays in the RIB for ``seconds`` (bounded look for a loss that must not happen)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert set(paths_by_protocol(self.router, PREFIX)) == {NODE}
            time.sleep(0.2)


@pytest.fixture(scope="module")
def module_lab() -> Iterator[Lab]:
    work = Path(tempfile.mkdtemp(prefix="lbs-sbl-"))  # short: ExaBGP's API socket lives in the workdir
    try:
        with SpeakerLab("sbl", nodes=1) as spk:
            assert spk.lab is not None
            host = spk.lab.add_host("r", ipv4=f"{ROUTER}/24")
            neighbor = BirdNeighbor(name=NODE, address="192.0.2.11", asn=NODE_ASN, local_address=ROUTER,
                                    password=PASSWORD, hold_time=30)
            router = BirdRouter(spk.lab, host, work / "bird", render_bird_config(ROUTER, ROUTER_ASN, [neighbor]))
            try:
                lab = Lab(spk, router, work)
                lab.set_config(config())
                lab.set_secret(PASSWORD)
                spk.service("web", ["203.0.113.2"], endpoints=[NODE])
                lab.start_speaker()
                yield lab
            finally:
                router.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def lab(module_lab: Lab) -> Lab:
    """The base state: base config, the right Secret, node unlabelled, session up, route announced."""
    if not module_lab.spk.speakers[NODE].alive():
        module_lab.start_speaker()
    module_lab.set_secret(PASSWORD)
    module_lab.set_config(config())
    module_lab.label(False)
    wait_until(module_lab.established, 30, what="the base session")
    module_lab.announced()
    return module_lab


def test_peer_taken_out_of_the_config_and_put_back(lab: Lab) -> None:
    lab.set_config(config(peer=False))
    lab.withdrawn(timeout=3)  # withdrawn first, not left stale for the graceful-restart time
    lab.set_config(config())
    lab.announced()
    lab.stays(2)


def test_node_label_selecting_the_peer_removed_and_added(lab: Lab) -> None:
    lab.label(True)
    lab.set_config(config(selector=True))
    lab.stays(1)  # the node still matches: nothing changes
    lab.label(False)
    lab.withdrawn(timeout=3)
    lab.label(True)
    lab.announced()
    lab.stays(2)


def test_my_asn_changed_and_changed_back(lab: Lab) -> None:
    lab.set_config(config(my_asn=64510))
    lab.withdrawn(timeout=3)
    lab.set_config(config())
    lab.announced()
    lab.stays(2)


def test_secret_deleted_and_recreated_leaves_the_session_alone(lab: Lab) -> None:
    since = lab.since()
    lab.set_secret(None)
    lab.stays(2)
    lab.set_secret(PASSWORD)
    lab.stays(1)
    assert lab.same_session(since)
    kept = [e for e in lab.spk.rest.get(path_for("v1", "events", NAMESPACE)).get("items") or []
            if e.get("reason") == "BGPPeerKept"]
    assert any("Secret bgp-auth not found" in (e.get("message") or "") for e in kept)


def test_typo_in_the_secret_name_keeps_the_session_and_a_fixed_typo_at_startup_announces(lab: Lab) -> None:
    since = lab.since()
    lab.set_config(config(secret="bgp-auht"))
    lab.stays(2)
    assert lab.same_session(since)
    # A speaker that starts with the typo has no good password to keep: no session until it is fixed,
    # then every route.
    assert lab.spk.speakers[NODE].terminate(timeout=30) == 0
    lab.start_speaker()
    time.sleep(2)
    assert not lab.established()
    lab.set_config(config())
    wait_until(lab.established, 10, what="the session after the fix")
    lab.announced(timeout=10)
    lab.stays(2)


def test_wrong_password_corrected_brings_the_session_back_within_two_seconds(lab: Lab) -> None:
    lab.set_secret("not-the-password")
    wait_until(lambda: not lab.established(), 20, what="the session refused with the wrong key")
    time.sleep(5)  # several refused attempts
    started = time.monotonic()
    lab.set_secret(PASSWORD)
    wait_until(lab.established, 10, interval=0.05, what="the session with the corrected key")
    assert time.monotonic() - started < 2.0
    lab.announced(timeout=5)
