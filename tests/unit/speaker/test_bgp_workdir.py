"""Two speakers given the same --bgp-workdir: the one that finds it locked runs no BGP and says why, loudly
(a Warning Event on the config ConfigMap and an error in its log), until the directory is free. Nothing
is started while the lock is held elsewhere, so no packet leaves this test."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lbspeaker.config import parse_config
from lbspeaker.speaker.bgp import BgpProtocol
from lbspeaker.speaker.bgp_announcer import BgpAnnouncer, speaker_factory
from tests.unit.bgp.test_workdir import HOLDER
from tests.unit.speaker.test_bgp_step import CONFIG, EVERYTHING, Recorder, node, snapshot


def test_a_locked_workdir_runs_no_bgp_and_is_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    work = tmp_path / "bgp"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(work)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        recorder = Recorder()
        announcer = BgpAnnouncer("n1", speaker_factory("n1", None, work))
        step = BgpProtocol("n1", announcer, recorder=recorder)  # type: ignore[arg-type]  # duck-typed recorder
        with caplog.at_level(logging.ERROR, logger="lbspeaker.speaker.bgp"):
            step.reconcile(snapshot(parse_config(CONFIG), node()), changes=EVERYTHING)
            fds = len(os.listdir("/proc/self/fd"))
            for _ in range(5):  # tried again on every pass, and nothing is left open by a failed try
                step.reconcile(snapshot(parse_config(CONFIG), node()), changes=EVERYTHING)
            assert len(os.listdir("/proc/self/fd")) == fds
    finally:
        holder.kill()
        holder.wait(10)
    assert announcer.sessions() == {}  # no BGP speaker was made
    message = (f"node n1: BGP work directory {work.resolve()} is in use by another speaker (pid {holder.pid}); "
               "give each speaker its own --bgp-workdir; BGP does not run on this node until it is free")
    assert recorder.events == [("config", "Warning", "BGPWorkdirBusy", message)]  # once, not per pass
    assert sum("is in use by another speaker" in r.getMessage() for r in caplog.records) == 1

