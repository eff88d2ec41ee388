"""The small HTTP server both programs serve their Prometheus metrics and health checks from.

The metrics themselves live with their program: ``controller.metrics`` and ``lbspeaker.speaker.metrics``.

The server answers ``/metrics`` (Prometheus text format), ``/healthz`` (the process loop is alive)
and ``/readyz`` (caches synced, config loaded); the checks are callables given by the program.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

log = logging.getLogger(__name__)

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
