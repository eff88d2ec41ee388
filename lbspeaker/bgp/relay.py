"""ExaBGP's API process: copies between ExaBGP's pipes and the supervisor's unix socket.

ExaBGP starts this as ``python -I relay.py SOCKET TOKEN`` (``python -m lbspeaker.bgp.relay`` works
too). Commands from the supervisor go to stdout, which ExaBGP reads; ExaBGP's acks and JSON
messages arrive on stdin and go to the supervisor. The first line sent on the socket names the
token, so the supervisor only accepts the relay of the ExaBGP it started last.

Standard library only, and no package import, so it starts fast and needs no sys.path.
Each direction has its own thread: ExaBGP blocks while writing to a full pipe, so stdin must be
drained even while a large batch of commands is still being written to stdout.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time

CONNECT_TIMEOUT = 10.0


def _connect(path: str) -> socket.socket:
    deadline = time.monotonic() + CONNECT_TIMEOUT
    delay = 0.02
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            return sock
        except OSError:
            sock.close()
            if time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _stdin_to_socket(sock: socket.socket) -> None:
    try:
        while True:
            data = os.read(0, 65536)
            if not data:
                break
            sock.sendall(data)
    except OSError:
        pass
    # ExaBGP closed our stdin (it is exiting) or the supervisor went away: nothing left to relay.
    os._exit(0)


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        sys.stderr.write("usage: relay.py SOCKET TOKEN\n")
        return 2
    path, token = argv[1], argv[2]
    try:
        sock = _connect(path)
        sock.sendall(f"lbspeaker-relay {token}\n".encode("ascii"))
    except OSError as exc:
        sys.stderr.write(f"relay: cannot reach the supervisor at {path}: {exc}\n")
        return 1
    threading.Thread(target=_stdin_to_socket, args=(sock,), daemon=True).start()
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                break
            _write_all(1, data)
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    os._exit(main(sys.argv))
