"""Tests of the liveness rules (lbspeaker.membership.tracker) with an injected clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbspeaker.membership.tracker import Liveness, parse_hostport

WALL = 1_700_000_000.0  # wall clock at monotonic 0 in these tests
DURATION = 15.0


class Cluster:
    """A tracker for node "me" plus helpers that play the Lease watch and the peers' heartbeats."""

    def __init__(self, *peers: str, warmup: float = 1.0) -> None:
        self.t = Liveness("me", now=0.0, warmup=warmup)
        self.seq: dict[str, int] = {}
        self.inc: dict[str, int] = {}
        for i, node in enumerate(("me", *peers)):
            self.lease(node, renewed=0.0, port=7000 + i)
        self.t.api_reachable(True, 0.0)

    def lease(self, node: str, renewed: float, now: float | None = None, port: int = 7472) -> None:
        """Lease of ``node`` last renewed at monotonic time ``renewed``, observed at ``now``."""
        now = renewed if now is None else now
        self.t.lease_update(node, node, WALL + renewed, DURATION, f"192.0.2.1:{port}", now=now, wall_now=WALL + now)

    def beat(self, node: str, now: float, **flags: bool | None) -> bool:
        self.seq[node] = self.seq.get(node, 0) + 1
        return self.t.heard(node, self.inc.get(node, 1), self.seq[node], now, **flags)  # type: ignore[arg-type]

    def beat_all(self, now: float, *nodes: str) -> None:
        for node in nodes:
            self.beat(node, now)


def warm(c: Cluster, *peers: str, until: float = 1.0, step: float = 0.1) -> float:
    """Heartbeats from ``peers`` every ``step`` from 0 to ``until``; returns the last time."""
    now = 0.0
    while now <= until + 1e-9:
        c.beat_all(now, *peers)
        now = round(now + step, 6)
    return round(now - step, 6)


def test_self_and_heartbeating_peers_are_alive() -> None:
    c = Cluster("a", "b")
    now = warm(c, "a", "b")
    assert c.t.alive(now) == {"me", "a", "b"}
    assert c.t.states(now) == {"me": "alive", "a": "alive", "b": "alive"}


def test_peer_that_stops_is_suspect_then_dead_while_others_still_beat() -> None:
    c = Cluster("a", "b")
    now = warm(c, "a", "b")
    last_a = now
    for _ in range(20):
        now = round(now + 0.1, 6)
        c.beat("b", now)
        age = now - last_a
        state = c.t.states(now)["a"]
        if age <= c.t.suspect_after:
            assert state == "alive"
        elif age <= c.t.dead_after:
            assert state == "suspect"
            assert "a" in c.t.alive(now)
        else:
            assert state == "silent"
            assert "a" not in c.t.alive(now)
    assert c.t.alive(now) == {"me", "b"}


def test_leaving_is_dead_at_once_and_late_datagrams_do_not_revive() -> None:
    c = Cluster("a", "b")
    now = warm(c, "a", "b")
    assert c.beat("a", now + 0.01, leaving=True)
    assert c.t.alive(now + 0.01) == {"me", "b"}
    assert c.t.states(now + 0.01)["a"] == "left"
    # The same process keeps sending (or datagrams arrive late): still gone.
    assert not c.beat("a", now + 0.02)
    assert "a" not in c.t.alive(now + 0.02)


def test_new_incarnation_is_a_restart_that_revives_and_resets_the_sequence() -> None:
    c = Cluster("a", "b")
    now = warm(c, "a", "b")
    c.beat("a", now, leaving=True)
    c.inc["a"] = 2
    c.seq["a"] = 0
    assert c.beat("a", now + 0.1, warming=True)
    assert c.t.states(now + 0.1)["a"] == "warming"
    assert "a" not in c.t.alive(now + 0.1)
    c.beat("a", now + 0.2)
    assert "a" in c.t.alive(now + 0.2)
    assert c.t.restarts()["a"] == 1


def test_duplicate_or_older_sequence_is_ignored() -> None:
    c = Cluster("a", "b")
    now = warm(c, "a", "b")
    # A delayed datagram with an old sequence number does not refresh the peer.
    top = c.seq["a"]
    assert not c.t.heard("a", 1, top - 3, now + 0.6)
    c.beat("b", now + 0.8)
    assert "a" not in c.t.alive(now + 0.8)


