"""List and watch semantics: selectors, pagination, watch from a resourceVersion, bookmarks, 410 Expired.

Tests needing a short bookmark interval or a tiny watch history use private servers from
``make_api_server`` (skipped on a real cluster); the rest pass against any conformant cluster.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

# The v37 client's models make every field Optional; tests check values at runtime, so client
# handles are typed loosely here rather than guarded with `is not None` on every access.
Api = Any


def _names(items: list[Any]) -> list[str]:
    return sorted(i.metadata.name for i in items)


@pytest.fixture
def labelled(core_v1: Api, namespace: str) -> str:
    for name, labels in {
        "a": {"app": "web", "tier": "fe"},
        "b": {"app": "web", "tier": "be"},
        "c": {"app": "db"},
        "d": {},
    }.items():
        core_v1.create_namespaced_config_map(namespace, {"metadata": {"name": name, "labels": labels}})
    return namespace


@pytest.mark.parametrize(
    "selector, expect",
    [
        ("app=web", ["a", "b"]),
        ("app==web", ["a", "b"]),
        ("app!=web", ["c", "d"]),
        ("tier in (fe,be)", ["a", "b"]),
        ("tier notin (fe)", ["b", "c", "d"]),
        ("tier", ["a", "b"]),
        ("!tier", ["c", "d"]),
        ("app=web,tier=fe", ["a"]),
        ("app in (web, db),!tier", ["c"]),
    ],
)
def test_label_selectors(core_v1: Api, labelled: str, selector: str, expect: list[str]) -> None:
    items = core_v1.list_namespaced_config_map(labelled, label_selector=selector).items
    assert [n for n in _names(items) if len(n) == 1] == expect


def test_bad_selectors_are_400(core_v1: Api, namespace: str) -> None:
    for kwargs in (
        {"label_selector": "app in (web"},
        {"label_selector": "bad key=1"},
        {"field_selector": "spec.nonsense=1"},
    ):
        with pytest.raises(ApiException) as err:
            core_v1.list_namespaced_config_map(namespace, **kwargs)
        assert err.value.status == 400, kwargs


def test_field_selectors(core_v1: Api, namespace: str) -> None:
    for name in ("x", "y"):
        core_v1.create_namespaced_config_map(namespace, {"metadata": {"name": name}})
    assert _names(core_v1.list_namespaced_config_map(namespace, field_selector="metadata.name=x").items) == [
        "x"
    ]
    assert "x" not in _names(
        core_v1.list_namespaced_config_map(namespace, field_selector="metadata.name!=x").items
    )
    across = core_v1.list_config_map_for_all_namespaces(
        field_selector=f"metadata.namespace={namespace},metadata.name=y"
    ).items
    assert [(i.metadata.namespace, i.metadata.name) for i in across] == [(namespace, "y")]

    core_v1.create_namespaced_secret(
        namespace,
        {"metadata": {"name": "tls"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}},
    )
    core_v1.create_namespaced_secret(namespace, {"metadata": {"name": "plain"}})
    assert _names(
        core_v1.list_namespaced_secret(namespace, field_selector="type=kubernetes.io/tls").items
    ) == ["tls"]

    for pod, node in (("p1", "lbspeaker-node-a"), ("p2", "lbspeaker-node-b")):
        core_v1.create_namespaced_pod(
            namespace,
            {
                "metadata": {"name": pod},
                "spec": {"nodeName": node, "containers": [{"name": "c", "image": "registry.invalid/img:1"}]},
            },
        )
    on_a = core_v1.list_namespaced_pod(namespace, field_selector="spec.nodeName=lbspeaker-node-a").items
    assert _names(on_a) == ["p1"]
    for pod in ("p1", "p2"):
        core_v1.delete_namespaced_pod(pod, namespace, grace_period_seconds=0)

    for name, kind in (("e1", "Service"), ("e2", "Node")):
        core_v1.create_namespaced_event(
            namespace,
            {
                "metadata": {"name": name},
                "reason": "Test",
                "message": "m",
                "type": "Warning",
                "involvedObject": {"kind": kind, "name": "target", "namespace": namespace},
            },
        )
    events = core_v1.list_namespaced_event(
        namespace, field_selector="involvedObject.kind=Service,involvedObject.name=target,type=Warning"
    ).items
    assert _names(events) == ["e1"]


def test_pagination_is_a_consistent_snapshot(core_v1: Api, namespace: str) -> None:
    for i in range(7):
        core_v1.create_namespaced_config_map(namespace, {"metadata": {"name": f"p{i}"}})
    first = core_v1.list_namespaced_config_map(namespace, limit=3)
    assert len(first.items) == 3 and first.metadata._continue
    if first.metadata.remaining_item_count is not None:
        assert first.metadata.remaining_item_count >= 4
    core_v1.create_namespaced_config_map(namespace, {"metadata": {"name": "p99-late"}})
    core_v1.delete_namespaced_config_map("p6", namespace)
    seen = [i.metadata.name for i in first.items]
    token = first.metadata._continue
    while token:
        page = core_v1.list_namespaced_config_map(namespace, limit=3, _continue=token)
        seen += [i.metadata.name for i in page.items]
        token = page.metadata._continue
    paged = [n for n in seen if n.startswith("p")]
    assert paged == [f"p{i}" for i in range(7)]  # as of the first page: p6 still there, p99-late not yet


def _collect(w: watch.Watch, stream: Iterator[dict[str, Any]], count: int) -> list[tuple[str, str, str]]:
    out: list[tuple[str, str, str]] = []
    for ev in stream:
        meta = ev["raw_object"].get("metadata", {})
        out.append((ev["type"], meta.get("name", ""), meta.get("labels", {}).get("v", "")))
        if len(out) >= count:
            w.stop()
    return out


def test_watch_from_resource_version_sees_later_events_in_order(core_v1: Api, namespace: str) -> None:
    core_v1.create_namespaced_config_map(namespace, {"metadata": {"name": "w", "labels": {"v": "0"}}})
    rv = core_v1.list_namespaced_config_map(namespace).metadata.resource_version
    core_v1.patch_namespaced_config_map("w", namespace, {"metadata": {"labels": {"v": "1"}}})
    core_v1.create_namespaced_config_map(namespace, {"metadata": {"name": "w2", "labels": {"v": "2"}}})
    core_v1.delete_namespaced_config_map("w", namespace)
    w = watch.Watch()
    events = _collect(
        w,
        w.stream(
            core_v1.list_namespaced_config_map,
            namespace,
            resource_version=rv,
            label_selector="v",
            timeout_seconds=10,
        ),
        3,
    )
    assert events == [("MODIFIED", "w", "1"), ("ADDED", "w2", "2"), ("DELETED", "w", "1")]


def test_watch_without_resource_version_starts_with_current_state(core_v1: Api, namespace: str) -> None:
    for name in ("i1", "i2"):
        core_v1.create_namespaced_config_map(namespace, {"metadata": {"name": name, "labels": {"t": "init"}}})
    w = watch.Watch()
    # scoped by label: a real namespace also holds (and may still be getting) kube-root-ca.crt
    events = _collect(
        w,
        w.stream(core_v1.list_namespaced_config_map, namespace, label_selector="t=init", timeout_seconds=10),
        2,
    )
    assert sorted(events) == [("ADDED", "i1", ""), ("ADDED", "i2", "")]


def test_watch_with_selector_turns_transitions_into_added_and_deleted(core_v1: Api, namespace: str) -> None:
    core_v1.create_namespaced_config_map(namespace, {"metadata": {"name": "s", "labels": {"pick": "yes"}}})
    rv = core_v1.list_namespaced_config_map(namespace).metadata.resource_version
    for value in ("no", "yes", "yes"):
        core_v1.patch_namespaced_config_map(
            "s", namespace, {"metadata": {"labels": {"pick": value, "v": value}}}
        )
    w = watch.Watch()
    events = _collect(
        w,
        w.stream(
            core_v1.list_namespaced_config_map,
            namespace,
            resource_version=rv,
            label_selector="pick=yes",
            timeout_seconds=10,
        ),
        2,
    )
    assert events == [("DELETED", "s", ""), ("ADDED", "s", "yes")]


def _wait_root_ca(core_v1: Api, namespace: str) -> None:
    """kube-controller-manager publishes kube-root-ca.crt into a new namespace shortly after it appears."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        names = [c.metadata.name for c in core_v1.list_namespaced_config_map(namespace).items]
        if "kube-root-ca.crt" in names:
            return
        time.sleep(0.02)
    raise AssertionError(f"no kube-root-ca.crt in {namespace} after 10 s")


