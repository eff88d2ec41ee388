"""Liveness of speakers from per-node Leases and UDP heartbeats: pure logic, clock injected.

Every method takes the current time (``now``, one monotonic clock) from the caller; nothing here
reads a clock, sleeps or does I/O, so all rules are tested with a fake clock. The methods are
thread-safe (one lock) because the heartbeat threads and the Kubernetes watch feed the same tracker.

Inputs
------
* Lease ``speaker-<node>`` (``lease_update`` / ``lease_deleted``, fed by the Kubernetes side,
  including our own Lease). A Lease with a holder and a renewTime is *held*; it is *current* while
  ``renewTime + leaseDurationSeconds`` is in the future. The wall-clock renewTime is converted once,
  at update time, into the monotonic clock (never trusted for more than one duration ahead).
  A deleted Lease removes the node at once. The Lease also carries the heartbeat address.
* Heartbeats (``heard``): authenticated, replay-checked by ``protocol``; each tells the sender's
  incarnation, whether it is LEAVING or still WARMING up, whether it is QUIET (hears nobody), and
  whether it hears us.
* ``api_reachable(False/True)``: whether our Lease data is current.

Rules for another node N
------------------------
1. No held Lease for N (never seen, released or deleted): dead ("no-lease").
2. N sent LEAVING in its current incarnation: dead ("left"), until a new incarnation is heard.
3. N's last heartbeat is fresh (within ``dead_after``): alive ("alive", or "suspect" once older than
   ``suspect_after``), unless it says WARMING ("warming": it does not announce yet, so nobody
   should hand it IPs).
4. Otherwise, if we are *quiet* (no heartbeat from anyone within ``quiet_after``): alive on the
   Lease alone if it is current ("lease-only"), else dead ("expired").
5. Otherwise dead ("silent"): heartbeats flow, just not from N, so N is gone.

Why heartbeats, not Leases, are the authority while they flow: Lease data goes stale when the API
server is unreachable, and reachability can differ from node to node. If an expired Lease killed a
node that is still heartbeating, a node cut off from the API would count itself alive while the
others count it dead, and both would announce its IPs. A heartbeat reaching every node gives every
node, the sender included, the same verdict. Leases still decide membership (deletion = gone, a node
without a Lease is never alive) and the quiet fallback.

Why the quiet fallback: if we hear nobody, either every peer died at once or our own network is
broken; we cannot tell which. Declaring everyone dead would make us announce every IP, a split
brain with the whole cluster if we are the broken one; falling back to Leases keeps our view equal to
everyone else's. ``quiet_after`` is shorter than ``dead_after``, so when our own receive path breaks
we turn quiet before any peer's heartbeat turns stale, and never declare a peer dead on the way.
The price: when *every* peer dies at once (in a two-node cluster: the other node), failover waits
for the Lease to expire. While the API is unreachable Lease times are frozen: Leases current when it
was lost count as current, the others as expired; after it comes back each Lease gets up to its
duration to be renewed before expiry counts again, so a recovering API does not expire everyone.

Rules for ourselves
-------------------
We are alive unless any of these holds:

* we are leaving (``leave()``) — checked first, so we stop announcing before peers take over;
* warm-up is not over: it ends once the Lease list has been synced (``api_reachable(True)``) and we
  have heard every other node with a current Lease, or ``warmup`` seconds after start. Taking IPs
  before hearing the peers would steal them from nodes we merely have not heard yet;
* we have no held Lease (peers would not count us), or we are quiet and our Lease is not current
  (quiet peers judge us by it);
* our heartbeats have not gone out for ``dead_after`` (``sent()`` is fed by the heartbeater), so
  peers are declaring us dead right now;
* fenced: every peer we hear (fresh, not warming, not quiet, reporting a heard-set) reports not
  hearing us. Our outbound heartbeats are lost, so peers count us dead and take our IPs; we must
  let go too. Quiet peers are ignored because they judge us by the Lease, not by hearing us;
* unverified: we are quiet, yet datagrams from the addresses of at least two peers fail
  authentication (``unverified``: wrong key, skewed clock). The network works, so those peers hear
  us no better than we hear them, and as they hear each other they count us dead: we must not
  keep announcing beside them. With a single such peer (a two-node cluster) we cannot tell which
  side is misconfigured; both sides are then quiet and fall back to Leases, which keeps their
  views equal, so nothing is done.

With these rules two nodes both own an IP only while their views differ, which lasts at most the
detection time (``dead_after`` plus one heartbeat and one check interval) in every case above; the
remaining gaps are a process frozen (SIGSTOP, swap) that resumes and answers ARP before it has
read its backlog, and asymmetric loss between a subset of peers.
"""

from __future__ import annotations

import ipaddress
import threading
from dataclasses import dataclass

__all__ = ["ALIVE_STATES", "Liveness", "parse_hostport"]

ALIVE_STATES = frozenset({"alive", "suspect", "lease-only"})


