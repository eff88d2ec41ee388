"""Standalone announcer: ``python -m lbspeaker.l2 --interface eth0 --ip 192.0.2.10 --ip 2001:db8::10``.

Answers for the IPs until SIGTERM/SIGINT, for tests and demos. Prints one JSON line ``{"ready": ...}``
on stdout once it answers and a ``{"stats": ...}`` line when it exits; logs go to stderr. Without
``--interface`` each IP goes where ``L2Announcer.interfaces_for`` says, re-chosen on interface changes.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence

from lbspeaker.l2 import Interface, L2Announcer


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m lbspeaker.l2", description=__doc__.splitlines()[0])
    parser.add_argument("--ip", action="append", required=True, help="IP to announce (repeatable)")
    parser.add_argument("--interface", action="append", default=[], help="interface to announce on (repeatable)")
    parser.add_argument("--interfaces", dest="regex", default=None, help="regex of interface names to consider")
    parser.add_argument("--repeats", type=int, default=2, help="gratuitous repeats after the first round")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between gratuitous rounds")
    parser.add_argument("--reclaim-delay", type=float, default=0.1,
                        help="seconds from another MAC's claim of an IP to announcing it again")
    parser.add_argument("--reclaim-burst", type=int, default=3, help="re-announcements per IP at once")
    parser.add_argument("--reclaim-interval", type=float, default=1.0,
                        help="seconds between re-announcements per IP beyond the burst")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    for ip in args.ip:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            parser.error(f"--ip {ip!r} is not an IP address")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    announcer = L2Announcer(
        args.regex,
        repeats=args.repeats,
        interval=args.interval,
        reclaim_delay=args.reclaim_delay,
        reclaim_burst=args.reclaim_burst,
        reclaim_interval=args.reclaim_interval,
    )

    def desired() -> dict[str, list[str]]:
        return {ip: list(args.interface) or announcer.interfaces_for(ip) for ip in args.ip}

    def changed(_interfaces: Sequence[Interface]) -> None:
        if not args.interface:
            announcer.update(desired())

    announcer.add_interface_listener(changed)
    announcer.start()
    try:
        announcer.update(desired())
        macs = {i.name: i.mac_str for i in announcer.interfaces()}
        ready = {ip: {name: macs.get(name) for name in names} for ip, names in desired().items()}
        print(json.dumps({"ready": ready}), flush=True)
        stop.wait()
    finally:
        stats = announcer.stats()
        announcer.stop()
        print(json.dumps({"stats": stats}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
