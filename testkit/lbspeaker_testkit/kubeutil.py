"""Small helpers for integration tests: JSON access to the API server under test and polling."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from lbspeaker.kube.client import load_api_client
from lbspeaker.kube.rest import JSON, MERGE_PATCH, ApiError, Rest, path_for

T = TypeVar("T")


def rest_for(kubeconfig: str) -> Rest:
    return Rest(load_api_client(kubeconfig))


def wait_for(fn: Callable[[], T | None], timeout: float = 20.0, interval: float = 0.05,
             what: str = "condition") -> T:
    """Poll ``fn`` until it returns something truthy; fail with ``what`` and the last value after ``timeout``.

    ``fn`` may answer None for "not yet"; the truthy value it finally returns is the result.
    """
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


class HandlerLog:
    """An informer handler recording (old name, new name) pairs, for tests."""

    def __init__(self) -> None:
        self.events: list[tuple[str | None, str | None]] = []
        self._lock = threading.Lock()

    def __call__(self, old: JSON | None, new: JSON | None) -> None:
        with self._lock:
            self.events.append((_name(old), _name(new)))

    def deleted(self) -> set[str]:
        with self._lock:
            return {o for o, n in self.events if o and n is None}

    def added(self) -> set[str]:
        with self._lock:
            return {n for o, n in self.events if n and o is None}


def _name(obj: JSON | None) -> str | None:
    """The object's name, or None for no object (an informer's "before" of an add, "after" of a delete)."""
    return str(obj["metadata"]["name"]) if obj else None


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def lb_service(name: str, *, ports: Sequence[tuple[str, int]] = (("TCP", 80),), lb_class: str | None = None,
               annotations: dict[str, str] | None = None, load_balancer_ip: str | None = None,
               families: Sequence[str] | None = None, family_policy: str | None = None,
               traffic_policy: str | None = None, selector: dict[str, str] | None = None,
               svc_type: str = "LoadBalancer") -> JSON:
    spec: dict[str, Any] = {
        "type": svc_type,
        "ports": [{"name": f"p{i}", "protocol": proto, "port": port} for i, (proto, port) in enumerate(ports)],
        "selector": selector or {"app": name},
    }
    if lb_class:
        spec["loadBalancerClass"] = lb_class
    if load_balancer_ip:
        spec["loadBalancerIP"] = load_balancer_ip
    if families:
        spec["ipFamilies"] = list(families)
    if family_policy:
        spec["ipFamilyPolicy"] = family_policy
    if traffic_policy:
        spec["externalTrafficPolicy"] = traffic_policy
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "annotations": annotations or {}}, "spec": spec}


def pool_configmap(config_yaml: str, name: str = "config", labels: dict[str, str] | None = None) -> JSON:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels or {}},
            "data": {"config": config_yaml}}


class Cluster:
    """The API server under test, seen through plain JSON calls."""

    def __init__(self, kubeconfig: str) -> None:
        self.kubeconfig = kubeconfig
        self.rest = rest_for(kubeconfig)

    def create(self, ns: str, resource: str, obj: JSON) -> JSON:
        return self.rest.request("POST", path_for("v1", resource, ns), body=obj)

    def get(self, ns: str, resource: str, name: str) -> JSON | None:
        try:
            return self.rest.get(path_for("v1", resource, ns, name))
        except ApiError as exc:
            if exc.not_found:
                return None
            raise

    def patch(self, ns: str, resource: str, name: str, body: JSON) -> JSON:
        return self.rest.request("PATCH", path_for("v1", resource, ns, name), body=body, content_type=MERGE_PATCH)

    def put(self, ns: str, resource: str, obj: JSON) -> JSON:
        return self.rest.request("PUT", path_for("v1", resource, ns, obj["metadata"]["name"]), body=obj)

    def delete(self, ns: str, resource: str, name: str) -> None:
        with contextlib.suppress(ApiError):
            self.rest.request("DELETE", path_for("v1", resource, ns, name))

    def ips(self, ns: str, name: str) -> list[str]:
        svc = self.get(ns, "services", name)
        if svc is None:
            return []
        return [i["ip"] for i in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []]

    def events(self, ns: str, name: str, reason: str | None = None) -> list[JSON]:
        items = self.rest.get(path_for("v1", "events", ns),
                              fieldSelector=f"involvedObject.name={name}").get("items") or []
        return [e for e in items if reason is None or e.get("reason") == reason]

    def wait_ips(self, ns: str, name: str, count: int = 1, timeout: float = 20.0) -> list[str]:
        return wait_for(lambda: (lambda ips: ips if len(ips) == count else None)(self.ips(ns, name)),
                        timeout, what=f"{count} IP(s) on {ns}/{name}")

    def wait_event(self, ns: str, name: str, reason: str, timeout: float = 20.0, contains: str = "") -> JSON:
        def found() -> JSON | None:
            for e in self.events(ns, name, reason):
                if contains in e.get("message", ""):
                    return e
            return None

        return wait_for(found, timeout, what=f"event {reason} on {ns}/{name} containing {contains!r}")


class ControllerProcess:
    """`python -m controller` as a child process, with its metrics endpoint."""

    def __init__(self, kubeconfig: str, namespace: str, lb_class: str | None, *extra: str) -> None:
        self.port = free_port()
        self.args = [sys.executable, "-m", "controller", "--kubeconfig", kubeconfig, "--namespace", namespace,
                     "--metrics-addr", f"127.0.0.1:{self.port}", "--log-level", "debug", *extra]
        if lb_class:
            self.args += ["--lb-class", lb_class]
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = f"/tmp/lbspeaker-controller-{uuid.uuid4().hex[:8]}.log"

    def start(self) -> ControllerProcess:
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        wait_for(lambda: self.http("/healthz")[0] == 200, 30, what="controller /healthz")
        return self

    def http(self, path: str) -> tuple[int, str]:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"controller exited with {self.proc.returncode}:\n{self.logs()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def metric(self, name: str, labels: str = "") -> float | None:
        _, text = self.http("/metrics")
        for line in text.splitlines():
            if line.startswith(f"{name}{{{labels}}} " if labels else f"{name} "):
                return float(line.rsplit(" ", 1)[1])
        return None

    def logs(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")[-5000:]

    def stop(self, sig: int = 15) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode


@contextlib.contextmanager
def controller(kubeconfig: str, namespace: str, lb_class: str | None, *extra: str) -> Iterator[ControllerProcess]:
    proc = ControllerProcess(kubeconfig, namespace, lb_class, *extra).start()
    try:
        yield proc
    finally:
        proc.stop()
