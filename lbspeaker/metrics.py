"""The small HTTP server both programs serve their Prometheus metrics and health checks from.

The metrics themselves live with their program: ``controller.metrics`` and ``lbspeaker.speaker.metrics``.
Each program imports only its own, so each process's registry (and its ``/metrics``) holds only its own
series.

The server answers ``/metrics`` (Prometheus text format), ``/healthz`` (the process loop is alive)
and ``/readyz`` (caches synced, config loaded); the checks are callables given by the program.

The listen address is read by ``lbspeaker.hostport``: ``:7472`` listens on IPv6 ``::`` accepting IPv4
as well, or on IPv4 ``0.0.0.0`` when the node has no IPv6; ``[::]:7472`` is dual-stack too, where the
kernel allows it; any other address binds exactly that one. Host names are not resolved.

Cost: one thread for the listener and one per request in flight; a scrape renders the registry.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from lbspeaker.hostport import BindTarget, bind_candidates, format_hostport, parse_listen

log = logging.getLogger(__name__)

Check = Callable[[], tuple[bool, str]]

# Failures that mean "this family is not there", so the next candidate (IPv4 after IPv6) is tried.
_FAMILY_MISSING = {errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT}


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, target: BindTarget, handler: type[BaseHTTPRequestHandler]) -> None:
        self.address_family = target.family
        self._dual_stack = target.dual_stack
        super().__init__(target.address, handler)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            # Explicit either way: the kernel default (net.ipv6.bindv6only) differs between systems.
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if self._dual_stack else 1)
        # HTTPServer.server_bind would also look up our own host name (socket.getfqdn): a DNS query at
        # start-up that can hang on a node whose resolver is down. The name is not needed.
        TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)


def _handler(checks: dict[str, Check | None], registry: CollectorRegistry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                body, ctype, code = generate_latest(registry), CONTENT_TYPE_LATEST, 200
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

    return Handler


def listen(addr: str, handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    """A bound HTTP server for ``addr`` (``:7472``, ``127.0.0.1:0``, ``[::]:7472``, ...).

    Raises ValueError for an address that does not parse, OSError naming ``addr`` when no candidate
    can be bound (e.g. the port is in use).
    """
    host, port = parse_listen(addr)
    last: OSError | None = None
    for target in bind_candidates(host, port):
        try:
            return _Server(target, handler)
        except OSError as exc:
            last = exc
            if exc.errno not in _FAMILY_MISSING:
                break
            log.debug("cannot listen on %s: %s; trying the next address family",
                      format_hostport(*target.address), exc)
    assert last is not None
    raise OSError(last.errno, f"cannot listen on {addr}: {last.strerror or last}")


class MetricsServer:
    """Serves /metrics, /healthz and /readyz in a background thread."""

    def __init__(self, addr: str, *, healthy: Check | None = None, ready: Check | None = None,
                 registry: CollectorRegistry = REGISTRY) -> None:
        self._server = listen(addr, _handler({"/healthz": healthy, "/readyz": ready}, registry))
        bound = self._server.server_address
        self.host, self.port = str(bound[0]), int(bound[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True)

    def start(self) -> None:
        self._thread.start()
        log.info("metrics and health on %s", format_hostport(self.host, self.port))

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