def test_timeout_seconds_ends_the_stream(core_v1: Api, namespace: str) -> None:
    _wait_root_ca(core_v1, namespace)  # else its ADDED event may land in the stream
    rv = core_v1.list_namespaced_config_map(namespace).metadata.resource_version
    started = time.monotonic()
    stream = core_v1.list_namespaced_config_map(
        namespace, watch=True, resource_version=rv, timeout_seconds=1, _preload_content=False
    )
    body = stream.read()  # returns only once the server has closed the stream cleanly
    stream.release_conn()
    assert time.monotonic() - started < 5
    assert body.strip() == b"" or all(json.loads(line)["type"] == "BOOKMARK" for line in body.splitlines())


def test_root_ca_configmap_arrives_after_the_namespace(make_api_server: Any) -> None:
    """Like the controller manager's publisher, the test server writes kube-root-ca.crt a moment after
    the namespace, so a list taken right after creating a namespace need not hold it yet."""
    _, kubeconfig = make_api_server(root_ca_delay=1.0)
    core_v1: Api = client.CoreV1Api(config.new_client_from_config(kubeconfig))
    core_v1.create_namespace({"metadata": {"name": "fresh"}})
    assert core_v1.list_namespaced_config_map("fresh").items == []
    _wait_root_ca(core_v1, "fresh")


