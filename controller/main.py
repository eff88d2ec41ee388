"""`lbspeaker controller`: wire the Kubernetes client, caches, leader election, metrics and the reconcile loop.

``add_arguments`` imports nothing heavy (``lbspeaker --help`` and the other commands do not pay for the
controller); ``run`` imports the controller's modules, so its Prometheus series are registered in the
controller process only.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import threading
import uuid

from lbspeaker.cmdline import (
    LOG_LEVEL_HELP,
    HelpFormatter,
    add_cluster_arguments,
    listen_address,
    log_level,
    run_command,
)

log = logging.getLogger("lbspeaker.controller")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_cluster_arguments(p, namespace_holds="the configuration ConfigMaps and the leader Lease",
                          lb_class_does="handle only")
    p.add_argument("--metrics-addr", default=":7472", type=listen_address,
                   help="HOST:PORT for /metrics, /healthz and /readyz; an empty host listens on every IPv6 and "
                        "IPv4 address, IPv6 hosts go in brackets ([::]:7472)")
    p.add_argument("--leader-elect", action="store_true",
                   help="hold Lease lbspeaker-controller before writing, so that several replicas can run "
                        "(default: off, a single replica)")
    p.add_argument("--workers", type=int, default=4, help="concurrent reconcile workers")
    p.add_argument("--log-level", type=log_level, default=os.environ.get("LBSPEAKER_LOG_LEVEL", "info"),
                   help=f"{LOG_LEVEL_HELP} (default: $LBSPEAKER_LOG_LEVEL or info)")


def run(args: argparse.Namespace) -> int:
    from controller.reconcile import Controller
    from lbspeaker.kube.client import load_api_client
    from lbspeaker.kube.events import EventRecorder
    from lbspeaker.kube.leader import LeaderElector
    from lbspeaker.kube.rest import Rest
    from lbspeaker.metrics import MetricsServer

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.log_level != "debug":
        # urllib3 logs each retry of a request; the informers already say, once per failure, what failed.
        logging.getLogger("urllib3").setLevel(logging.ERROR)
    rest = Rest(load_api_client(args.kubeconfig))
    identity = f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"
    elector: LeaderElector | None = None
    lost = threading.Event()
    if args.leader_elect:
        elector = LeaderElector(rest, args.namespace, "lbspeaker-controller", identity,
                                on_stopped=lost.set)
    is_leader = elector.is_leader if elector else (lambda: True)
    recorder = EventRecorder(rest, "lbspeaker-controller", gate=is_leader)
    ctl = Controller(rest, namespace=args.namespace, config_name=args.config_name, lb_class=args.lb_class,
                     recorder=recorder, is_leader=is_leader, workers=args.workers)
    recorder.busy = lambda: not ctl.queue.idle()
    server = MetricsServer(args.metrics_addr, healthy=ctl.healthy, ready=ctl.ready)
    server.start()
    recorder.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if elector is not None:
        elector.start()
        log.info("waiting for lease %s/lbspeaker-controller as %s", args.namespace, identity)
        while not elector.is_leader():
            if stop.wait(0.2):
                elector.stop()
                return 0
    starter = threading.Thread(target=ctl.start, name="start", daemon=True)
    starter.start()
    code = 0
    while not stop.wait(0.2):
        if lost.is_set():
            # Our caches and allocator were built while leading; a fresh process re-reads the cluster.
            log.error("lost the controller lease; exiting so that a restart starts from the cluster's state")
            code = 1
            break
    ctl.stop()
    recorder.stop()
    if elector is not None:
        elector.stop(release=code == 0)
    server.stop()
    return code


def main(argv: list[str] | None = None) -> int:
    """``python -m controller``: the same as ``lbspeaker controller``."""
    p = argparse.ArgumentParser(prog="lbspeaker controller", formatter_class=HelpFormatter,
                                description="Assign external IPs from the address pools to LoadBalancer Services.")
    add_arguments(p)
    return run_command("lbspeaker controller", run, p.parse_args(argv))
