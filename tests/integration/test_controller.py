"""The controller as a process against a real HTTP API server (the test server, or a cluster).

Every test runs its own controller on its own namespace and its own loadBalancerClass, so that on a
real cluster it touches nothing but the Services the test made.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Iterator

import pytest
from lbspeaker_testkit.apiserver import APIServer
from lbspeaker_testkit.kubeutil import (
    Cluster,
    ControllerProcess,
    controller,
    lb_service,
    pool_configmap,
    unique,
    wait_for,
)

from lbspeaker.kube.rest import ApiError

POOL3 = """
address-pools:
- name: small
  protocol: layer2
  addresses: [192.0.2.10-192.0.2.12]
"""


@pytest.fixture
def api_server_or_none(request: pytest.FixtureRequest) -> APIServer | None:
    """The in-process API test server, or None on a real cluster (where its counters do not exist)."""
    try:
        server: APIServer = request.getfixturevalue("api_server")
        return server
    except pytest.skip.Exception:
        return None


@pytest.fixture
def cluster(kubeconfig: str) -> Cluster:
    return Cluster(kubeconfig)


@pytest.fixture
def lb_class() -> str:
    return f"lbspeaker.io/test-{unique('c')}"


@pytest.fixture
def ctl(kubeconfig: str, namespace: str, lb_class: str, cluster: Cluster) -> Iterator[ControllerProcess]:
    """A controller with the 3-address pool."""
    cluster.create(namespace, "configmaps", pool_configmap(POOL3))
    with controller(kubeconfig, namespace, lb_class) as proc:
        yield proc


def test_pool_of_three_four_services(ctl: ControllerProcess, cluster: Cluster, namespace: str, lb_class: str) -> None:
    for i in range(3):
        cluster.create(namespace, "services", lb_service(f"s{i}", lb_class=lb_class))
    got = {cluster.wait_ips(namespace, f"s{i}")[0] for i in range(3)}
    assert got == {"192.0.2.10", "192.0.2.11", "192.0.2.12"}
    cluster.create(namespace, "services", lb_service("s3", lb_class=lb_class))
    ev = cluster.wait_event(namespace, "s3", "AllocationFailed")
    assert ev["type"] == "Warning"
    assert "exhausted" in ev["message"] and "small" in ev["message"], ev["message"]
    assert cluster.ips(namespace, "s3") == []
    for i in range(3):
        ev = cluster.wait_event(namespace, f"s{i}", "IPAllocated")
        assert ev["message"] == f"Assigned IP {cluster.ips(namespace, f's{i}')[0]} from pool small", ev["message"]
    freed = cluster.ips(namespace, "s1")[0]
    cluster.delete(namespace, "services", "s1")
    assert cluster.wait_ips(namespace, "s3") == [freed]


def test_restart_changes_nothing(kubeconfig: str, namespace: str, lb_class: str, cluster: Cluster,
                                 api_server_or_none: APIServer | None) -> None:
    cluster.create(namespace, "configmaps", pool_configmap("""
address-pools:
- name: big
  protocol: bgp
  addresses: [198.51.100.0/24]
  avoid-buggy-ips: true