def test_deleted_lease_is_gone_at_once_despite_heartbeats() -> None:
    c = Cluster("a", "b")
    now = warm(c, "a", "b")
    c.t.lease_deleted("a")
    assert c.t.alive(now) == {"me", "b"}
    c.beat("a", now + 0.05)
    assert c.t.states(now + 0.05)["a"] == "no-lease"
    assert "a" not in c.t.peers()


def test_heartbeats_without_a_lease_never_make_a_node_alive() -> None:
    c = Cluster("a")
    now = warm(c, "a", "stranger")
    assert c.t.alive(now) == {"me", "a"}
    assert c.t.states(now)["stranger"] == "no-lease"


def test_released_lease_counts_as_none() -> None:
    c = Cluster("a", "b")
    now = warm(c, "a", "b")
    c.t.lease_update("a", None, None, DURATION, "192.0.2.1:7001", now=now, wall_now=WALL + now)
    assert "a" not in c.t.alive(now)
    c.t.lease_update("b", "b", None, DURATION, "192.0.2.1:7002", now=now, wall_now=WALL + now)
    assert "b" not in c.t.alive(now)


def test_warming_peer_is_not_alive() -> None:
    c = Cluster("a", "b")
    now = warm(c, "b")
    c.beat("a", now, warming=True)
    assert c.t.states(now)["a"] == "warming"
    assert c.t.alive(now) == {"me", "b"}


# ---- quiet fallback (we hear nobody) ----------------------------------------------------------


def test_quiet_falls_back_to_leases() -> None:
    c = Cluster("a", "b")
    now = warm(c, "a", "b")
    # Nobody is heard any more: we may be the broken one, so the Leases decide.
    later = now + 5.0
    assert c.t.quiet(later)
    assert c.t.alive(later) == {"me", "a", "b"}
    assert c.t.states(later)["a"] == "lease-only"
    # Once a Lease expires, its node is dead.
    c.lease("me", renewed=later)
    c.lease("b", renewed=later)
    assert c.t.alive(DURATION + 0.1) == {"me", "b"}
    assert c.t.states(DURATION + 0.1)["a"] == "expired"


@settings(max_examples=200)
@given(
    offsets=st.lists(st.floats(0.0, 0.2), min_size=1, max_size=6),
    probes=st.lists(st.floats(0.0, 10.0), min_size=1, max_size=30),
)
def test_losing_all_heartbeats_at_once_never_kills_a_peer(offsets: list[float], probes: list[float]) -> None:
    # Our receive path breaks at T: each peer was last heard somewhere in the interval before T.
    peers = [f"p{i}" for i in range(len(offsets))]
    c = Cluster(*peers)
    t_break = warm(c, *peers) + 0.2
    for peer, offset in zip(peers, offsets, strict=True):
        c.beat(peer, t_break - offset)
    for probe in sorted(probes):
        assert c.t.alive(t_break + probe) == {"me", *peers}


def test_single_node_is_alive_alone() -> None:
    t = Liveness("me", now=0.0)
    t.lease_update("me", "me", WALL, DURATION, None, now=0.0, wall_now=WALL)
    t.api_reachable(True, 0.0)
    assert t.warmed_up(0.0)
    assert t.alive(0.0) == {"me"}


# ---- API server unreachable ---------------------------------------------------------------------


def test_api_stale_heartbeats_are_the_authority() -> None:
    c = Cluster("a", "b")
    now = warm(c, "a", "b")
    c.t.api_reachable(False, now)
    # Long after every Lease expired: "a" keeps beating and stays, "b" stops and dies.
    now += DURATION * 3
    c.beat("a", now - 1.0)
    c.beat("b", now - 1.0)
    for step in range(1, 11):
        c.beat("a", now - 1.0 + step * 0.1)
    assert c.t.alive(now) == {"me", "a"}
    assert c.t.states(now)["b"] == "silent"


def test_heartbeat_is_authority_even_with_an_expired_lease_and_a_reachable_api() -> None:
    # Node "a" cannot reach the API (its Lease expires for everyone) but heartbeats fine: every
    # node must keep counting it, as "a" itself does, or both would announce its IPs.
    c = Cluster("a", "b")
    now = DURATION + 5
    c.lease("me", renewed=now)
    c.lease("b", renewed=now)
    warm(c, "a", "b", until=now)
    assert c.t.alive(now) == {"me", "a", "b"}


