"""The supervisor's end of the API connection: a unix socket the ExaBGP relay connects to.

The relay proves it belongs to the ExaBGP we started last by sending ``lbspeaker-relay <token>``
first; the socket is private (mode 0600) and the peer's uid is checked too. Reads and writes are
non-blocking with an output buffer: ExaBGP blocks while its pipe to the relay is full, so acks
must keep being read while a large batch of commands is still being written. ExaBGP acks commands
in order, so a queue of sent commands tells which command an ``error`` belongs to.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import struct
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from lbspeaker.bgp.commands import encode_batch

HELLO_PREFIX = b"lbspeaker-relay "
_HELLO_MAX = 256
_HELLO_TIMEOUT = 10.0
_SOCKET_PATH_MAX = 100


@dataclass
class _Hello:
    sock: socket.socket
    buf: bytes
    deadline: float


class ApiLink:
    """Listening socket, handshake and the one live relay connection. Selector tags: listener/hello/api."""

    def __init__(self, selector: selectors.BaseSelector, workdir: Path) -> None:
        self._selector = selector
        self._socket_dir: str | None = None
        path = workdir / "api.sock"
        if len(str(path)) > _SOCKET_PATH_MAX:
            # AF_UNIX paths are limited to 108 bytes; deep work directories do not fit.
            self._socket_dir = tempfile.mkdtemp(prefix="lbs-bgp-")
            path = Path(self._socket_dir) / "api.sock"
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o077)
        try:
            listener.bind(str(path))
        finally:
            os.umask(old_umask)
        listener.listen(4)
        listener.setblocking(False)
        selector.register(listener, selectors.EVENT_READ, "listener")
        self.path = path
        self.token = ""
        self._listener = listener
        self._hellos: dict[int, _Hello] = {}
        self._conn: socket.socket | None = None
        self._in = b""
        self._out = bytearray()
        self._sent: deque[str] = deque()

    @property
    def connected(self) -> bool:
        return self._conn is not None

    @property
    def unacked(self) -> int:
        return len(self._sent)

    def next_deadline(self) -> float | None:
        return min((h.deadline for h in self._hellos.values()), default=None)

    def accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            conn.setblocking(False)
            self._hellos[conn.fileno()] = _Hello(sock=conn, buf=b"", deadline=time.monotonic() + _HELLO_TIMEOUT)
            self._selector.register(conn, selectors.EVENT_READ, "hello")

    def expire_hellos(self, now: float) -> None:
        for fd, hello in list(self._hellos.items()):
            if now >= hello.deadline:
                self._drop_hello(fd)

    def handshake(self, sock: socket.socket, accepting: bool) -> list[str] | None:
        """Read a pending connection's hello; the lines that followed it once it became the connection.

        ``accepting``: whether an ExaBGP is running whose relay we wait for.
        """
        fd = sock.fileno()
        hello = self._hellos.get(fd)
        if hello is None:
            return None
        try:
            data = sock.recv(4096)
        except BlockingIOError:
            return None
        except OSError:
            data = b""
        if not data:
            self._drop_hello(fd)
            return None
        hello.buf += data
        if b"\n" not in hello.buf:
            if len(hello.buf) > _HELLO_MAX:
                self._drop_hello(fd)
            return None
        line, rest = hello.buf.split(b"\n", 1)
        genuine = line == HELLO_PREFIX + self.token.encode() and _same_user(sock)
        if not accepting or self._conn is not None or not genuine:
            self._drop_hello(fd)
            raise PermissionError("refused an API connection that is not from the current ExaBGP relay")
        del self._hellos[fd]
        self._selector.modify(sock, selectors.EVENT_READ, "api")
        self._conn = sock
        self._in = b""
        self._out.clear()
        self._sent.clear()
        return self._lines(rest)

    def read(self) -> list[str] | None:
        """Complete lines received; None when the connection is gone."""
        if self._conn is None:
            return None
        try:
            data = self._conn.recv(262144)
        except BlockingIOError:
            return []
        except OSError:
            data = b""
        if not data:
            self.disconnect()
            return None
        return self._lines(data)

    def _lines(self, data: bytes) -> list[str]:
        self._in += data
        *lines, self._in = self._in.split(b"\n")
        return [raw.decode("utf-8", "replace") for raw in lines if raw.strip()]

    def send(self, lines: list[str]) -> bool:
        """Queue commands and write what the socket takes; False when the connection is gone."""
        if self._conn is None:
            return False
        if lines:
            self._out += encode_batch(lines)
            self._sent.extend(lines)
        return self.flush()

    def flush(self) -> bool:
        if self._conn is None:
            return False
        try:
            while self._out:
                written = self._conn.send(self._out)
                del self._out[:written]
        except BlockingIOError:
            pass
        except OSError:
            self.disconnect()
            return False
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if self._out else 0)
        self._selector.modify(self._conn, events, "api")
        return True

    def acked(self) -> str:
        """The command the next ack answers ("?" if none was outstanding)."""
        return self._sent.popleft() if self._sent else "?"

    def disconnect(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(self._conn)
            self._conn.close()
            self._conn = None
        self._in = b""
        self._out.clear()
        self._sent.clear()

    def _drop_hello(self, fd: int) -> None:
        hello = self._hellos.pop(fd, None)
        if hello is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(hello.sock)
            hello.sock.close()

    def drop_pending(self) -> None:
        for fd in list(self._hellos):
            self._drop_hello(fd)

    def close(self) -> None:
        self.disconnect()
        self.drop_pending()
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(self._listener)
        self._listener.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        if self._socket_dir is not None:
            with contextlib.suppress(OSError):
                os.rmdir(self._socket_dir)


def _same_user(sock: socket.socket) -> bool:
    """Whether the process at the other end of a unix socket runs as our user (SO_PEERCRED)."""
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return False
    _pid, uid, _gid = struct.unpack("3i", creds)
    return bool(uid == os.getuid())
