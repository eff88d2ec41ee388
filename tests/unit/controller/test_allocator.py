"""Rule-by-rule tests of controller.allocator: precedence, sharing, families, keeping, adoption, failures."""

from __future__ import annotations

from typing import Any

import pytest

from controller.allocator import (
    FAILURE_REASONS,
    AllocationFailure,
    Allocator,
    Assignment,
    PoolSpec,
    PoolUsage,
    compatible,
)
from controller.service import ServiceRequest
from lbspeaker.ipset import IPSet


def pool(name: str, *ranges: str, auto: bool = True, buggy: bool = False) -> PoolSpec:
    return PoolSpec(name=name, ipset=IPSet.from_ranges(ranges), auto_assign=auto, avoid_buggy_ips=buggy)


def req(name: str, **kw: Any) -> ServiceRequest:
    return ServiceRequest(key=f"ns/{name}", **kw)


def ok(result: Assignment | AllocationFailure) -> Assignment:
    assert isinstance(result, Assignment), result
    return result


def failed(result: Assignment | AllocationFailure, reason: str) -> AllocationFailure:
    assert isinstance(result, AllocationFailure), result
    assert result.reason == reason, result
    assert result.reason in FAILURE_REASONS
    return result


def shared(name: str, *ports: int, key: str = "k", **kw: Any) -> ServiceRequest:
    return req(name, sharing_key=key, ports=frozenset(("TCP", p) for p in ports), **kw)


# --- where addresses come from ----------------------------------------------------------------------


def test_auto_assign_pools_in_config_order_lowest_first() -> None:
    a = Allocator(
        [pool("manual", "192.0.2.0/30", auto=False), pool("b", "192.0.2.10-192.0.2.11"), pool("c", "192.0.2.20")]
    )
    assert ok(a.assign(req("s1"))) == Assignment("ns/s1", ("192.0.2.10",), "b", changed=True, reason=None)
    assert ok(a.assign(req("s2"))).ips == ("192.0.2.11",)
    s3 = ok(a.assign(req("s3")))
    assert (s3.ips, s3.pool) == (("192.0.2.20",), "c")
    failed(a.assign(req("s4")), "pool-exhausted")


def test_release_then_reuse_lowest() -> None:
    a = Allocator([pool("p", "192.0.2.1-192.0.2.5")])
    for i in range(4):
        ok(a.assign(req(f"s{i}")))
    a.release("ns/s1")
    a.release("ns/s2")
    assert a.assignment("ns/s1") is None
    assert a.holders("192.0.2.2") == ()
    assert ok(a.assign(req("new"))).ips == ("192.0.2.2",)
    assert ok(a.assign(req("newer"))).ips == ("192.0.2.3",)
    assert ok(a.assign(req("newest"))).ips == ("192.0.2.5",)
    a.release("ns/unknown")  # releasing what is not held is harmless


def test_pool_annotation_beats_auto_assign_and_may_name_a_manual_pool() -> None:
    a = Allocator([pool("auto", "192.0.2.1"), pool("manual", "192.0.2.100", auto=False)])
    got = ok(a.assign(req("s", pool="manual")))
    assert (got.ips, got.pool) == (("192.0.2.100",), "manual")
    failed(a.assign(req("t", pool="manual")), "pool-exhausted")
    assert ok(a.assign(req("u"))).ips == ("192.0.2.1",)


def test_requested_ip_beats_everything_and_may_be_in_a_manual_pool() -> None:
    a = Allocator([pool("auto", "192.0.2.1-192.0.2.9"), pool("manual", "198.51.100.0/24", auto=False)])
    got = ok(a.assign(req("s", requested_ips=("198.51.100.77",))))
    assert (got.ips, got.pool) == (("198.51.100.77",), "manual")
    assert ok(a.assign(req("t", requested_ips=("192.0.2.5",)))).ips == ("192.0.2.5",)
    assert ok(a.assign(req("u"))).ips == ("192.0.2.1",)
    # Requested IP and pool annotation together: the IP must lie in that pool.
    assert ok(a.assign(req("v", requested_ips=("198.51.100.8",), pool="manual"))).pool == "manual"


