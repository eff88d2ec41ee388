"""Fixtures for integration tests against a Kubernetes API: the in-process test server, or a real cluster.

Set ``LBSPEAKER_TEST_KUBECONFIG=/path/to/kubeconfig`` to run every integration test against a real
cluster instead; tests that need server internals (request counters, outage simulation, a tiny watch
history) then skip themselves through the ``api_server`` / ``make_api_server`` fixtures.

Fixtures: ``kubeconfig`` (path), ``api_server`` (the in-process APIServer behind ``kubeconfig``),
``make_api_server`` (factory for private servers with custom settings), ``api_client``, ``core_v1``,
``namespace`` (a fresh namespace per test, deleted afterwards).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from lbspeaker_testkit.apiserver import APIServer

REAL_CLUSTER_ENV = "LBSPEAKER_TEST_KUBECONFIG"


def _real_kubeconfig() -> str | None:
    return os.environ.get(REAL_CLUSTER_ENV) or None


@pytest.fixture(scope="session")
def _session_server() -> Iterator[APIServer | None]:
    if _real_kubeconfig():
        yield None
        return
    server = APIServer(host="127.0.0.1", port=0)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def kubeconfig(_session_server: APIServer | None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Path of a kubeconfig for the API under test."""
    real = _real_kubeconfig()
    if real:
        yield real
        return
    assert _session_server is not None
    path = tmp_path_factory.mktemp("kube") / "kubeconfig"
    _session_server.write_kubeconfig(path)
    yield str(path)


@pytest.fixture
def api_server(_session_server: APIServer | None) -> Iterator[APIServer]:
    """The in-process server behind ``kubeconfig`` (for counters and pause/resume); resumed after the test."""
    if _session_server is None:
        pytest.skip(f"needs the in-process API test server: {REAL_CLUSTER_ENV} points at a real cluster")
    try:
        yield _session_server
    finally:
        _session_server.resume()


@pytest.fixture
def make_api_server(tmp_path: Path) -> Iterator[Callable[..., tuple[APIServer, str]]]:
    """Factory: ``make_api_server(history_size=..., bookmark_interval=..., token=...)`` starts a private
    server and returns (server, kubeconfig path); every server made is stopped after the test."""
    if _real_kubeconfig():
        pytest.skip(f"needs the in-process API test server: {REAL_CLUSTER_ENV} points at a real cluster")
    made: list[APIServer] = []

    def make(**kwargs: Any) -> tuple[APIServer, str]:
        server = APIServer(host="127.0.0.1", port=0, **kwargs)
        server.start()
        made.append(server)
        path = tmp_path / f"kubeconfig-{len(made)}"
        server.write_kubeconfig(path)
        return server, str(path)

    try:
        yield make
    finally:
        for server in made:
            server.stop()


@pytest.fixture
def api_client(kubeconfig: str) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(config_file=kubeconfig)
    try:
        yield api
    finally:
        api.close()


@pytest.fixture
def core_v1(api_client: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api_client)


@pytest.fixture
def namespace(core_v1: client.CoreV1Api, _session_server: APIServer | None) -> Iterator[str]:
    """A namespace created for this test alone, deleted (with its contents) afterwards."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    core_v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        yield name
    finally:
        if _session_server is not None:
            _session_server.resume()  # a test that paused the server must not leak its namespace
        try:
            core_v1.delete_namespace(name)
        except ApiException as exc:
            if exc.status != 404:
                raise
