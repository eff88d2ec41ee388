"""What a node announces in BGP mode: its peers (selectors, passwords, router id) and its routes."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from lbspeaker.bgp.model import Advertisement, BgpPeer
from lbspeaker.bgp.routes import merge_routes, routes_for_peer
from lbspeaker.config import Config, parse_config
from lbspeaker.objects import ServiceView, services_from_cache
from lbspeaker.speaker.bgp import node_routes, peers_for_node

SECRET_PASSWORD = "s3cr3t-Pa55"  # a test value that must never show up in text

CONFIG = """
bgp-communities:
  no-advertise: "65535:65282"
address-pools:
- name: bgp-plain
  protocol: bgp
  addresses: [203.0.113.0/28, 2001:db8:5::/120]
- name: bgp-agg
  protocol: bgp
  addresses: [198.51.100.0/24]
  bgp-advertisements:
  - aggregation-length: 24
    localpref: 150
    communities: [no-advertise, "64500:7"]
    large-communities: ["64500:1:2"]
  - aggregation-length: 32
- name: l2
  protocol: layer2
  addresses: [192.0.2.100-192.0.2.120]
- name: bgp-rack1
  protocol: bgp
  addresses: [203.0.113.64/28]
  node-selectors:
  - match-labels: {rack: r1}
peers:
- peer-address: 192.0.2.1
  peer-asn: 64501
  my-asn: 64500
  hold-time: 30s
  source-address: 192.0.2.10
  ebgp-multihop: true
- peer-address: 192.0.2.2
  peer-asn: 64500
  my-asn: 64500
  router-id: 192.0.2.99
  node-selectors:
  - match-labels: {rack: r1}
- peer-address: 192.0.2.3
  peer-asn: 64502
  my-asn: 64500
  password-secret: {name: bgp-auth, key: pw}
- peer-address: 2001:db8::1
  peer-asn: 64503
  my-asn: 64500
  password: inline-pw
  node-selectors:
  - match-expressions:
    - {key: rack, operator: NotIn, values: [r1]}
