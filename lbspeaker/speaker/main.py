"""`lbspeaker speaker`: wire the Kubernetes client, the Speaker, events, metrics and signals into a process."""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import threading

from lbspeaker.cmdline import LOG_LEVEL_HELP, add_cluster_arguments, listen_address, log_level
from lbspeaker.hostport import parse_listen
from lbspeaker.kube.client import load_api_client
from lbspeaker.kube.events import EventRecorder
from lbspeaker.kube.rest import Rest
from lbspeaker.membership.detector import Timing
from lbspeaker.metrics import MetricsServer
from lbspeaker.speaker.app import Speaker
from lbspeaker.speaker.bgp_announcer import BgpAnnouncer, speaker_factory
from lbspeaker.speaker.metrics import SpeakerCollector
from lbspeaker.speaker.settings import SpeakerSettings

log = logging.getLogger("lbspeaker.speaker")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--node-name", default=os.environ.get("NODE_NAME"), help="this node's name (default: $NODE_NAME)")
    add_cluster_arguments(p, namespace_holds="the configuration, the speaker Leases and the memberlist Secret",
                          lb_class_does="handle only")
    p.add_argument("--interfaces", default=None,
                   help="regex of interface names to announce on, whole name (default: every up interface that "
                        "can broadcast; virtual ones without addresses are left out)")
    p.add_argument("--metrics-addr", default=":7472", type=listen_address,
                   help="listen address for /metrics, /healthz, /readyz")
    p.add_argument("--heartbeat-addr", default=":7946", type=listen_address,
                   help="UDP listen address for membership; peers reach us at our InternalIP and this port")
    p.add_argument("--bgp-workdir", default=os.environ.get("LBSPEAKER_WORKDIR") or "/run/lbspeaker",
                   help="directory for ExaBGP's config and sockets, created if missing "
                        "(default: $LBSPEAKER_WORKDIR or /run/lbspeaker)")
    p.add_argument("--log-level", default=os.environ.get("LBSPEAKER_LOG_LEVEL", "info"), type=log_level,
                   help=f"{LOG_LEVEL_HELP} (default: $LBSPEAKER_LOG_LEVEL or info)")
    t = Timing()
    p.add_argument("--heartbeat-interval", type=_seconds, default=t.interval, metavar="SECONDS",
                   help="membership: one datagram to each of (up to four) neighbours this often; a node's "
                        "packet rate is 4/interval each way whatever the cluster's size")
    p.add_argument("--dead-after", type=_seconds, default=t.dead_after, metavar="SECONDS",
                   help="membership: a neighbour silent this long gets our vote (at least 3 heartbeat "
                        "intervals); failover after a node dies takes about this long")
    p.add_argument("--lease-renew", type=_seconds, default=10.0, metavar="SECONDS",
                   help="renew our speaker Lease this often (API writes: one per node per interval)")
    p.add_argument("--lease-duration", type=int, default=40, metavar="SECONDS",
                   help="a speaker Lease unrenewed this long has expired (a backstop: liveness comes "
                        "from membership)")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value < 3600:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive number of seconds")
    return value


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # urllib3's per-request lines and retry warnings would drown what the speaker decides.
    logging.getLogger("urllib3").setLevel(logging.DEBUG if args.log_level == "debug" else logging.ERROR)
    if not args.node_name:
        log.error("no node name: pass --node-name or set $NODE_NAME")
        return 2
    heartbeat_bind = parse_listen(args.heartbeat_addr)  # checked by argparse already
    if args.interfaces is not None:
        try:
            re.compile(args.interfaces)
        except re.error as exc:
            log.error("--interfaces %r is not a valid regex: %s", args.interfaces, exc)
            return 2
    bgp: BgpAnnouncer | None = None
    try:
        os.makedirs(args.bgp_workdir, exist_ok=True)
        # No node-wide router id: each peer's comes from the config or the node's IPv4 InternalIP.
        bgp = BgpAnnouncer(args.node_name, speaker_factory(args.node_name, None, args.bgp_workdir))
    except OSError as exc:
        log.error("--bgp-workdir %s: %s; BGP disabled, layer2 goes on", args.bgp_workdir, exc)
    try:
        settings = SpeakerSettings(namespace=args.namespace, config_name=args.config_name, lb_class=args.lb_class,
                                   interfaces_regex=args.interfaces, heartbeat_bind=heartbeat_bind,
                                   timing=Timing(interval=args.heartbeat_interval, dead_after=args.dead_after),
                                   lease_renew=args.lease_renew, lease_duration=args.lease_duration)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    rest = Rest(load_api_client(args.kubeconfig))
    recorder = EventRecorder(rest, "lbspeaker-speaker", args.node_name)
    speaker = Speaker(rest, args.node_name, settings=settings, recorder=recorder, bgp=bgp)
    from prometheus_client import REGISTRY

    REGISTRY.register(SpeakerCollector(speaker.stats))
    server = MetricsServer(args.metrics_addr, healthy=speaker.healthy, ready=speaker.ready)
    server.start()
    recorder.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    failed = threading.Event()

    def start() -> None:
        try:
            speaker.start()
        except Exception:
            # E.g. no CAP_NET_RAW for the packet sockets: exit so that the failure is visible, not a
            # process that looks healthy and announces nothing.
            log.exception("speaker failed to start")
            failed.set()
            stop.set()

    threading.Thread(target=start, name="start", daemon=True).start()
    log.info("speaker for node %s starting", args.node_name)
    stop.wait()
    log.info("stopping: giving up our IPs, telling our neighbours, releasing our Lease, "
             "leaving BGP routes to graceful restart")
    # graceful=True also for BGP: ExaBGP stops without withdrawing, so the routers keep our routes
    # (stale, under graceful restart) while the speaker restarts or is upgraded.
    speaker.stop(graceful=True)
    recorder.stop()
    server.stop()
    return 1 if failed.is_set() else 0