def test_requested_ip_outside_pools() -> None:
    a = Allocator([pool("auto", "192.0.2.0/28"), pool("manual", "198.51.100.0/24", auto=False)])
    f = failed(a.assign(req("s", requested_ips=("198.51.100.7",), pool="auto")), "not-in-pool")
    assert "198.51.100.7" in f.message and "pool auto" in f.message
    f = failed(a.assign(req("t", requested_ips=("203.0.113.1",))), "not-in-pool")
    assert "203.0.113.1" in f.message
    failed(a.assign(req("u", requested_ips=("192.0.2.1",), pool="nope")), "unknown-pool")
    assert a.assignment("ns/s") is None and a.assignment("ns/t") is None


def test_requested_ips_must_come_from_one_pool() -> None:
    a = Allocator([pool("v4", "192.0.2.0/28"), pool("v6", "2001:db8::/120")])
    r = req("s", families=(4, 6), family_policy="RequireDualStack", requested_ips=("192.0.2.1", "2001:db8::1"))
    assert "different pools" in failed(a.assign(r), "not-in-pool").message


def test_avoid_buggy_ips_skips_dot_zero_and_dot_255() -> None:
    a = Allocator([pool("p", "192.0.2.254-192.0.3.1", buggy=True)])
    assert ok(a.assign(req("s1"))).ips == ("192.0.2.254",)
    assert ok(a.assign(req("s2"))).ips == ("192.0.3.1",)
    failed(a.assign(req("s3")), "pool-exhausted")
    f = failed(a.assign(req("s4", requested_ips=("192.0.2.255",))), "not-in-pool")
    assert "avoids buggy" in f.message
    # Without the flag the same range hands them out in order.
    b = Allocator([pool("p", "192.0.2.254-192.0.3.1")])
    assert [ok(b.assign(req(f"s{i}"))).ips[0] for i in range(4)] == [
        "192.0.2.254",
        "192.0.2.255",
        "192.0.3.0",
        "192.0.3.1",
    ]


def test_avoid_buggy_does_not_touch_ipv6() -> None:
    a = Allocator([pool("p", "2001:db8::ff-2001:db8::100", buggy=True)])
    assert ok(a.assign(req("s", families=(6,)))).ips == ("2001:db8::ff",)


def test_a_64_pool_allocates_in_order() -> None:
    a = Allocator([pool("big", "2001:db8::/64"), pool("v4", "192.0.2.0/24")])
    ips = [ok(a.assign(req(f"s{i}", families=(6,)))).ips[0] for i in range(300)]
    assert ips[0] == "2001:db8::" and ips[-1] == "2001:db8::12b"
    a.release("ns/s7")
    assert ok(a.assign(req("again", families=(6,)))).ips == ("2001:db8::7",)
    r = ok(a.assign(req("top", families=(6,), requested_ips=("2001:db8::ffff:ffff:ffff:ffff",))))
    assert r.pool == "big"
    usage = {(u.pool, u.family): u for u in a.usage()}
    assert usage["big", 6] == PoolUsage("big", 6, 1 << 64, 301)


# --- failures ----------------------------------------------------------------------------------------


def test_no_pools() -> None:
    failed(Allocator().assign(req("s")), "no-pools")
    failed(Allocator().assign(req("s", requested_ips=("192.0.2.1",))), "no-pools")
    f = failed(Allocator([pool("m", "192.0.2.0/28", auto=False)]).assign(req("s")), "no-pools")
    assert "auto-assign" in f.message


def test_unknown_pool() -> None:
    f = failed(Allocator([pool("p", "192.0.2.0/28")]).assign(req("s", pool="gold")), "unknown-pool")
    assert "'gold'" in f.message


