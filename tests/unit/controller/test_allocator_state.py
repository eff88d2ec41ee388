"""Property-based state machine for the allocator, driven the way the controller drives it.

Random Services are created, updated and deleted, the pool config changes and the controller restarts
(a new Allocator adopting every IP in the Services' statuses, then assigning). After every step the model
reconciles every Service until nothing changes, writing each result into a model "status". Checked:

- never one IP on two incompatible Services, and the allocator's indexes agree with the statuses;
- every held IP lies in a pool, the annotated one if any, matches the requested IPs and the family policy;
- an IP is only given up with a reason, and a Service nothing relevant happened to loses no IP;
- a new single-stack Service gets the lowest free or compatibly shared address of the first auto-assign
  pool that has one;
- a restart with the same config changes no IP at all.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import itertools
from collections import defaultdict

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from controller.allocator import AllocationFailure, Allocator, Assignment, PoolSpec, compatible
from controller.service import ServiceRequest
from lbspeaker.ipset import IPSet

# Small blocks so pools exhaust quickly; one straddles .255/.0 so avoid-buggy-ips matters.
BLOCKS = ("192.0.2.0/30", "192.0.2.4/30", "192.0.2.8/30", "192.0.2.254-192.0.3.1", "2001:db8::/126", "2001:db8::4/126")
POOL_NAMES = ("a", "b", "c")
KEYS = tuple(f"ns/s{i}" for i in range(6))
REQUESTABLE_V4 = ("192.0.2.1", "192.0.2.5", "192.0.2.9", "192.0.2.255", "192.0.3.1", "203.0.113.5")
REQUESTABLE_V6 = ("2001:db8::1", "2001:db8::5", "2001:db8:1::1")
PORTS = (("TCP", 80), ("TCP", 443), ("UDP", 53))
FAMILY_CHOICES = (
    ((4,), "SingleStack"),
    ((4,), "SingleStack"),
    ((6,), "SingleStack"),
    ((4, 6), "PreferDualStack"),
    ((6, 4), "PreferDualStack"),
    ((4,), "PreferDualStack"),
    ((4, 6), "RequireDualStack"),
)
REASON_PREFIXES = (
    "IP left every pool",
    "pool annotation now names pool ",
    "requested IP changed",
    "families changed",
    "sharing conflict with ns/",
    "IP is now in pool ",
)


@st.composite
def configs(draw: st.DrawFn) -> tuple[PoolSpec, ...]:
    owners = draw(st.lists(st.sampled_from((None, 0, 1, 2)), min_size=len(BLOCKS), max_size=len(BLOCKS)))
    pools = []
    for index, name in enumerate(POOL_NAMES):
        ranges = [block for block, owner in zip(BLOCKS, owners, strict=True) if owner == index]
        if ranges:
            auto, buggy = draw(st.sampled_from((True, True, False))), draw(st.booleans())
            pools.append(PoolSpec(name, IPSet.from_ranges(ranges), auto_assign=auto, avoid_buggy_ips=buggy))
    return tuple(draw(st.permutations(pools)))


@st.composite
def requests(draw: st.DrawFn, key: str) -> ServiceRequest:
    families, policy = draw(st.sampled_from(FAMILY_CHOICES))
    requested: tuple[str, ...] = ()
    if draw(st.integers(0, 3)) == 0:
        v4 = draw(st.sampled_from((None, *REQUESTABLE_V4)))
        v6 = draw(st.sampled_from((None, *REQUESTABLE_V6)))
        requested = tuple(ip for ip in (v4, v6) if ip)
    return ServiceRequest(
        key=key,
        families=families,
        family_policy=policy,
        requested_ips=requested,
        pool=draw(st.sampled_from((None, None, None, "a", "b", "c", "zzz"))),
        sharing_key=draw(st.sampled_from((None, "k1", "k1", "k2"))),
        ports=frozenset(draw(st.sets(st.sampled_from(PORTS), min_size=1))),
        traffic_policy=draw(st.sampled_from(("Cluster", "Cluster", "Local"))),
        selector=draw(st.sampled_from(((("app", "x"),), (("app", "y"),)))),
    )


def version(ip: str) -> int:
    return ipaddress.ip_address(ip).version


class AllocatorMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.pools: tuple[PoolSpec, ...] = ()
        self.alloc = Allocator()
        self.services: dict[str, ServiceRequest] = {}
        self.status: dict[str, tuple[str, ...]] = {}

    @initialize(config=configs())
    def start(self, config: tuple[PoolSpec, ...]) -> None:
        self.pools = config
        self.alloc = Allocator(config)

    # --- the controller's moves ----------------------------------------------------------------------

    def _assign(self, key: str, expect_keep: bool) -> bool:
        """assign() one Service as the controller would, checking the result; True when its IPs changed."""
        req = self.services[key]
        old = self.status.get(key, ())
        result = self.alloc.assign(req)
        new = result.ips if isinstance(result, Assignment) else ()
        dropped = set(old) - set(new)
        if isinstance(result, Assignment):
            assert result.changed == (set(new) != set(old))
            assert (result.reason is not None) == bool(dropped), result
            if result.reason is not None:
                assert result.reason.startswith(REASON_PREFIXES), result.reason
        else:
            if dropped:
                assert "released" in result.message, result
            if result.reason == "ip-in-use":
                # A real conflict: some requested IP is shown by a Service this one may not share with.
                assert any(
                    ip in ips and not compatible(req, self.services[other])
                    for ip in req.requested_ips
                    for other, ips in self.status.items()
                    if other != key
                ), result
        if expect_keep:
            assert set(old) <= set(new), (key, old, result)
        # An IP another Service still shows in its status is never handed to an incompatible Service.
        for ip in new:
            for other, ips in self.status.items():
                if other != key and ip in ips:
                    assert compatible(req, self.services[other]), (key, other, ip)
        self.status[key] = new
        return set(new) != set(old)

    def _reconcile(self, order: tuple[str, ...], keep: set[str]) -> None:
        """Assign every Service until a full pass changes nothing (a level-triggered controller's fixed point)."""
        for _ in range(6):
            changed = False
            for key in order:
                if key in self.services:
                    changed |= self._assign(key, expect_keep=key in keep)
            if not changed:
                return
        raise AssertionError("reconcile did not settle")

    def _still_valid_under(self, pools: tuple[PoolSpec, ...]) -> set[str]:
        """Services whose IPs all stay in a pool of the same name: a config change must not move them."""
        by_name = {p.name: p for p in pools}
        out = set()
        for key, ips in self.status.items():
            held = self.alloc.assignment(key)
            if not ips or held is None:
                out.add(key)  # nothing to lose
                continue
            pool = by_name.get(held.pool)
            if pool is not None and all(ip in pool.ipset and pool.contains(_addr(ip)) for ip in ips):
                out.add(key)
        return out

    def _expected_lowest(self, req: ServiceRequest) -> str | None:
        """Brute force: the first auto-assign pool's lowest IPv4 that is free or shared only compatibly."""
        holders: dict[str, list[str]] = defaultdict(list)
        for key, ips in self.status.items():
            for ip in ips:
                holders[ip].append(key)
        for pool in self.pools:
            if not pool.auto_assign:
                continue
            for first, last in pool.ipset.intervals(4):
                for value in range(first, last + 1):
                    ip = str(ipaddress.IPv4Address(value))
                    if pool.contains((4, value)) and all(compatible(req, self.services[k]) for k in holders[ip]):
                        return ip
        return None

    @rule(key=st.sampled_from(KEYS), data=st.data(), order=st.permutations(KEYS))
    def put_service(self, key: str, data: st.DataObject, order: tuple[str, ...]) -> None:
        req = data.draw(requests(key))
        is_new = key not in self.services
        self.services[key] = req
        plain = req.families == (4,) and req.family_policy == "SingleStack"
        plain = plain and not (req.requested_ips or req.pool)
        expected = self._expected_lowest(req) if is_new and plain else None
        self._assign(key, expect_keep=False)
        if is_new and plain:
            assert self.status[key] == ((expected,) if expected else ()), (self.status[key], expected)
        self._reconcile(order, keep=set(KEYS) - {key})

    @precondition(lambda self: len(self.services) < len(KEYS))
    @rule(data=st.data(), order=st.permutations(KEYS))
    def add_auto_assigned_service(self, data: st.DataObject, order: tuple[str, ...]) -> None:
        """A new single-stack IPv4 Service left to auto-assignment, often with a sharing key."""
        key = data.draw(st.sampled_from([k for k in KEYS if k not in self.services]))
        req = data.draw(requests(key))
        req = dataclasses.replace(req, families=(4,), family_policy="SingleStack", requested_ips=(), pool=None)
        self.services[key] = req
        expected = self._expected_lowest(req)
        self._assign(key, expect_keep=False)
        assert self.status[key] == ((expected,) if expected else ()), (self.status[key], expected)
        self._reconcile(order, keep=set(KEYS) - {key})

    @precondition(lambda self: bool(self.services))
    @rule(data=st.data(), order=st.permutations(KEYS))
    def change_ports_or_join_another(self, data: st.DataObject, order: tuple[str, ...]) -> None:
        """Edits that stress sharing: new ports, a sharing key change, or requesting another Service's IPs."""
        key = data.draw(st.sampled_from(sorted(self.services)))
        req = self.services[key]
        choice = data.draw(st.sampled_from(("ports", "key", "join")))
        if choice == "ports":
            req = dataclasses.replace(req, ports=frozenset(data.draw(st.sets(st.sampled_from(PORTS), min_size=1))))
        elif choice == "key":
            req = dataclasses.replace(req, sharing_key=data.draw(st.sampled_from((None, "k1", "k2"))))
        else:
            other = data.draw(st.sampled_from(sorted(self.status)))
            req = dataclasses.replace(req, requested_ips=self.status[other], families=self.services[other].families)
        self.services[key] = req
        self._assign(key, expect_keep=False)
        self._reconcile(order, keep=set(KEYS) - {key})

    @rule(key=st.sampled_from(KEYS), order=st.permutations(KEYS))
    def delete_service(self, key: str, order: tuple[str, ...]) -> None:
        self.alloc.release(key)
        self.services.pop(key, None)
        self.status.pop(key, None)
        self._reconcile(order, keep=set(KEYS))

    @rule(config=configs(), order=st.permutations(KEYS))
    def change_config(self, config: tuple[PoolSpec, ...], order: tuple[str, ...]) -> None:
        keep = self._still_valid_under(config)
        self.pools = config
        self.alloc.set_pools(config)
        self._reconcile(order, keep=keep)

    @rule(order=st.permutations(KEYS))
    def restart(self, order: tuple[str, ...]) -> None:
        before = dict(self.status)
        self.alloc = Allocator(self.pools)
        for key in order:
            if self.status.get(key):
                adopted = self.alloc.adopt(self.services[key], self.status[key])
                assert isinstance(adopted, Assignment), adopted
                assert (set(adopted.ips), adopted.changed) == (set(self.status[key]), False)
        self._reconcile(order, keep=set(KEYS))
        assert self.status == before

    @rule(config=configs(), order=st.permutations(KEYS))
    def restart_into_new_config(self, config: tuple[PoolSpec, ...], order: tuple[str, ...]) -> None:
        keep = self._still_valid_under(config)
        self.pools = config
        self.alloc = Allocator(config)
        for key in order:
            if self.status.get(key):
                adopted = self.alloc.adopt(self.services[key], self.status[key])
                if isinstance(adopted, AllocationFailure):
                    assert key not in keep, (key, adopted)
        self._reconcile(order, keep=keep)

    # --- invariants ----------------------------------------------------------------------------------

    @invariant()
    def allocator_agrees_with_statuses(self) -> None:
        for key in self.services:
            held = self.alloc.assignment(key)
            assert set(held.ips if held else ()) == set(self.status.get(key, ()))
        assert set(self.alloc.keys()) == {k for k, ips in self.status.items() if ips}

    @invariant()
    def no_ip_between_incompatible_services(self) -> None:
        by_ip: dict[str, list[str]] = defaultdict(list)
        for key, ips in self.status.items():
            for ip in ips:
                by_ip[ip].append(key)
        for ip, keys in by_ip.items():
            assert self.alloc.holders(ip) == tuple(sorted(keys))
            for x, y in itertools.combinations(keys, 2):
                assert compatible(self.services[x], self.services[y]), (ip, x, y)

    @invariant()
    def held_ips_satisfy_their_request(self) -> None:
        for key, ips in self.status.items():
            if not ips:
                continue
            req = self.services[key]
            pools = {self.alloc.pool_of(ip) for ip in ips}
            assert len(pools) == 1 and None not in pools, (key, ips, pools)
            (pool,) = pools
            held = self.alloc.assignment(key)
            assert held is not None and held.pool == pool and held.ips == ips
            if req.pool is not None:
                assert pool == req.pool
            if req.requested_ips:
                assert set(ips) == set(req.requested_ips)
            families = [version(ip) for ip in ips]
            if req.family_policy == "SingleStack":
                assert families == [req.families[0]]
            elif req.family_policy == "RequireDualStack":
                # Both families, ipFamilies order first (a one-family RequireDualStack is completed, not refused).
                assert sorted(families) == [4, 6] and families[0] == req.families[0]
            else:
                assert families == [f for f in req.families if f in families]

    @invariant()
    def usage_counts_held_ips(self) -> None:
        held = {ip for ips in self.status.values() for ip in ips}
        for usage in self.alloc.usage():
            pool = next(p for p in self.pools if p.name == usage.pool)
            assert usage.in_use == sum(1 for ip in held if version(ip) == usage.family and _in(pool, ip))
            assert usage.total == sum(
                1
                for first, last in pool.ipset.intervals(usage.family)
                for value in range(first, last + 1)
                if pool.contains((usage.family, value))
            )


def _addr(ip: str) -> tuple[int, int]:
    parsed = ipaddress.ip_address(ip)
    return parsed.version, int(parsed)


def _in(pool: PoolSpec, ip: str) -> bool:
    return pool.contains(_addr(ip))


AllocatorMachine.TestCase.settings = settings(max_examples=80, stateful_step_count=15, deadline=None)
TestAllocatorMachine = AllocatorMachine.TestCase
