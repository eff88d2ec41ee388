"""BGP announcements through a supervised ExaBGP child process.

``BgpSpeaker`` is the facade the speaker uses: give it the peers this node must have and the routes
it must announce (both level-triggered: each call replaces the previous set); it keeps ExaBGP
running, its sessions configured, and every session announcing the routes of its address family.

Modules: ``model`` (data), ``routes`` (desired routes, diffing), ``commands`` (API command lines),
``config_render`` (ExaBGP config and env), ``messages`` (ExaBGP's JSON), ``supervisor`` (the ExaBGP
process, reloads, replay), ``api_link`` (the relay's socket), ``relay`` / ``launch`` (tiny helper
programs ExaBGP and the supervisor run), ``exabgp_main`` (ExaBGP plus the keepalive-time setting),
``addressing`` (local address towards a peer), ``workdir`` (one speaker per work directory).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from lbspeaker.bgp.addressing import local_address_for
from lbspeaker.bgp.model import Advertisement, AdvSpec, BgpPeer, PeerId, ResolvedPeer, SessionState
from lbspeaker.bgp.routes import merge_routes, routes_for, routes_for_peer
from lbspeaker.bgp.supervisor import Supervisor
from lbspeaker.bgp.workdir import WorkdirBusy, lock_workdir

__all__ = [
    "AdvSpec",
    "Advertisement",
    "BgpPeer",
    "BgpSpeaker",
    "SessionState",
    "WorkdirBusy",
    "lock_workdir",
    "routes_for",
]

log = logging.getLogger(__name__)


class BgpSpeaker:
    """This node's BGP sessions and announcements.

    ``on_session_change`` is called from the supervisor thread with each new ``SessionState``;
    it must return quickly. Next hop of every route is the local address of its session.
    """

    def __init__(
        self,
        node_name: str,
        router_id: str | None,
        workdir: str | Path,
        on_session_change: Callable[[SessionState], None] | None = None,
        *,
        graceful_restart_time: int = 120,
        exabgp_argv: Sequence[str] | None = None,
        resolve_local_address: Callable[[BgpPeer], str] = local_address_for,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
    ) -> None:
        self.node_name = node_name
        self.router_id = router_id
        self._resolve = resolve_local_address
        self._lock = threading.Lock()
        self._resolved: list[ResolvedPeer] = []
        self._unresolved: dict[str, SessionState] = {}
        self._routes: dict[str, Advertisement] = {}
        self._supervisor = Supervisor(
            workdir,
            node_name=node_name,
            graceful_restart_time=graceful_restart_time,
            on_session_change=on_session_change,
            exabgp_argv=exabgp_argv,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
        )

    def start(self) -> None:
        """Start supervising ExaBGP; ``WorkdirBusy`` when another speaker uses the work directory."""
        self._supervisor.start()

    def stop(self, graceful: bool) -> None:
        """Stop announcing. ``graceful``: leave the routes to the routers' graceful restart (they keep
        them as stale for the restart time, for a restart or upgrade); otherwise withdraw them first."""
        self._supervisor.stop(graceful)

    def set_peers(self, peers: Sequence[BgpPeer]) -> None:
        """The complete list of peers this node must have (replaces the previous one).

        A peer listed twice keeps its first entry. A peer without a route to it is left out until a
        later call finds one; ``sessions`` shows it idle with the reason.
        """
        resolved: list[ResolvedPeer] = []
        unresolved: dict[str, SessionState] = {}
        seen: set[str] = set()
        for peer in peers:
            if peer.peer_address in seen:
                log.error("BGP peer %s is listed twice; using the first entry", peer.peer_address)
                continue
            seen.add(peer.peer_address)
            reason = ""
            local = ""
            try:
                local = self._resolve(peer)
            except OSError as exc:
                reason = f"no local address towards the peer: {exc.strerror or exc}"
            # Without a node-wide router id, an IPv4 session uses its own local address.
            router_id = peer.router_id or self.router_id or (local if local and peer.family == 4 else None)
            if router_id is None and not reason:
                reason = "no router id: give the node one or set router-id on this IPv6 peer"
            if reason:
                unresolved[peer.peer_address] = SessionState(
                    peer=peer.peer_address, state="idle", since=time.time(), reason=reason
                )
                continue
            assert router_id is not None
            resolved.append(ResolvedPeer(peer=peer, local_address=local, router_id=router_id))
        with self._lock:
            for address, state in unresolved.items():
                before = self._unresolved.get(address)
                if before is None or before.reason != state.reason:
                    # Logged on change only: the caller sets the peers on every reconcile.
                    log.warning("BGP peer %s left out: %s", address, state.reason)
                else:
                    unresolved[address] = before  # keeps the first "since"
            self._resolved = resolved
            self._unresolved = unresolved
            self._push()

    def set_routes(self, routes: Iterable[Advertisement]) -> None:
        """Every route this node announces (replaces the previous set); same prefixes are merged."""
        merged = merge_routes(routes)
        with self._lock:
            self._routes = merged
            self._push()

    def _push(self) -> None:
        desired: dict[PeerId, dict[str, Advertisement]] = {
            r.id: routes_for_peer(r.peer, self._routes) for r in self._resolved
        }
        self._supervisor.update(self._resolved, desired)

    def sessions(self) -> dict[str, SessionState]:
        """Session state per peer address."""
        with self._lock:
            out = dict(self._unresolved)
        out.update(self._supervisor.sessions())
        return out

    def stats(self) -> dict[str, int]:
        """Counters and, per peer, ``prefixes/<peer address>``: the prefixes ExaBGP sent it and has not
        withdrawn since (reported by ExaBGP per UPDATE, so it is what went on the wire).

        Counters: ``updates_sent`` (UPDATE messages), ``routes_announced`` / ``routes_withdrawn``
        (route changes handed to ExaBGP), ``commands_sent``, ``commands_acked``, ``command_errors``,
        ``sessions_established``, ``exabgp_starts``, ``exabgp_exits``, ``reloads``, ``reload_signals``
        (SIGUSR1 sent, retries included), ``reload_failures``, ``reload_timeouts``. A counter that
        never moved may be absent."""
        return self._supervisor.stats()

    def exabgp_pid(self) -> int | None:
        return self._supervisor.exabgp_pid()