def test_ip_in_use_names_the_holder() -> None:
    a = Allocator([pool("p", "192.0.2.0/28")])
    ok(a.assign(req("first", requested_ips=("192.0.2.3",))))
    f = failed(a.assign(req("second", requested_ips=("192.0.2.3",))), "ip-in-use")
    assert "ns/first" in f.message and "192.0.2.3" in f.message
    assert a.holders("192.0.2.3") == ("ns/first",)


def test_bad_requested_ips_reaching_the_allocator() -> None:
    a = Allocator([pool("p", "192.0.2.0/28")])
    failed(a.assign(req("s", requested_ips=("nope",))), "bad-annotation")
    r = req("t", families=(4, 6), family_policy="PreferDualStack", requested_ips=("192.0.2.1", "192.0.2.2"))
    failed(a.assign(r), "bad-annotation")


def test_family_unavailable() -> None:
    a = Allocator([pool("v4", "192.0.2.0/28"), pool("v6", "2001:db8::/120")])
    # RequireDualStack but no single pool has both families.
    failed(a.assign(req("s", families=(4, 6), family_policy="RequireDualStack")), "family-unavailable")
    # The requested family is not in the named pool.
    failed(a.assign(req("t", families=(6,), pool="v4")), "family-unavailable")
    # A requested IP of a family the Service does not have.
    f = failed(a.assign(req("u", requested_ips=("2001:db8::5",))), "family-unavailable")
    assert "2001:db8::5" in f.message
    failed(
        a.assign(req("w", families=(4, 6), family_policy="RequireDualStack", requested_ips=("192.0.2.5",))),
        "family-unavailable",
    )
    failed(Allocator([pool("v4", "192.0.2.0/28")]).assign(req("x", families=(6,))), "family-unavailable")


def test_failure_reasons_are_the_documented_labels() -> None:
    assert set(FAILURE_REASONS) == {
        "pool-exhausted",
        "ip-in-use",
        "not-in-pool",
        "unknown-pool",
        "bad-annotation",
        "family-unavailable",
        "no-pools",
    }


# --- sharing -----------------------------------------------------------------------------------------


def test_compatible_services_share() -> None:
    a = Allocator([pool("p", "192.0.2.1-192.0.2.9")])
    assert ok(a.assign(shared("dns-udp", 53))).ips == ("192.0.2.1",)
    assert ok(a.assign(shared("dns-tcp", 54))).ips == ("192.0.2.1",)
    assert a.holders("192.0.2.1") == ("ns/dns-tcp", "ns/dns-udp")
    assert ok(a.assign(shared("clash", 53))).ips == ("192.0.2.2",)
    usage = a.usage()
    assert usage == [PoolUsage("p", 4, 9, 2)]


def test_udp_and_tcp_on_the_same_port_may_share() -> None:
    a = Allocator([pool("p", "192.0.2.1-192.0.2.9")])
    ok(a.assign(req("tcp", sharing_key="k", ports=frozenset({("TCP", 53)}))))
    assert ok(a.assign(req("udp", sharing_key="k", ports=frozenset({("UDP", 53)})))).ips == ("192.0.2.1",)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (shared("a", 80, key="k1"), shared("b", 443, key="k2")),  # different keys
        (shared("a", 80), req("b", ports=frozenset({("TCP", 443)}))),  # one has no key
        (shared("a", 80, 443), shared("b", 443)),  # port overlap
        (shared("a", 80), shared("b", 443, traffic_policy="Local")),  # Cluster vs Local
        (
            shared("a", 80, traffic_policy="Local", selector=(("app", "x"),)),
            shared("b", 443, traffic_policy="Local", selector=(("app", "y"),)),
        ),  # Local, different pods
    ],
)
def test_incompatible_services_never_share_either_way(first: ServiceRequest, second: ServiceRequest) -> None:
    assert not compatible(first, second) and not compatible(second, first)
    for x, y in ((first, second), (second, first)):
        a = Allocator([pool("p", "192.0.2.1-192.0.2.2")])
        ip = ok(a.assign(x)).ips[0]
        assert ok(a.assign(y)).ips != (ip,)
        b = Allocator([pool("p", "192.0.2.1-192.0.2.2")])
        ok(b.assign(x))
        f = failed(b.assign(ServiceRequest(**{**y.__dict__, "requested_ips": (ip,)})), "ip-in-use")
        assert x.key in f.message


