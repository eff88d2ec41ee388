"""BFD (RFC 5880 asynchronous mode, RFC 5881 single hop, RFC 5883 multihop) for the speaker's BGP peers.

A mechanism package: it knows nothing of Kubernetes, of the configuration or of BGP. The speaker
hands ``BfdDaemon`` the sessions this node must run (``SessionSpec``: peer, local address, hop mode,
timers) and reads their states back; the sessions run in a process of their own so that nothing the
speaker does can delay a packet.

Modules: ``packet`` (Control packet encoding and checks), ``session`` (the state machine and timers
of one session), ``engine`` (sockets, demultiplexing, TTL checks, the loop), ``messages`` (the JSON
lines between speaker and process), ``__main__`` (the process), ``daemon`` (the speaker's handle on it).
"""

from __future__ import annotations

from lbspeaker.bfd.daemon import BfdDaemon
from lbspeaker.bfd.engine import DEFAULT_MINIMUM_TTL, Engine, SessionKey, SessionSpec, SessionStatus
from lbspeaker.bfd.session import Timers

__all__ = ["DEFAULT_MINIMUM_TTL", "BfdDaemon", "Engine", "SessionKey", "SessionSpec", "SessionStatus", "Timers"]
