"""The speaker's pure parts: the layer2 rules (over ``speaker.layer2.plan``), the Lease schema, key decoding, links."""

from __future__ import annotations

import base64
import ipaddress
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from lbspeaker import election, objects
from lbspeaker.l2.interfaces import Interface
from lbspeaker.speaker import eligibility, layer2, lease
from lbspeaker.speaker.app import decode_key
from lbspeaker.speaker.layer2 import local_link
from lbspeaker.speaker.lease import node_of
from lbspeaker.speaker.metrics import SpeakerCollector
from tests.unit.speaker.pools import CONFIG, V4, V6

ALL = ("node1", "node2", "node3")


def node(name: str, labels: dict[str, str] | None = None, unavailable: bool = False,
         addresses: list[dict[str, str]] | None = None) -> dict[str, Any]:
    conditions = [{"type": "NetworkUnavailable", "status": "True"}] if unavailable else []
    return {"metadata": {"name": name, "labels": labels or {}},
            "status": {"conditions": conditions, "addresses": addresses or []}}


def nodes(*objs: dict[str, Any]) -> dict[str, objects.NodeView]:
    views = [objects.node_view(o) for o in (objs or tuple(node(n) for n in ALL))]
    return {v.name: v for v in views}


def svc(key: str, *ips: str, local: bool = False, ready: tuple[str, ...] = ALL, any_ready: bool = True
        ) -> objects.ServiceView:
    return objects.ServiceView(key, ips, local, frozenset(ready), any_ready)


LINKS = {n: lease.Link((V4, V6), True) for n in ALL}


def owner_of(ip: str, services: list[objects.ServiceView], alive: tuple[str, ...] = ALL,
             node_views: dict[str, objects.NodeView] | None = None,
             links: dict[str, lease.Link] | None = None) -> str | None:
    p = layer2.plan(CONFIG, services, node_views or nodes(), LINKS if links is None else links, alive)
    return p.l2[ip].owner if ip in p.l2 else None


def test_owner_is_the_election_over_live_nodes() -> None:
    ip = "192.0.2.201"
    assert owner_of(ip, [svc("a/x", ip)]) == election.owner(ip, ALL)
    first = election.owner(ip, ALL)
    rest = tuple(n for n in ALL if n != first)
    assert owner_of(ip, [svc("a/x", ip)], alive=rest) == election.owner(ip, rest)


def test_no_config_or_no_pool_announces_nothing() -> None:
    assert layer2.plan(None, [svc("a/x", "192.0.2.201")], nodes(), LINKS, ALL).l2 == {}
    p = layer2.plan(CONFIG, [svc("a/x", "198.51.100.99")], nodes(), LINKS, ALL)
    assert p.l2 == {} and p.unknown == {"198.51.100.99": ("a/x",)}


def ip_won_by(node: str, pool_range: range = range(200, 251)) -> str:
    """An IP of pool l2 that ``node`` wins over all three nodes: excluding it must change the owner."""
    return next(ip for ip in (f"192.0.2.{i}" for i in pool_range) if election.owner(ip, ALL) == node)


def test_excluded_label_and_network_unavailable_make_a_node_ineligible() -> None:
    for node_name, obj in (("node1", node("node1", {eligibility.EXCLUDE_LABEL: ""})),
                           ("node2", node("node2", unavailable=True))):
        ip = ip_won_by(node_name)
        views = nodes(*(obj if n == node_name else node(n) for n in ALL))
        assert owner_of(ip, [svc("a/x", ip)], node_views=views) == election.owner(
            ip, [n for n in ALL if n != node_name])
        assert eligibility.excluded(views[node_name])
    views = nodes(node("node1", {eligibility.EXCLUDE_LABEL: ""}), node("node2", unavailable=True), node("node3"))
    assert eligibility.excluded(views["node2"]) == "NetworkUnavailable"


def test_node_without_node_object_is_not_eligible() -> None:
    assert owner_of("192.0.2.201", [svc("a/x", "192.0.2.201")], node_views=nodes(node("node2"))) == "node2"


def test_pool_node_selectors() -> None:
    views = nodes(node("node1"), node("node2", {"rack": "a"}), node("node3"))
    assert owner_of("192.0.2.105", [svc("a/x", "192.0.2.105")], node_views=views) == "node2"


def test_local_policy_needs_a_ready_local_endpoint_and_cluster_any() -> None:
    ip = "192.0.2.202"
    assert owner_of(ip, [svc("a/x", ip, local=True, ready=("node3",))]) == "node3"
    assert owner_of(ip, [svc("a/x", ip, local=True, ready=())]) is None
    assert owner_of(ip, [svc("a/x", ip, ready=(), any_ready=False)]) is None
    # Cluster: a ready endpoint anywhere (even without a nodeName) is enough, on any node.
    assert owner_of(ip, [svc("a/x", ip, ready=(), any_ready=True)]) == election.owner(ip, ALL)


