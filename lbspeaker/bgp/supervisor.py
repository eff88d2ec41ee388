"""Supervision of the ExaBGP child process and of the API connection that carries our routes.

One thread owns everything that touches ExaBGP; other threads hand it peers and desired routes
through ``update`` and read sessions and counters, all under one lock.

- ExaBGP runs ``relay.py`` as its API process; the relay connects back to a unix socket we listen
  on, so commands and ExaBGP's messages flow over one long-lived connection (never one CLI process
  per route). Reads and writes on it are non-blocking: ExaBGP blocks while its output pipe is full,
  so we must keep reading acks while a large batch is still going out.
- Routes are sent to a neighbour only while its session is up. ExaBGP 5 silently skips a SIGUSR1
  reload while any neighbour has routes queued, and routes given to a neighbour that is down stay
  queued until it comes up, which could block reloads for good. When a session comes up we send
  what its adj-rib-out lacks and then End-of-RIB (``manual-eor``), so a router that kept our routes
  through a graceful restart keeps them until the replay is complete.
- ExaBGP keeps each neighbour's adj-rib-out across session flaps and across reloads that keep the
  neighbour (keyed by its name), and replays it when a session comes back, so ``_rib`` remembers
  what it holds per ``PeerId``. A reload that drops a neighbour makes ExaBGP forget that RIB: a
  later neighbour of the same name starts empty. So the view of a neighbour is dropped as soon as a
  loaded configuration no longer has it (``_exa_peers``), and a peer that comes back gets every
  route again instead of just End-of-RIB.
- A peer on its way out (removed, de-selected, renumbered) that is established is retired before
  the reload drops it: its routes are withdrawn and the withdrawals confirmed on the wire. ExaBGP
  then closes the session without a NOTIFICATION (it never sends a Cease once graceful restart is
  negotiated), which would leave every path at the router as graceful-restart stale for the restart
  time: withdrawn, there is none left. Bounded by ``retire_timeout``: a peer that does not confirm
  does not hold the other peers' changes up.
- A peer change rewrites the config and sends SIGUSR1: ExaBGP re-creates only neighbours whose
  definition changed. A reload is confirmed by ExaBGP's "loaded new configuration" log line; without
  it the signal is repeated and, after ``reload_attempts``, ExaBGP is restarted (routes survive at
  the routers through graceful restart and are replayed).
- If ExaBGP dies it is restarted after an exponential back-off (0.5 s doubling to 30 s, reset once
  a run lasted ``stable_after``); everything is replayed as the sessions come up again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import secrets
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from lbspeaker.bgp import config_render
from lbspeaker.bgp.api_link import ApiLink
from lbspeaker.bgp.commands import diff_commands, eor_command
from lbspeaker.bgp.messages import Ack, MessageError, StateChange, UpdateSent, parse_line, reload_outcome
from lbspeaker.bgp.model import Advertisement, PeerId, ResolvedPeer, SessionState, SessionStateName
from lbspeaker.bgp.routes import apply_diff, diff_routes
from lbspeaker.bgp.workdir import lock_workdir

log = logging.getLogger(__name__)
exabgp_log = logging.getLogger("lbspeaker.bgp.exabgp")

_HERE = Path(__file__).resolve().parent
RELAY_SCRIPT = _HERE / "relay.py"
LAUNCH_SCRIPT = _HERE / "launch.py"
EXABGP_MAIN = _HERE / "exabgp_main.py"
# ExaBGP plus the keepalive-time setting (see exabgp_main).
DEFAULT_EXABGP_ARGV: tuple[str, ...] = (sys.executable, "-I", str(EXABGP_MAIN))

_STATE_NAMES: dict[str, SessionStateName] = {"connected": "connected", "up": "established", "down": "down"}
_START_TIMEOUT = 20.0
_KILL_AFTER = 5.0
_MAX_SELECT = 0.5


def _names(pids: frozenset[PeerId]) -> str:
    return ", ".join(sorted(pid.peer_address for pid in pids))


class Backoff:
    """Restart delays: ``initial`` doubling up to ``maximum``; back to ``initial`` after a run that lasted
    ``stable_after`` seconds, so one crash after days of service is not punished like a crash loop."""

    def __init__(self, initial: float, maximum: float, stable_after: float) -> None:
        self.initial = initial
        self.maximum = maximum
        self.stable_after = stable_after
        self._next = initial

    def delay(self, ran: float) -> float:
        """The delay before the next start, after a run that lasted ``ran`` seconds."""
        if ran >= self.stable_after:
            self._next = self.initial
        delay = self._next
        self._next = min(self._next * 2, self.maximum)
        return delay


@dataclass
class _Reload:
    text: str
    deadline: float
    attempts: int
    at_start: bool
    peers: frozenset[PeerId]  # the neighbours of ``text``


@dataclass
class _Retire:
    """Established neighbours the next reload drops, while their routes are being withdrawn."""

    pids: frozenset[PeerId]
    deadline: float


class Supervisor:
    """Keeps one ExaBGP running with the given peers and the desired routes announced to them."""

    def __init__(
        self,
        workdir: str | Path,
        *,
        node_name: str | None = None,
        graceful_restart_time: int = 120,
        on_session_change: Callable[[SessionState], None] | None = None,
        exabgp_argv: Sequence[str] | None = None,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        stable_after: float = 30.0,
        reload_timeout: float = 2.0,
        reload_attempts: int = 5,
        drain_timeout: float = 3.0,
        retire_timeout: float = 2.0,
    ) -> None:
        self.workdir = Path(workdir)
        self._node_name = node_name
        self._gr_time = graceful_restart_time
        self._on_session_change = on_session_change
        self._exabgp_argv = tuple(exabgp_argv) if exabgp_argv else DEFAULT_EXABGP_ARGV
        self._backoff = Backoff(backoff_initial, backoff_max, stable_after)
        self._reload_timeout = reload_timeout
        self._reload_attempts = reload_attempts
        self._drain_timeout = drain_timeout
        self._retire_timeout = retire_timeout

        self._lock = threading.Lock()
        # Shared with other threads (under _lock).
        self._peers: dict[PeerId, ResolvedPeer] = {}
        self._peers_version = 0
        self._desired: dict[PeerId, dict[str, Advertisement]] = {}
        self._sessions: dict[str, SessionState] = {}
        self._stats: Counter[str] = Counter()
        self._on_wire: dict[PeerId, set[str]] = {}
        self._stopping = False
        self._graceful = True
        self._pid: int | None = None
        self._secrets: tuple[str, ...] = ()

        # Owned by the supervisor thread.
        self._thread: threading.Thread | None = None
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._link: ApiLink | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._proc_started = 0.0
        self._stderr_buf = b""
        self._applied: str | None = None
        self._reload: _Reload | None = None
        self._rendered_version = -1
        self._rendered = ""
        self._rib: dict[PeerId, dict[str, Advertisement]] = {}
        self._exa_peers: frozenset[PeerId] = frozenset()  # the neighbours of ExaBGP's loaded config
        self._retire: _Retire | None = None
        self._established: set[PeerId] = set()
        self._need_eor: set[PeerId] = set()
        self._dirty = False
        self._next_start = 0.0
        self._stop_phase: str | None = None
        self._drain_deadline = 0.0
        self._kill_deadline: float | None = None
        self._events: list[SessionState] = []

    # ---- public API (any thread) ----

    def start(self) -> None:
        """Lock the work directory, listen for the relay and start the supervisor thread (which starts
        ExaBGP). Raises ``WorkdirBusy`` when another speaker holds the work directory."""
        if self._thread is not None:
            raise RuntimeError("supervisor already started")
        lock_workdir(self.workdir)  # WorkdirBusy when another speaker works there
        self._link = ApiLink(self._selector, self.workdir)
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread = threading.Thread(target=self._run, name="bgp-supervisor", daemon=True)
        self._thread.start()

    def stop(self, graceful: bool, timeout: float = 15.0) -> None:
        """Stop ExaBGP and the thread.

        ``graceful``: terminate ExaBGP as is. It closes sessions without a NOTIFICATION when graceful
        restart was negotiated, so routers keep our routes (stale) for the restart time, which is
        what a speaker restart or upgrade wants. Otherwise withdraw every route first and wait (up to
        ``drain_timeout``) until ExaBGP reports the withdrawals sent, so the routes go at once.
        """
        with self._lock:
            self._stopping = True
            self._graceful = graceful
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("BGP supervisor thread did not stop within %.1f s", timeout)

    def update(self, peers: Sequence[ResolvedPeer], desired: Mapping[PeerId, Mapping[str, Advertisement]]) -> None:
        """Set the peers and, per peer, the routes (keyed by prefix) that ExaBGP must announce."""
        by_id = {p.id: p for p in peers}
        with self._lock:
            if by_id != self._peers:
                self._peers_version += 1
                # Old passwords stay redacted too: ExaBGP may still print the config they were in.
                self._secrets = tuple(
                    sorted(
                        set(self._secrets).union(
                            form
                            for p in peers
                            if p.peer.password
                            for form in config_render.password_forms(p.peer.password)
                        ),
                        key=len,
                        reverse=True,
                    )
                )
                old_ids = {pid.peer_address: pid for pid in self._peers}
                self._peers = by_id
                now = time.time()
                wanted = {pid.peer_address: pid for pid in by_id}
                for address in list(self._sessions):
                    if address not in wanted:
                        del self._sessions[address]
                for address, pid in wanted.items():
                    if address not in self._sessions or old_ids.get(address) != pid:
                        # A new neighbour name (ASN, router id or local address changed) is a new
                        # session: the old one's state says nothing about it.
                        self._sessions[address] = SessionState(peer=address, state="idle", since=now)
            self._desired = {pid: dict(routes) for pid, routes in desired.items()}
        self._wake()

    def sessions(self) -> dict[str, SessionState]:
        with self._lock:
            return dict(self._sessions)

    def stats(self) -> dict[str, int]:
        """Counters, and per peer the prefixes it was last sent (``prefixes/<peer>``)."""
        with self._lock:
            out = dict(self._stats)
            for pid, prefixes in self._on_wire.items():
                if pid in self._peers:
                    out[f"prefixes/{pid.peer_address}"] = len(prefixes)
            for pid in self._peers:
                out.setdefault(f"prefixes/{pid.peer_address}", 0)
            return out

    @property
    def api_socket_path(self) -> Path | None:
        """Where the relay connects (None before ``start``)."""
        return self._link.path if self._link is not None else None

    def exabgp_pid(self) -> int | None:
        """The pid of the running ExaBGP (for diagnostics and failure tests)."""
        with self._lock:
            return self._pid

    # ---- thread ----

    @property
    def _api(self) -> ApiLink:
        assert self._link is not None, "supervisor not started"
        return self._link

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"x")

    def _run(self) -> None:
        try:
            while self._step():
                self._flush_events()
        except Exception:
            log.exception("BGP supervisor failed")
        finally:
            self._flush_events()
            self._cleanup()

    def _step(self) -> bool:
        now = time.monotonic()
        with self._lock:
            stopping = self._stopping
            graceful = self._graceful
            peers = self._peers
            peers_version = self._peers_version
            desired = self._desired
        if self._proc is None:
            if stopping:
                return False
            # No peers, no ExaBGP: a node in a layer2-only cluster does not pay for an idle daemon.
            # Once started it stays, even when the peers go: reloading is cheaper than restarting.
            if peers and now >= self._next_start:
                self._spawn(peers, peers_version, now)
        elif self._proc.poll() is not None:
            self._on_exit(now, stopping)
            return True
        elif stopping:
            self._advance_stop(now, graceful)
        else:
            self._advance_reload(peers, peers_version, now)
        self._kill_if_overdue(now)
        if self._api.connected:
            draining = stopping and not graceful
            self._reconcile(peers, {} if draining else desired)
        self._wait(self._timeout(now, starting=self._proc is None and bool(peers)))
        return True

    def _timeout(self, now: float, starting: bool) -> float:
        deadlines = [now + _MAX_SELECT]
        if starting:
            deadlines.append(self._next_start)
        if self._reload is not None:
            deadlines.append(self._reload.deadline)
        if self._stop_phase == "drain":
            deadlines.append(self._drain_deadline)
        if self._kill_deadline is not None:
            deadlines.append(self._kill_deadline)
        if self._retire is not None:
            deadlines.append(self._retire.deadline)
        hello = self._api.next_deadline()
        if hello is not None:
            deadlines.append(hello)
        return max(0.0, min(deadlines) - now)

    def _wait(self, timeout: float) -> None:
        for key, mask in self._selector.select(timeout):
            tag = key.data
            if tag == "wake":
                with contextlib.suppress(BlockingIOError):
                    while os.read(self._wake_r, 4096):
                        pass
                self._dirty = True
            elif tag == "listener":
                self._api.accept()
            elif tag == "stderr":
                self._read_stderr()
            elif tag == "api":
                if mask & selectors.EVENT_READ:
                    lines = self._api.read()
                    if lines is None:
                        self._api_lost()
                    else:
                        self._on_lines(lines)
                if mask & selectors.EVENT_WRITE and self._api.connected and not self._api.flush():
                    self._api_lost()
            elif tag == "hello":
                self._on_hello(key.fileobj)  # type: ignore[arg-type]
        self._api.expire_hellos(time.monotonic())

    # ---- ExaBGP process ----

    def _render(self, peers: Mapping[PeerId, ResolvedPeer], version: int) -> str:
        if version != self._rendered_version:
            relay = [sys.executable, "-I", str(RELAY_SCRIPT), str(self._api.path), self._api.token]
            self._rendered = config_render.render_config(
                list(peers.values()), relay, graceful_restart_time=self._gr_time, host_name=self._node_name
            )
            self._rendered_version = version
        return self._rendered

    def _write_private(self, name: str, text: str) -> Path:
        path = self.workdir / name
        tmp = self.workdir / f".{name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
        return path

    def _spawn(self, peers: Mapping[PeerId, ResolvedPeer], version: int, now: float) -> None:
        self._api.token = secrets.token_hex(16)
        self._rendered_version = -1
        text = self._render(peers, version)
        env_path = self._write_private("exabgp.env", config_render.render_env(pwd.getpwuid(os.getuid()).pw_name))
        conf_path = self._write_private("exabgp.conf", text)
        argv = [
            sys.executable,
            "-I",
            str(LAUNCH_SCRIPT),
            str(os.getpid()),
            *self._exabgp_argv,
            "--env-file",
            str(env_path),
            "server",
            str(conf_path),
        ]
        # Inherited exabgp settings would override the env file and make runs differ by shell.
        env = {k: v for k, v in os.environ.items() if not k.lower().startswith("exabgp")}
        env["PYTHONUNBUFFERED"] = "1"
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                cwd=self.workdir,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            log.error("cannot start ExaBGP: %s", exc)
            self._schedule_restart(now, ran=0.0)
            return
        assert proc.stderr is not None
        os.set_blocking(proc.stderr.fileno(), False)
        self._selector.register(proc.stderr, selectors.EVENT_READ, "stderr")
        self._proc = proc
        self._proc_started = now
        self._stderr_buf = b""
        self._applied = None
        self._reload = _Reload(
            text=text, deadline=now + _START_TIMEOUT, attempts=1, at_start=True, peers=frozenset(peers)
        )
        with self._lock:
            self._pid = proc.pid
            self._stats["exabgp_starts"] += 1
        log.info("started ExaBGP (pid %d) with %d peer(s)", proc.pid, len(peers))

    def _schedule_restart(self, now: float, ran: float) -> None:
        self._next_start = now + self._backoff.delay(ran)

    def _signal(self, signum: int) -> None:
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(signum)

    def _terminate(self, now: float) -> None:
        self._signal(signal.SIGTERM)
        if self._kill_deadline is None:
            self._kill_deadline = now + _KILL_AFTER

    def _kill_if_overdue(self, now: float) -> None:
        if self._kill_deadline is not None and now >= self._kill_deadline and self._proc is not None:
            log.warning("ExaBGP (pid %d) ignored SIGTERM; killing it", self._proc.pid)
            self._signal(signal.SIGKILL)
            self._kill_deadline = None

    def _on_exit(self, now: float, stopping: bool) -> None:
        proc = self._proc
        assert proc is not None
        self._read_stderr(final=True)
        if proc.stderr is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(proc.stderr)
            proc.stderr.close()
        self._proc = None
        self._kill_deadline = None
        ran = now - self._proc_started
        if stopping:
            log.info("ExaBGP (pid %d) stopped", proc.pid)
        else:
            self._schedule_restart(now, ran)
            log.warning(
                "ExaBGP (pid %d) exited with %s after %.1f s; restarting in %.1f s",
                proc.pid,
                proc.returncode,
                ran,
                self._next_start - now,
            )
        self._api.disconnect()
        self._api.drop_pending()
        self._rib.clear()
        self._exa_peers = frozenset()
        self._retire = None
        self._established.clear()
        self._need_eor.clear()
        self._reload = None
        self._applied = None
        with self._lock:
            self._pid = None
            self._on_wire.clear()
            if not stopping:
                self._stats["exabgp_exits"] += 1
            for address, state in list(self._sessions.items()):
                if state.state not in ("idle", "down"):
                    self._set_session(address, "down", "exabgp exited")

    def _advance_reload(self, peers: Mapping[PeerId, ResolvedPeer], version: int, now: float) -> None:
        reload = self._reload
        if reload is not None:
            if now < reload.deadline:
                return
            if reload.at_start:
                log.warning("ExaBGP did not load its configuration within %.0f s; restarting it", _START_TIMEOUT)
                self._reload = None
                self._terminate(now)
            elif reload.attempts >= self._reload_attempts:
                log.warning("ExaBGP ignored %d reload signals; restarting it to apply the peers", reload.attempts)
                with self._lock:
                    self._stats["reload_timeouts"] += 1
                self._reload = None
                self._terminate(now)
            else:
                # ExaBGP drops a SIGUSR1 that arrives while routes are queued: ask again.
                reload.attempts += 1
                reload.deadline = now + self._reload_timeout
                self._reload_signal()
            return
        if self._kill_deadline is not None:
            return
        text = self._render(peers, version)
        if self._applied is None or text == self._applied:
            self._retire = None
            return
        if not self._retired(peers, now):
            return
        self._write_private("exabgp.conf", text)
        self._reload = _Reload(
            text=text, deadline=now + self._reload_timeout, attempts=1, at_start=False, peers=frozenset(peers)
        )
        self._reload_signal()
        log.info("peers changed; asked ExaBGP to reload its configuration")

    def _retired(self, peers: Mapping[PeerId, ResolvedPeer], now: float) -> bool:
        """Whether the established neighbours the next reload drops have had every route withdrawn,
        confirmed on the wire (or ran out of time)."""
        leaving = frozenset(pid for pid in self._exa_peers if pid not in peers and pid in self._established)
        retire = self._retire
        if not leaving:
            self._retire = None
            return True
        if retire is None or not leaving <= retire.pids:
            # Newly leaving peers (re)start the clock; _reconcile sends their withdrawals.
            self._retire = _Retire(pids=leaving, deadline=now + self._retire_timeout)
            self._dirty = True
            log.info("withdrawing every route from %s before removing the session", _names(leaving))
            return False
        retire.pids = leaving  # those that went down meanwhile are done with
        with self._lock:
            on_wire = any(self._on_wire.get(pid) for pid in leaving)
        if not on_wire and not any(self._rib.get(pid) for pid in leaving):
            self._retire = None
            return True
        if now >= retire.deadline:
            log.warning("withdrawals to %s not confirmed within %.1f s; removing the session anyway",
                        _names(leaving), self._retire_timeout)
            self._retire = None
            return True
        return False

    def _reload_signal(self) -> None:
        with self._lock:
            self._stats["reload_signals"] += 1
        self._signal(signal.SIGUSR1)

    def _advance_stop(self, now: float, graceful: bool) -> None:
        if self._stop_phase is None:
            if graceful or not self._api.connected or not self._established:
                self._stop_phase = "terminate"
                self._terminate(now)
            else:
                self._stop_phase = "drain"
                self._drain_deadline = now + self._drain_timeout
                self._dirty = True
            return
        if self._stop_phase == "drain":
            with self._lock:
                on_wire = any(self._on_wire.get(pid) for pid in self._established)
            if (not self._api.unacked and not on_wire) or now >= self._drain_deadline:
                if on_wire:
                    log.warning("withdrawals not confirmed within %.1f s; stopping ExaBGP anyway", self._drain_timeout)
                self._stop_phase = "terminate"
                self._terminate(now)

    def _read_stderr(self, final: bool = False) -> None:
        proc = self._proc
        if proc is None or proc.stderr is None:
            return
        chunks = []
        with contextlib.suppress(BlockingIOError, OSError, ValueError):
            while True:
                data = os.read(proc.stderr.fileno(), 65536)
                if not data:
                    with contextlib.suppress(KeyError, ValueError):
                        self._selector.unregister(proc.stderr)
                    break
                chunks.append(data)
        self._stderr_buf += b"".join(chunks)
        lines = self._stderr_buf.split(b"\n")
        self._stderr_buf = b"" if final else lines.pop()
        with self._lock:
            redact = self._secrets
        for raw in lines:
            line = raw.decode("utf-8", "replace").rstrip()
            if not line:
                continue
            for secret in redact:
                line = line.replace(secret, "<redacted>")
            exabgp_log.info("%s", line)
            outcome = reload_outcome(line)
            if outcome is not None:
                self._on_reload_outcome(outcome)

    def _on_reload_outcome(self, ok: bool) -> None:
        reload = self._reload
        if reload is None:
            return
        self._reload = None
        self._applied = reload.text
        self._dirty = True
        if ok:
            self._adopt(reload.peers)
        with self._lock:
            if not reload.at_start:
                self._stats["reloads" if ok else "reload_failures"] += 1
        if not ok:
            log.error("ExaBGP refused the configuration (see its messages above); it keeps the previous one")

    def _adopt(self, loaded: frozenset[PeerId]) -> None:
        """ExaBGP now runs the neighbours ``loaded``: forget what dropped neighbours held.

        ExaBGP deletes the RIB of a neighbour its new configuration lacks; one of the same name that
        comes back later starts empty, so it must be sent every route again, not only End-of-RIB.
        """
        for pid in self._exa_peers - loaded:
            self._rib.pop(pid, None)
            self._established.discard(pid)
            self._need_eor.discard(pid)
            with self._lock:
                self._on_wire.pop(pid, None)
        self._exa_peers = loaded

    # ---- API connection ----

    def _on_hello(self, sock: socket.socket) -> None:
        try:
            lines = self._api.handshake(sock, accepting=self._proc is not None)
        except PermissionError as exc:
            log.warning("%s", exc)
            return
        if lines is None:
            return
        self._dirty = True
        log.info("ExaBGP API connected")
        self._on_lines(lines)

    def _api_lost(self) -> None:
        self._api.disconnect()
        with self._lock:
            stopping = self._stopping
        if not stopping and self._proc is not None and self._proc.poll() is None:
            log.warning("lost the ExaBGP API connection; restarting ExaBGP")
            self._terminate(time.monotonic())

    def _send(self, lines: list[str]) -> None:
        if lines and not self._api.send(lines):
            self._api_lost()

    def _on_lines(self, lines: list[str]) -> None:
        for line in lines:
            if log.isEnabledFor(logging.DEBUG):
                log.debug("from ExaBGP: %s", line[:2000])
            try:
                message = parse_line(line)
            except MessageError as exc:
                log.warning("unexpected message from ExaBGP: %s", exc)
                continue
            self._on_message(message)

    def _on_message(self, message: object) -> None:
        if isinstance(message, Ack):
            command = self._api.acked()
            with self._lock:
                self._stats["commands_acked"] += 1
                if not message.ok:
                    self._stats["command_errors"] += 1
            if not message.ok:
                log.warning("ExaBGP refused command: %s", command)
        elif isinstance(message, StateChange):
            self._on_state(message)
        elif isinstance(message, UpdateSent):
            with self._lock:
                self._stats["updates_sent"] += 1
                wire = self._on_wire.setdefault(message.peer, set())
                wire.difference_update(message.withdrawn)
                wire.update(message.announced)

    def _on_state(self, change: StateChange) -> None:
        pid = change.peer
        name = _STATE_NAMES.get(change.state)
        if name is None:
            return
        if name == "established":
            self._established.add(pid)
            self._need_eor.add(pid)
            self._dirty = True
        else:
            self._established.discard(pid)
            self._need_eor.discard(pid)
        with self._lock:
            if name != "established":
                self._on_wire.pop(pid, None)
            if pid in self._peers:
                self._set_session(pid.peer_address, name, change.reason)
            if name == "established":
                self._stats["sessions_established"] += 1

    def _set_session(self, address: str, state: SessionStateName, reason: str) -> None:
        """Record a session state; caller holds the lock. Callbacks run later, outside it."""
        new = SessionState(peer=address, state=state, since=time.time(), reason=reason)
        self._sessions[address] = new
        self._events.append(new)
        level = logging.INFO if state in ("established", "down") else logging.DEBUG
        log.log(level, "BGP session to %s %s%s", address, state, f" ({reason})" if reason else "")

    def _flush_events(self) -> None:
        with self._lock:
            events, self._events = self._events, []
        if self._on_session_change is None:
            return
        for event in events:
            try:
                self._on_session_change(event)
            except Exception:
                log.exception("session change callback failed")

    def _reconcile(
        self, peers: Mapping[PeerId, ResolvedPeer], desired: Mapping[PeerId, Mapping[str, Advertisement]]
    ) -> None:
        if not self._dirty:
            return
        self._dirty = False
        lines: list[str] = []
        announced = withdrawn = 0
        retiring = self._retire.pids if self._retire is not None else frozenset()
        for pid in sorted(self._established):
            resolved = peers.get(pid)
            if resolved is None and pid not in retiring:
                # An old definition on its way out of ExaBGP, already done with: leave it alone.
                continue
            held = self._rib.setdefault(pid, {})
            diff = diff_routes(desired.get(pid, {}) if resolved is not None else {}, held)
            lines.extend(diff_commands(pid, diff))
            apply_diff(held, diff)
            announced += len(diff.announce)
            withdrawn += len(diff.withdraw)
            if pid in self._need_eor and resolved is not None:
                self._need_eor.discard(pid)
                lines.append(eor_command(pid, resolved.peer.family))
        if lines:
            with self._lock:
                self._stats["routes_announced"] += announced
                self._stats["routes_withdrawn"] += withdrawn
                self._stats["commands_sent"] += len(lines)
            self._send(lines)

    def _cleanup(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5)
        if self._link is not None:
            self._api.close()
        self._selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        with self._lock:
            self._pid = None
            for address, state in list(self._sessions.items()):
                if state.state not in ("idle", "down"):
                    self._set_session(address, "down", "stopped")
        self._flush_events()

