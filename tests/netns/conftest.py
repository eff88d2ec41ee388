"""Real-kernel tests in network namespaces: skipped, with the reason, where they cannot run.

They need root (namespaces, veth pairs, raw sockets) and a working ``ip netns``; the check makes and
deletes one probe namespace of its own, once per session.
"""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import subprocess

import pytest


@functools.cache
def netns_unavailable() -> str | None:
    """Why namespace tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root: network namespaces, veth pairs and raw sockets"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    probe = f"probe{secrets.token_hex(3)}"
    try:
        made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`ip netns add` failed: {exc}"
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=10, check=False)
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    mine = [item for item in items if str(item.path).startswith(here + os.sep)]
    if not mine:
        return
    reason = netns_unavailable()
    for item in mine:
        item.add_marker(pytest.mark.netns)
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=reason))
