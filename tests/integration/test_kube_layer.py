"""The Kubernetes layer against a real HTTP API server: informer, leader election, Events, status writes."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from lbspeaker_testkit.apiserver import APIServer
from lbspeaker_testkit.kubeutil import HandlerLog, rest_for, wait_for

from lbspeaker.kube.events import EventRecorder
from lbspeaker.kube.informer import Informer
from lbspeaker.kube.leader import LeaderElector
from lbspeaker.kube.rest import JSON, MERGE_PATCH, ApiError, Rest, path_for


def cm(name: str, value: str = "1", labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels or {}},
            "data": {"v": value}}


def cached(inf: Informer, key: str) -> JSON:
    """The informer's copy of ``key``, which must be in its cache."""
    obj = inf.get(key)
    assert obj is not None, f"{key} is not in the cache"
    return obj


def test_informer_lists_watches_and_filters(kubeconfig: str, namespace: str) -> None:
    rest = rest_for(kubeconfig)
    for i in range(3):
        rest.request("POST", path_for("v1", "configmaps", namespace), body=cm(f"pre{i}", labels={"t": "x"}))
    seen = HandlerLog()
    inf = Informer(rest, path_for("v1", "configmaps", namespace), name="cms", handler=seen,
                   label_selector="t=x", page_size=2)  # several pages
    inf.start()
    try:
        assert inf.wait_synced(10)
        assert sorted(o["metadata"]["name"] for o in inf.items()) == ["pre0", "pre1", "pre2"]
        assert cached(inf, f"{namespace}/pre0")["kind"] == "ConfigMap"
        rest.request("POST", path_for("v1", "configmaps", namespace), body=cm("new", labels={"t": "x"}))
        rest.request("POST", path_for("v1", "configmaps", namespace), body=cm("other", labels={"t": "y"}))
        rest.request("PATCH", path_for("v1", "configmaps", namespace, "pre1"), body={"data": {"v": "2"}},
                     content_type=MERGE_PATCH)
        rest.request("DELETE", path_for("v1", "configmaps", namespace, "pre2"))
        wait_for(lambda: sorted(o["metadata"]["name"] for o in inf.items()) == ["new", "pre0", "pre1"],
                 what="cache follows the watch")
        wait_for(lambda: cached(inf, f"{namespace}/pre1")["data"]["v"] == "2", what="update seen")
        assert ("pre2", None) in seen.events and (None, "new") in seen.events
        assert all("other" not in e for e in seen.events), "the label selector filters the watch"
    finally:
        inf.stop()


def test_informer_resumes_after_outage_without_relist(make_api_server: Callable[..., tuple[APIServer, str]]
                                                      ) -> None:
    server, kubeconfig = make_api_server(history_size=1000, bookmark_interval=0.2)
    rest = rest_for(kubeconfig)
    inf = Informer(rest, path_for("v1", "configmaps", "default"), name="cms", label_selector="t=x")
    inf.start()
    try:
        assert inf.wait_synced(10)
        assert inf.relists == 1
        server.pause()  # drops the watch connection
        threading.Event().wait(0.5)
        server.resume()
        for i in range(5):
            rest.request("POST", path_for("v1", "configmaps", "default"), body=cm(f"c{i}", labels={"t": "x"}))
        wait_for(lambda: len(inf) == 5, 20, what="all 5 objects after the outage")
        assert inf.relists == 1, "a broken watch resumes from its resourceVersion, it does not relist"
    finally:
        inf.stop()


def test_informer_gets_410_and_relists(make_api_server: Callable[..., tuple[APIServer, str]]) -> None:
    """Resuming from a version older than the server's history: 410 Gone, then a fresh list."""
    _, kubeconfig = make_api_server(history_size=3)
    rest = rest_for(kubeconfig)
    path = path_for("v1", "configmaps", "default")
    first = Informer(rest, path, name="first", label_selector="t=x")
    first.start()
    assert first.wait_synced(10)
    first.stop()
    old_version = first.resource_version
    for i in range(10):
        rest.request("POST", path, body=cm(f"c{i}", labels={"t": "x"}))
    again = Informer(rest, path, name="again", label_selector="t=x")
    again.resource_version = old_version  # resume where the first one stopped
    again.start()
    try:
        assert again.wait_synced(20), "the expired watch must end in a relist"
        assert again.relists == 1
        assert len(again) == 10
    finally:
        again.stop()


def test_leader_election_one_leader_and_handover(kubeconfig: str, namespace: str) -> None:
    rest = rest_for(kubeconfig)
    a = LeaderElector(rest, namespace, "le", "a", lease_duration=3, renew_deadline=2, retry_period=0.2)
    b = LeaderElector(rest, namespace, "le", "b", lease_duration=3, renew_deadline=2, retry_period=0.2)
    a.start()
    wait_for(a.is_leader, what="a leads")
    b.start()
    try:
        for _ in range(10):
            assert not (a.is_leader() and b.is_leader())
            threading.Event().wait(0.1)
        assert not b.is_leader()
        a.stop(release=True)
        wait_for(b.is_leader, 10, what="b takes over after a releases")
        lease = rest.get(path_for("coordination.k8s.io/v1", "leases", namespace, "le"))
        assert lease["spec"]["holderIdentity"] == "b"
        assert lease["spec"]["leaseTransitions"] >= 1
    finally:
        a.stop(release=False)
        b.stop(release=True)


