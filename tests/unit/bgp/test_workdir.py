"""One speaker per BGP work directory."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lbspeaker.bgp.workdir import WorkdirBusy, lock_workdir, release_workdir

HOLDER = textwrap.dedent(
    """
    import sys, time
    from lbspeaker.bgp.workdir import lock_workdir
    lock_workdir(sys.argv[1])
    print("locked", flush=True)
    time.sleep(60)
    """
)


def test_a_second_process_is_refused_with_the_directory_and_the_holder(tmp_path: Path) -> None:
    work = tmp_path / "bgp"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(work)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(WorkdirBusy, match=rf"{work}.*pid {holder.pid}.*own --bgp-workdir"):
            lock_workdir(work)
    finally:
        holder.kill()
        holder.wait(10)
    # The kernel dropped the dead holder's lock: no stale lock to clean up.
    try:
        assert lock_workdir(work) == work.resolve() / "lock"
        assert lock_workdir(work) == work.resolve() / "lock"  # again from the holder: no-op
    finally:
        release_workdir(work)


def test_speakers_with_the_same_workdir_fail_fast(tmp_path: Path) -> None:
    work = tmp_path / "shared"
    first = subprocess.Popen([sys.executable, "-m", "lbspeaker.bgp", "--workdir", str(work)],
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not (work / "lock").exists() or not (work / "lock").read_text().strip():
            assert first.poll() is None, first.stderr.read() if first.stderr else ""
            assert time.monotonic() < deadline, "the first speaker never took the lock"
            time.sleep(0.02)
        second = subprocess.run([sys.executable, "-m", "lbspeaker.bgp", "--workdir", str(work)],
                                capture_output=True, text=True, timeout=30, check=False)
        assert second.returncode == 2
        assert f"BGP work directory {work.resolve()} is in use by another speaker (pid {first.pid})" in second.stderr
    finally:
        first.terminate()
        first.wait(10)
