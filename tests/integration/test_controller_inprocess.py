"""The controller's reconcile loop in this process, against the API under test (the test server, or a real
cluster through LBSPEAKER_TEST_KUBECONFIG): races and timings that need a hook into the process.

Each test uses its own namespace and loadBalancerClass, so on a real cluster it touches only its own objects.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
from lbspeaker_testkit.apiserver import APIServer
from lbspeaker_testkit.kubeutil import Cluster, lb_service, pool_configmap, rest_for, unique, wait_for

import controller.reconcile as reconcile_module
from controller.reconcile import Controller
from lbspeaker.config import Config
from lbspeaker.config.cluster import JSON, load_config
from lbspeaker.kube.events import EventRecorder
from lbspeaker.kube.rest import MERGE_PATCH, Rest, path_for

POOL3 = """
address-pools:
- name: small
  protocol: layer2
  addresses: [192.0.2.10-192.0.2.12]
"""


class Running:
    """A Controller (with its Event recorder) started in a thread; stopped by ``close``."""

    def __init__(self, rest: Rest, namespace: str, lb_class: str, **kw: Any) -> None:
        self.recorder = EventRecorder(rest, "lbspeaker-controller-test")
        self.ctl = Controller(rest, namespace=namespace, lb_class=lb_class, recorder=self.recorder, **kw)
        self.recorder.start()
        self.thread = threading.Thread(target=self.ctl.start, kwargs={"sync_timeout": 30}, daemon=True)

    def start(self) -> Running:
        self.thread.start()
        return self

    def close(self) -> None:
        self.ctl.stop()
        self.recorder.stop()


@pytest.fixture
def lb_class() -> str:
    return f"lbspeaker.io/test-{unique('c')}"


@pytest.fixture
def run(kubeconfig: str, namespace: str, lb_class: str) -> Iterator[Callable[..., Running]]:
    made: list[Running] = []

    def make(rest: Rest | None = None, **kw: Any) -> Running:
        r = Running(rest or rest_for(kubeconfig), namespace, lb_class, **kw)
        made.append(r)
        return r.start()

    try:
        yield make
    finally:
        for r in made:
            r.close()


def _write_status(cluster: Cluster, ns: str, name: str, ips: list[str]) -> None:
    """What another (earlier) controller left in a Service's status."""
    cluster.rest.request("PATCH", path_for("v1", "services", ns, name, "status"), content_type=MERGE_PATCH,
                         body={"status": {"loadBalancer": {"ingress": [{"ip": ip, "ipMode": "VIP"} for ip in ips]}}})