def test_local_with_same_selector_shares() -> None:
    sel = (("app", "x"),)
    a = Allocator([pool("p", "192.0.2.1-192.0.2.2")])
    ok(a.assign(shared("a", 80, traffic_policy="Local", selector=sel)))
    assert ok(a.assign(shared("b", 443, traffic_policy="Local", selector=sel))).ips == ("192.0.2.1",)


def test_requested_shared_ip() -> None:
    a = Allocator([pool("p", "192.0.2.1-192.0.2.9")])
    ok(a.assign(shared("a", 80, requested_ips=("192.0.2.5",))))
    assert ok(a.assign(shared("b", 443, requested_ips=("192.0.2.5",)))).ips == ("192.0.2.5",)


def test_sharing_picks_lowest_of_shared_and_free() -> None:
    a = Allocator([pool("p", "192.0.2.1-192.0.2.9")])
    ok(a.assign(req("plain")))  # .1
    ok(a.assign(shared("web", 80)))  # .2
    # A compatible shared .2 is lower than the lowest free .3.
    assert ok(a.assign(shared("api", 443))).ips == ("192.0.2.2",)
    a.release("ns/plain")
    # Now the free .1 is lower than the shared .2.
    assert ok(a.assign(shared("ssh", 22))).ips == ("192.0.2.1",)
    # Shared IPs incompatible with every holder are skipped: 80 clashes with web on .2, not with ssh on .1.
    assert ok(a.assign(shared("web2", 80))).ips == ("192.0.2.1",)
    assert ok(a.assign(shared("web3", 80))).ips == ("192.0.2.3",)


def test_a_departed_holder_frees_its_ports() -> None:
    a = Allocator([pool("p", "192.0.2.1-192.0.2.9")])
    ok(a.assign(shared("a", 80)))
    ok(a.assign(shared("b", 443)))
    a.release("ns/a")
    assert ok(a.assign(shared("c", 80, requested_ips=("192.0.2.1",)))).ips == ("192.0.2.1",)
    # b moves from 443 to 22 while keeping its IP: 443 becomes free to share.
    assert ok(a.assign(shared("b", 22))).changed is False
    assert ok(a.assign(shared("d", 443, requested_ips=("192.0.2.1",)))).ips == ("192.0.2.1",)
    a.release("ns/d")
    assert ok(a.assign(shared("auto", 443))).ips == ("192.0.2.1",)
    assert a.holders("192.0.2.1") == ("ns/auto", "ns/b", "ns/c")
    f = failed(a.assign(shared("e", 22, requested_ips=("192.0.2.1",))), "ip-in-use")
    assert "ns/b" in f.message


def test_a_shared_ip_turned_buggy_is_not_joined() -> None:
    a = Allocator([pool("p", "192.0.2.255-192.0.3.2")])
    ok(a.assign(shared("a", 80)))
    a.set_pools([pool("p", "192.0.2.255-192.0.3.2", buggy=True)])
    assert ok(a.assign(shared("b", 443))).ips == ("192.0.3.1",)


def test_sharing_respects_the_named_pool() -> None:
    a = Allocator([pool("p", "192.0.2.1-192.0.2.9"), pool("q", "198.51.100.1-198.51.100.9")])
    ok(a.assign(shared("web", 80)))
    assert ok(a.assign(shared("api", 443, pool="q"))).ips == ("198.51.100.1",)


# --- families ----------------------------------------------------------------------------------------


