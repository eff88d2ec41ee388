"""The keepalive-time addition to ExaBGP: the interval rule, and that it hooks the pinned ExaBGP."""

from __future__ import annotations

import importlib.util

import pytest

from lbspeaker.bgp.exabgp_main import KEYWORD, effective_keepalive, install


@pytest.mark.parametrize(
    ("configured", "local", "negotiated", "expected"),
    [
        (None, 90, 90, 30),  # ExaBGP's own rule: a third of the hold time
        (1, 9, 9, 1),  # the configured value
        (20, 90, 90, 20),
        (20, 90, 30, 10),  # the router asked for 30 s: never let its hold timer run out
        (2, 90, 30, 2),
        (5, 9, 3, 1),
        (1, 0, 0, 0),  # hold time 0: no keepalives at all
        (0, 90, 90, 30),
    ],
)
def test_effective_keepalive(configured: int | None, local: int, negotiated: int, expected: int) -> None:
    assert effective_keepalive(configured, local, negotiated) == expected


@pytest.mark.skipif(importlib.util.find_spec("exabgp") is None, reason="exabgp not installed")
def test_install_adds_the_setting_to_the_pinned_exabgp() -> None:
    install()
    install()  # idempotent
    from exabgp.bgp.neighbor import Neighbor
    from exabgp.configuration.neighbor import ParseNeighbor

    assert ParseNeighbor.known[KEYWORD] is not None
    assert ParseNeighbor.action[KEYWORD] == "set-command"
    assert Neighbor()[KEYWORD] is None
