"""One speaker per BGP work directory: an exclusive lock on ``DIR/lock``.

Two speakers sharing a work directory (two on one host given the same ``--bgp-workdir``) overwrite
each other's ExaBGP config and API socket: one of them then silently announces nothing. The first
to start takes a ``flock`` on the directory's lock file and keeps it for the life of the process
(the kernel drops it when the process dies, however it dies, so a crashed speaker never leaves a
stale lock); the second fails at once with ``WorkdirBusy``, naming the directory and the holder.

Taking the lock again from the process that holds it is a no-op, so the speaker's startup and the
supervisor can both ask for it. Cost: one open file per work directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from pathlib import Path

LOCK_NAME = "lock"

_held: dict[str, int] = {}  # real path of the directory -> fd of its lock file, for this process
_guard = threading.Lock()


class WorkdirBusy(RuntimeError):
    """Another process holds the work directory's lock."""


def lock_workdir(workdir: str | Path) -> Path:
    """Create ``workdir`` if needed and take its lock for this process; returns the lock file's path.

    Raises ``WorkdirBusy`` when another process holds it, ``OSError`` when the directory cannot be
    made or the lock file opened.
    """
    directory = Path(workdir)
    directory.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(directory)
    path = Path(key) / LOCK_NAME
    with _guard:
        if key in _held:
            return path
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"pid {holder}" if holder else "another process"
            raise WorkdirBusy(
                f"BGP work directory {key} is in use by another speaker ({who}); give each speaker its "
                "own --bgp-workdir"
            ) from None
        except OSError:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        _held[key] = fd
    return path


def release_workdir(workdir: str | Path) -> None:
    """Give the lock up (tests; a process that exits releases it anyway)."""
    key = os.path.realpath(Path(workdir))
    with _guard:
        fd = _held.pop(key, None)
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


def _read_pid(fd: int) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        text = os.pread(fd, 32, 0).decode().strip()
        return int(text) if text else None
    return None