def test_api_stale_and_quiet_freezes_lease_times() -> None:
    c = Cluster("a", "b", "c")
    now = warm(c, "a", "b", "c")
    c.lease("c", renewed=-DURATION)  # "c" died long ago, its Lease was never deleted
    c.t.api_reachable(False, now)
    later = now + DURATION * 10
    assert c.t.quiet(later)
    assert c.t.alive(later) == {"me", "a", "b"}


def test_api_recovery_gives_leases_time_to_be_renewed() -> None:
    c = Cluster("a", "b")
    now = warm(c, "a", "b")
    c.t.api_reachable(False, now)
    back = now + 100.0
    c.t.api_reachable(True, back)
    # Relisted Leases still carry renewTimes from before the outage.
    for node in ("me", "a", "b"):
        c.lease(node, renewed=0.0, now=back)
    assert c.t.alive(back + 1.0) == {"me", "a", "b"}
    c.lease("me", renewed=back + 2.0)
    c.lease("a", renewed=back + 2.0)
    assert c.t.alive(back + DURATION + 0.5) == {"me", "a"}


def test_lease_from_a_clock_ahead_is_trusted_for_one_duration_at_most() -> None:
    t = Liveness("me", now=0.0, warmup=0.0)
    t.lease_update("me", "me", WALL, DURATION, None, now=0.0, wall_now=WALL)
    t.lease_update("a", "a", WALL + 3600, DURATION, None, now=0.0, wall_now=WALL)
    assert "a" in t.alive(DURATION - 0.1)
    t.lease_update("me", "me", WALL + DURATION, DURATION, None, now=DURATION, wall_now=WALL + DURATION)
    assert "a" not in t.alive(DURATION + 0.1)


# ---- ourselves ----------------------------------------------------------------------------------


def test_warm_up_ends_when_every_lease_holder_was_heard() -> None:
    c = Cluster("a", "b")
    c.beat("a", 0.1)
    assert not c.t.warmed_up(0.1)
    assert "me" not in c.t.alive(0.1)
    assert c.t.states(0.1)["me"] == "warming"
    c.beat("b", 0.15)
    assert c.t.warmed_up(0.15)
    assert "me" in c.t.alive(0.15)


def test_warm_up_ends_by_time_when_a_holder_is_silent() -> None:
    c = Cluster("a", "dead", warmup=1.0)
    now = 0.0
    while now < 1.0:
        c.beat("a", now)
        assert not c.t.warmed_up(now)
        now = round(now + 0.1, 6)
    c.beat("a", 1.0)
    assert c.t.warmed_up(1.0)
    assert c.t.alive(1.0) == {"me", "a"}


def test_warm_up_waits_for_the_lease_list() -> None:
    t = Liveness("me", now=0.0, warmup=1.0)
    t.lease_update("me", "me", WALL, DURATION, None, now=0.0, wall_now=WALL)
    # Not synced yet: an empty peer list proves nothing.
    assert not t.warmed_up(0.5)
    t.api_reachable(True, 0.6)
    assert t.warmed_up(0.6)


def test_self_without_lease_is_not_alive() -> None:
    t = Liveness("me", now=0.0, warmup=0.0)
    assert t.states(0.0)["me"] == "no-lease"
    assert t.alive(0.0) == frozenset()


def test_self_leaving_is_dead_for_good() -> None:
    c = Cluster("a")
    now = warm(c, "a")
    c.t.leave()
    assert c.t.alive(now) == {"a"}
    assert c.t.states(now)["me"] == "left"


def test_self_not_sending_is_dead() -> None:
    c = Cluster("a")
    now = warm(c, "a")
    c.t.sent(now)
    assert "me" in c.t.alive(now + 0.5)
    c.beat("a", now + 0.8)
    assert c.t.states(now + 0.8)["me"] == "not-sending"


