"""The BGP announcer adapter, with a fake BgpSpeaker: change detection, lazy start, events, stop, metrics."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import pytest
from prometheus_client import REGISTRY

from lbspeaker.bgp.model import Advertisement, BgpPeer, SessionState
from lbspeaker.speaker.bgp_announcer import BgpAnnouncer, SpeakerLike

PEER = BgpPeer(peer_address="192.0.2.1", peer_asn=64501, my_asn=64500)
PEER2 = BgpPeer(peer_address="192.0.2.2", peer_asn=64502, my_asn=64500)
PEER6 = BgpPeer(peer_address="2001:db8::1", peer_asn=64503, my_asn=64500)
SECRET = "very-secret-pw"  # a test value: never shown in logs or reprs
ROUTE = Advertisement(prefix="203.0.113.5/32")
ROUTE_V6 = Advertisement(prefix="2001:db8:5::7/128")


class FakeSpeaker:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.session_states: dict[str, SessionState] = {}
        self.counters: dict[str, int] = {}

    def start(self) -> None:
        self.calls.append(("start", None))

    def stop(self, graceful: bool) -> None:
        self.calls.append(("stop", graceful))

    def set_peers(self, peers: Sequence[BgpPeer]) -> None:
        self.calls.append(("set_peers", tuple(peers)))

    def set_routes(self, routes: Iterable[Advertisement]) -> None:
        self.calls.append(("set_routes", tuple(sorted(routes, key=lambda r: r.prefix))))

    def sessions(self) -> dict[str, SessionState]:
        return dict(self.session_states)

    def stats(self) -> dict[str, int]:
        return dict(self.counters)


class Factory:
    def __init__(self) -> None:
        self.made: list[FakeSpeaker] = []

    def __call__(self) -> SpeakerLike:
        speaker = FakeSpeaker()
        self.made.append(speaker)
        return speaker


@pytest.fixture
def factory() -> Factory:
    return Factory()


@pytest.fixture
def announcer(factory: Factory) -> BgpAnnouncer:
    return BgpAnnouncer("n1", factory)


def test_no_peers_means_no_speaker(announcer: BgpAnnouncer, factory: Factory) -> None:
    assert announcer.update([], [ROUTE], {"default/web": ["203.0.113.5/32"]}) == []
    assert factory.made == []
    assert announcer.sessions() == {}
    assert announcer.stats() == {}


def test_lazy_start_on_first_peer_with_state_set_before_start(announcer: BgpAnnouncer, factory: Factory) -> None:
    announcer.update([], [ROUTE], {})
    announcer.update([PEER], [ROUTE], {})
    assert len(factory.made) == 1
    assert factory.made[0].calls == [("set_peers", (PEER,)), ("set_routes", (ROUTE,)), ("start", None)]


def test_no_calls_when_nothing_changed(announcer: BgpAnnouncer, factory: Factory) -> None:
    announcer.update([PEER], [ROUTE], {})
    speaker = factory.made[0]
    speaker.calls.clear()
    announcer.update([PEER], [ROUTE], {})
    # Duplicates of a route are merged first, so they are no change either.
    announcer.update([PEER], [ROUTE, ROUTE], {})
    assert speaker.calls == []
    assert len(factory.made) == 1


def test_only_what_changed_is_pushed(announcer: BgpAnnouncer, factory: Factory) -> None:
    announcer.update([PEER], [ROUTE], {})
    speaker = factory.made[0]
    speaker.calls.clear()
    announcer.update([PEER], [ROUTE, ROUTE_V6], {})
    assert speaker.calls == [("set_routes", (ROUTE_V6, ROUTE))]
    speaker.calls.clear()
    announcer.update([PEER, PEER2], [ROUTE, ROUTE_V6], {})
    assert speaker.calls == [("set_peers", (PEER, PEER2))]
    speaker.calls.clear()
    announcer.update([], [], {})
    assert speaker.calls == [("set_peers", ()), ("set_routes", ())]


def test_a_changed_password_is_a_peer_change(announcer: BgpAnnouncer, factory: Factory) -> None:
    with_pw = BgpPeer(peer_address="192.0.2.1", peer_asn=64501, my_asn=64500, password=SECRET)
    announcer.update([PEER], [], {})
    factory.made[0].calls.clear()
    announcer.update([with_pw], [], {})
    assert factory.made[0].calls == [("set_peers", (with_pw,))]


def test_newly_announced_services_are_reported_once(announcer: BgpAnnouncer) -> None:
    per = {"default/web": ["203.0.113.5/32"]}
    assert announcer.update([PEER, PEER2], [ROUTE], per) == [
        ("default/web", "announcing from node n1, bgp, peers 192.0.2.1, 192.0.2.2")
    ]
    assert announcer.update([PEER, PEER2], [ROUTE], per) == []
    both = {**per, "shop/api": ["203.0.113.5/32"]}
    assert [key for key, _ in announcer.update([PEER, PEER2], [ROUTE], both)] == ["shop/api"]
    # A Service that stops being announced is reported again when it comes back.
    assert announcer.update([PEER, PEER2], [ROUTE], {"shop/api": ["203.0.113.5/32"]}) == []
    assert [key for key, _ in announcer.update([PEER, PEER2], [ROUTE], both)] == ["default/web"]


def test_services_are_not_announced_without_a_peer_of_their_family(announcer: BgpAnnouncer) -> None:
    per = {"default/v6": ["2001:db8:5::7/128"], "default/dual": ["203.0.113.5/32", "2001:db8:5::7/128"]}
    assert announcer.update([PEER], [ROUTE, ROUTE_V6], per) == [
        ("default/dual", "announcing from node n1, bgp, peers 192.0.2.1")
    ]
    assert announcer.update([PEER, PEER6], [ROUTE, ROUTE_V6], per) == [
        ("default/v6", "announcing from node n1, bgp, peers 2001:db8::1")
    ]
    assert announcer.update([], [ROUTE, ROUTE_V6], per) == []


@pytest.mark.parametrize("graceful", [True, False])
def test_stop_passes_graceful_through(announcer: BgpAnnouncer, factory: Factory, graceful: bool) -> None:
    announcer.update([PEER], [ROUTE], {})
    announcer.stop(graceful)
    assert factory.made[0].calls[-1] == ("stop", graceful)
    assert announcer.sessions() == {}


def test_stop_without_a_speaker_is_a_no_op(announcer: BgpAnnouncer, factory: Factory) -> None:
    announcer.stop(False)
    assert factory.made == []


def test_update_after_stop_starts_a_new_speaker_and_reports_again(announcer: BgpAnnouncer, factory: Factory) -> None:
    per = {"default/web": ["203.0.113.5/32"]}
    assert len(announcer.update([PEER], [ROUTE], per)) == 1
    announcer.stop(True)
    assert len(announcer.update([PEER], [ROUTE], per)) == 1
    assert len(factory.made) == 2
    assert factory.made[1].calls == [("set_peers", (PEER,)), ("set_routes", (ROUTE,)), ("start", None)]


def test_sessions_and_stats_come_from_the_speaker(announcer: BgpAnnouncer, factory: Factory) -> None:
    announcer.update([PEER], [ROUTE], {})
    state = SessionState(peer="192.0.2.1", state="established", since=1.0)
    factory.made[0].session_states = {"192.0.2.1": state}
    factory.made[0].counters = {"updates_sent": 3}
    assert announcer.sessions() == {"192.0.2.1": state}
    assert announcer.stats() == {"updates_sent": 3}


def test_no_password_in_logs_or_messages(announcer: BgpAnnouncer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with_pw = BgpPeer(peer_address="192.0.2.9", peer_asn=64501, my_asn=64500, password=SECRET)
    events = announcer.update([with_pw], [ROUTE], {"default/web": ["203.0.113.5/32"]})
    announcer.update([PEER, with_pw], [ROUTE], {"default/web": ["203.0.113.5/32"]})
    assert events and "192.0.2.9" in events[0][1]
    assert "192.0.2.9" in caplog.text  # the peer is logged ...
    assert SECRET not in caplog.text  # ... its password is not
    assert SECRET not in repr(events)


# -- metrics -----------------------------------------------------------------------------------------


def sample(name: str, peer: str | None = None) -> float | None:
    return REGISTRY.get_sample_value(name, {"peer": peer} if peer else {})


def test_metrics_follow_sessions_prefixes_and_updates(factory: Factory) -> None:
    announcer = BgpAnnouncer("n1", factory)
    peer_a = BgpPeer(peer_address="198.51.100.201", peer_asn=64501, my_asn=64500)
    peer_b = BgpPeer(peer_address="198.51.100.202", peer_asn=64501, my_asn=64500)
    updates_before = sample("lbspeaker_speaker_bgp_updates_sent_total") or 0.0
    announcer.update([peer_a, peer_b], [ROUTE], {})
    speaker = factory.made[0]
    speaker.session_states = {
        "198.51.100.201": SessionState(peer="198.51.100.201", state="established", since=1.0),
        "198.51.100.202": SessionState(peer="198.51.100.202", state="connected", since=1.0),
    }
    speaker.counters = {"updates_sent": 4, "prefixes/198.51.100.201": 1, "prefixes/198.51.100.202": 0}
    announcer.refresh_metrics()
    assert sample("lbspeaker_speaker_bgp_session_up", "198.51.100.201") == 1.0
    assert sample("lbspeaker_speaker_bgp_session_up", "198.51.100.202") == 0.0
    assert sample("lbspeaker_speaker_bgp_announced_prefixes", "198.51.100.201") == 1.0
    assert sample("lbspeaker_speaker_bgp_updates_sent_total") == updates_before + 4

    speaker.counters = {"updates_sent": 6, "prefixes/198.51.100.201": 1}
    speaker.session_states.pop("198.51.100.202")
    announcer.update([peer_a], [ROUTE], {})
    announcer.refresh_metrics()
    assert sample("lbspeaker_speaker_bgp_updates_sent_total") == updates_before + 6
    assert sample("lbspeaker_speaker_bgp_session_up", "198.51.100.202") is None  # a removed peer's series goes

    speaker.counters = {"updates_sent": 7}  # the withdrawals of a non-graceful stop
    announcer.stop(False)
    assert sample("lbspeaker_speaker_bgp_updates_sent_total") == updates_before + 7
    assert sample("lbspeaker_speaker_bgp_session_up", "198.51.100.201") is None

    # A new speaker counts from zero again; its updates all add.
    announcer.update([peer_a], [ROUTE], {})
    factory.made[1].counters = {"updates_sent": 2}
    announcer.refresh_metrics()
    assert sample("lbspeaker_speaker_bgp_updates_sent_total") == updates_before + 9
    announcer.stop(True)


def test_refresh_metrics_without_a_speaker_changes_nothing(announcer: BgpAnnouncer) -> None:
    before = sample("lbspeaker_speaker_bgp_updates_sent_total")
    announcer.refresh_metrics()
    assert sample("lbspeaker_speaker_bgp_updates_sent_total") == before
