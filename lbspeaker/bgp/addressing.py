"""Which local address this node uses towards a BGP peer.

ExaBGP resolves ``next-hop self`` from the neighbour's configured local address; with ``local-address
auto`` it has none until a session is up and refuses the routes. So the address is resolved here,
the way the kernel would pick it, and written into the config.
"""

from __future__ import annotations

import socket

from lbspeaker.bgp.model import BgpPeer, normalize_ip


def local_address_for(peer: BgpPeer) -> str:
    """The peer's source address if configured, else the kernel's choice of source towards the peer.

    Connecting a UDP socket only consults the routing table; no packet is sent. Raises OSError
    when the peer is unreachable (no route).
    """
    if peer.source_address is not None:
        return peer.source_address
    family = socket.AF_INET if peer.family == 4 else socket.AF_INET6
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect((peer.peer_address, peer.peer_port))
        return normalize_ip(str(probe.getsockname()[0]))
