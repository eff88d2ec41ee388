"""The BFD engine alone against BIRD 2's static BFD neighbours, over IPv4 and IPv6 (RFC 5881 single hop):
the IPv6 receive path (hop limit and destination from ancillary data) is the one the speaker tests,
which peer over IPv4, do not reach. Lab prefix "bfe", deleted afterwards, also on failure."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from lbspeaker_testkit.bird import BirdBfd, BirdRouter, render_bird_config, wait_until
from lbspeaker_testkit.netns import Lab, in_netns

from lbspeaker.bfd import Engine, SessionKey, SessionSpec, Timers
from tests.netns.bgp_lab import skip_reason

SKIP = skip_reason()
pytestmark = [pytest.mark.netns, pytest.mark.skipif(SKIP is not None, reason=SKIP or "")]


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[Lab, BirdRouter, str]]:
    with Lab("bfe") as lab:
        node = lab.add_host("n1", ipv4="192.0.2.11/24", ipv6="2001:db8:1::11/64")
        host = lab.add_host("r", ipv4="192.0.2.1/24", ipv6="2001:db8:1::1/64")
        config = render_bird_config("192.0.2.1", 64501, [],
                                    BirdBfd(300, 300, 3, neighbors=("192.0.2.11", "2001:db8:1::11")))
        router = BirdRouter(lab, host, tmp_path / "bird", config)
        try:
            yield lab, router, node.name
        finally:
            router.stop()


def test_sessions_over_ipv4_and_ipv6_come_up_at_the_configured_rate(lab: tuple[Lab, BirdRouter, str]) -> None:
    _lab, router, namespace = lab
    stop = threading.Event()
    made: list[Engine] = []
    lock = threading.Lock()

    def run() -> None:
        with in_netns(namespace):
            engine = Engine()
            engine.configure([SessionSpec(SessionKey("192.0.2.1", "192.0.2.11"), Timers()),
                              SessionSpec(SessionKey("2001:db8:1::1", "2001:db8:1::11"), Timers())])
            made.append(engine)
            while not stop.is_set():
                with lock:
                    engine.run_once(0.1)
            engine.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: router.bfd_sessions() == {"192.0.2.11": "Up", "2001:db8:1::11": "Up"}, 20,
                   what="both sessions Up at the router")
        detail = router.birdc("show", "bfd", "sessions")
        assert detail.count("0.300    0.900") == 2  # the router runs both at 300 ms x 3
        with lock:
            states = {key.peer: status.state for key, status in made[0].sessions().items()}
            dropped = {k: v for k, v in made[0].stats().items() if k.startswith("dropped_")}
        assert states == {"192.0.2.1": "up", "2001:db8:1::1": "up"}
        assert dropped == {}
    finally:
        stop.set()
        thread.join(5)