def test_fenced_when_no_peer_hears_us() -> None:
    c = Cluster("a", "b")
    now = warm(c, "a", "b")
    c.beat("a", now, hears_us=False)
    c.beat("b", now, hears_us=True)
    assert "me" in c.t.alive(now)
    c.beat("b", now + 0.05, hears_us=False)
    assert c.t.states(now + 0.05)["me"] == "fenced"
    assert c.t.alive(now + 0.05) == {"a", "b"}
    c.beat("a", now + 0.1, hears_us=True)
    assert "me" in c.t.alive(now + 0.1)


def test_quiet_and_warming_peers_are_no_witnesses() -> None:
    c = Cluster("a", "b")
    now = warm(c, "a", "b")
    # "a" hears nobody, so it counts us by Lease: its heard-set says nothing.
    c.beat("a", now, hears_us=False, quiet=True)
    c.beat("b", now, hears_us=False, warming=True)
    assert "me" in c.t.alive(now)


def test_unverified_traffic_from_two_peers_while_quiet_means_we_are_the_odd_one_out() -> None:
    c = Cluster("a", "b")
    now = warm(c, "a", "b")
    # Our key (or clock) is wrong: peers' datagrams arrive but fail to verify, and nothing else does.
    later = now + 2.0
    c.t.unverified("a", later)
    assert c.t.quiet(later)
    assert "me" in c.t.alive(later)  # one peer alone could be the odd one
    c.t.unverified("b", later)
    assert c.t.states(later)["me"] == "unverified"
    assert "me" not in c.t.alive(later)
    # Once verification failures stop, the Lease fallback applies again.
    assert "me" in c.t.alive(later + 1.0)


def test_unverified_traffic_is_ignored_while_peers_are_heard() -> None:
    c = Cluster("a", "b", "c")
    now = warm(c, "a", "b")
    c.t.unverified("c", now)
    c.t.unverified("b", now)
    assert "me" in c.t.alive(now)


# ---- peers and addresses ------------------------------------------------------------------------


def test_peers_lists_other_lease_holders_with_addresses() -> None:
    c = Cluster("a", "b")
    c.t.lease_update("c", "c", WALL, DURATION, "[2001:db8::3]:7472", now=0.0, wall_now=WALL)
    c.t.lease_update("d", "d", WALL, DURATION, "not-an-address", now=0.0, wall_now=WALL)
    assert c.t.peers() == {"a": ("192.0.2.1", 7001), "b": ("192.0.2.1", 7002), "c": ("2001:db8::3", 7472)}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.1:7472", ("192.0.2.1", 7472)),
        ("[2001:DB8::1]:1", ("2001:db8::1", 1)),
        ("2001:db8::1:7472", None),
        ("[192.0.2.1]:7472", None),
        ("192.0.2.1", None),
        ("192.0.2.1:0", None),
        ("192.0.2.1:65536", None),
        ("host.example:7472", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_hostport(text: str | None, expected: tuple[str, int] | None) -> None:
    assert parse_hostport(text) == expected


def test_parameters_are_validated() -> None:
    with pytest.raises(ValueError):
        Liveness("me", now=0.0, suspect_after=0.8, dead_after=0.7)
    with pytest.raises(ValueError):
        Liveness("me", now=0.0, dead_after=0.7, quiet_after=0.7)


# ---- heard() change hint --------------------------------------------------------------------------

events = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]),
        st.floats(0.0, 1.0),  # time step
        st.integers(1, 3),  # incarnation
        st.integers(-2, 3),  # seq delta
        st.booleans(),  # leaving
        st.booleans(),  # warming
        st.booleans(),  # quiet
        st.sampled_from([None, True, False]),  # hears_us
    ),
    max_size=40,
)


@settings(max_examples=300)
@given(events=events, warmup=st.sampled_from([0.0, 1.0]))
def test_heard_returning_false_means_nothing_changed(
    events: list[tuple[str, float, int, int, bool, bool, bool, bool | None]], warmup: float
) -> None:
    c = Cluster("a", "b", "c", warmup=warmup)
    now = 0.0
    seqs = {"a": 0, "b": 0, "c": 0}
    for node, step, inc, delta, leaving, warming, quiet, hears in events:
        now += step
        seqs[node] = max(0, seqs[node] + delta)
        before = c.t.alive(now)
        changed = c.t.heard(node, inc, seqs[node], now, leaving=leaving, warming=warming, quiet=quiet, hears_us=hears)
        if not changed:
            assert c.t.alive(now) == before
