"""The image tests: build the image once per session with hack/image/build.sh (what `make image` runs),
then inspect its archive and run it. Skipped, with the reason, where that cannot be done.

Building needs root, buildah, podman, runc and debootstrap (`make deps` installs them) and reaches
Debian's mirror and PyPI. A fresh machine pays about a minute of debootstrap and one of building;
later runs on the same machine reuse the base images and the dependency layer (see build.sh).
The build's figures (size, times) are printed in the test summary.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.netns.conftest import netns_unavailable

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "hack" / "image" / "build.sh"
TOOLS = ("buildah", "podman", "runc", "debootstrap", "openssl")
# Tests that only read manifests and never build or run anything.
PURE = {"test_helpers.py"}


@dataclass(frozen=True)
class BuiltImage:
    id: str
    archive: Path
    log: str
    seconds: float


@functools.cache
def image_unavailable() -> str | None:
    """Why the image cannot be built and run here, or None."""
    if os.environ.get("LBSPEAKER_TEST_KUBECONFIG"):
        return "the image tests run their own API server and namespaces, not a real cluster"
    if os.geteuid() != 0:
        return "needs root: debootstrap, containers-storage, network namespaces"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return f"{', '.join(missing)} not installed (`make deps` installs them with apt-get)"
    return netns_unavailable()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    reason = image_unavailable()
    for item in items:
        path = str(item.path)
        if not path.startswith(here + os.sep) or os.path.basename(path) in PURE:
            continue
        item.add_marker(pytest.mark.slow)
        item.add_marker(pytest.mark.netns)
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=reason))


_BUILT: list[BuiltImage] = []


@pytest.fixture(scope="session")
def image() -> Iterator[BuiltImage]:
    out = Path(tempfile.mkdtemp(prefix="lbs-image-"))
    iidfile = out / "iid"
    # Our own name for the result while the tests use it (build.sh's prune spares tagged images).
    tag = f"localhost/lbspeaker-test:{out.name.rsplit('-', 1)[-1].lower()}"
    start = time.monotonic()
    proc = subprocess.run([str(BUILD), str(out / "lbspeaker-image.tar")], capture_output=True, text=True,
                          timeout=1500, env={**os.environ, "IIDFILE": str(iidfile), "LOCAL_TAG": tag}, check=False)
    log = proc.stderr + proc.stdout
    if proc.returncode != 0:
        shutil.rmtree(out, ignore_errors=True)
        pytest.fail(f"hack/image/build.sh failed ({proc.returncode}):\n{log[-6000:]}")
    built = BuiltImage(iidfile.read_text().strip(), out / "lbspeaker-image.tar", log, time.monotonic() - start)
    _BUILT.append(built)
    try:
        yield built
    finally:
        subprocess.run(["podman", "untag", built.id, tag], capture_output=True, timeout=60, check=False,
                       env={**os.environ, "CONTAINERS_CONF": str(REPO / "hack" / "image" / "containers.conf")})
        shutil.rmtree(out, ignore_errors=True)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for built in _BUILT:
        terminalreporter.section("lbspeaker image")
        for line in built.log.splitlines():
            if re.search(r"bases ready in|base: debootstrap and updates|built in|wrote .* in|unpacked", line):
                terminalreporter.write_line(line)
        terminalreporter.write_line(f"image build fixture: {built.seconds:.0f} s")