"""))
    with controller(kubeconfig, namespace, lb_class):
        for i in range(200):
            cluster.create(namespace, "services", lb_service(f"r{i:03d}", lb_class=lb_class))
        wait_for(lambda: all(cluster.ips(namespace, f"r{i:03d}") for i in range(200)), 60,
                 what="200 services assigned")
    before = {i: cluster.get(namespace, "services", f"r{i:03d}") for i in range(200)}
    ips = [b["status"]["loadBalancer"]["ingress"][0]["ip"] for b in before.values() if b]
    assert len(set(ips)) == 200
    assert not any(ip.endswith((".0", ".255")) for ip in ips)
    counts_before = _status_writes(api_server_or_none)
    with controller(kubeconfig, namespace, lb_class) as proc:
        wait_for(lambda: proc.http("/readyz")[0] == 200, 30, what="readyz")
        time.sleep(2.0)  # give a misbehaving controller time to write
        after = {i: cluster.get(namespace, "services", f"r{i:03d}") for i in range(200)}
    for i in range(200):
        was, now = before[i], after[i]
        assert now and was
        assert now["metadata"]["resourceVersion"] == was["metadata"]["resourceVersion"], i
    if counts_before is not None:
        assert _status_writes(api_server_or_none) == counts_before


def _status_writes(server: APIServer | None) -> int | None:
    if server is None:
        return None
    counts = server.request_counts()
    return sum(n for k, n in counts.items() if "status" in k and k[0] in ("patch", "update", "PATCH", "PUT"))


def test_requested_ips(ctl: ControllerProcess, cluster: Cluster, namespace: str, lb_class: str) -> None:
    cluster.create(namespace, "services", lb_service("want", lb_class=lb_class, load_balancer_ip="192.0.2.12"))
    assert cluster.wait_ips(namespace, "want") == ["192.0.2.12"]
    cluster.create(namespace, "services", lb_service("ann", lb_class=lb_class,
                                                     annotations={"metallb.universe.tf/loadBalancerIPs": "192.0.2.11"}))
    assert cluster.wait_ips(namespace, "ann") == ["192.0.2.11"]
    cluster.create(namespace, "services", lb_service("taken", lb_class=lb_class, load_balancer_ip="192.0.2.12"))
    ev = cluster.wait_event(namespace, "taken", "AllocationFailed")
    assert "192.0.2.12" in ev["message"]
    cluster.create(namespace, "services", lb_service("outside", lb_class=lb_class, load_balancer_ip="203.0.113.9"))
    ev = cluster.wait_event(namespace, "outside", "AllocationFailed")
    assert "203.0.113.9" in ev["message"]
    cluster.create(namespace, "services",
                   lb_service("bad", lb_class=lb_class, annotations={"lbspeaker.io/loadBalancerIPs": "not-an-ip,,"}))
    ev = cluster.wait_event(namespace, "bad", "AllocationFailed")
    assert "lbspeaker.io/loadBalancerIPs='not-an-ip,,'" in ev["message"], ev["message"]
    assert "'not-an-ip' is not an IP address" in ev["message"], "the message names the bad value"
    assert ctl.http("/healthz")[0] == 200


def test_sharing(ctl: ControllerProcess, cluster: Cluster, namespace: str, lb_class: str) -> None:
    share = {"lbspeaker.io/allow-shared-ip": "k1"}
    cluster.create(namespace, "services", lb_service("web", lb_class=lb_class, ports=[("TCP", 80)], annotations=share))
    ip = cluster.wait_ips(namespace, "web")[0]
    cluster.create(namespace, "services",
                   lb_service("dns", lb_class=lb_class, ports=[("UDP", 53)], annotations=share, load_balancer_ip=ip))
    assert cluster.wait_ips(namespace, "dns") == [ip]
    # Same port: may not share, even with the key.
    cluster.create(namespace, "services",
                   lb_service("web2", lb_class=lb_class, ports=[("TCP", 80)], annotations=share, load_balancer_ip=ip))
    cluster.wait_event(namespace, "web2", "AllocationFailed")
    # Different key: may not share.
    cluster.create(namespace, "services", lb_service("other", lb_class=lb_class, ports=[("TCP", 81)],
                                                     annotations={"lbspeaker.io/allow-shared-ip": "k2"},
                                                     load_balancer_ip=ip))
    cluster.wait_event(namespace, "other", "AllocationFailed")
    # Auto-assign with the same key and a free port lands on the shared IP (lowest acceptable).
    cluster.create(namespace, "services", lb_service("ssh", lb_class=lb_class, ports=[("TCP", 22)], annotations=share))
    assert cluster.wait_ips(namespace, "ssh") == [ip]


def test_dual_stack(kubeconfig: str, namespace: str, lb_class: str, cluster: Cluster) -> None:
    cluster.create(namespace, "configmaps", pool_configmap("""
address-pools:
- name: v4only
  protocol: layer2
  addresses: [192.0.2.20/32]
- name: dual
  protocol: layer2
  addresses: [192.0.2.30-192.0.2.31, 2001:db8:5::/120]
