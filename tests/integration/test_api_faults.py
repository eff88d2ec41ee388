"""The Kubernetes layer under API server faults: a server that accepts but never answers, a peer that lost
its TCP state, state going back in time (etcd restore), and resourceVersions the server has not reached.

The fault tests use private API test servers (skipped on a real cluster: a real one cannot be told to
hang or to restore a snapshot); the "Too large resource version" answers are checked on any server.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from lbspeaker_testkit.apiserver import APIServer
from lbspeaker_testkit.kubeutil import HandlerLog, rest_for, wait_for

from lbspeaker.kube.informer import Informer
from lbspeaker.kube.rest import MERGE_PATCH, ApiError, Rest, path_for

MakeServer = Callable[..., tuple[APIServer, str]]


def cm(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": {"t": "x"}}}


def svc(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "labels": {"t": "x"}},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}}


# --- "Too large resource version", as any server answers it --------------------------------------------

def test_list_from_a_future_resource_version_is_a_504_with_its_cause(kubeconfig: str, namespace: str) -> None:
    rest = rest_for(kubeconfig)
    path = path_for("v1", "configmaps", namespace)
    future = int(rest.get(path)["metadata"]["resourceVersion"]) + 100000
    started = time.monotonic()
    with pytest.raises(ApiError) as err:
        rest.get(path, resourceVersion=str(future))
    assert 2.5 < time.monotonic() - started < 10, "the server waits ~3 s for the version before giving up"
    assert err.value.status == 504 and err.value.reason == "Timeout"
    assert "Timeout: Too large resource version: " in err.value.message
    assert err.value.details["causes"] == [{"reason": "ResourceVersionTooLarge",
                                            "message": "Too large resource version"}]
    assert err.value.details["retryAfterSeconds"] == 1
    assert err.value.too_large


def test_watch_from_a_future_resource_version_is_one_error_event(kubeconfig: str, namespace: str) -> None:
    rest = rest_for(kubeconfig)
    path = path_for("v1", "configmaps", namespace)
    future = int(rest.get(path)["metadata"]["resourceVersion"]) + 100000
    events = list(rest.watch(path, {"resourceVersion": str(future), "timeoutSeconds": 30}, read_timeout=20))
    assert [e["type"] for e in events] == ["ERROR"], "a 200 stream carrying one ERROR event, then its end"
    status = events[0]["object"]
    assert (status["kind"], status["code"], status["reason"]) == ("Status", 504, "Timeout")
    assert status["message"].startswith(f"Timeout: Too large resource version: {future}, current: ")
    assert status["details"]["causes"] == [{"reason": "ResourceVersionTooLarge",
                                            "message": "Too large resource version"}]


# --- a server that accepts but never answers ---------------------------------------------------------

def test_a_get_to_a_silent_server_fails_within_one_timeout(make_api_server: MakeServer) -> None:
    server, kubeconfig = make_api_server()
    rest = Rest(rest_for(kubeconfig).api_client, timeout=1.0)
    rest.get(path_for("v1", "namespaces"))  # a pooled keep-alive connection exists
    server.stop_answering()
    try:
        for path in (path_for("v1", "namespaces"), path_for("v1", "configmaps", "default")):
            started = time.monotonic()
            with pytest.raises(ApiError) as err:
                rest.get(path)
            elapsed = time.monotonic() - started
            assert err.value.unreachable and "timed out" in err.value.message
            assert 0.9 < elapsed < 1.8, f"one timeout, no hidden retry: took {elapsed:.2f}s"
        assert rest.stats["retried"] == 0 and rest.stats["timeouts"] == 2
    finally:
        server.answer_again()
    assert rest.get(path_for("v1", "namespaces"))["items"]


def test_the_official_clients_own_calls_do_not_retry_either(make_api_server: MakeServer) -> None:
    """Code using the generated API classes on the same client (the CLI's status does) gets no hidden
    retries either: Configuration.retries is off."""
    from kubernetes import client

    from lbspeaker.kube.client import load_api_client

    server, kubeconfig = make_api_server()
    core = client.CoreV1Api(load_api_client(kubeconfig))
    core.list_namespace(_request_timeout=1.0)
    server.stop_answering()
    try:
        started = time.monotonic()
        with pytest.raises(Exception, match="timed out"):
            core.list_namespace(_request_timeout=1.0)
        assert time.monotonic() - started < 1.8
    finally:
        server.answer_again()


def test_informer_turns_unhealthy_on_a_silent_server_and_recovers(make_api_server: MakeServer) -> None:
    server, kubeconfig = make_api_server(bookmark_interval=0.3)
    rest = Rest(rest_for(kubeconfig).api_client, timeout=1.0)
    path = path_for("v1", "configmaps", "default")
    inf = Informer(rest, path, name="cms", label_selector="t=x", watch_idle_timeout=1.5)
    late: Informer | None = None
    inf.start()
    try:
        assert inf.wait_synced(10)
        wait_for(lambda: server.watch_count() == 1, 5, what="the watch is open")
        time.sleep(0.7)
        assert inf.health(max_silence=0.6) == (True, "ok"), "bookmarks keep it in contact"
        server.stop_answering()
        started = time.monotonic()
        wait_for(lambda: not inf.healthy, 5, what="unhealthy once the watch goes silent")
        assert time.monotonic() - started < 3.0, "noticed within about one idle timeout"
        ok, why = inf.health()
        assert not ok and "cms" in why and "no data for 1.5s" in why, why
        late = Informer(rest, path, name="late", label_selector="t=x", watch_idle_timeout=1.5)
        late.start()  # its list hangs
        time.sleep(2.0)  # re-watch attempts hang too: it stays unhealthy
        assert not inf.health()[0] and inf.seconds_since_contact() > 2.0
        assert not late.synced.is_set() and late.health() == (False, "late: not synced yet (" + late.last_error + ")")
        assert "GET /api/v1/namespaces/default/configmaps: timed out" in late.last_error
        server.answer_again()
        rest.request("POST", path, body=cm("after"))
        wait_for(lambda: inf.get("default/after") is not None, 15, what="the change after recovery")
        assert inf.health(max_silence=5.0) == (True, "ok")
        assert late.wait_synced(15) and late.get("default/after") is not None
    finally:
        server.answer_again()
        inf.stop()
        if late is not None:
            late.stop()


# --- a peer that lost its TCP state (pooled keep-alive connections are dead) -----------------------

def test_a_get_on_a_dead_pooled_connection_is_retried_once_on_a_fresh_one(make_api_server: MakeServer) -> None:
    server, kubeconfig = make_api_server()
    rest = rest_for(kubeconfig)
    path = path_for("v1", "configmaps", "default")

    def short_watch() -> None:  # holds its connection for a second, so the three need three connections
        list(rest.watch(path, {"timeoutSeconds": 1}, read_timeout=10))

    def three_at_once() -> None:
        threads = [threading.Thread(target=short_watch) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    three_at_once()  # now three idle keep-alive connections sit in the pool
    server.forget_connections()
    assert rest.get(path)["kind"] == "ConfigMapList"
    assert rest.stats == {"dropped": 1, "retried": 1, "timeouts": 0}
    three_at_once()  # would take the two dead siblings had they stayed in the pool
    assert rest.stats == {"dropped": 1, "retried": 1, "timeouts": 0}, "the dead connection's siblings were closed"


def test_a_write_on_a_dead_pooled_connection_fails_fast_and_is_not_resent(make_api_server: MakeServer) -> None:
    server, kubeconfig = make_api_server()
    rest = rest_for(kubeconfig)
    path = path_for("v1", "configmaps", "default")
    rest.request("POST", path, body=cm("w"))
    server.forget_connections()
    started = time.monotonic()
    with pytest.raises(ApiError) as err:
        rest.request("PATCH", path_for("v1", "configmaps", "default", "w"), content_type=MERGE_PATCH,
                     body={"data": {"k": "v"}})
    assert err.value.unreachable and "connection dropped" in err.value.message
    assert time.monotonic() - started < 1.0
    assert rest.stats == {"dropped": 1, "retried": 0, "timeouts": 0}
    assert "data" not in rest.get(path_for("v1", "configmaps", "default", "w")), "not applied, not resent"
    rest.request("PATCH", path_for("v1", "configmaps", "default", "w"), content_type=MERGE_PATCH,
                 body={"data": {"k": "v"}})  # the caller's retry goes through on a fresh connection


def test_informer_watch_survives_forgotten_connections(make_api_server: MakeServer) -> None:
    server, kubeconfig = make_api_server(bookmark_interval=0.3)
    rest = rest_for(kubeconfig)
    path = path_for("v1", "configmaps", "default")
    inf = Informer(rest, path, name="cms", label_selector="t=x")
    inf.start()
    try:
        assert inf.wait_synced(10)
        wait_for(lambda: server.watch_count() == 1, 5, what="the watch is open")
        server.forget_connections()
        rest.request("POST", path, body=cm("later"))
        wait_for(lambda: inf.get("default/later") is not None, 10, what="the watch resumed")
        assert inf.relists == 1, "a broken stream resumes from its resourceVersion"
    finally:
        inf.stop()


# --- state going back in time ----------------------------------------------------------------------

def _rewind_scenario(server: APIServer, rest: Rest, bump_revision: int) -> tuple[Informer, HandlerLog]:
    """Services a and b; a snapshot; the informer syncs; c is created, a deleted, b updated twice (the
    cache is 4 versions past the snapshot); the server restarts from the snapshot, then b is deleted and
    d created there (2 versions: still behind the cache). The truth is then {a, d}."""
    path = path_for("v1", "services", "default")
    for name in ("a", "b"):
        rest.request("POST", path, body=svc(name))
    snap = server.snapshot()
    seen = HandlerLog()
    inf = Informer(rest, path, name="services", handler=seen, label_selector="t=x")
    inf.start()
    assert inf.wait_synced(10)
    rest.request("POST", path, body=svc("c"))
    rest.request("DELETE", path_for("v1", "services", "default", "a"))
    for i in range(2):
        rest.request("PATCH", path_for("v1", "services", "default", "b"), content_type=MERGE_PATCH,
                     body={"metadata": {"annotations": {"n": str(i)}}})
    wait_for(lambda: sorted(k.split("/")[1] for k in inf.all_keys()) == ["b", "c"], 10, what="cache at {b, c}")
    cache_rv = int(inf.resource_version or 0)
    server.restart(snap, bump_revision=bump_revision)
    rest.request("DELETE", path_for("v1", "services", "default", "b"))
    rest.request("POST", path, body=svc("d"))
    assert int(rest.get(path)["metadata"]["resourceVersion"]) < cache_rv or bump_revision
    return inf, seen


@pytest.mark.parametrize(("bump_revision", "rewinds", "bound"), [
    (0, 1, 8.0),  # versions went back: one 3 s "Too large resource version" wait, then a relist
    (1000, 0, 5.0),  # etcdutl snapshot restore --bump-revision --mark-compacted: 410, then a relist
])
def test_informer_takes_the_state_of_a_server_restored_to_an_older_snapshot(
        make_api_server: MakeServer, bump_revision: int, rewinds: int, bound: float) -> None:
    server, kubeconfig = make_api_server(bookmark_interval=0.5)
    rest = rest_for(kubeconfig)
    inf, seen = _rewind_scenario(server, rest, bump_revision)
    try:
        started = time.monotonic()
        wait_for(lambda: sorted(k.split("/")[1] for k in inf.all_keys()) == ["a", "d"], 15,
                 what="the cache equals the restored server's state")
        took = time.monotonic() - started
        assert took < bound, f"bounded time: {took:.1f}s"
        assert {"b", "c"} <= seen.deleted(), "objects gone from the server are reported deleted"
        assert {"a", "d"} <= seen.added(), "objects that (re)appeared are reported added"
        assert inf.rewinds == rewinds and inf.relists == 2
        # and it follows the restored server from there on
        rest.request("POST", path_for("v1", "services", "default"), body=svc("e"))
        wait_for(lambda: inf.get("default/e") is not None, 10, what="new writes after the restore")
        assert inf.health()[0]
    finally:
        inf.stop()


def test_restored_server_answers_old_and_new_versions_as_a_real_one(make_api_server: MakeServer) -> None:
    server, kubeconfig = make_api_server()
    rest = rest_for(kubeconfig)
    path = path_for("v1", "configmaps", "default")
    rest.request("POST", path, body=cm("kept"))
    snap = server.snapshot()
    before = int(rest.get(path)["metadata"]["resourceVersion"])
    rest.request("POST", path, body=cm("lost"))
    after = int(rest.get(path)["metadata"]["resourceVersion"])
    server.restart(snap)
    names = [o["metadata"]["name"] for o in rest.get(path, labelSelector="t=x")["items"]]
    assert names == ["kept"] and int(rest.get(path)["metadata"]["resourceVersion"]) == before
    events = list(rest.watch(path, {"resourceVersion": str(before - 1), "timeoutSeconds": 5}, read_timeout=10))
    assert [(e["type"], e["object"]["code"]) for e in events] == [("ERROR", 410)], "older than its start: Expired"
    events = list(rest.watch(path, {"resourceVersion": str(after), "timeoutSeconds": 10}, read_timeout=20))
    assert [(e["type"], e["object"]["code"]) for e in events] == [("ERROR", 504)], "newer than it: Too large"


def test_snapshot_persists_through_json(make_api_server: MakeServer, tmp_path: Any) -> None:
    server, kubeconfig = make_api_server()
    rest = rest_for(kubeconfig)
    rest.request("POST", path_for("v1", "services", "default"), body=svc("p"))
    file = tmp_path / "state.json"
    file.write_text(server.snapshot().to_json())
    rest.request("DELETE", path_for("v1", "services", "default", "p"))
    from lbspeaker_testkit.apiserver import StoreSnapshot

    server.restart(StoreSnapshot.from_json(file.read_text()))
    restored = rest.get(path_for("v1", "services", "default", "p"))
    assert restored["spec"]["clusterIP"] == json.loads(file.read_text())["objects"]["/services"]["default"]["p"][
        "spec"]["clusterIP"]
    # the restored Service's cluster IP and node port stay taken
    with pytest.raises(ApiError) as err:
        rest.request("POST", path_for("v1", "services", "default"), body={
            **svc("q"), "spec": {"type": "ClusterIP", "clusterIP": restored["spec"]["clusterIP"],
                                 "ports": [{"port": 80}]}})
    assert err.value.invalid and "already allocated" in err.value.message
