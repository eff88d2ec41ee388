"""The BFD process: ``python -m lbspeaker.bfd --parent-pid PID``, started and fed by ``daemon.BfdDaemon``.

BFD runs in a process of its own so that its timers never wait for the speaker: a reconcile pass
holding the interpreter lock for seconds (a large config, thousands of Services) would otherwise
delay packets past the router's detection time and take every session down. The process does
nothing but BFD, in one thread.

Protocol, one JSON object per line:

- stdin (from the speaker): ``{"op": "sessions", "sessions": [SPEC, ...]}`` replaces the session set
  (``SPEC``: peer, local, multihop, desired_min_tx, required_min_rx (microseconds), detect_mult,
  passive, minimum_ttl); ``{"op": "stop"}`` ends the process.
- stdout (to the speaker): ``{"event": "ready"}`` once; ``{"event": "state", ...SessionStatus}`` on
  every session state change and for each new session; ``{"event": "stats", "counters": {...}}`` every
  few seconds and on exit; ``{"event": "error", "message": ...}`` for a command it could not apply.

It dies with the speaker (PR_SET_PDEATHSIG, and when its stdin closes) and stops sending at once,
without AdminDown: a speaker that stopped or crashed cannot vouch for the node, so the routers'
detection timers run out and they drop the node, graceful restart or not ("BFD Down wins", as in
MetalLB). A session removed from the configuration, by contrast, is taken AdminDown first.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import signal
import sys
import time
from typing import Any

from lbspeaker.bfd.engine import MULTIHOP_PORT, SINGLE_HOP_PORT, Engine, SessionKey, SessionStatus
from lbspeaker.bfd.messages import spec_from_json, status_to_json
from lbspeaker.bfd.session import Transition

PR_SET_PDEATHSIG = 1
_MAX_LINE = 1 << 20
_STATS_EVERY = 5.0


class Child:
    """The process's main loop around an ``Engine``: commands in, events out."""

    def __init__(self, out: Any = sys.stdout, ports: tuple[int, int] | None = None,
                 peer_ports: tuple[int, int] | None = None) -> None:
        self._out = out
        self.engine = Engine(self._on_transition, ports=ports or (SINGLE_HOP_PORT, MULTIHOP_PORT),
                             peer_ports=peer_ports)
        self._buf = b""
        self._stopping = False
        self._known: set[SessionKey] = set()

    def emit(self, event: str, **fields: Any) -> None:
        self._out.write(json.dumps({"event": event, **fields}, sort_keys=True) + "\n")
        self._out.flush()

    def _on_transition(self, key: SessionKey, _transition: Transition, status: SessionStatus) -> None:
        self.emit("state", **status_to_json(status))

    def on_stdin(self) -> None:
        data = os.read(0, 65536)
        if not data:
            self._stopping = True  # the speaker is gone
            return
        self._buf += data
        if len(self._buf) > _MAX_LINE and b"\n" not in self._buf:
            self.emit("error", message="command line too long; dropped")
            self._buf = b""
            return
        *lines, self._buf = self._buf.split(b"\n")
        for line in lines:
            if line.strip():
                self._command(line)

    def _command(self, line: bytes) -> None:
        try:
            command = json.loads(line)
            op = command["op"]
            if op == "stop":
                self._stopping = True
            elif op == "sessions":
                specs = [spec_from_json(item) for item in command["sessions"]]
                self.engine.configure(specs)
                for key, status in self.engine.sessions().items():
                    if key not in self._known:
                        self.emit("state", **status_to_json(status))
                self._known = set(self.engine.sessions())
            else:
                raise ValueError(f"unknown op {op!r}")
        except (ValueError, TypeError, KeyError) as exc:
            self.emit("error", message=f"bad command: {exc}")

    def run(self) -> int:
        os.set_blocking(0, False)
        self.engine.add_reader(0, self.on_stdin)
        self.emit("ready", pid=os.getpid())
        next_stats = time.monotonic() + _STATS_EVERY
        while not self._stopping:
            self.engine.run_once(max_wait=max(0.0, next_stats - time.monotonic()))
            if time.monotonic() >= next_stats:
                self.emit("stats", counters=self.engine.stats())
                next_stats = time.monotonic() + _STATS_EVERY
        self.emit("stats", counters=self.engine.stats())
        self.engine.close()
        return 0


def _port_pair(text: str) -> tuple[int, int]:
    single, multi = (int(part) for part in text.split(","))
    return single, multi


def _die_with_parent(parent: int) -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
        return False
    return os.getppid() == parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lbspeaker.bfd")
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("--log-level", default="info")
    # Tests only: two BFD ends on one host cannot both listen on 3784.
    parser.add_argument("--ports", type=_port_pair, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--peer-ports", type=_port_pair, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    # The speaker stamps and files these lines (``daemon``): level and message only.
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr, format="%(levelname)s %(message)s")
    if not _die_with_parent(args.parent_pid):
        return 1  # the speaker is already gone
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the speaker decides; Ctrl-C reaches it too
    return Child(ports=args.ports, peer_ports=args.peer_ports).run()


if __name__ == "__main__":
    sys.exit(main())