def test_bookmarks_carry_a_resource_version_clients_resume_from(make_api_server: Any) -> None:
    _, kubeconfig = make_api_server(bookmark_interval=0.2)
    core_v1: Api = client.CoreV1Api(config.new_client_from_config(kubeconfig))
    core_v1.create_namespaced_config_map("default", {"metadata": {"name": "before"}})
    rv = core_v1.list_namespaced_config_map("default").metadata.resource_version
    core_v1.create_namespaced_secret("default", {"metadata": {"name": "unrelated"}})  # moves the global RV

    w = watch.Watch()
    bookmark_rv = None
    for ev in w.stream(
        core_v1.list_namespaced_config_map,
        "default",
        resource_version=rv,
        allow_watch_bookmarks=True,
        timeout_seconds=10,
    ):
        assert ev["type"] == "BOOKMARK", ev["type"]
        assert set(ev["raw_object"]["metadata"]) <= {"resourceVersion", "creationTimestamp", "annotations"}
        bookmark_rv = ev["raw_object"]["metadata"]["resourceVersion"]
        w.stop()
    assert bookmark_rv is not None and int(bookmark_rv) > int(rv)
    assert w.resource_version == bookmark_rv  # the client keeps it to resume from

    core_v1.create_namespaced_config_map("default", {"metadata": {"name": "after"}})
    w2 = watch.Watch()
    events = _collect(
        w2,
        w2.stream(
            core_v1.list_namespaced_config_map, "default", resource_version=bookmark_rv, timeout_seconds=10
        ),
        1,
    )
    assert events == [("ADDED", "after", "")]


