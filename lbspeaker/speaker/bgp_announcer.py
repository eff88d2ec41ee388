"""Thin adapter between the speaker's reconcile and the BGP and BFD layers: pushes ``speaker.bgp``'s results
into a ``BgpSpeaker`` and a ``BfdDaemon`` when they change, tells which Services newly started being
announced, and keeps this node's BGP and BFD Prometheus metrics.

The ``BgpSpeaker`` (and so ExaBGP) is created and started lazily, on the first update that has a peer:
a node of a layer2-only cluster never runs ExaBGP. Likewise the BFD process starts with the first peer
that has a bfd-profile. Both are made by factories so that tests can inject fakes.

BFD states reach the metrics as they happen (from the BFD daemon's thread), and ``lease_annotations``
gives them to the speaker's Lease (``lbspeaker.io/bfd``, see ``speaker.bgp.format_bfd_annotation``),
where ``lbspeaker status`` reads them.
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

from lbspeaker.bfd import BfdDaemon, SessionKey, SessionSpec, SessionStatus
from lbspeaker.bgp import BgpSpeaker, lock_workdir
from lbspeaker.bgp.model import Advertisement, BgpPeer, SessionState
from lbspeaker.bgp.routes import merge_routes
from lbspeaker.speaker.lease import BFD_ANNOTATION

log = logging.getLogger(__name__)

SESSION_UP = Gauge("lbspeaker_speaker_bgp_session_up", "1 while the BGP session with the peer is established",
                   ["peer"])
PREFIXES_ANNOUNCED = Gauge("lbspeaker_speaker_bgp_announced_prefixes",
                           "Prefixes sent to the peer and not withdrawn since", ["peer"])
UPDATES_SENT = Counter("lbspeaker_speaker_bgp_updates_sent", "BGP UPDATE messages sent to peers")
BFD_SESSION_UP = Gauge("lbspeaker_speaker_bfd_session_up", "1 while the BFD session with the peer is Up", ["peer"])
BFD_SESSION_DOWNS = Counter("lbspeaker_speaker_bfd_session_downs",
                            "Times the BFD session with the peer went from Up to Down", ["peer"])
BFD_PACKETS_DROPPED = Counter("lbspeaker_speaker_bfd_packets_dropped",
                              "Received BFD packets dropped, by reason (ttl, address, no_session, malformed ...)",
                              ["reason"])


class SpeakerLike(Protocol):
    """What the announcer uses of ``lbspeaker.bgp.BgpSpeaker``."""

    def start(self) -> None: ...

    def stop(self, graceful: bool) -> None: ...

    def set_peers(self, peers: Sequence[BgpPeer]) -> None: ...

    def set_routes(self, routes: Iterable[Advertisement]) -> None: ...

    def sessions(self) -> dict[str, SessionState]: ...

    def stats(self) -> dict[str, int]: ...


SpeakerFactory = Callable[[], SpeakerLike]


class BfdLike(Protocol):
    """What the announcer uses of ``lbspeaker.bfd.BfdDaemon``."""

    def set_sessions(self, specs: Sequence[SessionSpec]) -> None: ...

    def sessions(self) -> dict[SessionKey, SessionStatus]: ...

    def stats(self) -> dict[str, int]: ...

    def stop(self) -> None: ...


BfdFactory = Callable[[Callable[[SessionStatus], None]], BfdLike]


def bfd_daemon(on_change: Callable[[SessionStatus], None]) -> BfdLike:
    """The production BFD factory: the ``python -m lbspeaker.bfd`` process."""
    return BfdDaemon(on_change)


def format_bfd_annotation(sessions: Mapping[SessionKey, SessionStatus]) -> str:
    """``peer=state`` per BFD session, sorted (``192.0.2.1=up,2001:db8::1=down``): the Lease annotation
    ``speaker.lease.BFD_ANNOTATION`` (read back with ``speaker.lease.parse_bfd_annotation``)."""
    return ",".join(f"{key.peer}={status.state}" for key, status in sorted(sessions.items()))


def speaker_factory(
    node_name: str,
    router_id: str | None,
    workdir: str | Path,
    on_session_change: Callable[[SessionState], None] | None = None,
) -> SpeakerFactory:
    """The production factory: a real ``BgpSpeaker`` (ExaBGP child) working in ``workdir``.

    It takes the work directory's lock first (``lbspeaker.bgp.workdir``): ``WorkdirBusy`` when another
    speaker works there, before anything is made.
    """

    def make() -> SpeakerLike:
        lock_workdir(workdir)
        return BgpSpeaker(node_name, router_id, workdir, on_session_change)

    return make


class BgpAnnouncer:
    """This node's BGP announcements, level-triggered: every ``update`` gives the complete desired state."""

    def __init__(self, node_name: str, factory: SpeakerFactory, bfd_factory: BfdFactory = bfd_daemon) -> None:
        self.node_name = node_name
        self._factory = factory
        self._bfd_factory = bfd_factory
        self._bfd: BfdLike | None = None
        self._bfd_specs: tuple[SessionSpec, ...] = ()
        self._bfd_up: dict[str, bool] = {}  # peer -> last Up state seen, for the metrics
        self._bfd_dropped_seen: dict[str, int] = {}
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

    def set_bfd(self, specs: Sequence[SessionSpec]) -> None:
        """The BFD sessions this node runs (replaces the previous set); starts the BFD process once needed."""
        wanted = tuple(sorted(specs, key=lambda s: s.key))
        with self._lock:
            if wanted == self._bfd_specs:
                return
            self._bfd_specs = wanted
            if self._bfd is None:
                if not wanted:
                    return
                self._bfd = self._bfd_factory(self._on_bfd)
                log.info("BFD started for %s", ", ".join(s.key.peer for s in wanted))
            bfd = self._bfd
            peers = {s.key.peer for s in wanted}
            for gone in [p for p in self._bfd_up if p not in peers]:
                del self._bfd_up[gone]
                with contextlib.suppress(KeyError):
                    BFD_SESSION_UP.remove(gone)
        bfd.set_sessions(wanted)

    def bfd_sessions(self) -> dict[SessionKey, SessionStatus]:
        """BFD state per session; empty while BFD is not running."""
        bfd = self._bfd
        return bfd.sessions() if bfd is not None else {}

    def lease_annotations(self) -> dict[str, str]:
        """What this node publishes on its speaker Lease about BGP: the BFD session states."""
        sessions = self.bfd_sessions()
        return {BFD_ANNOTATION: format_bfd_annotation(sessions)} if sessions else {}

    def _on_bfd(self, status: SessionStatus) -> None:
        """A BFD state change (from the BFD daemon's thread): the metrics follow at once."""
        peer = status.key.peer
        up = status.state == "up"
        with self._lock:
            if not any(s.key == status.key for s in self._bfd_specs):
                return
            was = self._bfd_up.get(peer, False)
            self._bfd_up[peer] = up
        BFD_SESSION_UP.labels(peer).set(1 if up else 0)
        if was and not up:
            BFD_SESSION_DOWNS.labels(peer).inc()

    def stop(self, graceful: bool) -> None:
        """Stop the BGP speaker (see ``BgpSpeaker.stop`` for ``graceful``) and the BFD process (its
        sessions go silent either way: "BFD Down wins", see ``lbspeaker.bfd.__main__``); a later update
        with peers starts new ones."""
        with self._lock:
            bfd, self._bfd = self._bfd, None
            self._bfd_specs = ()
            for peer in self._bfd_up:
                with contextlib.suppress(KeyError):
                    BFD_SESSION_UP.remove(peer)
            self._bfd_up = {}
        if bfd is not None:
            bfd.stop()
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
            bfd = self._bfd
        if bfd is not None:
            self._count_bfd_drops(bfd.stats())

    def _count_bfd_drops(self, stats: Mapping[str, int]) -> None:
        for name, value in stats.items():
            if not name.startswith("dropped_"):
                continue
            reason = name.removeprefix("dropped_")
            seen = self._bfd_dropped_seen.get(reason, 0)
            # Smaller than last time: a restarted BFD process counts from zero again.
            BFD_PACKETS_DROPPED.labels(reason).inc(value - seen if value >= seen else value)
            self._bfd_dropped_seen[reason] = value

    def _count_updates(self, stats: Mapping[str, int]) -> None:
        sent = stats.get("updates_sent", 0)
        # A smaller value than last time means a new count (a fresh speaker): all of it is new.
        UPDATES_SENT.inc(sent - self._updates_seen if sent >= self._updates_seen else sent)
        self._updates_seen = sent


def _addresses(peers: Iterable[BgpPeer]) -> str:
    return ", ".join(p.peer_address for p in peers)
