"""`lbspeaker speaker`: wire the Kubernetes client, the Speaker, events, metrics and signals into a process."""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import threading

from lbspeaker.kube.client import load_api_client
from lbspeaker.kube.events import EventRecorder
from lbspeaker.kube.rest import Rest
from lbspeaker.metrics import MetricsServer
from lbspeaker.speaker.app import Speaker
from lbspeaker.speaker.bgp_announcer import BgpAnnouncer, speaker_factory
from lbspeaker.speaker.metrics import SpeakerCollector

log = logging.getLogger("lbspeaker.speaker")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--node-name", default=os.environ.get("NODE_NAME"), help="this node's name (default: $NODE_NAME)")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, in-cluster, ~/.kube/config)")
    p.add_argument("--namespace", default=os.environ.get("LBSPEAKER_NAMESPACE", "lbspeaker-system"),
                   help="namespace of the configuration, the speaker Leases and the memberlist Secret")
    p.add_argument("--config-name", default="config", help="name of the main configuration ConfigMap")
    p.add_argument("--interfaces", default=None, help="regex of interface names to announce on (whole name)")
    p.add_argument("--metrics-addr", default=":7472", help="listen address for /metrics, /healthz, /readyz")
    p.add_argument("--heartbeat-addr", default=":7946",
                   help="UDP listen address for heartbeats; peers reach us at our InternalIP and this port")
    p.add_argument("--lb-class", default=None,
                   help="handle only Services with this spec.loadBalancerClass (default: only Services without one)")
    p.add_argument("--bgp-workdir", default=os.environ.get("LBSPEAKER_WORKDIR") or "/run/lbspeaker",
                   help="directory for ExaBGP's config and sockets, created if missing "
                        "(default: $LBSPEAKER_WORKDIR or /run/lbspeaker)")
    p.add_argument("--log-level", default=os.environ.get("LBSPEAKER_LOG_LEVEL", "info"))


def parse_listen(text: str) -> tuple[str, int]:
    """``:7946`` -> ("", 7946) (any address), ``192.0.2.1:7946``, ``[2001:db8::1]:7946``."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # One line per API request would drown what the speaker decides.
    logging.getLogger("urllib3").setLevel(max(logging.INFO, logging.getLogger().level))
    if not args.node_name:
        log.error("no node name: pass --node-name or set $NODE_NAME")
        return 2
    try:
        heartbeat_bind = parse_listen(args.heartbeat_addr)
    except ValueError as exc:
        log.error("--heartbeat-addr: %s", exc)
        return 2
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
    rest = Rest(load_api_client(args.kubeconfig))
    recorder = EventRecorder(rest, "lbspeaker-speaker", args.node_name)
    speaker = Speaker(rest, args.node_name, namespace=args.namespace, config_name=args.config_name,
                      lb_class=args.lb_class, interfaces_regex=args.interfaces, heartbeat_bind=heartbeat_bind,
                      recorder=recorder, bgp=bgp)
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
    log.info("stopping: giving up our IPs, telling peers, deleting our Lease, leaving BGP routes to graceful restart")
    # graceful=True also for BGP: ExaBGP stops without withdrawing, so the routers keep our routes
    # (stale, under graceful restart) while the speaker restarts or is upgraded.
    speaker.stop(graceful=True)
    recorder.stop()
    server.stop()
    return 1 if failed.is_set() else 0