"""))
    create_dual_stack_or_skip(cluster, namespace, lb_service("d", lb_class=lb_class, families=["IPv4", "IPv6"],
                                                             family_policy="RequireDualStack"))
    with controller(kubeconfig, namespace, lb_class):
        ips = cluster.wait_ips(namespace, "d", count=2)
        assert {ipaddress.ip_address(i).version for i in ips} == {4, 6}
        assert ips[0] == "192.0.2.30" and ips[1] == "2001:db8:5::"
        ev = cluster.wait_event(namespace, "d", "IPAllocated")
        assert ev["message"] == "Assigned IPs 192.0.2.30, 2001:db8:5:: from pool dual", ev["message"]
        cluster.create(namespace, "services", lb_service("v6", lb_class=lb_class, families=["IPv6"]))
        assert cluster.wait_ips(namespace, "v6") == ["2001:db8:5::1"]
        cluster.create(namespace, "services", lb_service("pref", lb_class=lb_class, families=["IPv4", "IPv6"],
                                                         family_policy="PreferDualStack"))
        assert len(cluster.wait_ips(namespace, "pref", count=2)) == 2
        cluster.create(namespace, "services", lb_service("req", lb_class=lb_class, families=["IPv4", "IPv6"],
                                                         family_policy="RequireDualStack",
                                                         annotations={"lbspeaker.io/address-pool": "v4only"}))
        cluster.wait_event(namespace, "req", "AllocationFailed")


def create_dual_stack_or_skip(cluster: Cluster, namespace: str, obj: dict[str, object]) -> None:
    """Create a RequireDualStack Service; on a cluster set up with one Service family the server refuses it
    (422 "this cluster is not configured for dual-stack services"): skip, saying so."""
    try:
        cluster.create(namespace, "services", obj)
    except ApiError as exc:
        if exc.invalid and "not configured for dual-stack services" in exc.message:
            pytest.skip(f"single-stack cluster: the API server says {exc.message!r}")
        raise


def test_a_single_stack_cluster_is_detected(make_api_server: Callable[..., tuple[object, str]]) -> None:
    _, kubeconfig = make_api_server(single_stack=True)
    cluster = Cluster(kubeconfig)
    with pytest.raises(pytest.skip.Exception) as skipped:
        create_dual_stack_or_skip(cluster, "default", lb_service("d", families=["IPv4", "IPv6"],
                                                                 family_policy="RequireDualStack"))
    assert "this cluster is not configured for dual-stack services" in str(skipped.value)
    with pytest.raises(ApiError) as err:  # any other refusal is not a reason to skip
        create_dual_stack_or_skip(cluster, "default", lb_service("v6", families=["IPv6"]))
    assert "spec.ipFamilies[0]: Invalid value: \"IPv6\": not configured on this cluster" in err.value.message
    pref = cluster.create("default", "services", lb_service("p", family_policy="PreferDualStack"))
    assert pref["spec"]["ipFamilies"] == ["IPv4"], "PreferDualStack gets the one family there is"


def test_class_filtering(kubeconfig: str, namespace: str, lb_class: str, cluster: Cluster) -> None:
    cluster.create(namespace, "configmaps", pool_configmap(POOL3))
    with controller(kubeconfig, namespace, lb_class):
        cluster.create(namespace, "services", lb_service("mine", lb_class=lb_class))
        cluster.create(namespace, "services", lb_service("theirs", lb_class=lb_class + "-other"))
        cluster.create(namespace, "services", lb_service("noclass"))
        cluster.create(namespace, "services", lb_service("cip", svc_type="ClusterIP"))
        cluster.wait_ips(namespace, "mine")
        time.sleep(1.0)  # give a wrong controller time to act
        assert cluster.ips(namespace, "theirs") == []
        assert cluster.ips(namespace, "noclass") == []
        assert cluster.events(namespace, "theirs") == []


def test_default_class_only_classless(api_server: APIServer, kubeconfig: str, namespace: str,
                                      cluster: Cluster) -> None:
    """Without --lb-class the controller takes classless Services only (test server only: it takes all)."""
    cluster.create(namespace, "configmaps", pool_configmap(POOL3))
    with controller(kubeconfig, namespace, None):
        cluster.create(namespace, "services", lb_service("plain"))
        cluster.create(namespace, "services", lb_service("classed", lb_class="example.com/other"))
        assert cluster.wait_ips(namespace, "plain")
        time.sleep(1.0)
        assert cluster.ips(namespace, "classed") == []


def test_invalid_config_kept_out(ctl: ControllerProcess, cluster: Cluster, namespace: str, lb_class: str) -> None:
    cluster.create(namespace, "services", lb_service("a", lb_class=lb_class))
    ip = cluster.wait_ips(namespace, "a")[0]
    cluster.patch(namespace, "configmaps", "config", {"data": {"config": """
address-pools:
- name: small
  protocol: layer2
  addresses: [192.0.2.300/24]
