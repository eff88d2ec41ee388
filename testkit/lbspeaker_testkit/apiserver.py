"""A Kubernetes API server for tests: real HTTP, real semantics, no cluster needed.

Serves the official Python client and kubectl unchanged: core/v1 namespaces, services (+status),
endpoints, configmaps, secrets, nodes (+status), pods (+status), events; discovery.k8s.io/v1
endpointslices; coordination.k8s.io/v1 leases; events.k8s.io/v1 events. resourceVersions, uids,
optimistic concurrency, status subresources, Service defaulting and allocation, label/field selectors,
paginated lists, watches with bookmarks and 410 Expired, Tables for kubectl, discovery.

Test code talks to it only over HTTP; the object itself offers lifecycle, request counters and fault
simulation: an outage (``pause``/``resume``), a server that accepts but never answers
(``stop_answering``/``answer_again``), a peer that lost its TCP state (``forget_connections``), and
a restart with older state on the same port (``snapshot``, ``restart(snapshot)``: an etcd restore).
Knobs: ``version`` (the Kubernetes minor it acts as, e.g. "1.28": no ``ipMode`` before 1.29) and
``single_stack`` (an IPv4-only Service range). ``python -m lbspeaker_testkit.apiserver`` runs one in the
foreground.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from lbspeaker_testkit._api_discovery import DEFAULT_VERSION, parse_version
from lbspeaker_testkit._api_http import APIHTTPServer, ServerState
from lbspeaker_testkit._api_store import ROOT_CA_DELAY_SECONDS, Store, StoreSnapshot
from lbspeaker_testkit.kubeconfig import write_kubeconfig

__all__ = ["APIServer", "StoreSnapshot", "main"]

_REBIND_ATTEMPTS = 50
_REBIND_DELAY = 0.1


class APIServer:
    """The test API server. ``start()`` it, point clients at ``url`` (or ``write_kubeconfig``), ``stop()``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        history_size: int = 5000,
        bookmark_interval: float = 5.0,
        token: str | None = None,
        log_requests: bool = False,
        seed: int | None = None,
        version: str | None = None,
        single_stack: bool = False,
        root_ca_delay: float = ROOT_CA_DELAY_SECONDS,
    ) -> None:
        self._host = host
        self._port = port
        served = parse_version(version) if version else DEFAULT_VERSION
        store = Store(history_size, seed, served, single_stack, root_ca_delay)
        self._state = ServerState(store, token, bookmark_interval, log_requests, served)
        self._server: APIHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._token = token

    # --- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Bind and serve in a background thread; returns once the port is listening."""
        with self._lock:
            if self._server is not None:
                raise RuntimeError("APIServer already started")
            self._state.paused.clear()
            self._bind()

    def _bind(self) -> None:
        last: OSError | None = None
        for _ in range(_REBIND_ATTEMPTS if self._port else 1):
            try:
                server = APIHTTPServer((self._host, self._port), self._state)
                break
            except OSError as exc:  # a resume may race the kernel releasing the port
                last = exc
                time.sleep(_REBIND_DELAY)
        else:
            assert last is not None
            raise last
        self._port = server.server_address[1]
        self._state.server_address = f"{self._host}:{self._port}"
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.5},
            name=f"apiserver-{self._port}",
            daemon=True,
        )
        self._thread.start()

    def _unbind(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def stop(self) -> None:
        """Stop serving and drop every connection and watch. Safe to call twice."""
        with self._lock:
            self._state.paused.set()
            self._unbind()
            self._state.store.close_all_watchers("server stopped")
            self._state.drop_connections()

    def pause(self) -> None:
        """Simulate an outage: stop accepting (connections are refused) and drop open connections and
        watches. State is kept; ``resume()`` serves again on the same port."""
        with self._lock:
            if self._server is None:
                return
            self._state.paused.set()
            self._unbind()
            self._state.store.close_all_watchers("server paused")
            self._state.drop_connections()

    def resume(self) -> None:
        with self._lock:
            if self._server is not None:
                return
            self._state.paused.clear()
            self._bind()

    def stop_answering(self) -> None:
        """A server that accepts connections and reads requests but never replies (a hung process, a
        black-holed path): new requests are held unanswered, open watch streams go quiet. Held requests
        and quiet streams are closed, still unanswered, by ``answer_again``."""
        self._state.answering.clear()
        self._state.silent.set()

    def answer_again(self) -> None:
        self._state.silent.clear()
        self._state.answering.set()

    def forget_connections(self) -> None:
        """As if the server's host lost its TCP state (reboot, a link flap through a stateful middlebox):
        open watch streams break now, and an idle keep-alive connection gets a TCP reset instead of an
        answer to its next request. New connections are served normally."""
        self._state.forget_connections()

    def snapshot(self) -> StoreSnapshot:
        """Every object and the current resourceVersion; ``StoreSnapshot.to_json`` persists it."""
        return self._state.store.snapshot()

    def restart(self, snapshot: StoreSnapshot | None = None, bump_revision: int = 0) -> None:
        """Stop, optionally restore ``snapshot`` (older state: an etcd restore), and serve again on the
        same port. Connections and watches are dropped; the watch history starts empty, so a watch from a
        version older than the restored one gets 410 and one newer gets "Too large resource version"."""
        with self._lock:
            self._state.paused.set()
            self._unbind()
            self._state.store.close_all_watchers("server restarted")
            self._state.drop_connections()
            if snapshot is not None:
                self._state.store.restore(snapshot, bump_revision)
            self._state.paused.clear()
            self._bind()

    def __enter__(self) -> APIServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- information ---------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}"

    @property
    def port(self) -> int:
        return self._port

    def write_kubeconfig(self, path: str | os.PathLike[str]) -> Path:
        return write_kubeconfig(path, self.url, self._token)

    def request_counts(self) -> dict[tuple[str, ...], int]:
        """Requests served so far: (verb, resource) or (verb, resource, subresource) -> count."""
        with self._state.counts_lock:
            return dict(self._state.counts)

    def reset_counts(self) -> None:
        with self._state.counts_lock:
            self._state.counts.clear()

    def watch_count(self) -> int:
        """Open watch streams (useful to wait until a client has (re)established its watches)."""
        return self._state.store.watcher_count()