def test_single_stack_follows_the_first_family() -> None:
    a = Allocator([pool("dual", "192.0.2.1-192.0.2.9", "2001:db8::1-2001:db8::9")])
    assert ok(a.assign(req("v6", families=(6, 4), family_policy="SingleStack"))).ips == ("2001:db8::1",)
    assert ok(a.assign(req("v4", families=(4,)))).ips == ("192.0.2.1",)


def test_prefer_dual_stack_takes_both_from_one_pool() -> None:
    a = Allocator([pool("v4", "192.0.2.1"), pool("dual", "198.51.100.1", "2001:db8::1-2001:db8::2")])
    got = ok(a.assign(req("s", families=(6, 4), family_policy="PreferDualStack")))
    assert (got.ips, got.pool) == (("2001:db8::1", "198.51.100.1"), "dual")
    # The dual pool's IPv4 is gone: the first pool that can give a family at all wins.
    got = ok(a.assign(req("t", families=(4, 6), family_policy="PreferDualStack")))
    assert (got.ips, got.pool) == (("192.0.2.1",), "v4")
    got = ok(a.assign(req("u", families=(4, 6), family_policy="PreferDualStack")))
    assert (got.ips, got.pool) == (("2001:db8::2",), "dual")
    failed(a.assign(req("w", families=(4, 6), family_policy="PreferDualStack")), "pool-exhausted")


def test_prefer_dual_stack_on_a_single_stack_cluster_stays_single() -> None:
    a = Allocator([pool("dual", "192.0.2.1", "2001:db8::1")])
    assert ok(a.assign(req("s", families=(4,), family_policy="PreferDualStack"))).ips == ("192.0.2.1",)


def test_require_dual_stack() -> None:
    a = Allocator([pool("v4", "192.0.2.1-192.0.2.9"), pool("dual", "198.51.100.1", "2001:db8::1-2001:db8::2")])
    got = ok(a.assign(req("s", families=(4, 6), family_policy="RequireDualStack")))
    assert (got.ips, got.pool) == (("198.51.100.1", "2001:db8::1"), "dual")
    failed(a.assign(req("t", families=(4, 6), family_policy="RequireDualStack")), "pool-exhausted")
    assert a.holders("2001:db8::2") == ()  # a failed pair takes nothing


def test_require_dual_stack_with_one_listed_family_is_completed() -> None:
    a = Allocator([pool("dual", "192.0.2.1", "2001:db8::1")])
    assert ok(a.assign(req("s", families=(6,), family_policy="RequireDualStack"))).ips == ("2001:db8::1", "192.0.2.1")


def test_prefer_dual_stack_gains_the_missing_family_without_moving() -> None:
    a = Allocator([pool("dual", "192.0.2.1-192.0.2.2", "2001:db8::1")])
    ok(a.assign(req("hog", families=(6,))))
    first = ok(a.assign(req("s", families=(4, 6), family_policy="PreferDualStack")))
    assert first.ips == ("192.0.2.1",)
    assert ok(a.assign(req("s", families=(4, 6), family_policy="PreferDualStack"))).changed is False
    a.release("ns/hog")
    again = ok(a.assign(req("s", families=(4, 6), family_policy="PreferDualStack")))
    assert again == Assignment("ns/s", ("192.0.2.1", "2001:db8::1"), "dual", changed=True, reason=None)


# --- keeping and reassigning -------------------------------------------------------------------------


def test_assign_is_stable() -> None:
    a = Allocator([pool("p", "192.0.2.1-192.0.2.9")])
    first = ok(a.assign(req("s")))
    ok(a.assign(req("t")))
    a.release("ns/t")
    again = ok(a.assign(req("s")))
    assert (again.ips, again.changed, again.reason) == (first.ips, False, None)
    assert a.assignment("ns/s") == Assignment("ns/s", first.ips, "p", changed=False, reason=None)


