"""The seam between the speaker's reconcile loop and the protocols that announce (layer2, BGP).

Each pass the loop hands every protocol a ``Snapshot`` (what the caches and membership say now, as typed
views) and the ``Changes`` since the last pass; the protocol computes what this node should announce
from them (pure code) and applies it (its announcer). A protocol must never block on the network or
the API server inside ``reconcile``: everything it may read is in the snapshot.

Cost: building a snapshot is O(1): it holds the loop's own view tables, which the loop updates key by
key as the informers report changes, and which protocols must treat as read-only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from lbspeaker.config import Config
from lbspeaker.objects import JSON, NodeView, ServiceView
from lbspeaker.speaker.lease import Link


@dataclass(frozen=True)
class Snapshot:
    """Every input of one reconcile pass."""

    node: str  # this node's name
    config: Config | None  # the configuration in force (the last good one), None before the first
    nodes: Mapping[str, NodeView]  # Node name -> view
    services: Mapping[str, ServiceView]  # "ns/name" -> view: our LoadBalancer Services that have IPs
    links: Mapping[str, Link]  # node -> its published data path (ours: what is true right now)
    alive: frozenset[str]  # layer2 members counted alive, ourselves included while we may announce
    secrets: Mapping[str, Mapping[str, str]]  # Secret name -> key -> text, Secrets of our namespace
    raw_service: Callable[[str], JSON | None] = lambda _key: None  # the cached object, for Events
    config_map: JSON | None = None  # the main config ConfigMap, for Events about the configuration

    @property
    def own(self) -> NodeView | None:
        return self.nodes.get(self.node)


@dataclass(frozen=True)
class Changes:
    """What changed since the last pass; ``everything`` when the loop cannot say more precisely."""

    everything: bool = False  # config changed, first pass, or a rebuild
    services: frozenset[str] = frozenset()  # Service keys whose view changed, appeared or went
    nodes: frozenset[str] = frozenset()  # nodes whose view or published link changed
    liveness: frozenset[str] = frozenset()  # nodes that became alive or stopped being alive
    secrets: bool = False  # some Secret of the namespace changed
    extra: frozenset[str] = field(default_factory=frozenset)  # protocol-specific wake-ups (timers)

    @property
    def empty(self) -> bool:
        return not (self.everything or self.services or self.nodes or self.liveness or self.secrets or self.extra)


class AnnouncingProtocol(Protocol):
    """What the loop calls on layer2 and BGP."""

    name: str

    def reconcile(self, snap: Snapshot, changes: Changes) -> None:
        """Converge what this node announces to ``snap``; never raises, never blocks on I/O."""

    def stop(self, graceful: bool) -> None:
        """Stop announcing (graceful: as a planned restart would, e.g. BGP leaves routes to graceful restart)."""