"""}})
    ev = cluster.wait_event(namespace, "config", "InvalidConfig")
    assert "address-pools[0].addresses[0]" in ev["message"] and "192.0.2.300" in ev["message"]
    wait_for(lambda: ctl.metric("lbspeaker_controller_config_stale") == 1.0,
             what="config_stale metric")
    cluster.create(namespace, "services", lb_service("b", lb_class=lb_class))
    assert cluster.wait_ips(namespace, "b")  # the last good pool still serves
    assert cluster.ips(namespace, "a") == [ip]
    cluster.patch(namespace, "configmaps", "config", {"data": {"config": POOL3}})
    wait_for(lambda: ctl.metric("lbspeaker_controller_config_stale") == 0.0,
             what="config_stale back to 0")


def test_pool_removed_services_reassigned(ctl: ControllerProcess, cluster: Cluster, namespace: str,
                                          lb_class: str) -> None:
    cluster.create(namespace, "services", lb_service("m", lb_class=lb_class))
    assert cluster.wait_ips(namespace, "m") == ["192.0.2.10"]
    cluster.patch(namespace, "configmaps", "config", {"data": {"config": """
address-pools:
- name: newpool
  protocol: layer2
  addresses: [203.0.113.64/30]
"""}})
    wait_for(lambda: cluster.ips(namespace, "m") == ["203.0.113.64"], what="reassignment to the new pool")
    ev = cluster.wait_event(namespace, "m", "IPAllocated", contains="203.0.113.64")
    assert "192.0.2.10" in ev["message"], "the event says what it had and why it moved"


def test_no_longer_load_balancer(ctl: ControllerProcess, cluster: Cluster, namespace: str, lb_class: str) -> None:
    cluster.create(namespace, "services", lb_service("t", lb_class=lb_class))
    ip = cluster.wait_ips(namespace, "t")[0]
    obj = cluster.get(namespace, "services", "t")
    assert obj is not None
    obj["spec"]["type"] = "ClusterIP"
    for field in ("loadBalancerClass", "allocateLoadBalancerNodePorts", "externalTrafficPolicy",
                  "loadBalancerIP"):
        obj["spec"].pop(field, None)
    for port in obj["spec"]["ports"]:
        port.pop("nodePort", None)
    cluster.put(namespace, "services", obj)
    wait_for(lambda: cluster.ips(namespace, "t") == [], what="status cleared")
    cluster.create(namespace, "services", lb_service("u", lb_class=lb_class))
    assert cluster.wait_ips(namespace, "u") == [ip], "the freed IP is reused"


def test_metrics_and_health(ctl: ControllerProcess, cluster: Cluster, namespace: str, lb_class: str) -> None:
    cluster.create(namespace, "services", lb_service("m1", lb_class=lb_class))
    cluster.wait_ips(namespace, "m1")
    wait_for(lambda: ctl.metric("lbspeaker_controller_addresses_in_use",
                                'family="IPv4",pool="small"') == 1.0, what="in-use gauge")
    assert ctl.metric("lbspeaker_controller_addresses_total",
                      'family="IPv4",pool="small"') == 3.0
    assert ctl.metric("lbspeaker_controller_config_loaded") == 1.0
    assert (ctl.metric("lbspeaker_controller_allocations_total", 'pool="small"') or 0) >= 1
    assert ctl.http("/readyz")[0] == 200


def test_leader_election(kubeconfig: str, namespace: str, lb_class: str, cluster: Cluster) -> None:
    cluster.create(namespace, "configmaps", pool_configmap(POOL3))
    with controller(kubeconfig, namespace, lb_class, "--leader-elect") as first:
        wait_for(lambda: first.metric("lbspeaker_controller_leader") == 1.0, what="first replica leads")
        with controller(kubeconfig, namespace, lb_class, "--leader-elect") as second:
            time.sleep(1.5)
            assert second.metric("lbspeaker_controller_leader") in (None, 0.0)
            cluster.create(namespace, "services", lb_service("le", lb_class=lb_class))
            assert cluster.wait_ips(namespace, "le") == ["192.0.2.10"]
            first.stop()  # graceful: releases the lease
            wait_for(lambda: second.metric("lbspeaker_controller_leader") == 1.0, 30, what="second takes over")
            cluster.create(namespace, "services", lb_service("le2", lb_class=lb_class))
            assert cluster.wait_ips(namespace, "le2") == ["192.0.2.11"]
            assert cluster.ips(namespace, "le") == ["192.0.2.10"]