def test_pool_removed_moves_with_reason() -> None:
    a = Allocator([pool("old", "192.0.2.1-192.0.2.9"), pool("new", "198.51.100.1-198.51.100.9")])
    ok(a.assign(req("s")))
    a.set_pools([pool("new", "198.51.100.1-198.51.100.9")])
    assert a.assignment("ns/s") is not None  # set_pools alone moves nothing
    assert a.pool_of("192.0.2.1") is None
    got = ok(a.assign(req("s")))
    assert got == Assignment("ns/s", ("198.51.100.1",), "new", changed=True, reason="IP left every pool")
    assert a.holders("192.0.2.1") == ()


def test_pool_shrunk_around_the_ip_keeps_it() -> None:
    a = Allocator([pool("p", "192.0.2.0/24")])
    ok(a.assign(req("s", requested_ips=("192.0.2.50",))))
    a.set_pools([pool("p", "192.0.2.40-192.0.2.60")])
    assert ok(a.assign(req("s"))).changed is False
    # A manual pool still counts: removing the request keeps the IP while it lies in some pool.
    a.set_pools([pool("p", "192.0.2.40-192.0.2.60", auto=False)])
    assert ok(a.assign(req("s"))).changed is False


def test_avoid_buggy_turned_on_moves_a_buggy_ip() -> None:
    a = Allocator([pool("p", "192.0.2.255-192.0.3.2")])
    ok(a.assign(req("s")))
    a.set_pools([pool("p", "192.0.2.255-192.0.3.2", buggy=True)])
    got = ok(a.assign(req("s")))
    assert (got.ips, got.reason) == (("192.0.3.1",), "IP left every pool")


def test_pool_annotation_change_moves_with_reason() -> None:
    a = Allocator([pool("a", "192.0.2.1-192.0.2.9"), pool("b", "198.51.100.1-198.51.100.9", auto=False)])
    ok(a.assign(req("s")))
    assert ok(a.assign(req("s", pool="a"))).changed is False  # already in the named pool
    got = ok(a.assign(req("s", pool="b")))
    assert got == Assignment("ns/s", ("198.51.100.1",), "b", changed=True, reason="pool annotation now names pool b")


def test_requested_ip_change_moves_with_reason() -> None:
    a = Allocator([pool("p", "192.0.2.1-192.0.2.9")])
    ok(a.assign(req("s")))
    assert ok(a.assign(req("s", requested_ips=("192.0.2.1",)))).changed is False
    got = ok(a.assign(req("s", requested_ips=("192.0.2.7",))))
    assert (got.ips, got.reason) == (("192.0.2.7",), "requested IP changed")
    # Dropping the request keeps the IP.
    assert ok(a.assign(req("s"))).ips == ("192.0.2.7",)


def test_families_change_with_reason() -> None:
    a = Allocator([pool("dual", "192.0.2.1-192.0.2.9", "2001:db8::1-2001:db8::9")])
    both = ok(a.assign(req("s", families=(4, 6), family_policy="RequireDualStack")))
    assert both.ips == ("192.0.2.1", "2001:db8::1")
    one = ok(a.assign(req("s", families=(4,))))
    assert one == Assignment("ns/s", ("192.0.2.1",), "dual", changed=True, reason="families changed")
    assert a.holders("2001:db8::1") == ()
    other = ok(a.assign(req("s", families=(6,))))
    assert (other.ips, other.reason) == (("2001:db8::1",), "families changed")
    back = ok(a.assign(req("s", families=(6, 4), family_policy="RequireDualStack")))
    assert (back.ips, back.reason) == (("2001:db8::1", "192.0.2.1"), None)


def test_require_dual_stack_moves_pools_when_its_pool_lacks_a_family() -> None:
    a = Allocator([pool("v4", "192.0.2.1-192.0.2.9"), pool("dual", "198.51.100.1", "2001:db8::1")])
    ok(a.assign(req("s")))
    got = ok(a.assign(req("s", families=(4, 6), family_policy="RequireDualStack")))
    assert (got.ips, got.pool, got.reason) == (("198.51.100.1", "2001:db8::1"), "dual", "families changed")


