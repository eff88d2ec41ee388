"""Tests for controller.service: Service dict -> ServiceRequest, class filtering, status IPs."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.service import (
    ANNOTATION_PREFIXES,
    BadAnnotation,
    ServiceRequest,
    service_request,
)
from lbspeaker.objects import is_load_balancer, status_ips


def svc(
    annotations: dict[str, str] | None = None, namespace: str | None = "ns", name: str = "web", **spec: Any
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "annotations": annotations}
    if namespace is not None:
        meta["namespace"] = namespace
    return {"metadata": meta, "spec": {"type": "LoadBalancer", **spec}}


def test_minimal_service_gets_api_server_defaults() -> None:
    assert service_request(svc(namespace=None)) == ServiceRequest(
        key="default/web",
        families=(4,),
        family_policy="SingleStack",
        requested_ips=(),
        pool=None,
        sharing_key=None,
        ports=frozenset(),
        traffic_policy="Cluster",
        selector=(),
    )


def test_full_service() -> None:
    req = service_request(
        svc(
            ipFamilies=["IPv6", "IPv4"],
            ipFamilyPolicy="RequireDualStack",
            ports=[{"port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}, {"port": 443}],
            externalTrafficPolicy="Local",
            selector={"z": "1", "app": "web"},
        )
    )
    assert req.key == "ns/web"
    assert req.families == (6, 4)
    assert req.family_policy == "RequireDualStack"
    assert req.ports == frozenset({("TCP", 80), ("UDP", 53), ("TCP", 443)})
    assert req.traffic_policy == "Local"
    assert req.selector == (("app", "web"), ("z", "1"))


@pytest.mark.parametrize("prefix", ANNOTATION_PREFIXES)
def test_annotations_in_both_spellings(prefix: str) -> None:
    req = service_request(
        svc(
            {
                prefix + "address-pool": "gold",
                prefix + "allow-shared-ip": "team-a",
                prefix + "loadBalancerIPs": "192.0.2.1, 2001:DB8:0::01",
            }
        )
    )
    assert req.pool == "gold"
    assert req.sharing_key == "team-a"
    assert req.requested_ips == ("192.0.2.1", "2001:db8::1")


def test_both_spellings_may_agree_but_not_contradict() -> None:
    same = {"lbspeaker.io/address-pool": "gold", "metallb.universe.tf/address-pool": "gold"}
    assert service_request(svc(same)).pool == "gold"
    with pytest.raises(BadAnnotation) as info:
        service_request(svc({"lbspeaker.io/address-pool": "gold", "metallb.universe.tf/address-pool": "silver"}))
    assert info.value.field == "lbspeaker.io/address-pool"
    assert "silver" in str(info.value)


def test_spec_load_balancer_ip_is_normalized() -> None:
    assert service_request(svc(loadBalancerIP="2001:0db8::0005")).requested_ips == ("2001:db8::5",)
    assert service_request(svc(loadBalancerIP="")).requested_ips == ()


def test_spec_ip_and_annotation_must_agree() -> None:
    agree = svc({"lbspeaker.io/loadBalancerIPs": "192.0.2.7"}, loadBalancerIP="192.0.2.7")
    assert service_request(agree).requested_ips == ("192.0.2.7",)
    with pytest.raises(BadAnnotation, match=r"lbspeaker.io/loadBalancerIPs='192.0.2.8'.*spec.loadBalancerIP"):
        service_request(svc({"lbspeaker.io/loadBalancerIPs": "192.0.2.8"}, loadBalancerIP="192.0.2.7"))


def test_empty_annotations_mean_unset() -> None:
    req = service_request(
        svc(
            {
                "lbspeaker.io/address-pool": "",
                "lbspeaker.io/allow-shared-ip": "",
                "lbspeaker.io/loadBalancerIPs": " ",
            }
        )
    )
    assert (req.pool, req.sharing_key, req.requested_ips) == (None, None, ())


def test_names_are_stripped() -> None:
    req = service_request(svc({"lbspeaker.io/address-pool": " gold ", "metallb.universe.tf/allow-shared-ip": "k "}))
    assert (req.pool, req.sharing_key) == ("gold", "k")


@pytest.mark.parametrize(
    ("annotations", "spec", "field", "fragment"),
    [
        ({"lbspeaker.io/loadBalancerIPs": "192.0.2.300"}, {}, "lbspeaker.io/loadBalancerIPs", "not an IP"),
        ({"metallb.universe.tf/loadBalancerIPs": "web"}, {}, "metallb.universe.tf/loadBalancerIPs", "not an IP"),
        ({"lbspeaker.io/loadBalancerIPs": "192.0.2.1,"}, {}, "lbspeaker.io/loadBalancerIPs", "not an IP"),
        ({"lbspeaker.io/loadBalancerIPs": "192.0.2.1,192.0.2.2"}, {}, "lbspeaker.io/loadBalancerIPs", "two IPv4"),
        ({"lbspeaker.io/loadBalancerIPs": "2001:db8::1,2001:db8::2"}, {}, "lbspeaker.io/loadBalancerIPs", "two IPv6"),
        (
            {"lbspeaker.io/loadBalancerIPs": "192.0.2.1,2001:db8::1,192.0.2.3"},
            {},
            "lbspeaker.io/loadBalancerIPs",
            "at most two",
        ),
        ({"lbspeaker.io/allow-shared-ip": "   "}, {}, "lbspeaker.io/allow-shared-ip", "whitespace"),
        ({"metallb.universe.tf/address-pool": "\t"}, {}, "metallb.universe.tf/address-pool", "whitespace"),
        ({}, {"loadBalancerIP": "nope"}, "spec.loadBalancerIP", "not an IP"),
        ({}, {"ipFamilies": ["IPv5"]}, "spec.ipFamilies", "IPv5"),
        ({}, {"ipFamilies": ["IPv4", "IPv4"]}, "spec.ipFamilies", "IPv4"),
        ({}, {"ipFamilyPolicy": "DualStackPlease"}, "spec.ipFamilyPolicy", "SingleStack"),
    ],
)
def test_bad_annotations_name_field_and_value(
    annotations: dict[str, str], spec: dict[str, Any], field: str, fragment: str
) -> None:
    with pytest.raises(BadAnnotation) as info:
        service_request(svc(annotations, **spec))
    err = info.value
    assert isinstance(err, ValueError)
    assert err.field == field
    assert field in str(err)
    assert repr(err.value) in str(err)
    assert fragment in str(err)


@given(st.ip_addresses())
def test_any_address_round_trips_normalized(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    text = ip.exploded.upper()
    assert service_request(svc({"lbspeaker.io/loadBalancerIPs": text})).requested_ips == (str(ip),)
    assert service_request(svc(loadBalancerIP=text)).requested_ips == (str(ip),)


@pytest.mark.parametrize(
    ("spec", "lb_class", "expected"),
    [
        ({"type": "LoadBalancer"}, None, True),
        ({"type": "LoadBalancer", "loadBalancerClass": None}, None, True),
        ({"type": "LoadBalancer", "loadBalancerClass": "lbspeaker.io/lb"}, None, False),
        ({"type": "LoadBalancer", "loadBalancerClass": "lbspeaker.io/lb"}, "lbspeaker.io/lb", True),
        ({"type": "LoadBalancer", "loadBalancerClass": "other.io/lb"}, "lbspeaker.io/lb", False),
        ({"type": "LoadBalancer"}, "lbspeaker.io/lb", False),
        ({"type": "ClusterIP"}, None, False),
        ({"type": "NodePort"}, None, False),
        ({}, None, False),
    ],
)
def test_is_load_balancer(spec: dict[str, Any], lb_class: str | None, expected: bool) -> None:
    assert is_load_balancer({"metadata": {"name": "x"}, "spec": spec}, lb_class) is expected


def test_is_load_balancer_without_spec() -> None:
    assert not is_load_balancer({"metadata": {"name": "x"}}, None)


def test_status_ips() -> None:
    s = svc()
    assert status_ips(s) == ()
    s["status"] = {"loadBalancer": {}}
    assert status_ips(s) == ()
    ingress = [{"ip": "192.0.2.1"}, {"hostname": "lb.example"}, {"ip": "2001:db8::1"}]
    s["status"] = {"loadBalancer": {"ingress": ingress}}
    assert status_ips(s) == ("192.0.2.1", "2001:db8::1")


def test_the_first_bad_entry_is_named_before_the_entry_count() -> None:
    with pytest.raises(BadAnnotation) as info:
        service_request(svc({"lbspeaker.io/loadBalancerIPs": "not-an-ip,,"}))
    assert str(info.value) == "lbspeaker.io/loadBalancerIPs='not-an-ip,,': entry 1 'not-an-ip' is not an IP address"
    with pytest.raises(BadAnnotation, match="entry 2 is empty"):
        service_request(svc({"lbspeaker.io/loadBalancerIPs": "192.0.2.1,"}))


def test_messages_never_carry_a_whole_large_value() -> None:
    with pytest.raises(BadAnnotation) as info:
        service_request(svc({"lbspeaker.io/loadBalancerIPs": "x" * 100000}))
    assert len(str(info.value)) < 300 and "100000 characters" in str(info.value)