def parse_hostport(text: str | None) -> tuple[str, int] | None:
    """Parse ``192.0.2.1:7472`` or ``[2001:db8::1]:7472`` (IP literals only); None if invalid."""
    if not text:
        return None
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not port_text.isdigit():
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        wanted = 6
    else:
        wanted = 4
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return None
    port = int(port_text)
    if addr.version != wanted or not 0 < port < 65536:
        return None
    return str(addr), port


@dataclass(slots=True)
class _Lease:
    held: bool
    expires_at: float
    duration: float
    addr: tuple[str, int] | None


@dataclass(slots=True)
class _Peer:
    incarnation: int
    seq: int
    last_heard: float
    left: bool
    warming: bool
    quiet: bool
    hears_us: bool | None
    restarts: int = 0


class Liveness:
    """Which speakers are alive, by the rules in the module docstring."""

    def __init__(
        self,
        self_name: str,
        *,
        now: float,
        suspect_after: float = 0.3,
        dead_after: float = 0.7,
        quiet_after: float | None = None,
        warmup: float = 1.0,
    ) -> None:
        quiet_after = dead_after / 2 if quiet_after is None else quiet_after
        if not 0 < suspect_after <= dead_after:
            raise ValueError("need 0 < suspect_after <= dead_after")
        if not 0 < quiet_after < dead_after:
            raise ValueError("need 0 < quiet_after < dead_after, or a broken own network kills peers")
        if warmup < 0:
            raise ValueError("warmup must not be negative")
        self.self_name = self_name
        self.suspect_after = suspect_after
        self.dead_after = dead_after
        self.quiet_after = quiet_after
        self._lock = threading.RLock()
        self._leases: dict[str, _Lease] = {}
        self._peers: dict[str, _Peer] = {}
        self._started = now
        self._warmup = warmup
        self._warm = False
        self._synced = False
        self._leaving = False
        self._last_sent: float | None = None
        self._unverified: dict[str, float] = {}
        self._last_any: float | None = None
        self._stale_since: float | None = None
        self._recovered_at: float | None = None
        self._frozen_at: float | None = None

    # ---- inputs -------------------------------------------------------------------------------

    def heard(
        self,
        node: str,
        incarnation: int,
        seq: int,
        now: float,
        *,
        leaving: bool = False,
        warming: bool = False,
        quiet: bool = False,
        hears_us: bool | None = None,
    ) -> bool:
        """Record an accepted heartbeat. Returns True when the alive set may have changed.

        A heartbeat of an incarnation that already said LEAVING, or not newer than the last one of
        its incarnation (reordered or duplicated datagram), is ignored.
        """
        if node == self.self_name:
            return False
        with self._lock:
            peer = self._peers.get(node)
            if peer is not None and peer.incarnation == incarnation and (peer.left or seq <= peer.seq):
                return False
            quiet_before = self._is_quiet(now)
            self._last_any = now if self._last_any is None else max(self._last_any, now)
            if peer is None:
                self._peers[node] = _Peer(incarnation, seq, now, leaving, warming, quiet, hears_us)
                return True
            if peer.incarnation != incarnation:
                # A restart: whatever the old process said (even LEAVING) no longer applies.
                self._peers[node] = _Peer(
                    incarnation, seq, now, leaving, warming, quiet, hears_us, restarts=peer.restarts + 1
                )
                return True
            changed = (
                quiet_before
                or now - peer.last_heard > self.dead_after
                or (leaving, warming, quiet, hears_us) != (peer.left, peer.warming, peer.quiet, peer.hears_us)
            )
            peer.seq, peer.last_heard = seq, max(peer.last_heard, now)
            peer.left, peer.warming, peer.quiet, peer.hears_us = leaving, warming, quiet, hears_us
            return changed

    def lease_update(
        self,
        node: str,
        holder_identity: str | None,
        renew_time: float | None,
        duration: float,
        heartbeat_addr: str | None,
        *,
        now: float,
        wall_now: float,
    ) -> None:
        """Record the current state of Lease ``speaker-<node>``.

        ``renew_time`` is the Lease's renewTime as Unix seconds (None if unset), ``duration`` its
        leaseDurationSeconds, ``heartbeat_addr`` ``host:port`` of its speaker's heartbeat socket.
        ``now`` is the tracker clock and ``wall_now`` the wall clock at the same instant.
        """
        held = bool(holder_identity) and renew_time is not None and duration > 0
        remaining = 0.0
        if held and renew_time is not None:
            # Never trust a renewTime from a clock ahead of ours for more than one duration.
            remaining = min(renew_time + duration - wall_now, duration)
        with self._lock:
            self._leases[node] = _Lease(held, now + remaining, duration, parse_hostport(heartbeat_addr))

    def lease_deleted(self, node: str) -> None:
        """Lease ``speaker-<node>`` is gone: the node leaves at once, and so does its heartbeat state."""
        with self._lock:
            self._leases.pop(node, None)
            self._peers.pop(node, None)
            self._unverified.pop(node, None)

    def api_reachable(self, reachable: bool, now: float) -> None:
        """Tell whether Lease data is current: True after a successful list/watch, False on failure."""
        with self._lock:
            if reachable:
                self._synced = True
                if self._stale_since is not None:
                    self._recovered_at = now
                    self._frozen_at = self._stale_since
                    self._stale_since = None
            elif self._stale_since is None:
                self._stale_since = now

    def sent(self, now: float) -> None:
        """Our heartbeat went out (or there was nobody to send it to)."""
        with self._lock:
            self._last_sent = now

    def unverified(self, node: str, now: float) -> None:
        """A datagram from ``node``'s heartbeat address failed authentication (bad MAC, clock skew)."""
        if node == self.self_name:
            return
        with self._lock:
            self._unverified[node] = now

    def leave(self) -> None:
        """We are shutting down: stop counting ourselves alive, for good."""
        with self._lock:
            self._leaving = True

    # ---- outputs ------------------------------------------------------------------------------

    def alive(self, now: float) -> frozenset[str]:
        """The nodes alive at ``now``: the input of the per-IP election."""
        with self._lock:
            return frozenset(node for node, state in self._states(now).items() if state in ALIVE_STATES)

    def states(self, now: float) -> dict[str, str]:
        """Every known node (and ourselves) with a one-word state, for status output and metrics."""
        with self._lock:
            return self._states(now)

    def warmed_up(self, now: float) -> bool:
        """Whether our warm-up is over (it never restarts)."""
        with self._lock:
            return self._warmed_up(now)

    def quiet(self, now: float) -> bool:
        """Whether we hear no heartbeats from anyone (sent in our heartbeats as the QUIET flag)."""
        with self._lock:
            return self._is_quiet(now)

    def heard_recently(self, now: float) -> frozenset[str]:
        """Nodes whose heartbeat is fresh (sent in our heartbeats as the heard-set)."""
        with self._lock:
            return frozenset(node for node, peer in self._peers.items() if now - peer.last_heard <= self.dead_after)

    def peers(self) -> dict[str, tuple[str, int]]:
        """Heartbeat addresses of every other node with a Lease, expired or not (it may still be alive)."""
        with self._lock:
            return {
                node: lease.addr
                for node, lease in self._leases.items()
                if lease.addr is not None and node != self.self_name
            }

    def restarts(self) -> dict[str, int]:
        """How many incarnation changes have been seen per node."""
        with self._lock:
            return {node: peer.restarts for node, peer in self._peers.items()}

    # ---- rules --------------------------------------------------------------------------------

    def _is_quiet(self, now: float) -> bool:
        return self._last_any is None or now - self._last_any > self.quiet_after

    def _lease_current(self, lease: _Lease, now: float) -> bool:
        if not lease.held:
            return False
        if self._stale_since is not None:
            return lease.expires_at > self._stale_since
        if (
            self._recovered_at is not None
            and self._frozen_at is not None
            and now < self._recovered_at + lease.duration
            and lease.expires_at > self._frozen_at
        ):
            # Grace after the API comes back: a Lease current when it was lost gets one duration
            # to be renewed, as every speaker's renewals failed meanwhile.
            return True
        return lease.expires_at > now

    def _warmed_up(self, now: float) -> bool:
        if self._warm:
            return True
        if now - self._started >= self._warmup:
            self._warm = True
        elif self._synced:
            self._warm = all(
                (peer := self._peers.get(node)) is not None and now - peer.last_heard <= self.dead_after
                for node, lease in self._leases.items()
                if node != self.self_name and self._lease_current(lease, now)
            )
        return self._warm

    def _fenced(self, now: float) -> bool:
        witnesses = [
            peer.hears_us
            for peer in self._peers.values()
            if now - peer.last_heard <= self.dead_after
            and not peer.warming
            and not peer.left
            and not peer.quiet
            and peer.hears_us is not None
        ]
        return bool(witnesses) and not any(witnesses)

    def _self_state(self, now: float) -> str:
        if self._leaving:
            return "left"
        if not self._warmed_up(now):
            return "warming"
        lease = self._leases.get(self.self_name)
        if lease is None or not lease.held:
            return "no-lease"
        quiet = self._is_quiet(now)
        if quiet and not self._lease_current(lease, now):
            return "expired"
        if self._last_sent is not None and now - self._last_sent > self.dead_after:
            return "not-sending"
        if self._fenced(now):
            return "fenced"
        if quiet and sum(now - when <= self.dead_after for when in self._unverified.values()) >= 2:
            return "unverified"
        return "alive"

    def _node_state(self, node: str, now: float) -> str:
        lease = self._leases.get(node)
        if lease is None or not lease.held:
            return "no-lease"
        peer = self._peers.get(node)
        if peer is not None and peer.left:
            return "left"
        if peer is not None and now - peer.last_heard <= self.dead_after:
            if peer.warming:
                return "warming"
            return "suspect" if now - peer.last_heard > self.suspect_after else "alive"
        if self._is_quiet(now):
            return "lease-only" if self._lease_current(lease, now) else "expired"
        return "silent"

    def _states(self, now: float) -> dict[str, str]:
        result = {node: self._node_state(node, now) for node in self._leases.keys() | self._peers.keys()}
        result[self.self_name] = self._self_state(now)
        return result