def test_first_config_is_published_only_after_existing_ips_are_adopted(
        run: Callable[..., Running], kubeconfig: str, namespace: str, lb_class: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 11: a worker assigning between "config visible" and "IPs adopted" handed an IP that is in
    another Service's status to a new Service. A 1 s delay is injected right before adoption; a Service
    changed during that second must still get another IP."""
    cluster = Cluster(kubeconfig)
    cluster.create(namespace, "services", lb_service("holder", lb_class=lb_class))
    _write_status(cluster, namespace, "holder", ["192.0.2.10"])
    cluster.create(namespace, "services", lb_service("newcomer", lb_class=lb_class))
    r = run()  # no ConfigMap yet: workers run, nothing is assigned
    wait_for(r.ctl.started.is_set, 30, what="controller started")
    in_window = threading.Event()
    adopt = r.ctl.adopt_existing

    def slow_adopt(*args: Any, **kwargs: Any) -> Any:
        in_window.set()
        time.sleep(1.0)
        return adopt(*args, **kwargs)

    monkeypatch.setattr(r.ctl, "adopt_existing", slow_adopt)
    cluster.create(namespace, "configmaps", pool_configmap(POOL3))
    assert in_window.wait(20), "the first configuration is being loaded"
    cluster.patch(namespace, "services", "newcomer", {"metadata": {"annotations": {"touched": "now"}}})
    got = cluster.wait_ips(namespace, "newcomer")
    assert got != ["192.0.2.10"], "192.0.2.10 is in holder's status: it must never go to another Service"
    assert got == ["192.0.2.11"]
    time.sleep(0.5)
    assert cluster.ips(namespace, "holder") == ["192.0.2.10"]


def test_readiness_fails_while_a_config_parse_is_stuck(
        run: Callable[..., Running], kubeconfig: str, namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = Cluster(kubeconfig)
    cluster.create(namespace, "configmaps", pool_configmap(POOL3))
    r = run(parse_ready_limit=0.5)
    wait_for(lambda: r.ctl.ready()[0], 30, what="ready")
    release = threading.Event()

    def stuck_load(sources: Iterable[JSON]) -> tuple[Config | None, list[tuple[JSON, str]]]:
        release.wait(30)
        return load_config(sources)

    monkeypatch.setattr(reconcile_module, "load_config", stuck_load)
    cluster.patch(namespace, "configmaps", "config", {"data": {"config": POOL3 + "\n# edited\n"}})
    started = time.monotonic()
    wait_for(lambda: not r.ctl.ready()[0], 10, what="not ready while the parse is stuck")
    assert time.monotonic() - started < 3.0
    ok, why = r.ctl.ready()
    assert not ok and "configuration parse running for" in why, why
    release.set()
    wait_for(lambda: r.ctl.ready() == (True, "ok"), 10, what="ready again once the parse ends")


def test_status_carries_ip_mode_vip(run: Callable[..., Running], kubeconfig: str, namespace: str,
                                    lb_class: str) -> None:
    cluster = Cluster(kubeconfig)
    cluster.create(namespace, "configmaps", pool_configmap(POOL3))
    run()
    cluster.create(namespace, "services", lb_service("m", lb_class=lb_class))
    cluster.wait_ips(namespace, "m")
    svc = cluster.get(namespace, "services", "m")
    assert svc is not None
    assert svc["status"]["loadBalancer"]["ingress"] == [{"ip": "192.0.2.10", "ipMode": "VIP"}]


def test_a_server_older_than_1_29_gets_one_write_per_service(
        make_api_server: Callable[..., tuple[APIServer, str]], lb_class: str) -> None:
    """It drops ipMode as an unknown field; the stored status then lacks it, and that must not look like
    a difference to rewrite."""
    server, kubeconfig = make_api_server(version="1.28", bookmark_interval=0.2)
    cluster = Cluster(kubeconfig)
    cluster.create("default", "configmaps", pool_configmap(POOL3))
    r = Running(rest_for(kubeconfig), "default", lb_class).start()
    try:
        for i in range(3):
            cluster.create("default", "services", lb_service(f"s{i}", lb_class=lb_class))
        for i in range(3):
            cluster.wait_ips("default", f"s{i}")
        time.sleep(1.5)  # several bookmarks and resyncs: a rewrite loop would show
        writes = sum(n for k, n in server.request_counts().items() if k[0] == "patch" and k[-1] == "status")
        assert writes == 3
        svc = cluster.get("default", "services", "s0")
        assert svc is not None and svc["status"]["loadBalancer"]["ingress"] == [{"ip": "192.0.2.10"}]
        r.ctl.queue.add("default/s0")  # a forced reconcile of a status without ipMode writes nothing
        assert r.ctl.wait_idle(5)
        time.sleep(0.3)
        assert sum(n for k, n in server.request_counts().items() if k[0] == "patch" and k[-1] == "status") == 3
    finally:
        r.close()


def test_deleting_the_config_configmap_gives_an_event(run: Callable[..., Running], kubeconfig: str,
                                                      namespace: str, lb_class: str) -> None:
    cluster = Cluster(kubeconfig)
    cluster.create(namespace, "configmaps", pool_configmap(POOL3))
    r = run()
    wait_for(lambda: r.ctl.ready()[0], 30, what="ready")
    cluster.delete(namespace, "configmaps", "config")
    ev = cluster.wait_event(namespace, "config", "ConfigDeleted")
    assert ev["type"] == "Warning" and ev["involvedObject"]["kind"] == "ConfigMap"
    assert "last good configuration" in ev["message"] and "1 address pool" in ev["message"], ev["message"]
    cluster.create(namespace, "services", lb_service("still", lb_class=lb_class))
    assert cluster.wait_ips(namespace, "still") == ["192.0.2.10"], "the last good pools still serve"
