"""Exec a command that receives SIGTERM when the thread that started it dies.

``python -I launch.py PARENT_PID CMD [ARGS...]``: sets PR_SET_PDEATHSIG, checks that the parent is
still the one expected (it may have died before the setting took effect), then execs CMD. The
supervisor starts ExaBGP through it, so a crashed speaker does not leave an ExaBGP behind that
keeps announcing routes nobody manages. Standard library only, no package import.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        sys.stderr.write("usage: launch.py PARENT_PID CMD [ARGS...]\n")
        return 2
    parent = int(argv[1])
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
        sys.stderr.write(f"launch: prctl failed: {os.strerror(ctypes.get_errno())}\n")
        return 1
    if os.getppid() != parent:
        return 1
    os.execvp(argv[2], argv[2:])
    return 1  # not reached: execvp replaces the process or raises


if __name__ == "__main__":
    sys.exit(main(sys.argv))
