"""ExaBGP 5 with one neighbour setting more: ``keepalive-time`` (whole seconds).

``python -I exabgp_main.py [exabgp arguments]`` runs ExaBGP's own ``main`` after two additions:

- the configuration parser accepts ``keepalive-time N;`` in a neighbour block (0 to 65535). The value
  becomes part of the neighbour's definition, so changing it re-establishes that session, as a
  changed hold time does;
- the keepalive timer of each session uses it instead of ExaBGP's fixed "negotiated hold time / 3"
  (``effective_keepalive``). Without the setting, ExaBGP's own rule applies.

ExaBGP has no such setting of its own (5.0.15, pinned in pyproject.toml): it sends keepalives every
third of the negotiated hold time, so ``keepalive-time: 1s`` with ``hold-time: 9s`` would be sent
every 3 s. The hooks are two class attributes and one method of that pinned version; ``install``
fails loudly (ExaBGP does not start, the supervisor logs why) if they are not where expected.
Standard library and ExaBGP only, no package import: the supervisor runs this file with ``-I``.
"""

from __future__ import annotations

import sys
from typing import Any

KEYWORD = "keepalive-time"
_MAX = 0xFFFF


def effective_keepalive(configured: int | None, local_hold: int, negotiated_hold: int) -> int:
    """Seconds between keepalives for a session (0: none).

    No keepalives when the negotiated hold time is 0 (RFC 4271 4.4). Without a configured value, a
    third of the negotiated hold time (ExaBGP's rule, the RFC's suggestion). With one, that value;
    when the router asked for a shorter hold time than ours, a third of that hold time at most, so
    the router's hold timer never expires between two keepalives.
    """
    if negotiated_hold <= 0:
        return 0
    third = max(1, negotiated_hold // 3)
    if configured is None or configured <= 0:
        return third
    if negotiated_hold < local_hold:
        return min(configured, third)
    return configured


def _parse_keepalive(tokeniser: Any) -> int:
    value = tokeniser()
    if not str(value).isdigit() or not 0 <= int(value) <= _MAX:
        raise ValueError(f'"{value}" is an invalid keepalive-time (0 to {_MAX} seconds)')
    return int(value)


def install() -> None:
    """Teach ExaBGP the ``keepalive-time`` neighbour setting (see the module docstring)."""
    from exabgp.bgp.neighbor import Neighbor
    from exabgp.configuration.neighbor import ParseNeighbor
    from exabgp.reactor.keepalive import KA

    if KEYWORD in ParseNeighbor.known:
        return
    ParseNeighbor.known[KEYWORD] = _parse_keepalive
    ParseNeighbor.action[KEYWORD] = "set-command"
    # Neighbor copies every key of its defaults from the parsed section, and compares definitions as
    # dicts: the setting thus reaches the neighbour and takes part in "did this peer change".
    Neighbor.defaults[KEYWORD] = None
    original = KA.__init__

    def __init__(self: Any, session: Any, proto: Any) -> None:
        original(self, session, proto)
        neighbor = proto.neighbor
        configured = neighbor.get(KEYWORD)
        if configured is not None:
            self.send_timer.keepalive = effective_keepalive(
                int(configured), int(neighbor["hold-time"]), int(proto.negotiated.holdtime)
            )

    KA.__init__ = __init__


def main() -> None:
    install()
    from exabgp.application.main import main as exabgp_main

    sys.argv[0] = "exabgp"
    exabgp_main()


if __name__ == "__main__":
    main()
