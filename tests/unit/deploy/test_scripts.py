"""The Dockerfile, .dockerignore, hack/kind-e2e.sh and hack/k3s.md, checked without a docker engine."""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[3]
KIND_E2E = ROOT / "hack" / "kind-e2e.sh"
DOCKERFILE = ROOT / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def _ignored(path: str) -> bool:
    """.dockerignore semantics for the patterns we use: the last matching pattern wins, ! re-includes."""
    ignored = False
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").removeprefix("**/")
        parts = path.split("/")
        if any(fnmatch.fnmatch("/".join(parts[i:j]), pattern)
               for i in range(len(parts)) for j in range(i + 1, len(parts) + 1)):
            ignored = not negate
    return ignored


# -- Dockerfile --------------------------------------------------------------------------------------

def test_dockerfile_builds_from_python_slim_and_runs_lbspeaker_as_nonroot() -> None:
    steps = _instructions()
    froms = [args for op, args in steps if op == "FROM"]
    assert froms and all(f.split()[0] == "python:3.11-slim" for f in froms)
    final = steps[max(i for i, (op, _) in enumerate(steps) if op == "FROM"):]
    users = [args for op, args in final if op == "USER"]
    assert users and users[-1].split(":")[0] == "65532", "the controller's uid; the speaker overrides it"
    assert [args for op, args in final if op == "ENTRYPOINT"] == ['["lbspeaker"]']
    runs = " ".join(args for op, args in steps if op == "RUN")
    assert "pip install" in runs and "--no-deps ." in runs


def test_dockerfile_installs_the_dependencies_pyproject_declares() -> None:
    """The first stage reads dependencies from pyproject.toml: run that one-liner here and compare."""
    runs = [args for op, args in _instructions() if op == "RUN" and "tomllib" in args]
    assert len(runs) == 1
    script = runs[0].split('python -c "', 1)[1].split('" >', 1)[0]
    out = subprocess.run(["python3", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert out.stdout.split("\n")[:-1] == declared
    assert any(d.startswith("exabgp") for d in declared), "the speaker's BGP mode runs ExaBGP from the image"


def test_dockerfile_copies_only_what_dockerignore_lets_through() -> None:
    copies = [args.split() for op, args in _instructions() if op == "COPY" and not args.startswith("--from")]
    sources = [src for args in copies for src in args[:-1]]
    assert set(sources) == {"pyproject.toml", "README.md", "lbspeaker", "controller"}
    for src in sources:
        assert (ROOT / src).exists(), src
        assert not _ignored(src), f".dockerignore drops {src}, which the Dockerfile copies"
    for unwanted in (".git", "tests", "hack", "lbspeaker/__pycache__", "x.egg-info", "docs/notes.md"):
        assert _ignored(unwanted), f"{unwanted} would be sent to the docker daemon"


# -- hack/kind-e2e.sh --------------------------------------------------------------------------------

def test_kind_e2e_is_valid_bash_and_strict() -> None:
    out = subprocess.run(["bash", "-n", str(KIND_E2E)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    text = KIND_E2E.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert os.access(KIND_E2E, os.X_OK), "hack/kind-e2e.sh is not executable"


@pytest.mark.skipif(shutil.which("shellcheck") is None,
                    reason="shellcheck is not installed (apt-get install shellcheck)")
def test_kind_e2e_passes_shellcheck() -> None:
    out = subprocess.run(["shellcheck", str(KIND_E2E)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def _run_with_path(bindir: Path) -> subprocess.CompletedProcess[str]:
    bash = shutil.which("bash")
    assert bash is not None
    return subprocess.run([bash, str(KIND_E2E)], capture_output=True, text=True, timeout=60,
                          env={"PATH": str(bindir), "HOME": str(bindir)})


def _link(bindir: Path, *tools: str) -> None:
    for tool in tools:
        found = sys.executable if tool == "python3" else shutil.which(tool)
        assert found, f"{tool} is needed to run the script's prologue"
        (bindir / tool).symlink_to(found)


def test_kind_e2e_names_the_missing_tool(tmp_path: Path) -> None:
    _link(tmp_path, "dirname")
    out = _run_with_path(tmp_path)
    assert out.returncode == 1
    assert "docker is not installed" in out.stderr


def test_kind_e2e_stops_when_the_docker_engine_is_unreachable(tmp_path: Path) -> None:
    """Every tool present, but `docker info` fails (as here): a clear error, nothing created."""
    _link(tmp_path, "dirname", "python3")
    for tool in ("docker", "kind", "kubectl", "curl"):
        stub = tmp_path / tool
        code = 1 if tool == "docker" else 0
        stub.write_text(f"#!/bin/sh\necho \"{tool} $*\" >> \"$HOME/calls\"\nexit {code}\n")
        stub.chmod(0o755)
    out = _run_with_path(tmp_path)
    assert out.returncode == 1
    assert "docker engine is not reachable" in out.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls == ["docker info"], "nothing but the engine check may run before the engine is known"


def test_kind_e2e_covers_the_whole_path() -> None:
    text = KIND_E2E.read_text()
    for step in ("kind create cluster", "docker build -t", "kind load docker-image", "apply -k",
                 "lbspeaker-memberlist", "docker network inspect kind", "protocol: layer2",
                 "--type=LoadBalancer", "curl", "reason=nodeAssigned", "delete pod", "kind delete cluster",
                 "KEEP"):
        assert step in text, f"kind-e2e.sh lost the step {step!r}"


# -- hack/k3s.md -------------------------------------------------------------------------------------

def test_k3s_notes_disable_servicelb_and_import_the_image() -> None:
    text = (ROOT / "hack" / "k3s.md").read_text()
    for step in ("--disable servicelb", "k3s ctr images import", "kubectl apply -k deploy/",
                 "create secret generic lbspeaker-memberlist"):
        assert step in text, step