def test_sharing_conflict_moves_the_changed_service() -> None:
    a = Allocator([pool("p", "192.0.2.1-192.0.2.9")])
    ok(a.assign(shared("a", 80)))
    ok(a.assign(shared("b", 443)))
    got = ok(a.assign(shared("b", 80)))
    assert got == Assignment("ns/b", ("192.0.2.2",), "p", changed=True, reason="sharing conflict with ns/a")
    assert a.holders("192.0.2.1") == ("ns/a",)
    # The untouched Service is judged against b's new request and keeps its IP.
    assert ok(a.assign(shared("a", 80))).changed is False


def test_losing_the_sharing_key_moves_off_a_shared_ip() -> None:
    a = Allocator([pool("p", "192.0.2.1-192.0.2.9")])
    ok(a.assign(shared("a", 80)))
    ok(a.assign(shared("b", 443)))
    got = ok(a.assign(req("b", ports=frozenset({("TCP", 443)}))))
    assert (got.ips, got.reason) == (("192.0.2.2",), "sharing conflict with ns/a")


def test_failed_reassignment_releases_and_says_so() -> None:
    a = Allocator([pool("p", "192.0.2.1")])
    ok(a.assign(req("s")))
    a.set_pools([pool("q", "198.51.100.1", auto=False)])
    f = failed(a.assign(req("s")), "no-pools")
    assert "released 192.0.2.1: IP left every pool" in f.message
    assert a.assignment("ns/s") is None
    assert a.holders("192.0.2.1") == ()


def test_removing_all_pools() -> None:
    a = Allocator([pool("p", "192.0.2.1")])
    ok(a.assign(req("s")))
    a.set_pools([])
    assert a.usage() == []
    failed(a.assign(req("s")), "no-pools")


# --- adoption ----------------------------------------------------------------------------------------


def test_restart_adopts_before_assigning() -> None:
    pools = [pool("p", "192.0.2.1-192.0.2.9")]
    a = Allocator(pools)
    ok(a.assign(req("s1")))
    ok(a.assign(req("s2")))
    ok(a.assign(req("s3")))
    a.release("ns/s1")
    before: dict[str, tuple[str, ...]] = {}
    for name in ("s2", "s3"):
        held = a.assignment(f"ns/{name}")
        assert held is not None
        before[name] = held.ips

    b = Allocator(pools)
    for name in ("s3", "s2"):
        adopted = ok(b.adopt(req(name), before[name]))
        assert (adopted.ips, adopted.changed) == (before[name], False)
    assert ok(b.assign(req("fresh"))).ips == ("192.0.2.1",)
    for name in ("s2", "s3"):
        got = ok(b.assign(req(name)))
        assert (got.ips, got.changed) == (before[name], False)


def test_adopting_an_invalid_ip_still_holds_it_until_reassigned() -> None:
    a = Allocator([pool("a", "192.0.2.1-192.0.2.9"), pool("b", "198.51.100.1-198.51.100.9")])
    f = failed(a.adopt(req("s", pool="b"), ["192.0.2.1"]), "not-in-pool")
    assert "pool annotation now names pool b" in f.message
    assert a.holders("192.0.2.1") == ("ns/s",)
    assert ok(a.assign(req("other"))).ips == ("192.0.2.2",)  # not handed the held .1
    failed(a.assign(req("thief", requested_ips=("192.0.2.1",))), "ip-in-use")
    got = ok(a.assign(req("s", pool="b")))
    assert (got.ips, got.reason) == (("198.51.100.1",), "pool annotation now names pool b")
    assert ok(a.assign(req("thief", requested_ips=("192.0.2.1",)))).ips == ("192.0.2.1",)