def test_shared_ip_is_one_election_over_the_intersection() -> None:
    ip = "192.0.2.203"
    a = svc("a/x", ip, local=True, ready=("node1", "node2"))
    b = svc("a/y", ip, local=True, ready=("node2", "node3"))
    p = layer2.plan(CONFIG, [a, b], nodes(), LINKS, ALL)
    assert p.l2[ip].owner == "node2" and p.l2[ip].services == ("a/x", "a/y")


def test_interface_on_subnet_rule_and_fallback() -> None:
    ip = "192.0.2.201"
    links = dict(LINKS)
    links["node1"] = lease.Link((V6,), True)  # its IPv4 interface is down
    links["node2"] = lease.Link((), False)  # nothing up at all
    assert owner_of(ip, [svc("a/x", ip)], links=links) == "node3"
    # Nobody has 203.0.113.0/28's subnet: any live node with an up interface will do, never node2.
    far = "203.0.113.5"
    assert owner_of(far, [svc("a/x", far)], links=links) == election.owner(far, ("node1", "node3"))
    # Somebody has the subnet but is not a candidate (no endpoint there): no off-subnet fallback.
    only = {"node1": lease.Link((V4,), True), "node2": lease.Link((V6,), True),
            "node3": lease.Link((V6,), True)}
    assert owner_of(ip, [svc("a/x", ip, local=True, ready=("node2",))], links=only) is None


def test_bgp_pools_are_left_to_the_bgp_seam() -> None:
    p = layer2.plan(CONFIG, [svc("a/x", "198.51.100.3")], nodes(), LINKS, ALL)
    assert p.l2 == {} and p.bgp["198.51.100.3"].protocol == "bgp" and p.bgp["198.51.100.3"].owner is None


def test_spread_over_three_nodes() -> None:
    ips = [str(ipaddress.IPv6Address(int(ipaddress.IPv6Address("2001:db8::1000")) + i)) for i in range(256)]
    p = layer2.plan(CONFIG, [svc("a/x", *ips)], nodes(), LINKS, ALL)
    counts = {n: len(p.owned_by(n)) for n in ALL}
    assert sum(counts.values()) == 256
    assert all(0.2 * 256 <= c <= 0.47 * 256 for c in counts.values()), counts


def test_services_from_cache_applies_lb_class_and_endpoint_slices() -> None:
    def service(name: str, ips: list[str], cls: str | None = None, policy: str = "Cluster") -> dict[str, Any]:
        spec: dict[str, Any] = {"type": "LoadBalancer", "externalTrafficPolicy": policy}
        if cls:
            spec["loadBalancerClass"] = cls
        return {"metadata": {"namespace": "a", "name": name}, "spec": spec,
                "status": {"loadBalancer": {"ingress": [{"ip": ip} for ip in ips]}}}

    slices = [{"metadata": {"namespace": "a", "name": "x-1", "labels": {objects.SERVICE_NAME_LABEL: "x"}},
               "endpoints": [{"nodeName": "node1", "conditions": {"ready": True}},
                             {"nodeName": "node2", "conditions": {"ready": False}},
                             {"nodeName": "node3", "conditions": {}},
                             "garbage"]}]
    views = objects.services_from_cache(
        [service("x", ["2001:DB8::1000"], policy="Local"), service("y", ["192.0.2.9"], cls="other"),
         service("z", []), service("w", ["not-an-ip"])], slices, None)
    assert [v.key for v in views] == ["a/x"]
    assert views[0].ips == ("2001:db8::1000",) and views[0].local
    assert views[0].ready_nodes == {"node1", "node3"} and views[0].any_ready


def test_link_annotations_round_trip_and_tolerate_garbage() -> None:
    text = lease.format_subnets([V6, V4, V4])
    assert text == "192.0.2.0/24,2001:db8::/64"
    link = lease.parse_link({lease.SUBNETS_ANNOTATION: text + ",nonsense,,198.51.100.300/8",
                                lease.INTERFACES_UP_ANNOTATION: "true"})
    assert link == lease.Link((V4, V6), True)
    assert lease.parse_link({}) == lease.Link((), False)


def test_internal_ip_prefers_ipv4_and_skips_garbage() -> None:
    obj = node("n", addresses=[{"type": "InternalIP", "address": "2001:db8::5"},
                               {"type": "InternalIP", "address": "bad"},
                               {"type": "ExternalIP", "address": "203.0.113.1"},
                               {"type": "InternalIP", "address": "192.0.2.5"}])
    assert objects.internal_ip(obj) == "192.0.2.5"
    assert objects.internal_ip(node("n")) is None


