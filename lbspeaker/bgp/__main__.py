"""Standalone BGP speaker: ``python -m lbspeaker.bgp``, for the demo and the network tests.

    python -m lbspeaker.bgp --workdir DIR --router-id 192.0.2.11 \\
        --peer 192.0.2.1,asn=64512,my-asn=64500,hold-time=30 --route 203.0.113.5/32,community=65000:1

``--peer`` takes ``ADDRESS,asn=N,my-asn=N[,port=N][,hold-time=S][,router-id=IP][,source=IP]
[,password=TEXT][,multihop]``; ``--route`` takes ``PREFIX[,localpref=N][,community=AA:NN]...
[,large-community=A:B:C]...``. With ``--config FILE`` (JSON: ``{"peers": [{BgpPeer fields}],
"routes": [{Advertisement fields}]}``) the peers and routes come from the file instead, re-read on
SIGHUP; prefer it for passwords, which a command line shows to every local user.
``--status-file`` receives sessions and counters as JSON whenever they change.
Runs until SIGTERM or SIGINT; ``--graceful-stop`` then leaves the routes to graceful restart
instead of withdrawing them.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from lbspeaker.bgp import BgpSpeaker
from lbspeaker.bgp.model import Advertisement, BgpPeer, SessionState
from lbspeaker.bgp.workdir import WorkdirBusy

_PEER_KEYS = {
    "asn": ("peer_asn", int),
    "my-asn": ("my_asn", int),
    "port": ("peer_port", int),
    "hold-time": ("hold_time", float),
    "router-id": ("router_id", str),
    "source": ("source_address", str),
    "password": ("password", str),
}


def parse_peer(spec: str) -> BgpPeer:
    address, *options = spec.split(",")
    kwargs: dict[str, Any] = {"peer_address": address}
    for option in options:
        if option == "multihop":
            kwargs["ebgp_multihop"] = True
            continue
        key, sep, value = option.partition("=")
        if not sep or key not in _PEER_KEYS:
            raise ValueError(f"unknown peer option {key!r} in {address}")
        field, convert = _PEER_KEYS[key]
        kwargs[field] = convert(value)
    if "peer_asn" not in kwargs or "my_asn" not in kwargs:
        raise ValueError(f"peer {address} needs asn= and my-asn=")
    return BgpPeer(**kwargs)


def parse_route(spec: str) -> Advertisement:
    prefix, *options = spec.split(",")
    localpref: int | None = None
    communities: list[str] = []
    large: list[str] = []
    for option in options:
        key, sep, value = option.partition("=")
        if key == "localpref" and sep:
            localpref = int(value)
        elif key == "community" and sep:
            communities.append(value)
        elif key == "large-community" and sep:
            large.append(value)
        else:
            raise ValueError(f"unknown route option {option!r} in {prefix}")
    return Advertisement(
        prefix=prefix, localpref=localpref, communities=tuple(communities), large_communities=tuple(large)
    )


def load_config(path: Path) -> tuple[list[BgpPeer], list[Advertisement]]:
    data = json.loads(path.read_text())
    peers = [BgpPeer(**item) for item in data.get("peers", [])]
    routes = []
    for item in data.get("routes", []):
        item = dict(item)
        for key in ("communities", "large_communities"):
            if key in item:
                item[key] = tuple(item[key])
        routes.append(Advertisement(**item))
    return peers, routes


def _write_status(path: Path, speaker: BgpSpeaker) -> None:
    status = {
        "pid": os.getpid(),
        "exabgp_pid": speaker.exabgp_pid(),
        "sessions": {k: dataclasses.asdict(v) for k, v in speaker.sessions().items()},
        "stats": speaker.stats(),
    }
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(status, sort_keys=True))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lbspeaker.bgp", description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True, type=Path)
    parser.add_argument("--router-id", default=None)
    parser.add_argument("--node-name", default=os.uname().nodename)
    parser.add_argument("--peer", action="append", default=[], type=parse_peer)
    parser.add_argument("--route", action="append", default=[], type=parse_route)
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--status-file", type=Path, default=None)
    parser.add_argument("--graceful-stop", action="store_true")
    parser.add_argument("--graceful-restart-time", type=int, default=120)
    parser.add_argument("--backoff-initial", type=float, default=0.5, help="first ExaBGP restart delay (seconds)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )

    changed = threading.Event()
    stop = threading.Event()
    reload = threading.Event()

    def on_change(_state: SessionState) -> None:
        changed.set()

    speaker = BgpSpeaker(
        args.node_name,
        args.router_id,
        args.workdir,
        on_change,
        graceful_restart_time=args.graceful_restart_time,
        backoff_initial=args.backoff_initial,
    )

    def apply() -> None:
        peers, routes = args.peer, args.route
        if args.config is not None:
            try:
                peers, routes = load_config(args.config)
            except (OSError, ValueError, TypeError) as exc:
                logging.error("cannot load %s: %s; keeping the previous peers and routes", args.config, exc)
                return
        speaker.set_peers(peers)
        speaker.set_routes(routes)
        changed.set()

    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, lambda *_: reload.set())

    apply()
    try:
        speaker.start()
    except WorkdirBusy as exc:
        logging.error("%s", exc)
        return 2
    last = ""
    while not stop.is_set():
        stop.wait(0.2)
        if reload.is_set():
            reload.clear()
            apply()
        if args.status_file is not None:
            snapshot = json.dumps([speaker.sessions(), speaker.stats(), speaker.exabgp_pid()], default=str)
            if snapshot != last or changed.is_set():
                changed.clear()
                last = snapshot
                with contextlib.suppress(OSError):
                    _write_status(args.status_file, speaker)
    speaker.stop(graceful=args.graceful_stop)
    if args.status_file is not None:
        with contextlib.suppress(OSError):
            _write_status(args.status_file, speaker)
    return 0


if __name__ == "__main__":
    sys.exit(main())