def test_watch_from_a_resource_version_older_than_history_is_410(make_api_server: Any) -> None:
    _, kubeconfig = make_api_server(history_size=3)
    api = config.new_client_from_config(kubeconfig)
    core_v1: Api = client.CoreV1Api(api)
    rv = core_v1.list_namespaced_config_map("default").metadata.resource_version
    for i in range(6):
        core_v1.create_namespaced_config_map("default", {"metadata": {"name": f"h{i}"}})

    raw = core_v1.list_namespaced_config_map(
        "default", watch=True, resource_version=rv, timeout_seconds=5, _preload_content=False
    )
    lines = raw.read().splitlines()
    raw.release_conn()
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert event["type"] == "ERROR"
    status = event["object"]
    assert (status["kind"], status["code"], status["reason"]) == ("Status", 410, "Expired")
    assert status["message"].startswith(f"too old resource version: {rv} (")

    with pytest.raises(ApiException) as err:
        for _ in watch.Watch().stream(
            core_v1.list_namespaced_config_map, "default", resource_version=rv, timeout_seconds=5
        ):
            pass
    assert err.value.status == 410

    # other resources' churn does not expire a watch: the history is kept per resource
    rv2 = core_v1.list_namespaced_service("default").metadata.resource_version
    for i in range(6):
        core_v1.create_namespaced_config_map("default", {"metadata": {"name": f"k{i}"}})
    core_v1.create_namespaced_service(
        "default", {"metadata": {"name": "svc"}, "spec": {"ports": [{"port": 80}]}}
    )
    w = watch.Watch()
    assert _collect(
        w, w.stream(core_v1.list_namespaced_service, "default", resource_version=rv2, timeout_seconds=5), 1
    ) == [("ADDED", "svc", "")]


def test_many_concurrent_watches_all_get_every_event(make_api_server: Any) -> None:
    _, kubeconfig = make_api_server()
    core_v1: Api = client.CoreV1Api(config.new_client_from_config(kubeconfig))
    rv = core_v1.list_namespaced_config_map("default").metadata.resource_version
    results: dict[int, list[str]] = {}

    def watch_one(i: int) -> None:
        api: Api = client.CoreV1Api(config.new_client_from_config(kubeconfig))
        w = watch.Watch()
        got = []
        for ev in w.stream(
            api.list_namespaced_config_map, "default", resource_version=rv, timeout_seconds=20
        ):
            got.append(ev["raw_object"]["metadata"]["name"])
            if len(got) == 5:
                w.stop()
        results[i] = got

    threads = [threading.Thread(target=watch_one, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for i in range(5):
        core_v1.create_namespaced_config_map("default", {"metadata": {"name": f"m{i}"}})
    for t in threads:
        t.join(30)
    assert len(results) == 40
    assert all(v == [f"m{i}" for i in range(5)] for v in results.values())


def test_streaming_list_ends_initial_events_with_a_marked_bookmark(make_api_server: Any) -> None:
    _, kubeconfig = make_api_server()
    core_v1: Api = client.CoreV1Api(config.new_client_from_config(kubeconfig))
    old_rv = core_v1.list_namespaced_config_map("default").metadata.resource_version
    for name in ("s1", "s2"):
        core_v1.create_namespaced_config_map("default", {"metadata": {"name": name, "labels": {"t": "s"}}})
    raw = core_v1.list_namespaced_config_map(
        "default",
        watch=True,
        send_initial_events=True,
        label_selector="t=s",
        allow_watch_bookmarks=True,
        resource_version=old_rv,
        resource_version_match="NotOlderThan",
        timeout_seconds=1,
        _preload_content=False,
    )
    events = [json.loads(line) for line in raw.read().splitlines()]
    raw.release_conn()
    assert [(e["type"], e["object"]["metadata"].get("name")) for e in events[:3]] == [
        ("ADDED", "s1"),
        ("ADDED", "s2"),
        ("BOOKMARK", None),
    ]
    marker = events[2]["object"]["metadata"]
    assert marker["annotations"] == {"k8s.io/initial-events-end": "true"}
    assert (
        marker["resourceVersion"] == core_v1.list_namespaced_config_map("default").metadata.resource_version
    )
