"""The metrics/health server on IPv6-only and dual-stack nodes, on the real kernel.

Each server is bound inside a lab host namespace (the socket is made there), and a client namespace
on the lab switch fetches /healthz over each family. The node namespace sets
``net.ipv6.bindv6only=1``, so the dual-stack behaviour of ``:7472`` and ``[::]:7472`` comes from the
server setting ``IPV6_V6ONLY`` itself, not from the kernel's default.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from lbspeaker_testkit.netns import Host, Lab, in_netns
from prometheus_client import CollectorRegistry

from lbspeaker.metrics import MetricsServer

NODE4, NODE6, CLIENT4, CLIENT6 = "192.0.2.11", "2001:db8::11", "192.0.2.100", "2001:db8::100"
ONLY6 = "2001:db8::12"


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab("mtr") as made:
        node = made.add_host("node", f"{NODE4}/24", f"{NODE6}/64")
        node.run(["sysctl", "-qw", "net.ipv6.bindv6only=1"])
        made.add_host("only6", None, f"{ONLY6}/64")
        made.add_host("cl", f"{CLIENT4}/24", f"{CLIENT6}/64")
        yield made


def serve_in(host: Host, addr: str) -> MetricsServer:
    """A MetricsServer whose listening socket lives in ``host``'s namespace."""
    made: list[MetricsServer] = []
    failed: list[BaseException] = []

    def make() -> None:
        try:
            with in_netns(host.name):
                made.append(MetricsServer(addr, registry=CollectorRegistry()))
        except BaseException as exc:
            failed.append(exc)

    t = threading.Thread(target=make)
    t.start()
    t.join()
    if failed:
        raise failed[0]
    made[0].start()
    return made[0]


def fetch(client: Host, ip: str, port: int) -> str:
    host = f"[{ip}]" if ":" in ip else ip
    res = client.run(["curl", "-s", "-g", "--max-time", "2", "-o", "/dev/null", "-w", "%{http_code}",
                      f"http://{host}:{port}/healthz"], check=False)
    return res.stdout.strip()


@pytest.mark.parametrize("addr", [":7472", "[::]:7473"])
def test_any_address_answers_over_both_families(lab: Lab, addr: str) -> None:
    server = serve_in(lab.hosts["node"], addr)
    try:
        assert fetch(lab.hosts["cl"], NODE6, server.port) == "200"
        assert fetch(lab.hosts["cl"], NODE4, server.port) == "200"
    finally:
        server.stop()


def test_an_ipv6_only_node_serves_on_its_ipv6_address(lab: Lab) -> None:
    server = serve_in(lab.hosts["only6"], ":7472")
    try:
        assert fetch(lab.hosts["cl"], ONLY6, 7472) == "200"
    finally:
        server.stop()


def test_an_ipv4_address_is_ipv4_only(lab: Lab) -> None:
    server = serve_in(lab.hosts["node"], f"{NODE4}:7474")
    try:
        assert fetch(lab.hosts["cl"], NODE4, 7474) == "200"
        assert fetch(lab.hosts["cl"], NODE6, 7474) != "200"
    finally:
        server.stop()
