"""Thin adapter between the speaker's reconcile and the BGP layer: pushes ``speaker.bgp``'s results into a
``BgpSpeaker`` when they change, tells which Services newly started being announced, and keeps this
node's BGP Prometheus metrics.

The ``BgpSpeaker`` (and so ExaBGP) is created and started lazily, on the first update that has a peer:
a node of a layer2-only cluster never runs ExaBGP. The speaker is made by a factory so that tests can
inject a fake one.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from prometheus_client import Counter, Gauge

from lbspeaker.bgp import BgpSpeaker
from lbspeaker.bgp.model import Advertisement, BgpPeer, SessionState
from lbspeaker.bgp.routes import merge_routes

log = logging.getLogger(__name__)

SESSION_UP = Gauge("lbspeaker_speaker_bgp_session_up", "1 while the BGP session with the peer is established",
                   ["peer"])
PREFIXES_ANNOUNCED = Gauge("lbspeaker_speaker_bgp_announced_prefixes",
                           "Prefixes sent to the peer and not withdrawn since", ["peer"])
UPDATES_SENT = Counter("lbspeaker_speaker_bgp_updates_sent", "BGP UPDATE messages sent to peers")


class SpeakerLike(Protocol):
    """What the announcer uses of ``lbspeaker.bgp.BgpSpeaker``."""

    def start(self) -> None: ...

    def stop(self, graceful: bool) -> None: ...

    def set_peers(self, peers: Sequence[BgpPeer]) -> None: ...

    def set_routes(self, routes: Iterable[Advertisement]) -> None: ...

    def sessions(self) -> dict[str, SessionState]: ...

    def stats(self) -> dict[str, int]: ...


SpeakerFactory = Callable[[], SpeakerLike]


def speaker_factory(
    node_name: str,
    router_id: str | None,
    workdir: str | Path,
    on_session_change: Callable[[SessionState], None] | None = None,
) -> SpeakerFactory:
    """The production factory: a real ``BgpSpeaker`` (ExaBGP child) working in ``workdir``."""

    def make() -> SpeakerLike:
        return BgpSpeaker(node_name, router_id, workdir, on_session_change)

    return make


class BgpAnnouncer:
    """This node's BGP announcements, level-triggered: every ``update`` gives the complete desired state."""

    def __init__(self, node_name: str, factory: SpeakerFactory) -> None:
        self.node_name = node_name
        self._factory = factory
        self._lock = threading.Lock()
        self._speaker: SpeakerLike | None = None
        self._peers: tuple[BgpPeer, ...] = ()  # as last given to the speaker
        self._routes: dict[str, Advertisement] = {}  # as last given to the speaker, merged by prefix
        self._announced: set[str] = set()  # Service keys announced from this node
        self._metric_peers: set[str] = set()  # peer label values this announcer has set
        self._updates_seen = 0  # the speaker's updates_sent counter at the last refresh

    def update(
        self,
        peers: Sequence[BgpPeer],
        routes: Sequence[Advertisement],
        per_service: Mapping[str, Sequence[str]],
    ) -> list[tuple[str, str]]:
        """Make the speaker keep ``peers`` and announce ``routes``; calls it only for what changed.

        ``per_service`` maps Service keys to the prefixes announced for them (``speaker.bgp.node_routes``).
        Returns ``(service key, message)`` for each Service that newly started being announced from this
        node, i.e. that has a prefix of a family some peer carries; each is reported once until it stops
        being announced (or the announcer stops) and starts again.
        """
        wanted_peers = tuple(peers)
        wanted_routes = merge_routes(routes)
        with self._lock:
            if self._speaker is None:
                if wanted_peers:
                    speaker = self._factory()
                    # Peers and routes go in before start, so ExaBGP's first config already has them.
                    speaker.set_peers(wanted_peers)
                    speaker.set_routes(wanted_routes.values())
                    speaker.start()
                    self._speaker = speaker
                    self._peers, self._routes = wanted_peers, wanted_routes
                    log.info("BGP started with peers %s", _addresses(wanted_peers))
            else:
                if wanted_peers != self._peers:
                    self._speaker.set_peers(wanted_peers)
                    self._peers = wanted_peers
                    log.info("BGP peers now %s", _addresses(wanted_peers) or "none")
                if wanted_routes != self._routes:
                    self._speaker.set_routes(wanted_routes.values())
                    self._routes = wanted_routes
            current = self._announcing(per_service) if self._speaker is not None else {}
            new = sorted((key, message) for key, message in current.items() if key not in self._announced)
            self._announced = set(current)
        return new

    def _announcing(self, per_service: Mapping[str, Sequence[str]]) -> dict[str, str]:
        out: dict[str, str] = {}
        for key, prefixes in per_service.items():
            families = {ipaddress.ip_network(p, strict=False).version for p in prefixes}
            carriers = [p for p in self._peers if p.family in families]
            if carriers:
                out[key] = f"announcing from node {self.node_name}, bgp, peers {_addresses(carriers)}"
        return out

    def stop(self, graceful: bool) -> None:
        """Stop the BGP speaker (see ``BgpSpeaker.stop`` for ``graceful``); a later update with peers
        starts a new one."""
        with self._lock:
            speaker, self._speaker = self._speaker, None
            if speaker is None:
                return
            speaker.stop(graceful)
            self._count_updates(speaker.stats())  # the withdrawals of a non-graceful stop count too
            self._updates_seen = 0
            self._peers, self._routes, self._announced = (), {}, set()
            for peer in self._metric_peers:
                with contextlib.suppress(KeyError):
                    SESSION_UP.remove(peer)
                with contextlib.suppress(KeyError):
                    PREFIXES_ANNOUNCED.remove(peer)
            self._metric_peers = set()

    def sessions(self) -> dict[str, SessionState]:
        """Session state per peer address; empty while BGP is not running."""
        speaker = self._speaker
        return speaker.sessions() if speaker is not None else {}

    def stats(self) -> dict[str, int]:
        """The BGP speaker's counters (see ``BgpSpeaker.stats``); empty while BGP is not running."""
        speaker = self._speaker
        return speaker.stats() if speaker is not None else {}

    def refresh_metrics(self) -> None:
        """Bring the BGP metrics up to date with the speaker (call it on each reconcile or before a scrape)."""
        with self._lock:
            speaker = self._speaker
            if speaker is None:
                return
            sessions = speaker.sessions()
            stats = speaker.stats()
            peers = {p.peer_address for p in self._peers} | set(sessions)
            for peer in sorted(peers):
                state = sessions.get(peer)
                SESSION_UP.labels(peer).set(1 if state is not None and state.established else 0)
                PREFIXES_ANNOUNCED.labels(peer).set(stats.get(f"prefixes/{peer}", 0))
            for gone in self._metric_peers - peers:
                with contextlib.suppress(KeyError):
                    SESSION_UP.remove(gone)
                with contextlib.suppress(KeyError):
                    PREFIXES_ANNOUNCED.remove(gone)
            self._metric_peers = peers
            self._count_updates(stats)

    def _count_updates(self, stats: Mapping[str, int]) -> None:
        sent = stats.get("updates_sent", 0)
        # A smaller value than last time means a new count (a fresh speaker): all of it is new.
        UPDATES_SENT.inc(sent - self._updates_seen if sent >= self._updates_seen else sent)
        self._updates_seen = sent


def _addresses(peers: Iterable[BgpPeer]) -> str:
    return ", ".join(p.peer_address for p in peers)
