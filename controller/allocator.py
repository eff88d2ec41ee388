"""Pure IP allocation: which external IPs each LoadBalancer Service holds.

The allocator keeps, per Service key, the IPs it holds and the request it last judged them against,
plus indexes so that no operation scans all Services, all holders of an IP or a range:

- per family, a `SortedInts` of every held address (the "lowest free address" search skips used runs);
- per address, its holders, their common sharing class and which holder uses which port: the holders of
  one address are always pairwise compatible, so a newcomer is checked in O(its ports);
- per sharing class and family, the addresses it holds, and per port the addresses where that port is
  taken, so "the lowest shared IP I may join" is a jump search like the lowest free one.

Rules, in MetalLB's terms: requested IPs first (``spec.loadBalancerIP`` or the loadBalancerIPs annotation),
then the annotated pool, then auto-assign pools in config order, lowest acceptable address first. A
Service keeps what it holds while that is still acceptable; otherwise it is released and reallocated and
the result says why. An address held by one Service is never handed to an incompatible other.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar, get_args

from controller.service import ServiceRequest
from lbspeaker.ipset import IPSet, SortedInts, count_buggy, is_buggy, to_ip

FailureReason = Literal[
    "pool-exhausted",
    "ip-in-use",
    "not-in-pool",
    "unknown-pool",
    "bad-annotation",
    "family-unavailable",
    "no-pools",
]
FAILURE_REASONS: tuple[FailureReason, ...] = get_args(FailureReason)

# (IP version, integer value): hashable, orders by family then address.
Addr = tuple[int, int]
_K = TypeVar("_K")


@dataclass(frozen=True)
class PoolSpec:
    """One address pool as the allocator sees it (the controller converts config pools, in config order)."""

    name: str
    ipset: IPSet
    auto_assign: bool = True
    avoid_buggy_ips: bool = False

    def contains(self, addr: Addr) -> bool:
        # As in MetalLB, a .0/.255 address of an avoid-buggy-ips pool is not part of the pool at all,
        # not even when requested explicitly.
        version, value = addr
        return self.ipset.contains_int(version, value) and not (self.avoid_buggy_ips and is_buggy(version, value))


@dataclass(frozen=True)
class Assignment:
    key: str
    ips: tuple[str, ...]  # in the Service's ipFamilies order
    pool: str
    changed: bool  # the set of IPs differs from what the Service held before this call
    reason: str | None = None  # set when changed and earlier IPs were given up: why


@dataclass(frozen=True)
class AllocationFailure:
    key: str
    reason: FailureReason
    message: str


@dataclass(frozen=True)
class PoolUsage:
    pool: str
    family: int
    total: int  # usable addresses (avoid-buggy-ips pools exclude .0/.255)
    in_use: int


# Services may share an IP only if their classes are equal and not None (and their ports are disjoint).
_Class = tuple[str, str, tuple[tuple[str, str], ...]]
_Port = tuple[str, int]


def _sharing_class(req: ServiceRequest) -> _Class | None:
    if not req.sharing_key:
        return None
    return req.sharing_key, req.traffic_policy, req.selector if req.traffic_policy == "Local" else ()


def compatible(a: ServiceRequest, b: ServiceRequest) -> bool:
    """Whether two Services may share one IP (symmetric)."""
    if not a.sharing_key or a.sharing_key != b.sharing_key:
        return False
    if a.ports & b.ports:
        return False
    if a.traffic_policy != b.traffic_policy:
        return False
    # With Local, only nodes with the pods get traffic, so both must select the same pods or one would black-hole.
    return a.traffic_policy != "Local" or a.selector == b.selector


@dataclass(frozen=True)
class _Record:
    req: ServiceRequest
    addrs: tuple[Addr, ...]
    pool: str


@dataclass
class _Group:
    """The Services holding one address: pairwise compatible, hence one sharing class and disjoint ports."""

    klass: _Class | None
    holders: set[str] = field(default_factory=set)
    ports: dict[_Port, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Problem:
    reason: FailureReason  # used when adoption refuses
    text: str  # used as Assignment.reason when the address is given up


_Allocation = tuple[PoolSpec, list[Addr]]


class Allocator:
    """Assignments of Services to IPs, with the pools they come from."""

    def __init__(self, pools: Sequence[PoolSpec] = ()) -> None:
        self._pools: tuple[PoolSpec, ...] = ()
        self._by_name: dict[str, PoolSpec] = {}
        self._records: dict[str, _Record] = {}
        self._groups: dict[Addr, _Group] = {}
        self._used: dict[int, SortedInts] = {4: SortedInts(), 6: SortedInts()}
        self._class_ips: dict[tuple[_Class, int], SortedInts] = {}  # (class, family) -> addresses it holds
        self._port_ips: dict[tuple[_Class, int, _Port], SortedInts] = {}  # ... -> addresses where port is taken
        self.set_pools(pools)

    # --- configuration -------------------------------------------------------------------------------

    def set_pools(self, pools: Sequence[PoolSpec]) -> None:
        """Install a new pool list; existing assignments stay until assign() re-judges each Service."""
        self._pools = tuple(pools)
        self._by_name = {}
        for pool in self._pools:
            self._by_name.setdefault(pool.name, pool)

    # --- queries -------------------------------------------------------------------------------------

    def assignment(self, key: str) -> Assignment | None:
        """What ``key`` holds now (pool "" when adopted IPs lie in no pool), or None."""
        record = self._records.get(key)
        if record is None:
            return None
        return Assignment(key, _texts(record.addrs), record.pool, changed=False, reason=None)

    def keys(self) -> tuple[str, ...]:
        return tuple(self._records)

    def holders(self, ip: str) -> tuple[str, ...]:
        addr = _addr(ip)
        group = self._groups.get(addr) if addr is not None else None
        return tuple(sorted(group.holders)) if group is not None else ()

    def pool_of(self, ip: str) -> str | None:
        addr = _addr(ip)
        pool = self._pool_for(addr) if addr is not None else None
        return pool.name if pool is not None else None

    def usage(self) -> list[PoolUsage]:
        out: list[PoolUsage] = []
        for pool in self._pools:
            for family in pool.ipset.families:
                total = in_use = 0
                for first, last in pool.ipset.intervals(family):
                    total += last - first + 1 - (count_buggy(family, first, last) if pool.avoid_buggy_ips else 0)
                    for start, end in self._used[family].runs_in(first, last):
                        in_use += end - start + 1 - (count_buggy(family, start, end) if pool.avoid_buggy_ips else 0)
                out.append(PoolUsage(pool.name, family, total, in_use))
        return out

    # --- changes -------------------------------------------------------------------------------------

    def release(self, key: str) -> None:
        record = self._records.pop(key, None)
        if record is None:
            return
        for addr in record.addrs:
            self._unhold(key, record.req, addr)

    def adopt(self, req: ServiceRequest, ips: Sequence[str]) -> Assignment | AllocationFailure:
        """Record IPs found in the Service's status at start-up.

        Every address not already held by an incompatible Service is recorded, acceptable or not, so that no
        other Service is handed it before this one is re-assigned. The result is an unchanged Assignment when
        the IPs are fully acceptable, else a failure meaning "call assign() for this Service".
        """
        self.release(req.key)
        wanted = _wanted(req)
        addrs: list[Addr] = []
        refusals: list[_Problem] = []
        for ip in ips:
            addr = _addr(ip)
            if addr is None:
                refusals.append(_Problem("not-in-pool", f"status IP {ip!r} is not an IP address"))
                continue
            if addr in addrs:
                continue
            blocker = self._blocker(req, addr)
            if blocker is not None:
                refusals.append(_Problem("ip-in-use", f"{_text(addr)} is already held by {blocker}"))
                continue
            addrs.append(addr)
        addrs = _in_family_order(addrs, wanted)
        keep, pool, problems = self._check_held(req, addrs, wanted)
        self._hold(req, addrs, pool.name if pool is not None else "")
        all_problems = refusals + list(problems.values())
        if all_problems:
            first = all_problems[0]
            return AllocationFailure(req.key, first.reason, first.text)
        if pool is None or not keep:
            return AllocationFailure(req.key, "not-in-pool", "no IP in status to adopt")
        if req.requested_ips and {_addr(ip) for ip in req.requested_ips} != set(keep):
            return AllocationFailure(req.key, "not-in-pool", "status IPs differ from the requested IPs")
        if req.family_policy == "RequireDualStack" and len(keep) < len(wanted):
            return AllocationFailure(req.key, "family-unavailable", "RequireDualStack but status holds one family")
        return Assignment(req.key, _texts(keep), pool.name, changed=False, reason=None)

    def assign(self, req: ServiceRequest) -> Assignment | AllocationFailure:
        """Keep what ``req.key`` holds if still acceptable, else (re)allocate; on failure it holds nothing."""
        old_record = self._records.get(req.key)
        old = old_record.addrs if old_record is not None else ()
        # Judge and allocate as if the Service held nothing: its own holdings then never block it.
        self.release(req.key)
        wanted = _wanted(req)
        keep, pool, problems = self._check_held(req, old, wanted)
        fallback = "families changed"
        result: _Allocation | AllocationFailure
        if req.requested_ips:
            fallback = "requested IP changed"
            requested = {_addr(ip) for ip in req.requested_ips}
            if pool is not None and not problems and set(keep) == requested:
                result = (pool, keep)
            else:
                result = self._allocate_requested(req, wanted)
        elif pool is not None and keep:
            result = self._extend(req, wanted, pool, keep)
        else:
            result = self._allocate_fresh(req, wanted)

        dropped = [addr for addr in old if isinstance(result, AllocationFailure) or addr not in result[1]]
        why = None
        if dropped:
            why = next((problems[a].text for a in dropped if a in problems), None)
            why = why or next((p.text for p in problems.values()), fallback)
        if isinstance(result, AllocationFailure):
            if dropped:
                released = ", ".join(_texts(dropped))
                return AllocationFailure(req.key, result.reason, f"{result.message} (released {released}: {why})")
            return result
        pool, addrs = result
        addrs = _in_family_order(addrs, wanted)
        self._hold(req, addrs, pool.name)
        return Assignment(req.key, _texts(addrs), pool.name, changed=set(addrs) != set(old), reason=why)

    # --- judging what a Service holds ----------------------------------------------------------------

    def _check_held(
        self, req: ServiceRequest, addrs: Sequence[Addr], wanted: tuple[int, ...]
    ) -> tuple[list[Addr], PoolSpec | None, dict[Addr, _Problem]]:
        """Split held addresses into those still acceptable (all from one pool) and those to give up."""
        requested = {_addr(ip) for ip in req.requested_ips}
        keep: list[Addr] = []
        keep_pool: PoolSpec | None = None
        problems: dict[Addr, _Problem] = {}
        named = self._by_name.get(req.pool) if req.pool is not None else None
        for addr in addrs:
            pool = named if named is not None and named.contains(addr) else self._pool_for(addr)
            blocker = self._blocker(req, addr)
            if req.requested_ips and addr not in requested:
                problems[addr] = _Problem("not-in-pool", "requested IP changed")
            elif pool is None:
                problems[addr] = _Problem("not-in-pool", "IP left every pool")
            elif req.pool is not None and pool is not named:
                reason: FailureReason = "unknown-pool" if named is None else "not-in-pool"
                problems[addr] = _Problem(reason, f"pool annotation now names pool {req.pool}")
            elif addr[0] not in wanted or any(k[0] == addr[0] for k in keep):
                problems[addr] = _Problem("family-unavailable", "families changed")
            elif keep_pool is not None and pool is not keep_pool:
                problems[addr] = _Problem("not-in-pool", f"IP is now in pool {pool.name}, not {keep_pool.name}")
            elif blocker is not None:
                problems[addr] = _Problem("ip-in-use", f"sharing conflict with {blocker}")
            else:
                keep.append(addr)
                keep_pool = pool
        return keep, keep_pool, problems

    # --- allocating ----------------------------------------------------------------------------------

    def _extend(
        self, req: ServiceRequest, wanted: tuple[int, ...], pool: PoolSpec, keep: list[Addr]
    ) -> _Allocation | AllocationFailure:
        """Keep ``keep`` and add the wanted families it lacks from the same pool, if that pool has them."""
        have = {addr[0] for addr in keep}
        added: list[Addr] = []
        # A pool without auto-assign hands out addresses only on request or by name.
        may_take = pool.auto_assign or req.pool == pool.name
        for family in wanted:
            if family in have or not may_take:
                continue
            value = self._candidate(pool, family, req)
            if value is not None:
                added.append((family, value))
        if req.family_policy == "RequireDualStack" and len(keep) + len(added) < len(wanted):
            # The pool cannot complete the pair, and both IPs must come from one pool: start over.
            return self._allocate_fresh(req, wanted)
        return pool, keep + added

    def _allocate_requested(self, req: ServiceRequest, wanted: tuple[int, ...]) -> _Allocation | AllocationFailure:
        def fail(reason: FailureReason, message: str) -> AllocationFailure:
            return AllocationFailure(req.key, reason, message)

        if not self._pools:
            return fail("no-pools", "no address pools are configured")
        if req.pool is not None and req.pool not in self._by_name:
            return fail("unknown-pool", f"address pool {req.pool!r} does not exist")
        addrs: list[Addr] = []
        for ip in req.requested_ips:
            addr = _addr(ip)
            if addr is None:
                return fail("bad-annotation", f"requested IP {ip!r} is not an IP address")
            if any(a[0] == addr[0] for a in addrs):
                return fail("bad-annotation", f"more than one requested IPv{addr[0]} address")
            addrs.append(addr)
        for addr in addrs:
            if addr[0] not in wanted:
                return fail(
                    "family-unavailable",
                    f"requested IP {_text(addr)} is IPv{addr[0]} but the Service is "
                    f"{req.family_policy} {_families_text(wanted)}",
                )
        if req.family_policy == "RequireDualStack" and len(addrs) < len(wanted):
            return fail("family-unavailable", "RequireDualStack needs one requested IP per family")
        chosen: PoolSpec | None = None
        for addr in addrs:
            pool = self._by_name[req.pool] if req.pool is not None else self._pool_for(addr)
            if pool is None or not pool.contains(addr):
                return fail("not-in-pool", self._not_in_pool_text(addr, req.pool))
            if chosen is not None and pool is not chosen:
                return fail("not-in-pool", f"requested IPs are in different pools ({chosen.name}, {pool.name})")
            chosen = pool
        assert chosen is not None  # requested_ips is non-empty here
        for addr in addrs:
            blocker = self._blocker(req, addr)
            if blocker is not None:
                return fail("ip-in-use", f"requested IP {_text(addr)} is in use by {blocker}")
        return chosen, addrs

    def _allocate_fresh(self, req: ServiceRequest, wanted: tuple[int, ...]) -> _Allocation | AllocationFailure:
        def fail(reason: FailureReason, message: str) -> AllocationFailure:
            return AllocationFailure(req.key, reason, message)

        if not self._pools:
            return fail("no-pools", "no address pools are configured")
        if req.pool is not None:
            named = self._by_name.get(req.pool)
            if named is None:
                return fail("unknown-pool", f"address pool {req.pool!r} does not exist")
            candidates: tuple[PoolSpec, ...] = (named,)
            where = f"pool {req.pool}"
        else:
            candidates = tuple(p for p in self._pools if p.auto_assign)
            if not candidates:
                return fail("no-pools", "no pool has auto-assign enabled; name one with lbspeaker.io/address-pool")
            where = "auto-assign pools " + ", ".join(p.name for p in candidates)
        need_all = req.family_policy != "PreferDualStack"
        partial: _Allocation | None = None
        for pool in candidates:
            got: list[Addr] = []
            for family in wanted:
                value = self._candidate(pool, family, req) if family in pool.ipset.families else None
                if value is not None:
                    got.append((family, value))
                elif need_all:
                    break
            if len(got) == len(wanted):
                return pool, got
            if not need_all and got and partial is None:
                partial = (pool, got)
        if partial is not None:
            return partial
        if need_all:
            has_families = any(all(f in p.ipset.families for f in wanted) for p in candidates)
        else:
            has_families = any(f in p.ipset.families for p in candidates for f in wanted)
        if not has_families:
            one = "one " if need_all and len(wanted) > 1 else ""
            return fail("family-unavailable", f"no {one}pool has {_families_text(wanted, need_all)} ({where})")
        return fail("pool-exhausted", f"no free {_families_text(wanted, need_all)} address in {where}")

    def _candidate(self, pool: PoolSpec, family: int, req: ServiceRequest) -> int | None:
        """The lowest address of ``family`` in ``pool`` this Service may take: free, or shared compatibly."""
        best = pool.ipset.lowest_free(family, self._used[family], pool.avoid_buggy_ips)
        klass = _sharing_class(req)
        members = self._class_ips.get((klass, family)) if klass is not None else None
        if klass is None or not members:
            return best
        taken = [ips for port in req.ports if (ips := self._port_ips.get((klass, family, port)))]
        for first, last in pool.ipset.intervals(family):
            value: int | None = first
            while value is not None and value <= last and (best is None or value < best):
                value = members.next_member(value)
                if value is None or value > last or (best is not None and value >= best):
                    break
                unblocked = _next_gap_of_all(taken, value)
                if unblocked != value:
                    value = unblocked  # one of our ports is taken on this run of addresses: jump past it
                elif pool.avoid_buggy_ips and is_buggy(family, value):
                    value += 1
                else:
                    return value
        return best

    def _not_in_pool_text(self, addr: Addr, pool_name: str | None) -> str:
        pools = (self._by_name[pool_name],) if pool_name is not None else self._pools
        where = f"pool {pool_name}" if pool_name is not None else "any pool"
        if any(p.ipset.contains_int(*addr) and p.avoid_buggy_ips for p in pools):
            return f"requested IP {_text(addr)} ends in .0 or .255 and {where} avoids buggy IPs"
        return f"requested IP {_text(addr)} is not in {where}"

    # --- indexes -------------------------------------------------------------------------------------

    def _pool_for(self, addr: Addr) -> PoolSpec | None:
        # Pools are few (tens at most) and config validation keeps them disjoint: the first match is the one.
        for pool in self._pools:
            if pool.contains(addr):
                return pool
        return None

    def _blocker(self, req: ServiceRequest, addr: Addr) -> str | None:
        """The first other holder of ``addr`` that ``req`` may not share with, or None."""
        group = self._groups.get(addr)
        if group is None or not group.holders or group.holders == {req.key}:
            return None
        klass = _sharing_class(req)
        if klass is None or klass != group.klass:
            return min(k for k in group.holders if k != req.key)
        clashing = [holder for port in req.ports if (holder := group.ports.get(port)) not in (None, req.key)]
        return min(clashing) if clashing else None

    def _hold(self, req: ServiceRequest, addrs: Sequence[Addr], pool: str) -> None:
        self._records[req.key] = _Record(req, tuple(addrs), pool)
        klass = _sharing_class(req)
        for addr in addrs:
            family, value = addr
            group = self._groups.get(addr)
            if group is None:
                group = self._groups[addr] = _Group(klass)
                self._used[family].add(value)
                if klass is not None:
                    self._class_ips.setdefault((klass, family), SortedInts()).add(value)
            group.holders.add(req.key)
            for port in req.ports:
                group.ports[port] = req.key
                if klass is not None:
                    self._port_ips.setdefault((klass, family, port), SortedInts()).add(value)

    def _unhold(self, key: str, req: ServiceRequest, addr: Addr) -> None:
        family, value = addr
        group = self._groups.get(addr)
        if group is None or key not in group.holders:
            return
        group.holders.discard(key)
        for port in req.ports:
            if group.ports.get(port) == key:
                del group.ports[port]
                if group.klass is not None:
                    _discard(self._port_ips, (group.klass, family, port), value)
        if not group.holders:
            del self._groups[addr]
            self._used[family].discard(value)
            if group.klass is not None:
                _discard(self._class_ips, (group.klass, family), value)


def _discard(index: dict[_K, SortedInts], key: _K, value: int) -> None:
    ints = index.get(key)
    if ints is not None:
        ints.discard(value)
        if not ints:
            del index[key]


def _next_gap_of_all(sets: Sequence[SortedInts], value: int) -> int:
    """The smallest integer >= value in none of ``sets``: each step jumps a whole run."""
    while True:
        start = value
        for ints in sets:
            value = ints.next_gap(value)
        if value == start:
            return value
def _wanted(req: ServiceRequest) -> tuple[int, ...]:
    """The families to allocate, in ipFamilies order."""
    families = tuple(dict.fromkeys(req.families)) or (4,)
    if req.family_policy == "RequireDualStack":
        # The API server always lists both; be forgiving if a caller did not.
        return (*families, *(f for f in (4, 6) if f not in families))[:2]
    if req.family_policy == "PreferDualStack":
        # Only the families the cluster gave the Service: a v4-only cluster lists just IPv4 here.
        return families[:2]
    return families[:1]


def _in_family_order(addrs: Sequence[Addr], wanted: tuple[int, ...]) -> list[Addr]:
    return sorted(addrs, key=lambda a: (wanted.index(a[0]) if a[0] in wanted else len(wanted), a))


def _addr(text: str) -> Addr | None:
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    return ip.version, int(ip)


def _text(addr: Addr) -> str:
    return str(to_ip(*addr))


def _texts(addrs: Sequence[Addr]) -> tuple[str, ...]:
    return tuple(_text(a) for a in addrs)


def _families_text(families: tuple[int, ...], all_of: bool = True) -> str:
    return (" and " if all_of else " or ").join(f"IPv{f}" for f in families)