def test_leader_stops_leading_when_it_cannot_renew(api_server: APIServer, kubeconfig: str, namespace: str) -> None:
    rest = rest_for(kubeconfig)
    a = LeaderElector(rest, namespace, "le2", "a", lease_duration=3, renew_deadline=1, retry_period=0.2)
    a.start()
    try:
        wait_for(a.is_leader, what="a leads")
        api_server.pause()
        wait_for(lambda: not a.is_leader(), 5, what="a gives up leadership when it cannot renew")
    finally:
        api_server.resume()
        a.stop(release=False)


def test_event_recorder_creates_then_counts_repeats(kubeconfig: str, namespace: str) -> None:
    rest = rest_for(kubeconfig)
    obj = rest.request("POST", path_for("v1", "configmaps", namespace), body=cm("target"))
    rec = EventRecorder(rest, "lbspeaker-test")
    rec.start()
    try:
        rec.record(obj, "Warning", "Tested", "same message")
        rec.record(obj, "Warning", "Tested", "same message")
        rec.record(obj, "Normal", "Other", "different")
        assert rec.flush(10)
        events = rest.get(path_for("v1", "events", namespace),
                          fieldSelector="involvedObject.name=target").get("items") or []
        tested = [e for e in events if e["reason"] == "Tested"]
        assert len(tested) == 1 and tested[0]["count"] == 2 and tested[0]["type"] == "Warning"
        assert tested[0]["involvedObject"]["uid"] == obj["metadata"]["uid"]
        assert [e["reason"] for e in events if e["reason"] == "Other"] == ["Other"]
    finally:
        rec.stop()


def test_status_patch_conflict_and_separation(kubeconfig: str, namespace: str) -> None:
    """A merge PATCH of services/status as kube-apiserver v1.36 answers it (issue 10)."""
    rest: Rest = rest_for(kubeconfig)
    svc = rest.request("POST", path_for("v1", "services", namespace), body={
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}})
    stale = svc["metadata"]["resourceVersion"]
    rest.request("PATCH", path_for("v1", "services", namespace, "s"), content_type=MERGE_PATCH,
                 body={"metadata": {"labels": {"x": "y"}}})
    status_path = path_for("v1", "services", namespace, "s", "status")
    # stale resourceVersion, no ipMode: the status is validated as sent, before the conflict check
    with pytest.raises(ApiError) as err:
        rest.request("PATCH", status_path, content_type=MERGE_PATCH,
                     body={"metadata": {"resourceVersion": stale},
                           "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}})
    assert err.value.status == 422 and err.value.reason == "Invalid"
    assert "status.loadBalancer.ingress[0].ipMode: Required value: must be specified when" in err.value.message
    # stale resourceVersion, ipMode given: the plain conflict
    with pytest.raises(ApiError) as err:
        rest.request("PATCH", status_path, content_type=MERGE_PATCH,
                     body={"metadata": {"resourceVersion": stale},
                           "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1", "ipMode": "VIP"}]}}})
    assert err.value.conflict
    # current resourceVersion, no ipMode: accepted, ipMode defaulted to VIP
    current = rest.get(path_for("v1", "services", namespace, "s"))["metadata"]["resourceVersion"]
    ok = rest.request("PATCH", status_path, content_type=MERGE_PATCH,
                      body={"metadata": {"resourceVersion": current},
                            "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}},
                            "spec": {"type": "ClusterIP"}})
    assert ok["status"]["loadBalancer"]["ingress"] == [{"ip": "192.0.2.1", "ipMode": "VIP"}]
    assert ok["spec"]["type"] == "LoadBalancer", "a status write never changes the spec"


@pytest.mark.parametrize("version", ["1.28", "1.29"])
def test_status_ip_mode_on_a_server_older_than_1_30(make_api_server: Callable[..., tuple[APIServer, str]],
                                                    version: str) -> None:
    """Before 1.29 ipMode is an unknown field, in 1.29 its feature gate is off: either way it is dropped,
    never required, never stored."""
    _, kubeconfig = make_api_server(version=version)
    rest = rest_for(kubeconfig)
    assert rest.get("/version")["minor"] == version.split(".")[1]
    svc = rest.request("POST", path_for("v1", "services", "default"), body={
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "old"},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}})
    stale = svc["metadata"]["resourceVersion"]
    status_path = path_for("v1", "services", "default", "old", "status")
    ok = rest.request("PATCH", status_path, content_type=MERGE_PATCH,
                      body={"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1", "ipMode": "VIP"}]}}})
    assert ok["status"]["loadBalancer"]["ingress"] == [{"ip": "192.0.2.1"}]
    with pytest.raises(ApiError) as err:
        rest.request("PATCH", status_path, content_type=MERGE_PATCH,
                     body={"metadata": {"resourceVersion": stale},
                           "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.2"}]}}})
    assert err.value.conflict
