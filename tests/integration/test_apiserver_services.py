"""Service defaulting, allocation, validation and type transitions, as kube-apiserver does them.

Tests that rely on this server's dual-stack service CIDRs take the ``api_server`` fixture (skipped on a
real cluster, whose service networks may differ); the rest pass against any conformant cluster.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

# The v37 client's models make every field Optional; tests check values at runtime, so client
# handles are typed loosely here rather than guarded with `is not None` on every access.
Api = Any

NODE_PORTS = range(30000, 32768)
NO_IMPLEMENTATION = "lbspeaker.io/test-none"  # a class no load balancer implementation acts on


def _svc(name: str, **spec: Any) -> dict[str, Any]:
    spec.setdefault("ports", [{"port": 80}])
    return {"metadata": {"name": name}, "spec": spec}


def _lb(name: str, **spec: Any) -> dict[str, Any]:
    return _svc(name, type="LoadBalancer", loadBalancerClass=NO_IMPLEMENTATION, **spec)


def _invalid_fields(exc: ApiException) -> list[str]:
    assert exc.status == 422
    body = json.loads(str(exc.body))
    assert body["reason"] == "Invalid"
    return [c.get("field", "") for c in body["details"]["causes"]]


def test_cluster_ip_defaults(core_v1: Api, namespace: str) -> None:
    svc = core_v1.create_namespaced_service(namespace, _svc("plain", ports=[{"port": 8080}]))
    spec = svc.spec
    assert spec.type == "ClusterIP"
    ip = ipaddress.ip_address(spec.cluster_ip)
    assert spec.cluster_ips == [spec.cluster_ip]
    assert spec.ip_families == ["IPv4" if ip.version == 4 else "IPv6"]
    assert spec.ip_family_policy == "SingleStack"
    assert spec.session_affinity == "None"
    assert spec.internal_traffic_policy == "Cluster"
    assert spec.external_traffic_policy is None
    assert (spec.ports[0].protocol, spec.ports[0].target_port, spec.ports[0].node_port) == ("TCP", 8080, None)
    assert svc.status.load_balancer.ingress is None


def test_load_balancer_defaults_and_node_ports(core_v1: Api, namespace: str) -> None:
    spec = core_v1.create_namespaced_service(
        namespace, _lb("lb", ports=[{"name": "a", "port": 80}, {"name": "b", "port": 53, "protocol": "UDP"}])
    ).spec
    assert spec.external_traffic_policy == "Cluster"
    assert spec.allocate_load_balancer_node_ports is True
    assert spec.health_check_node_port is None
    node_ports = [p.node_port for p in spec.ports]
    assert all(p in NODE_PORTS for p in node_ports) and len(set(node_ports)) == 2

    local = core_v1.create_namespaced_service(namespace, _lb("local", externalTrafficPolicy="Local")).spec
    assert local.health_check_node_port in NODE_PORTS
    assert local.health_check_node_port != local.ports[0].node_port

    no_np = core_v1.create_namespaced_service(
        namespace, _lb("nonp", allocateLoadBalancerNodePorts=False)
    ).spec
    assert no_np.ports[0].node_port is None


def test_requested_node_port_conflict(core_v1: Api, namespace: str) -> None:
    first = core_v1.create_namespaced_service(namespace, _svc("np1", type="NodePort"))
    taken = first.spec.ports[0].node_port
    with pytest.raises(ApiException) as err:
        core_v1.create_namespaced_service(
            namespace, _svc("np2", type="NodePort", ports=[{"port": 80, "nodePort": taken}])
        )
    assert "spec.ports[0].nodePort" in _invalid_fields(err.value)


@pytest.mark.parametrize(
    "policy, families, expect",
    [
        ("PreferDualStack", None, ["IPv4", "IPv6"]),
        ("RequireDualStack", None, ["IPv4", "IPv6"]),
        ("RequireDualStack", ["IPv6", "IPv4"], ["IPv6", "IPv4"]),
        (None, ["IPv6"], ["IPv6"]),
    ],
)
def test_ip_families(
    api_server: Any,
    core_v1: Api,
    namespace: str,
    policy: str | None,
    families: list[str] | None,
    expect: list[str],
) -> None:
    extra: dict[str, Any] = {}
    if policy:
        extra["ipFamilyPolicy"] = policy
    if families:
        extra["ipFamilies"] = families
    spec = core_v1.create_namespaced_service(namespace, _svc("fam", **extra)).spec
    assert spec.ip_families == expect
    ranges = {"IPv4": ipaddress.ip_network("10.96.0.0/16"), "IPv6": ipaddress.ip_network("fd00:10:96::/112")}
    assert [
        ipaddress.ip_address(ip) in ranges[fam] for ip, fam in zip(spec.cluster_ips, expect, strict=True)
    ] == [True] * len(expect)
    assert spec.cluster_ip == spec.cluster_ips[0]


def test_single_stack_cannot_carry_two_families(core_v1: Api, namespace: str) -> None:
    with pytest.raises(ApiException) as err:
        core_v1.create_namespaced_service(
            namespace, _svc("two", ipFamilyPolicy="SingleStack", ipFamilies=["IPv4", "IPv6"])
        )
    assert err.value.status == 422


def test_headless_service(core_v1: Api, namespace: str) -> None:
    spec = core_v1.create_namespaced_service(
        namespace, _svc("hl", clusterIP="None", selector={"a": "b"})
    ).spec
    assert spec.cluster_ip == "None" and spec.cluster_ips == ["None"]


@pytest.mark.parametrize(
    "spec, field",
    [
        ({"type": "Foo"}, "spec.type"),
        ({"type": "LoadBalancer", "ports": []}, "spec.ports"),
        ({"type": "ClusterIP", "loadBalancerClass": "lbspeaker.io/x"}, "spec.loadBalancerClass"),
        ({"type": "ClusterIP", "externalTrafficPolicy": "Local"}, "spec.externalTrafficPolicy"),
        ({"ports": [{"port": 80}, {"port": 81}]}, "spec.ports[0].name"),
        ({"ports": [{"port": 70000}]}, "spec.ports[0].port"),
        ({"ports": [{"port": 80, "protocol": "ICMP"}]}, "spec.ports[0].protocol"),
    ],
)
def test_invalid_services(core_v1: Api, namespace: str, spec: dict[str, Any], field: str) -> None:
    with pytest.raises(ApiException) as err:
        core_v1.create_namespaced_service(namespace, _svc("bad", **spec))
    assert field in _invalid_fields(err.value)


def test_load_balancer_class_is_immutable(core_v1: Api, namespace: str) -> None:
    core_v1.create_namespaced_service(namespace, _lb("cls"))
    with pytest.raises(ApiException) as err:
        core_v1.patch_namespaced_service(
            "cls", namespace, {"spec": {"loadBalancerClass": "lbspeaker.io/other"}}
        )
    assert "spec.loadBalancerClass" in _invalid_fields(err.value)

    core_v1.create_namespaced_service(namespace, _svc("nocls", type="LoadBalancer"))
    with pytest.raises(ApiException) as err:
        core_v1.patch_namespaced_service(
            "nocls", namespace, {"spec": {"loadBalancerClass": NO_IMPLEMENTATION}}
        )
    assert "spec.loadBalancerClass" in _invalid_fields(err.value)


def test_cluster_ip_is_immutable_and_kept_when_omitted(core_v1: Api, namespace: str) -> None:
    svc = core_v1.create_namespaced_service(namespace, _lb("keep"))
    ip, node_port = svc.spec.cluster_ip, svc.spec.ports[0].node_port
    # a full replace that leaves out the allocated values keeps them (clients building from scratch)
    body = _lb("keep")
    body["metadata"]["resourceVersion"] = svc.metadata.resource_version
    replaced = core_v1.replace_namespaced_service("keep", namespace, body)
    assert replaced.spec.cluster_ip == ip and replaced.spec.ports[0].node_port == node_port

    other = str(ipaddress.ip_address(ip) + 1) if ipaddress.ip_address(ip).version == 4 else ip
    if other != ip:
        with pytest.raises(ApiException) as err:
            core_v1.patch_namespaced_service(
                "keep", namespace, {"spec": {"clusterIP": other, "clusterIPs": [other]}}
            )
        assert err.value.status == 422


def test_type_change_away_from_load_balancer_clears_lb_state(core_v1: Api, namespace: str) -> None:
    core_v1.create_namespaced_service(namespace, _lb("flip", externalTrafficPolicy="Local"))
    core_v1.patch_namespaced_service_status(
        "flip", namespace, {"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.20"}]}}}
    )
    flipped = core_v1.patch_namespaced_service("flip", namespace, {"spec": {"type": "ClusterIP"}})
    assert flipped.spec.type == "ClusterIP"
    assert flipped.spec.load_balancer_class is None
    assert flipped.spec.allocate_load_balancer_node_ports is None
    assert flipped.spec.external_traffic_policy is None
    assert flipped.spec.health_check_node_port is None
    assert flipped.spec.ports[0].node_port is None
    assert not flipped.status.load_balancer.ingress

    back = core_v1.patch_namespaced_service("flip", namespace, {"spec": {"type": "LoadBalancer"}})
    assert back.spec.ports[0].node_port in NODE_PORTS
    assert back.spec.external_traffic_policy == "Cluster"


def test_status_ingress_defaults_and_validation(core_v1: Api, namespace: str) -> None:
    core_v1.create_namespaced_service(namespace, _lb("st"))
    svc = core_v1.patch_namespaced_service_status(
        "st",
        namespace,
        {"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.30"}, {"ip": "2001:db8::30"}]}}},
    )
    assert [(i.ip, i.ip_mode) for i in svc.status.load_balancer.ingress] == [
        ("192.0.2.30", "VIP"),
        ("2001:db8::30", "VIP"),
    ]
    with pytest.raises(ApiException) as err:
        core_v1.patch_namespaced_service_status(
            "st", namespace, {"status": {"loadBalancer": {"ingress": [{"ip": "not-an-ip"}]}}}
        )
    assert "status.loadBalancer.ingress[0].ip" in _invalid_fields(err.value)
