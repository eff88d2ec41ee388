"""BFD in the speaker's BGP protocol: which sessions a node runs (``bfd_sessions_for_node``), and the
announcer's handling of them (lazy BFD process, metrics, Lease annotation) with a fake BFD daemon."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from prometheus_client import REGISTRY

from lbspeaker.bfd import SessionKey, SessionSpec, SessionStatus, Timers
from lbspeaker.bgp.model import BgpPeer
from lbspeaker.config import parse_config
from lbspeaker.speaker.bgp import bfd_sessions_for_node, peers_for_node
from lbspeaker.speaker.bgp_announcer import BgpAnnouncer, SpeakerLike
from lbspeaker.speaker.lease import BFD_ANNOTATION, parse_bfd_annotation

CONFIG = """\
bfd-profiles:
- {name: fast, receive-interval: 100, transmit-interval: 200, detect-multiplier: 4, passive-mode: true}
- {name: plain}
- {name: echo, echo-mode: true, minimum-ttl: 250}
peers:
- {peer-address: 192.0.2.1, peer-asn: 64501, my-asn: 64500, bfd-profile: fast}
- {peer-address: 192.0.2.2, peer-asn: 64501, my-asn: 64500, bfd-profile: plain}
- {peer-address: 198.51.100.9, peer-asn: 64502, my-asn: 64500, ebgp-multihop: true, bfd-profile: echo}
- {peer-address: 192.0.2.3, peer-asn: 64501, my-asn: 64500}
- peer-address: 192.0.2.4
  peer-asn: 64501
  my-asn: 64500
  bfd-profile: fast
  node-selectors: [{match-labels: {rack: r2}}]
"""


def local(peer: BgpPeer) -> str:
    if peer.peer_address == "192.0.2.2":
        raise OSError(101, "Network is unreachable")
    return "198.51.100.11" if peer.peer_address.startswith("198.") else "192.0.2.11"


def test_sessions_follow_the_profiles_of_the_peers_this_node_keeps() -> None:
    cfg = parse_config(CONFIG)
    peers, _ = peers_for_node(cfg, "n1", {}, {}, "192.0.2.11")
    specs, problems = bfd_sessions_for_node(cfg, {}, peers, local)
    assert specs == [
        SessionSpec(SessionKey("192.0.2.1", "192.0.2.11"),
                    Timers(desired_min_tx=200_000, required_min_rx=100_000, detect_mult=4, passive=True), 254),
        SessionSpec(SessionKey("198.51.100.9", "198.51.100.11", multihop=True),
                    Timers(desired_min_tx=300_000, required_min_rx=300_000, detect_mult=3), 250),
    ]
    assert problems == [
        "peer 192.0.2.2: no BFD session, no local address towards it: Network is unreachable",
        "bfd profile echo of peer 198.51.100.9: echo-mode is not supported; running asynchronous mode only",
    ]


def test_only_the_peers_selected_for_this_node_get_sessions() -> None:
    cfg = parse_config(CONFIG)
    peers, _ = peers_for_node(cfg, "n1", {"rack": "r2"}, {}, "192.0.2.11")
    specs, _ = bfd_sessions_for_node(cfg, {"rack": "r2"}, peers, local)
    assert "192.0.2.4" in {s.key.peer for s in specs}
    assert "192.0.2.3" not in {s.key.peer for s in specs}
    specs, _ = bfd_sessions_for_node(cfg, {"rack": "r2"}, [p for p in peers if p.peer_address != "192.0.2.4"], local)
    assert "192.0.2.4" not in {s.key.peer for s in specs}  # a peer left out of BGP gets no BFD either


class FakeBfd:
    def __init__(self, on_change: Callable[[SessionStatus], None]) -> None:
        self.on_change = on_change
        self.calls: list[tuple[SessionSpec, ...]] = []
        self.states: dict[SessionKey, SessionStatus] = {}
        self.counters: dict[str, int] = {}
        self.stopped = False

    def set_sessions(self, specs: Sequence[SessionSpec]) -> None:
        self.calls.append(tuple(specs))

    def sessions(self) -> dict[SessionKey, SessionStatus]:
        return dict(self.states)

    def stats(self) -> dict[str, int]:
        return dict(self.counters)

    def stop(self) -> None:
        self.stopped = True

    def report(self, key: SessionKey, state: str) -> None:
        status = SessionStatus(key=key, state=state, diag="none", since=time.time(), remote_state=state,
                               tx_interval_ms=300, detection_time_ms=900, sent=1, received=1)
        self.states[key] = status
        self.on_change(status)


class NoSpeaker:
    def __call__(self) -> SpeakerLike:
        raise AssertionError("no BGP speaker in these tests")


def metric(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_the_bfd_process_starts_with_the_first_session_and_reports_through_metrics_and_the_lease() -> None:
    made: list[FakeBfd] = []

    def factory(on_change: Callable[[SessionStatus], None]) -> FakeBfd:
        made.append(FakeBfd(on_change))
        return made[-1]

    announcer = BgpAnnouncer("n1", NoSpeaker(), bfd_factory=factory)
    announcer.set_bfd([])
    assert made == [] and announcer.lease_annotations() == {}
    key = SessionKey("192.0.2.101", "192.0.2.11")
    spec = SessionSpec(key)
    announcer.set_bfd([spec])
    announcer.set_bfd([spec])
    (bfd,) = made
    assert bfd.calls == [(spec,)]  # unchanged sets are not sent again

    downs = metric("lbspeaker_speaker_bfd_session_downs_total", peer="192.0.2.101") or 0.0
    bfd.report(key, "init")
    bfd.report(key, "up")
    assert metric("lbspeaker_speaker_bfd_session_up", peer="192.0.2.101") == 1.0
    assert announcer.lease_annotations() == {BFD_ANNOTATION: "192.0.2.101=up"}
    bfd.report(key, "down")
    assert metric("lbspeaker_speaker_bfd_session_up", peer="192.0.2.101") == 0.0
    assert metric("lbspeaker_speaker_bfd_session_downs_total", peer="192.0.2.101") == downs + 1
    assert parse_bfd_annotation(announcer.lease_annotations()[BFD_ANNOTATION]) == {"192.0.2.101": "down"}

    announcer.set_bfd([])
    assert bfd.calls[-1] == ()
    assert metric("lbspeaker_speaker_bfd_session_up", peer="192.0.2.101") is None
    announcer.stop(graceful=True)
    assert bfd.stopped


def test_annotation_parsing_skips_junk() -> None:
    assert parse_bfd_annotation("192.0.2.1=up,,junk,2001:db8::1=down,=x") == {"192.0.2.1": "up", "2001:db8::1": "down"}