"""


def views(services: list[dict[str, Any]], slices: list[dict[str, Any]],
          lb_class: str | None = None) -> list[ServiceView]:
    return services_from_cache(services, slices, lb_class)


@pytest.fixture(scope="module")
def cfg() -> Config:
    return parse_config(CONFIG)


def svc(name: str, *ips: str, policy: str = "Cluster", ns: str = "default", lb_class: str | None = None,
        kind: str = "LoadBalancer") -> dict[str, Any]:
    spec: dict[str, Any] = {"type": kind, "externalTrafficPolicy": policy}
    if lb_class is not None:
        spec["loadBalancerClass"] = lb_class
    return {
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
        "status": {"loadBalancer": {"ingress": [{"ip": ip} for ip in ips]}},
    }


def eps(service: str, *endpoints: tuple[str | None, bool | None], ns: str = "default",
        name: str | None = None) -> dict[str, Any]:
    """An EndpointSlice; each endpoint is (nodeName, ready) with None meaning the field is absent."""
    items = []
    for node, ready in endpoints:
        ep: dict[str, Any] = {"addresses": ["10.244.0.1"]}
        if node is not None:
            ep["nodeName"] = node
        if ready is not None:
            ep["conditions"] = {"ready": ready}
        items.append(ep)
    return {
        "metadata": {"name": name or f"{service}-abc", "namespace": ns,
                     "labels": {"kubernetes.io/service-name": service}},
        "endpoints": items,
    }


def prefixes(routes: list[Advertisement]) -> list[str]:
    return [r.prefix for r in routes]


# -- peers -------------------------------------------------------------------------------------------


def by_address(peers: list[BgpPeer]) -> dict[str, BgpPeer]:
    return {p.peer_address: p for p in peers}


def test_peer_node_selectors_pick_the_peers_of_this_node(cfg: Config) -> None:
    secrets = {("bgp-auth", "pw"): SECRET_PASSWORD}
    rack1, problems = peers_for_node(cfg, "n1", {"rack": "r1"}, secrets, "192.0.2.11")
    assert problems == []
    assert sorted(by_address(rack1)) == ["192.0.2.1", "192.0.2.2", "192.0.2.3"]
    other, _ = peers_for_node(cfg, "n2", {"rack": "r2"}, secrets, "192.0.2.12")
    assert sorted(by_address(other)) == ["192.0.2.1", "192.0.2.3", "2001:db8::1"]


def test_peer_fields_are_carried_over(cfg: Config) -> None:
    peers, _ = peers_for_node(cfg, "n1", {"rack": "r1"}, {("bgp-auth", "pw"): SECRET_PASSWORD}, "192.0.2.11")
    first = by_address(peers)["192.0.2.1"]
    assert (first.peer_asn, first.my_asn, first.peer_port) == (64501, 64500, 179)
    assert first.hold_time == 30.0
    assert first.keepalive_time == 10.0
    assert first.source_address == "192.0.2.10"
    assert first.ebgp_multihop is True
    assert first.password is None


def test_router_id_defaults_to_the_node_ipv4_unless_the_peer_sets_one(cfg: Config) -> None:
    peers = by_address(peers_for_node(cfg, "n1", {"rack": "r1"}, {}, "192.0.2.11")[0])
    assert peers["192.0.2.1"].router_id == "192.0.2.11"
    assert peers["192.0.2.2"].router_id == "192.0.2.99"


@pytest.mark.parametrize("node_ip", [None, "", "2001:db8::11", "not-an-ip"])
def test_router_id_is_left_to_the_bgp_layer_without_a_node_ipv4(cfg: Config, node_ip: str | None) -> None:
    peers = by_address(peers_for_node(cfg, "n1", {"rack": "r1"}, {}, node_ip)[0])
    assert peers["192.0.2.1"].router_id is None
    assert peers["192.0.2.2"].router_id == "192.0.2.99"


def test_password_from_secret_and_inline(cfg: Config) -> None:
    peers = by_address(peers_for_node(cfg, "n2", {}, {("bgp-auth", "pw"): SECRET_PASSWORD}, None)[0])
    assert peers["192.0.2.3"].password == SECRET_PASSWORD
    assert peers["2001:db8::1"].password == "inline-pw"


def test_missing_secret_key_is_reported_and_the_peer_skipped(cfg: Config) -> None:
    peers, problems = peers_for_node(cfg, "n2", {}, {("bgp-auth", "password"): SECRET_PASSWORD}, None)
    assert "192.0.2.3" not in by_address(peers)
    assert "192.0.2.1" in by_address(peers)
    assert problems == ["peer 192.0.2.3: Secret bgp-auth has no key pw; that peer is left out"]


def test_missing_secret_is_reported_and_the_peer_skipped(cfg: Config) -> None:
    peers, problems = peers_for_node(cfg, "n2", {}, {("other", "pw"): SECRET_PASSWORD}, None)
    assert "192.0.2.3" not in by_address(peers)
    assert problems == ["peer 192.0.2.3: Secret bgp-auth not found (needed for key pw); that peer is left out"]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "is empty"),
        (SECRET_PASSWORD + "\n", "contains a line break"),
        ("x" * 81, "must be 1 to 80 bytes long"),
    ],
)
def test_unusable_secret_values_are_reported_without_the_value(cfg: Config, value: str, problem: str) -> None:
    peers, problems = peers_for_node(cfg, "n2", {}, {("bgp-auth", "pw"): value}, None)
    assert "192.0.2.3" not in by_address(peers)
    assert len(problems) == 1
    assert problems[0].startswith("peer 192.0.2.3: ")
    assert problem in problems[0]
    if value:
        assert value.strip() not in problems[0]


def test_password_never_in_repr_str_or_logs(cfg: Config, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secrets = {("bgp-auth", "pw"): SECRET_PASSWORD}
    result = peers_for_node(cfg, "n2", {}, secrets, "192.0.2.12")
    peers = by_address(result[0])
    assert peers["192.0.2.3"].password == SECRET_PASSWORD  # it is there, just never shown
    for text in (repr(result), str(result), repr(peers["192.0.2.3"]), str(peers["192.0.2.3"]), caplog.text):
        assert SECRET_PASSWORD not in text
        assert "inline-pw" not in text
    bad = peers_for_node(cfg, "n2", {}, {("bgp-auth", "pw"): SECRET_PASSWORD + "\x00"}, None)
    assert SECRET_PASSWORD not in repr(bad)


# -- routes ------------------------------------------------------------------------------------------


def test_cluster_policy_needs_a_ready_endpoint_anywhere(cfg: Config) -> None:
    services = [svc("web", "203.0.113.5")]
    routes, per = node_routes(cfg, "n1", views(services, [eps("web", ("n2", True))]), True)
    assert prefixes(routes) == ["203.0.113.5/32"]
    assert per == {"default/web": ["203.0.113.5/32"]}
    routes, per = node_routes(cfg, "n1", views(services, [eps("web", ("n2", False))]), True)
    assert (routes, per) == ([], {})
    routes, _ = node_routes(cfg, "n1", views(services, []), True)
    assert routes == []


def test_ready_condition_absent_counts_as_ready(cfg: Config) -> None:
    routes, _ = node_routes(cfg, "n1", views([svc("web", "203.0.113.5")], [eps("web", (None, None))]), True)
    assert prefixes(routes) == ["203.0.113.5/32"]


def test_local_policy_needs_a_ready_endpoint_on_this_node(cfg: Config) -> None:
    services = [svc("web", "203.0.113.5", policy="Local")]
    here = eps("web", ("n1", True), ("n2", True))
    assert prefixes(node_routes(cfg, "n1", views(services, [here]), True)[0]) == ["203.0.113.5/32"]
    other_node = eps("web", ("n2", True))
    assert node_routes(cfg, "n1", views(services, [other_node]), True) == ([], {})
    not_ready_here = eps("web", ("n1", False), ("n2", True))
    assert node_routes(cfg, "n1", views(services, [not_ready_here]), True) == ([], {})


def test_endpoint_slices_of_all_slices_of_the_service_count(cfg: Config) -> None:
    services = [svc("web", "203.0.113.5", policy="Local")]
    slices = [eps("web", ("n2", True), name="web-1"), eps("web", ("n1", True), name="web-2")]
    assert prefixes(node_routes(cfg, "n1", views(services, slices), True)[0]) == ["203.0.113.5/32"]


def test_endpoint_slices_of_other_services_or_namespaces_do_not_count(cfg: Config) -> None:
    services = [svc("web", "203.0.113.5", ns="shop")]
    slices = [eps("web", ("n1", True), ns="other"), eps("api", ("n1", True), ns="shop"),
              {"metadata": {"name": "x", "namespace": "shop"}, "endpoints": [{"nodeName": "n1"}]}]
    assert node_routes(cfg, "n1", views(services, slices), True) == ([], {})
    slices.append(eps("web", ("n9", True), ns="shop"))
    assert node_routes(cfg, "n1", views(services, slices), True)[1] == {"shop/web": ["203.0.113.5/32"]}


def test_ineligible_node_announces_nothing(cfg: Config) -> None:
    services = [svc("web", "203.0.113.5")]
    assert node_routes(cfg, "n1", views(services, [eps("web", ("n1", True))]), False) == ([], {})


def test_no_config_announces_nothing() -> None:
    assert node_routes(None, "n1", views([svc("web", "203.0.113.5")], [eps("web", ("n1", True))]), True) == ([], {})


def test_pool_node_selectors(cfg: Config) -> None:
    services = [svc("web", "203.0.113.70")]
    slices = [eps("web", ("n1", True))]
    yes = node_routes(cfg, "n1", views(services, slices), True, node_labels={"rack": "r1"})
    assert prefixes(yes[0]) == ["203.0.113.70/32"]
    assert node_routes(cfg, "n1", views(services, slices), True, node_labels={"rack": "r2"}) == ([], {})
    assert node_routes(cfg, "n1", views(services, slices), True) == ([], {})


def test_aggregation_and_communities_per_advertisement(cfg: Config) -> None:
    services = [svc("a", "198.51.100.3"), svc("b", "198.51.100.9")]
    slices = [eps("a", ("n1", True)), eps("b", ("n2", True))]
    routes, per = node_routes(cfg, "n1", views(services, slices), True)
    aggregate = Advertisement(prefix="198.51.100.0/24", localpref=150, communities=("65535:65282", "64500:7"),
                              large_communities=("64500:1:2",))
    assert routes == [
        aggregate,
        Advertisement(prefix="198.51.100.3/32"),
        Advertisement(prefix="198.51.100.9/32"),
    ]
    assert per == {"default/a": ["198.51.100.0/24", "198.51.100.3/32"],
                   "default/b": ["198.51.100.0/24", "198.51.100.9/32"]}


def test_no_advertisement_gives_host_routes_per_family(cfg: Config) -> None:
    services = [svc("dual", "203.0.113.5", "2001:db8:5::7")]
    routes, per = node_routes(cfg, "n1", views(services, [eps("dual", ("n1", True))]), True)
    assert routes == [Advertisement(prefix="203.0.113.5/32"), Advertisement(prefix="2001:db8:5::7/128")]
    assert per == {"default/dual": ["203.0.113.5/32", "2001:db8:5::7/128"]}


def test_localpref_stays_in_routes_and_the_bgp_layer_drops_it_for_ebgp(cfg: Config) -> None:
    routes, _ = node_routes(cfg, "n1", views([svc("a", "198.51.100.3")], [eps("a", ("n1", True))]), True)
    assert {r.prefix: r.localpref for r in routes} == {"198.51.100.0/24": 150, "198.51.100.3/32": None}
    peers = by_address(peers_for_node(cfg, "n1", {"rack": "r1"}, {("bgp-auth", "pw"): "pw"}, "192.0.2.11")[0])
    ibgp, ebgp = peers["192.0.2.2"], peers["192.0.2.1"]
    assert ibgp.ibgp and not ebgp.ibgp
    merged = merge_routes(routes)
    assert routes_for_peer(ibgp, merged)["198.51.100.0/24"].localpref == 150
    to_ebgp = routes_for_peer(ebgp, merged)["198.51.100.0/24"]
    assert to_ebgp.localpref is None
    assert to_ebgp.communities == ("64500:7", "65535:65282")


def test_layer2_and_unknown_ips_are_ignored(cfg: Config) -> None:
    services = [svc("l2", "192.0.2.105"), svc("nowhere", "203.0.113.200"), svc("bgp", "203.0.113.6")]
    slices = [eps(name, ("n1", True)) for name in ("l2", "nowhere", "bgp")]
    routes, per = node_routes(cfg, "n1", views(services, slices), True)
    assert prefixes(routes) == ["203.0.113.6/32"]
    assert per == {"default/bgp": ["203.0.113.6/32"]}


def test_lb_class_filtering(cfg: Config) -> None:
    services = [svc("plain", "203.0.113.5"), svc("ours", "203.0.113.6", lb_class="lbspeaker.io/lb"),
                svc("theirs", "203.0.113.7", lb_class="other.io/lb"),
                svc("cluster-ip", "203.0.113.8", kind="ClusterIP")]
    slices = [eps(name, ("n1", True)) for name in ("plain", "ours", "theirs", "cluster-ip")]
    assert list(node_routes(cfg, "n1", views(services, slices), True)[1]) == ["default/plain"]
    assert list(node_routes(cfg, "n1", views(services, slices, "lbspeaker.io/lb"), True)[1]) == ["default/ours"]


def test_shared_ip_is_announced_only_when_every_sharing_service_may_be(cfg: Config) -> None:
    services = [svc("tcp", "203.0.113.5", policy="Local"), svc("udp", "203.0.113.5", policy="Local")]
    both = [eps("tcp", ("n1", True)), eps("udp", ("n1", True))]
    routes, per = node_routes(cfg, "n1", views(services, both), True)
    assert prefixes(routes) == ["203.0.113.5/32"]
    assert per == {"default/tcp": ["203.0.113.5/32"], "default/udp": ["203.0.113.5/32"]}
    one = [eps("tcp", ("n1", True)), eps("udp", ("n2", True))]
    assert node_routes(cfg, "n1", views(services, one), True) == ([], {})


def test_routes_aggregating_to_one_prefix_are_merged(cfg: Config) -> None:
    services = [svc("a", "198.51.100.3"), svc("b", "198.51.100.4")]
    slices = [eps("a", ("n1", True)), eps("b", ("n1", True))]
    routes, _ = node_routes(cfg, "n1", views(services, slices), True)
    assert prefixes(routes) == ["198.51.100.0/24", "198.51.100.3/32", "198.51.100.4/32"]


def test_malformed_status_ips_are_skipped(cfg: Config) -> None:
    services = [svc("web", "not-an-ip", "203.0.113.5")]
    routes, _ = node_routes(cfg, "n1", views(services, [eps("web", ("n1", True))]), True)
    assert prefixes(routes) == ["203.0.113.5/32"]
