"""Prometheus metrics of the controller and the speaker, and the small HTTP server that serves them.

The server answers ``/metrics`` (Prometheus text format), ``/healthz`` (the process loop is alive)
and ``/readyz`` (caches synced, config loaded); the checks are callables given by the program.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

# -- controller ---------------------------------------------------------------------------------------
ADDRESSES_TOTAL = Gauge("lbspeaker_controller_addresses_total", "Addresses in a pool", ["pool", "family"])
ADDRESSES_IN_USE = Gauge("lbspeaker_controller_addresses_in_use", "Addresses of a pool held by Services",
                         ["pool", "family"])
ALLOCATIONS = Counter("lbspeaker_controller_allocations", "IP assignments written to Services", ["pool"])
ALLOCATION_FAILURES = Counter("lbspeaker_controller_allocation_failures",
                              "Services that could not get an IP, by reason", ["reason"])
CONFIG_LOADED = Gauge("lbspeaker_controller_config_loaded", "1 when a valid configuration is in force")
CONFIG_STALE = Gauge("lbspeaker_controller_config_stale",
                     "1 when the newest configuration is invalid and the last good one is still in force")
RECONCILE_SECONDS = Histogram("lbspeaker_controller_reconcile_duration_seconds",
                              "Time to reconcile one Service", buckets=(.0005, .001, .0025, .005, .01, .025, .05,
                                                                         .1, .25, .5, 1, 2.5))
STATUS_WRITES = Counter("lbspeaker_controller_status_writes", "Service status writes, by result", ["result"])
IS_LEADER = Gauge("lbspeaker_controller_leader", "1 while this replica holds the controller lease")


Check = Callable[[], tuple[bool, str]]


def parse_addr(addr: str) -> tuple[str, int]:
    """``:7472``, ``0.0.0.0:7472``, ``[::]:7472`` or ``127.0.0.1:0`` → (host, port)."""
    host, _, port = addr.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


class MetricsServer:
    """Serves /metrics, /healthz and /readyz in a background thread."""

    def __init__(self, addr: str, *, healthy: Check | None = None, ready: Check | None = None) -> None:
        host, port = parse_addr(addr)
        checks = {"/healthz": healthy, "/readyz": ready}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    body, ctype, code = generate_latest(), CONTENT_TYPE_LATEST, 200
                elif path in checks:
                    check = checks[path]
                    ok, why = check() if check else (True, "ok")
                    body, ctype, code = (why or "ok").encode() + b"\n", "text/plain", 200 if ok else 503
                else:
                    body, ctype, code = b"not found\n", "text/plain", 404
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True)

    def start(self) -> None:
        self._thread.start()
        log.info("metrics and health on port %d", self.port)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# -- speaker --------------------------------------------------------------------------------------------
SPEAKER_ANNOUNCED = Gauge("lbspeaker_speaker_announced_ips", "IPs this node announces", ["protocol"])
SPEAKER_LIVE_MEMBERS = Gauge("lbspeaker_speaker_live_members", "Speakers this node counts alive (itself included)")
SPEAKER_RECONCILE_SECONDS = Histogram("lbspeaker_speaker_reconcile_duration_seconds",
                                      "Time to compute and apply what this node announces",
                                      buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1))


class SpeakerCollector(Collector):
    """Counters kept by the L2 responder and the heartbeater, read at scrape time.

    ``stats()`` returns ``{"l2": {...announcer stats...}, "heartbeat": {...heartbeater stats...}}``;
    either may be missing (no heartbeat key, announcer not started yet).
    """

    _L2 = (("requests_received", "ARP requests and neighbour solicitations received for announced IPs"),
           ("responses_sent", "ARP replies and neighbour advertisements sent"),
           ("gratuitous_sent", "Gratuitous ARPs and unsolicited neighbour advertisements sent"),
           ("duplicates_seen", "Frames from another MAC claiming an IP this node announces"),
           ("malformed_frames", "Malformed frames dropped by the responder"))

    def __init__(self, stats: Callable[[], Mapping[str, Mapping[str, object]]]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        try:
            stats = self._stats()
        except Exception:
            log.exception("speaker stats failed")
            return
        l2 = stats.get("l2") or {}
        for name, doc in self._L2:
            value = l2.get(name)
            if isinstance(value, int):
                yield CounterMetricFamily(f"lbspeaker_speaker_{name}", doc, value=value)
        hb = stats.get("heartbeat") or {}
        for name in ("sent", "received"):
            value = hb.get(name)
            if isinstance(value, int):
                yield CounterMetricFamily(f"lbspeaker_speaker_heartbeats_{name}", f"Heartbeats {name}", value=value)
        rejected = CounterMetricFamily("lbspeaker_speaker_heartbeats_rejected",
                                       "Heartbeats rejected, by reason", labels=["reason"])
        reasons = hb.get("rejected")
        if isinstance(reasons, Mapping):
            for reason, count in sorted(reasons.items()):
                rejected.add_metric([str(reason)], int(count))
        yield rejected