def _parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"--listen must be HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lbspeaker_testkit.apiserver", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--listen",
        type=_parse_listen,
        default=("127.0.0.1", 0),
        help="HOST:PORT (default: 127.0.0.1 and a free port)",
    )
    parser.add_argument("--kubeconfig-out", type=Path, help="write a kubeconfig for this server here")
    parser.add_argument("--history-size", type=int, default=5000, help="watch events kept per resource")
    parser.add_argument(
        "--bookmark-interval", type=float, default=5.0, help="seconds between watch bookmarks"
    )
    parser.add_argument("--token", help="require this bearer token")
    parser.add_argument("--log-requests", action="store_true", help="log every request")
    parser.add_argument("--version", dest="kube_version", help="act as this Kubernetes minor (e.g. 1.28)")
    parser.add_argument("--single-stack", action="store_true", help="an IPv4-only Service range")
    parser.add_argument("--restore-from", type=Path, help="start from a snapshot saved by --save-to")
    parser.add_argument("--save-to", type=Path, help="save a snapshot of the state here on exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    host, port = args.listen
    if args.history_size < 1:
        parser.error("--history-size must be at least 1")
    server = APIServer(
        host,
        port,
        args.history_size,
        args.bookmark_interval,
        args.token,
        args.log_requests,
        version=args.kube_version,
        single_stack=args.single_stack,
    )
    server.start()
    if args.restore_from:
        server.restart(StoreSnapshot.from_json(args.restore_from.read_text(encoding="utf-8")))
    if args.kubeconfig_out:
        server.write_kubeconfig(args.kubeconfig_out)
    print(server.url, flush=True)
    done = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    done.wait()
    if args.save_to:
        args.save_to.write_text(server.snapshot().to_json(), encoding="utf-8")
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
