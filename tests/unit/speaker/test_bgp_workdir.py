"""Two speakers given the same --bgp-workdir: the second one fails at once, with the reason."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.unit.bgp.test_workdir import HOLDER


def test_second_speaker_on_a_workdir_exits_with_a_clear_error(tmp_path: Path) -> None:
    work = tmp_path / "bgp"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(work)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        # No API server at all: the speaker must stop on the work directory before it needs one.
        second = subprocess.run(
            [sys.executable, "-m", "lbspeaker.cli", "speaker", "--node-name", "node-1", "--bgp-workdir", str(work),
             "--kubeconfig", str(tmp_path / "missing-kubeconfig"), "--metrics-addr", "127.0.0.1:0"],
            capture_output=True, text=True, timeout=60, check=False,
        )
    finally:
        holder.kill()
        holder.wait(10)
    assert second.returncode == 2, second.stderr
    assert f"is in use by another speaker (pid {holder.pid}); give each speaker its own --bgp-workdir" in second.stderr
