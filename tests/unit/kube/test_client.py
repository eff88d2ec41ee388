"""The API client's transport settings: no hidden retries, TCP keepalive."""

from __future__ import annotations

import socket
from pathlib import Path

from lbspeaker_testkit.kubeconfig import write_kubeconfig

from lbspeaker.kube.client import load_api_client


def test_the_official_client_retries_nothing_and_keeps_connections_alive(tmp_path: Path) -> None:
    api = load_api_client(str(write_kubeconfig(tmp_path / "kc", "http://127.0.0.1:1")))
    kw = api.rest_client.pool_manager.connection_pool_kw
    retries = kw["retries"]
    assert retries is False or retries.total is False, "urllib3 would retry each failed call 3 times"
    assert api.configuration.client_go_retries is False
    options = kw["socket_options"]
    assert (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1) in options
    assert (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 30) in options