def test_adopting_an_ip_outside_every_pool() -> None:
    a = Allocator([pool("p", "192.0.2.1-192.0.2.9")])
    failed(a.adopt(req("s"), ["203.0.113.9"]), "not-in-pool")
    assert a.assignment("ns/s") == Assignment("ns/s", ("203.0.113.9",), "", changed=False, reason=None)
    assert a.usage() == [PoolUsage("p", 4, 9, 0)]
    got = ok(a.assign(req("s")))
    assert (got.ips, got.reason) == (("192.0.2.1",), "IP left every pool")


def test_adopting_an_ip_held_by_an_incompatible_service() -> None:
    a = Allocator([pool("p", "192.0.2.1-192.0.2.9")])
    ok(a.adopt(req("first"), ["192.0.2.4"]))
    f = failed(a.adopt(req("second"), ["192.0.2.4"]), "ip-in-use")
    assert "ns/first" in f.message
    assert a.holders("192.0.2.4") == ("ns/first",)
    assert ok(a.assign(req("second"))).ips == ("192.0.2.1",)


def test_adopting_shared_and_dual_stack_status() -> None:
    a = Allocator([pool("dual", "192.0.2.1-192.0.2.9", "2001:db8::1-2001:db8::9")])
    dual = req("d", families=(6, 4), family_policy="PreferDualStack")
    got = ok(a.adopt(dual, ["192.0.2.5", "2001:db8::5"]))
    assert got.ips == ("2001:db8::5", "192.0.2.5")
    ok(a.adopt(shared("x", 80), ["192.0.2.7"]))
    ok(a.adopt(shared("y", 443), ["192.0.2.7"]))
    assert a.holders("192.0.2.7") == ("ns/x", "ns/y")
    # Status with a family the Service no longer has: adoption refuses, assign() trims with a reason.
    failed(a.adopt(req("z"), ["192.0.2.8", "2001:db8::8"]), "family-unavailable")
    got = ok(a.assign(req("z")))
    assert (got.ips, got.reason) == (("192.0.2.8",), "families changed")


def test_adopt_refusals() -> None:
    a = Allocator([pool("p", "192.0.2.1-192.0.2.9", "2001:db8::1-2001:db8::9")])
    failed(a.adopt(req("empty"), []), "not-in-pool")
    failed(a.adopt(req("garbage"), ["not-an-ip"]), "not-in-pool")
    failed(a.adopt(req("req", requested_ips=("192.0.2.2",)), ["192.0.2.3"]), "not-in-pool")
    failed(a.adopt(req("half", families=(4, 6), family_policy="RequireDualStack"), ["192.0.2.4"]), "family-unavailable")
    failed(a.adopt(req("gone", pool="nope"), ["192.0.2.5"]), "unknown-pool")
    # Adopting twice replaces the first record.
    ok(a.adopt(req("again"), ["192.0.2.6"]))
    ok(a.adopt(req("again"), ["192.0.2.7"]))
    assert a.holders("192.0.2.6") == ()


# --- queries -----------------------------------------------------------------------------------------


def test_pool_of_and_holders() -> None:
    a = Allocator([pool("p", "192.0.2.1-192.0.2.9"), pool("q", "2001:db8::/64")])
    assert a.pool_of("192.0.2.4") == "p"
    assert a.pool_of("2001:db8::ffff") == "q"
    assert a.pool_of("203.0.113.1") is None
    assert a.pool_of("garbage") is None
    assert a.holders("garbage") == ()
    ok(a.assign(req("s")))
    assert a.keys() == ("ns/s",)


def test_usage_counts_usable_addresses() -> None:
    a = Allocator(
        [
            pool("plain", "192.0.2.0/24", "2001:db8::/120"),
            pool("careful", "198.51.100.0/23", buggy=True),
        ]
    )
    ok(a.assign(req("a")))
    ok(a.assign(req("b", pool="careful")))
    ok(a.assign(req("c", families=(6,))))
    assert a.usage() == [
        PoolUsage("plain", 4, 256, 1),
        PoolUsage("plain", 6, 256, 1),
        PoolUsage("careful", 4, 512 - 4, 1),
    ]