def test_speaker_lease_view_and_node_of() -> None:
    obj: dict[str, Any] = {"metadata": {"name": "speaker-node1", "resourceVersion": "7",
                        "annotations": {lease.HEARTBEAT_ANNOTATION: "192.0.2.1:7946", lease.BOOT_ANNOTATION: "4",
                                        lease.STATE_ANNOTATION: "9 serving",
                                        lease.VOTED_DEAD_ANNOTATION: "4.8 node2"}},
           "spec": {"holderIdentity": "node1", "renewTime": "2026-01-01T00:00:00.000000Z",
                    "leaseDurationSeconds": 40}}
    got = lease.speaker_lease(obj)
    assert got is not None
    assert (got.node, got.holder, got.duration, got.heartbeat_addr) == ("node1", "node1", 40.0, ("192.0.2.1", 7946))
    assert (got.boot, got.version, got.serving, got.left, got.voted_dead) == (4, 9, True, False, (4, 8, "node2"))
    assert got.renew_time == 1767225600.0
    renewed = {**obj, "metadata": {**obj["metadata"], "resourceVersion": "8"},
               "spec": {**obj["spec"], "renewTime": "2026-01-01T00:00:10.000000Z"}}
    again = lease.speaker_lease(renewed)
    assert again is not None and again.content == got.content  # a renewal alone changes nothing worth recomputing
    assert node_of(obj) == "node1"
    assert node_of({"metadata": {"name": "lbspeaker-controller"}}) is None
    assert node_of({"metadata": {"name": "speaker-"}}) is None
    bad = lease.speaker_lease({"metadata": {"name": "speaker-x", "annotations": {
        lease.BOOT_ANNOTATION: "-3", lease.STATE_ANNOTATION: "zz", lease.HEARTBEAT_ANNOTATION: "[192.0.2.1]:1"}},
        "spec": {"leaseDurationSeconds": "x", "renewTime": 5}})
    assert bad is not None and (bad.boot, bad.version, bad.serving, bad.heartbeat_addr, bad.duration) == (
        0, 0, False, None, 0.0)
    left = lease.speaker_lease({"metadata": {"name": "speaker-y", "annotations": {lease.STATE_ANNOTATION: "left"}}})
    assert left is not None and left.left and left.holder is None


def test_published_peer_addresses() -> None:
    assert lease.peer_address("192.0.2.1:7946") == ("192.0.2.1", 7946)
    assert lease.peer_address("[2001:db8::1]:7946") == ("2001:db8::1", 7946)
    for bad in ("2001:db8::1:7946", "[192.0.2.1]:1", "host:1", "192.0.2.1:0", "192.0.2.1:70000", "", None):
        assert lease.peer_address(bad) is None

def test_decode_key_never_echoes_the_key() -> None:
    key = b"k" * 32
    secret = {"data": {"secretkey": base64.b64encode(key).decode()}}
    assert decode_key(secret) == (key, "ok")
    assert decode_key(None)[0] is None
    short = decode_key({"data": {"secretkey": base64.b64encode(b"abc").decode()}})
    assert short[0] is None and "abc" not in short[1] and "YWJj" not in short[1]
    assert decode_key({"data": {"secretkey": "!!not base64!!"}})[0] is None
    assert decode_key({"data": {}})[0] is None


def test_local_link_uses_up_broadcast_interfaces_only() -> None:
    addr = ipaddress.ip_interface

    def iface(name: str, up: bool = True, *addrs: str, loopback: bool = False) -> Interface:
        return Interface(name, 1, b"\x02" * 6, up, up, not loopback, loopback, False,
                         tuple(addr(a) for a in addrs))

    ifaces = [iface("lo", True, "127.0.0.1/8", loopback=True), iface("eth0", True, "192.0.2.11/24", "fe80::1/64"),
              iface("eth1", False, "198.51.100.1/24")]
    assert local_link(ifaces, None) == lease.Link((V4,), True)
    assert local_link(ifaces, "eth1") == lease.Link((), False)


def test_speaker_collector_exports_l2_and_heartbeat_counters() -> None:
    registry = CollectorRegistry()
    registry.register(SpeakerCollector(lambda: {
        "l2": {"requests_received": 5, "responses_sent": 4, "gratuitous_sent": 3, "duplicates_seen": 1},
        "heartbeat": {"sent": 10, "received": 9, "rejected": {"mac": 2}}}))
    text = generate_latest(registry).decode()
    for line in ("lbspeaker_speaker_requests_received_total 5.0", "lbspeaker_speaker_gratuitous_sent_total 3.0",
                 "lbspeaker_speaker_duplicates_seen_total 1.0", "lbspeaker_speaker_heartbeats_sent_total 10.0",
                 'lbspeaker_speaker_heartbeats_rejected_total{reason="mac"} 2.0'):
        assert line in text
