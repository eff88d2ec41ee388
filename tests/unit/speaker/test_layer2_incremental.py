"""The incremental layer2 election: after any sequence of changes it agrees with a build from scratch,
and it recomputes only what the rendezvous property says may have moved."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from lbspeaker import election
from lbspeaker.config.parse import parse_config
from lbspeaker.objects import NodeView, ServiceView
from lbspeaker.speaker import eligibility
from lbspeaker.speaker.layer2 import Election, plan
from lbspeaker.speaker.lease import Link
from lbspeaker.speaker.protocol import Changes
from tests.unit.speaker.pools import CONFIG, V4, V6

NODES = [f"n{i}" for i in range(6)]
IPS = ["192.0.2.200", "192.0.2.201", "192.0.2.202", "192.0.2.203", "2001:db8::1001", "2001:db8::1002",
       "203.0.113.3", "192.0.2.105", "198.51.100.2", "192.0.2.9"]


class Model:
    def __init__(self) -> None:
        self.nodes = {n: NodeView(n, {}, False) for n in NODES}
        self.links = {n: Link((V4, V6), True) for n in NODES}
        self.services: dict[str, ServiceView] = {}
        self.alive = frozenset(NODES)
        self.election = Election()
        self.election.update(CONFIG, self.services, self.nodes, self.links, self.alive, Changes(everything=True))

    def check(self) -> None:
        fresh = plan(CONFIG, list(self.services.values()), self.nodes, self.links, self.alive)
        got = {ip: self.election.owner(ip) for ip in self.election.ips if self.election.ips[ip].protocol == "layer2"}
        assert got == {ip: d.owner for ip, d in fresh.l2.items()}
        by_owner = {n: ips for n, ips in self.election.by_owner.items() if ips}
        expected: dict[str, set[str]] = {}
        for ip, d in fresh.l2.items():
            if d.owner is not None:
                expected.setdefault(d.owner, set()).add(ip)
        assert by_owner == expected

    def apply(self, op: tuple[object, ...]) -> None:
        kind = op[0]
        if kind == "alive":
            node = str(op[1])
            self.alive = self.alive - {node} if node in self.alive else self.alive | {node}
            self.election.update(CONFIG, self.services, self.nodes, self.links, self.alive, Changes())
        elif kind == "service":
            key, ips, local, ready, any_ready = op[1:]
            assert isinstance(key, str) and isinstance(ips, list) and isinstance(ready, frozenset)
            if ips:
                self.services[key] = ServiceView(key, tuple(ips), bool(local), frozenset(ready), bool(any_ready))
            else:
                self.services.pop(key, None)
            self.election.update(CONFIG, self.services, self.nodes, self.links, self.alive,
                                 Changes(services=frozenset({key})))
        elif kind == "node":
            node, labels, unavailable = str(op[1]), op[2], op[3]
            assert isinstance(labels, dict)
            self.nodes[node] = NodeView(node, dict(labels), bool(unavailable))
            self.election.update(CONFIG, self.services, self.nodes, self.links, self.alive,
                                 Changes(nodes=frozenset({node})))
        elif kind == "link":
            node, subnets, up = str(op[1]), op[2], op[3]
            assert isinstance(subnets, tuple)
            self.links[node] = Link(tuple(subnets), bool(up))
            self.election.update(CONFIG, self.services, self.nodes, self.links, self.alive,
                                 Changes(nodes=frozenset({node})))


node_names = st.sampled_from(NODES)
ops = st.one_of(
    st.tuples(st.just("alive"), node_names),
    st.tuples(st.just("service"), st.sampled_from(["a/x", "a/y", "b/z", "b/w"]),
              st.lists(st.sampled_from(IPS), max_size=3, unique=True), st.booleans(),
              st.frozensets(node_names, max_size=4), st.booleans()),
    st.tuples(st.just("node"), node_names,
              st.sampled_from([{}, {"rack": "a"}, {eligibility.EXCLUDE_LABEL: ""}]), st.booleans()),
    st.tuples(st.just("link"), node_names, st.sampled_from([(V4, V6), (V4,), (V6,), ()]), st.booleans()),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(ops, max_size=30))
def test_incremental_updates_agree_with_a_build_from_scratch(sequence: list[tuple[object, ...]]) -> None:
    model = Model()
    model.check()
    for op in sequence:
        model.apply(op)
        model.check()


def many_ips(count: int) -> list[str]:
    base = int(ipaddress.IPv6Address("2001:db8::1000"))
    return [str(ipaddress.IPv6Address(base + i)) for i in range(count)]


def big_election(nodes: list[str], ips: list[str]) -> tuple[Election, dict[str, ServiceView], dict[str, NodeView],
                                                           dict[str, Link]]:
    cfg = parse_config("address-pools:\n- name: p\n  protocol: layer2\n  addresses: [2001:db8::/64]\n")
    views = {n: NodeView(n, {}, False) for n in nodes}
    links = {n: Link((V6,), True) for n in nodes}
    services = {f"s/{i}": ServiceView(f"s/{i}", (ip,), False, frozenset(), True) for i, ip in enumerate(ips)}
    e = Election()
    e.update(cfg, services, views, links, frozenset(nodes), Changes(everything=True))
    return e, services, views, links


def test_a_death_recomputes_only_the_ips_the_dead_node_held() -> None:
    nodes = [f"n{i:02d}" for i in range(20)]
    ips = many_ips(400)
    e, services, views, links = big_election(nodes, ips)
    victim = "n07"
    held = e.owned_by(victim)
    assert held
    before = e.recomputed
    changed = e.update(e.config, services, views, links, frozenset(nodes) - {victim}, Changes())
    assert changed == held
    assert e.recomputed - before == len(held)
    assert all(e.owner(ip) == election.owner(ip, set(nodes) - {victim}) for ip in held)


def test_a_join_computes_one_hash_per_ip_and_recomputes_nothing() -> None:
    nodes = [f"n{i:02d}" for i in range(20)]
    ips = many_ips(400)
    e, services, views, links = big_election(nodes, ips)
    e.update(e.config, services, views, links, frozenset(nodes) - {"n03"}, Changes())
    before = e.recomputed
    changed = e.update(e.config, services, views, links, frozenset(nodes), Changes())
    assert e.recomputed == before  # the newcomer was compared with each owner, nobody recomputed
    assert changed == {ip for ip in ips if election.owner(ip, nodes) == "n03"}


def test_a_service_change_recomputes_only_its_ips() -> None:
    nodes = [f"n{i:02d}" for i in range(10)]
    ips = many_ips(100)
    e, services, views, links = big_election(nodes, ips)
    before = e.recomputed
    services = dict(services)
    services["s/5"] = replace(services["s/5"], local=True, ready_nodes=frozenset({"n01"}))
    changed = e.update(e.config, services, views, links, frozenset(nodes), Changes(services=frozenset({"s/5"})))
    assert e.recomputed - before == 1
    assert e.owner(ips[5]) == "n01"
    assert changed <= {ips[5]}
