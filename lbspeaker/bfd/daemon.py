"""The speaker's handle on the BFD process (``python -m lbspeaker.bfd``): start, feed, watch, restart.

``BfdDaemon.set_sessions`` is level-triggered: it gives the complete set of sessions this node must
run, and is cheap to call on every reconcile (only a change is written to the process). The process
is started on the first non-empty set, so a node without BFD peers runs none. One thread of ours,
``bfd-supervisor``, starts the process, reads its events and restarts it with a back-off if it dies
(its sessions are re-sent; the remote sees one detection-time outage, which is what a dead BFD
process is). The process dies with that thread (PR_SET_PDEATHSIG follows the thread that started
it), hence one long-lived thread for starts and restarts.

``sessions`` returns the last state the process reported per session; ``on_change`` is called from
the supervisor thread with each new state (it must return quickly). Cost: one process of about
17 MB resident, one line of JSON per state change, one ``stats`` line every few seconds.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from lbspeaker.bfd.engine import SessionKey, SessionSpec, SessionStatus
from lbspeaker.bfd.messages import spec_to_json, status_from_json

log = logging.getLogger(__name__)
process_log = logging.getLogger("lbspeaker.bfd.process")

_PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the directory holding the lbspeaker package
_MAX_LINE = 1 << 16


class BfdDaemon:
    """See the module docstring."""

    def __init__(
        self,
        on_change: Callable[[SessionStatus], None] | None = None,
        *,
        argv: Sequence[str] | None = None,
        backoff_initial: float = 0.5,
        backoff_max: float = 10.0,
        log_level: str = "info",
    ) -> None:
        self._on_change = on_change
        self._argv = list(argv) if argv is not None else [sys.executable, "-m", "lbspeaker.bfd"]
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._log_level = log_level
        self._lock = threading.Lock()
        self._specs: tuple[SessionSpec, ...] = ()
        self._sessions: dict[SessionKey, SessionStatus] = {}
        self._stats: dict[str, int] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.starts = 0

    # ---- the speaker's side ------------------------------------------------------------------------

    def set_sessions(self, specs: Sequence[SessionSpec]) -> None:
        """The complete set of sessions to run (replaces the previous one)."""
        wanted = tuple(sorted(specs, key=lambda s: s.key))
        with self._lock:
            if wanted == self._specs:
                return
            self._specs = wanted
            keys = {s.key for s in wanted}
            for key in [k for k in self._sessions if k not in keys]:
                del self._sessions[key]
            start = self._thread is None and bool(wanted) and not self._stopping.is_set()
            if start:
                self._thread = threading.Thread(target=self._supervise, name="bfd-supervisor", daemon=True)
            else:
                self._write_sessions()
        if start:
            assert self._thread is not None
            self._thread.start()

    def sessions(self) -> dict[SessionKey, SessionStatus]:
        with self._lock:
            return dict(self._sessions)

    def stats(self) -> dict[str, int]:
        """The process's counters (packets, drops by reason, transitions) as last reported."""
        with self._lock:
            return dict(self._stats)

    def pid(self) -> int | None:
        with self._lock:
            return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def stop(self, timeout: float = 5.0) -> None:
        """End the process at once (its sessions go silent: see ``lbspeaker.bfd.__main__``)."""
        self._stopping.set()
        with self._lock:
            proc = self._proc
            self._write({"op": "stop"})
        if proc is not None:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # ---- the supervisor thread -----------------------------------------------------------------------

    def _supervise(self) -> None:
        delay = self._backoff_initial
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                self._run_one()
            except Exception:
                log.exception("BFD process handling failed")
            if self._stopping.is_set():
                break
            self._all_down("bfd process exited")
            if time.monotonic() - started > 30:
                delay = self._backoff_initial
            log.warning("BFD process exited; restarting it in %.1f s", delay)
            if self._stopping.wait(delay):
                break
            delay = min(delay * 2, self._backoff_max)

    def _run_one(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p)
        argv = [*self._argv, "--parent-pid", str(os.getpid()), "--log-level", self._log_level]
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        assert proc.stdout is not None and proc.stderr is not None
        with self._lock:
            self._proc = proc
            self.starts += 1
            self._write_sessions()
        threading.Thread(target=_forward_stderr, args=(proc.stderr,), name="bfd-stderr", daemon=True).start()
        log.info("started the BFD process (pid %d)", proc.pid)
        try:
            for raw in proc.stdout:
                if len(raw) > _MAX_LINE:
                    continue
                self._on_line(raw)
        finally:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
            with self._lock:
                self._proc = None

    def _on_line(self, raw: bytes) -> None:
        try:
            message = json.loads(raw)
            event = message.pop("event")
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("unexpected line from the BFD process: %r", raw[:200])
            return
        if event == "state":
            try:
                status = status_from_json(message)
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("unexpected state from the BFD process: %s", exc)
                return
            with self._lock:
                if not any(s.key == status.key for s in self._specs):
                    return  # a removed session still saying AdminDown
                self._sessions[status.key] = status
            self._notify(status)
        elif event == "stats":
            counters = message.get("counters")
            if isinstance(counters, dict):
                with self._lock:
                    self._stats = {str(k): int(v) for k, v in counters.items() if isinstance(v, int)}
        elif event == "error":
            log.error("BFD process: %s", message.get("message"))

    def _notify(self, status: SessionStatus) -> None:
        if self._on_change is None:
            return
        try:
            self._on_change(status)
        except Exception:
            log.exception("BFD state callback failed")

    def _all_down(self, reason: str) -> None:
        with self._lock:
            changed = []
            for key, status in self._sessions.items():
                if status.state != "down":
                    new = SessionStatus(key=key, state="down", diag=reason, since=time.time(),
                                        remote_state=status.remote_state, tx_interval_ms=status.tx_interval_ms,
                                        detection_time_ms=status.detection_time_ms, sent=status.sent,
                                        received=status.received, error=reason)
                    self._sessions[key] = new
                    changed.append(new)
        for status in changed:
            self._notify(status)

    def _write_sessions(self) -> None:
        """Send the session set to the running process; caller holds the lock."""
        self._write({"op": "sessions", "sessions": [spec_to_json(s) for s in self._specs]})

    def _write(self, command: dict[str, Any]) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None or proc.poll() is not None:
            return
        try:
            proc.stdin.write((json.dumps(command) + "\n").encode())
            proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass  # the supervisor thread sees the process go and restarts it


def _forward_stderr(stream: IO[bytes]) -> None:
    """The process's log lines ("LEVEL message") into the speaker's log, at their level."""
    for raw in stream:
        line = raw.decode("utf-8", "replace").rstrip()[:2000]
        level, sep, message = line.partition(" ")
        number = logging.getLevelName(level) if sep else None
        if isinstance(number, int):
            process_log.log(number, "%s", message)
        elif line:
            process_log.warning("%s", line)  # a traceback or anything else not from its logger
