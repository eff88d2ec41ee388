"""The /metrics, /healthz, /readyz server on real loopback sockets, IPv4 and IPv6."""

from __future__ import annotations

import contextlib
import errno
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Gauge

from lbspeaker import metrics
from lbspeaker.hostport import BindTarget
from lbspeaker.metrics import Check, MetricsServer


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


needs_ipv6 = pytest.mark.skipif(not _ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)")


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def registry() -> CollectorRegistry:
    reg = CollectorRegistry()
    Gauge("lbspeaker_test_gauge", "a test series", registry=reg).set(3)
    return reg


@contextlib.contextmanager
def serve(addr: str, registry: CollectorRegistry, *, healthy: Check | None = None,
          ready: Check | None = None) -> Iterator[MetricsServer]:
    server = MetricsServer(addr, healthy=healthy, ready=ready, registry=registry)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_serves_metrics_and_checks_on_ipv4(registry: CollectorRegistry) -> None:
    with serve("127.0.0.1:0", registry, ready=lambda: (False, "config not loaded")) as server:
        base = f"http://127.0.0.1:{server.port}"
        code, text = get(f"{base}/metrics")
        assert code == 200 and "lbspeaker_test_gauge 3.0" in text
        assert get(f"{base}/healthz") == (200, "ok\n")
        assert get(f"{base}/readyz") == (503, "config not loaded\n")
        assert get(f"{base}/nope")[0] == 404


@needs_ipv6
def test_ipv6_any_is_dual_stack(registry: CollectorRegistry) -> None:
    # `--metrics-addr [::]:7472` used to crash with socket.gaierror: the server was always AF_INET.
    with serve("[::]:0", registry) as server:
        assert server.host == "::"
        assert get(f"http://[::1]:{server.port}/healthz") == (200, "ok\n")
        assert get(f"http://127.0.0.1:{server.port}/healthz") == (200, "ok\n")


@needs_ipv6
def test_empty_host_listens_on_ipv6_and_ipv4(registry: CollectorRegistry) -> None:
    with serve(":0", registry) as server:
        assert get(f"http://[::1]:{server.port}/metrics")[0] == 200
        assert get(f"http://127.0.0.1:{server.port}/metrics")[0] == 200


def test_no_ipv6_on_the_node_falls_back_to_ipv4(registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[BindTarget] = []
    real = metrics._Server

    def no_ipv6_server(target: BindTarget, handler: type) -> metrics._Server:
        made.append(target)
        if target.family == socket.AF_INET6:
            raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
        return real(BindTarget(target.family, ("127.0.0.1", target.address[1])), handler)

    monkeypatch.setattr(metrics, "_Server", no_ipv6_server)
    with serve(":0", registry) as server:
        assert [t.family for t in made] == [socket.AF_INET6, socket.AF_INET]
        assert get(f"http://127.0.0.1:{server.port}/healthz")[0] == 200


def test_a_port_in_use_is_an_error_naming_the_address(registry: CollectorRegistry) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError) as got:
            MetricsServer(f"127.0.0.1:{port}", registry=registry)
    assert got.value.errno == errno.EADDRINUSE
    assert f"cannot listen on 127.0.0.1:{port}" in str(got.value)


def test_a_bad_address_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="needs brackets"):
        MetricsServer("::1:7472")
