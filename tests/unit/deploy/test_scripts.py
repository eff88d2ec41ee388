"""The Dockerfile, .dockerignore, hack/image/, hack/kind-e2e.sh, hack/k3s.md and the README's deploy steps,
checked without building anything (tests/image/ builds and runs the image)."""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[3]
KIND_E2E = ROOT / "hack" / "kind-e2e.sh"
DOCKERFILE = ROOT / "Dockerfile"
IMAGE_SCRIPTS = sorted((ROOT / "hack" / "image").glob("*.sh"))
SCRIPTS = [KIND_E2E, *IMAGE_SCRIPTS]
K3S = ROOT / "hack" / "k3s.md"


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

def test_dockerfile_builds_on_a_base_argument_defaulting_to_python_slim() -> None:
    """BASE/BUILD_BASE are global ARGs (before the first FROM), so `--build-arg BASE=...` picks the base
    (hack/image/build.sh passes its debootstrap-made ones); users building plainly get python:3.x-slim."""
    steps = _instructions()
    first_from = next(i for i, (op, _) in enumerate(steps) if op == "FROM")
    args = dict(a.split("=", 1) for op, a in steps[:first_from] if op == "ARG")
    assert re.fullmatch(r"python:3\.1[1-9]-slim", args["BASE"]), args
    assert args["BUILD_BASE"] == "${BASE}"
    assert [a for op, a in steps if op == "FROM"] == ["${BUILD_BASE} AS build", "${BASE}"]
    final = steps[max(i for i, (op, _) in enumerate(steps) if op == "FROM"):]
    users = [args for op, args in final if op == "USER"]
    assert users and users[-1].split(":")[0] == "65532", "the controller's uid; the speaker overrides it"
    assert [args for op, args in final if op == "ENTRYPOINT"] == ['["lbspeaker"]']
    assert [a for op, a in final if op == "COPY"] == ["--from=build /opt/lbspeaker /opt/lbspeaker"]
    runs = " ".join(args for op, args in steps if op == "RUN")
    assert "pip install" in runs and "--no-deps --no-compile ." in runs


def test_dependencies_install_from_pyproject_alone() -> None:
    """The dependency layer may depend on pyproject.toml only: a README or source edit must not
    reinstall (and re-download) every dependency."""
    steps = _instructions()
    install = next(i for i, (op, a) in enumerate(steps) if op == "RUN" and "-r /tmp/requirements.txt" in a)
    copies = [a for op, a in steps[:install] if op == "COPY"]
    assert copies == ["pyproject.toml ./"]


def test_dockerfile_installs_the_dependencies_pyproject_declares() -> None:
    """The first stage reads dependencies from pyproject.toml: run that one-liner here and compare."""
    runs = [args for op, args in _instructions() if op == "RUN" and "tomllib" in args]
    assert len(runs) == 1
    script = runs[0].split('python3 -c "', 1)[1].split('" >', 1)[0]
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
    for unwanted in (".git", "tests", "testkit", "hack", "build", "lbspeaker/__pycache__", "x.egg-info",
                     "docs/notes.md", ".venv"):
        assert _ignored(unwanted), f"{unwanted} would be sent to the docker daemon"


# -- hack/kind-e2e.sh --------------------------------------------------------------------------------

@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_are_valid_bash_and_strict(script: Path) -> None:
    out = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    text = script.read_text()
    if script.name == "engine.sh":  # sourced by the others, never run
        assert text.startswith("# shellcheck shell=bash\n")
        return
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert os.access(script, os.X_OK), f"{script} is not executable"


@pytest.mark.skipif(shutil.which("shellcheck") is None,
                    reason="shellcheck is not installed (apt-get install shellcheck; make deps does)")
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_pass_shellcheck(script: Path) -> None:
    out = subprocess.run(["shellcheck", "-x", str(script)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr


def _run_with_path(bindir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    bash = shutil.which("bash")
    assert bash is not None
    return subprocess.run([bash, str(KIND_E2E)], capture_output=True, text=True, timeout=60,
                          env={"PATH": str(bindir), "HOME": str(bindir), **env})


def _stub_tools(bindir: Path, docker_code: int) -> None:
    _link(bindir, "dirname", "python3")
    for tool in ("docker", "kind", "kubectl", "curl"):
        stub = bindir / tool
        code = docker_code if tool == "docker" else 0
        stub.write_text(f"#!/bin/sh\necho \"{tool} $*\" >> \"$HOME/calls\"\nexit {code}\n")
        stub.chmod(0o755)


def _calls(bindir: Path) -> list[str]:
    calls = bindir / "calls"
    return calls.read_text().splitlines() if calls.exists() else []


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
    _stub_tools(tmp_path, docker_code=1)
    out = _run_with_path(tmp_path)
    assert out.returncode == 1
    assert "docker engine is not reachable" in out.stderr
    assert _calls(tmp_path) == ["docker info"], "nothing but the engine check may run before the engine is known"


@pytest.mark.parametrize("env, error", [
    ({"BUILDER": "kaniko"}, "BUILDER must be docker, buildah or none, got kaniko"),
    ({"BUILDER": "none", "ARCHIVE": "/nonexistent/lbspeaker-image.tar"},
     "no image archive at /nonexistent/lbspeaker-image.tar (make image writes it)"),
])
def test_kind_e2e_checks_how_to_get_the_image_before_making_a_cluster(
        tmp_path: Path, env: dict[str, str], error: str) -> None:
    _stub_tools(tmp_path, docker_code=0)
    out = _run_with_path(tmp_path, **env)
    assert out.returncode == 1
    assert error in out.stderr
    assert _calls(tmp_path) == [], "no cluster may be made for a run that cannot get its image"


def test_kind_e2e_covers_the_whole_path() -> None:
    text = KIND_E2E.read_text()
    for step in ("kind create cluster", "docker build -t", "docker save", 'kind load image-archive "$ARCHIVE"',
                 "hack/image/build.sh", "apply -k",
                 "lbspeaker-memberlist", "docker network inspect kind", "protocol: layer2",
                 "--type=LoadBalancer", "curl", "reason=nodeAssigned", "delete pod", "kind delete cluster",
                 "KEEP"):
        assert step in text, f"kind-e2e.sh lost the step {step!r}"


def _default(text: str, pattern: str) -> str:
    match = re.search(pattern, text, re.MULTILINE)
    assert match, pattern
    return match.group(1)


def test_one_image_archive_path_everywhere() -> None:
    """make image, hack/image/build.sh, kind-e2e.sh and the docs name the same archive."""
    path = _default((ROOT / "Makefile").read_text(), r"^IMAGE_ARCHIVE \?= (\S+)$")
    assert path == "build/lbspeaker-image.tar"
    assert _default((ROOT / "hack/image/build.sh").read_text(), r"^ARCHIVE=\$\{1:-\$ROOT/(\S+)\}$") == path
    assert _default(KIND_E2E.read_text(), r"^ARCHIVE=\$\{ARCHIVE:-\$ROOT/(\S+)\}$") == path
    readme = (ROOT / "README.md").read_text()
    deploying = readme[readme.index("## Deploying on kind or k3s"):]
    deploying = deploying[:deploying.index("\n## ", 3)]
    for text in (deploying, K3S.read_text()):
        assert "make image" in text
        assert f"k3s ctr images import {path}" in text
        assert f"docker save lbspeaker:dev -o {path}" in text
    assert f"kind load image-archive {path}" in deploying
    assert "images:" in deploying and "newName:" in deploying, "how to override the image name"


# -- hack/k3s.md -------------------------------------------------------------------------------------

def _shell_blocks(markdown: str) -> str:
    return "\n".join(re.findall(r"```sh\n(.*?)```", markdown, re.DOTALL))


def test_k3s_notes_disable_servicelb_and_import_the_image() -> None:
    text = K3S.read_text()
    for step in ("--disable servicelb", "k3s ctr images import", "kubectl apply -k deploy/",
                 "create secret generic lbspeaker-memberlist"):
        assert step in text, step


def test_k3s_notes_apply_a_pool_before_waiting_for_the_rollout() -> None:
    """Controller and speakers are Ready only with a valid pool: a rollout wait before the pool is
    applied never ends, and every wait has a timeout."""
    sh = _shell_blocks(K3S.read_text())
    pool = sh.index("kubectl apply -f my-pool.yaml")
    waits = [m.start() for m in re.finditer(r"rollout status", sh)]
    assert waits and all(w > pool for w in waits)
    assert all("--timeout=" in line for line in sh.splitlines() if "rollout status" in line)


def test_k3s_notes_read_only_files_they_wrote() -> None:
    sh = _shell_blocks(K3S.read_text())
    written = {m.group(1): m.start() for m in re.finditer(r"(?:>\s*|-o )(\S+\.(?:yaml|tar))", sh)}
    if "make image" in sh:
        written.setdefault("build/lbspeaker-image.tar", sh.index("make image"))
    read = [(m.group(1), m.start()) for m in re.finditer(
        r"(?:config check|apply -f|images import) (\S+\.(?:yaml|tar))", sh)]
    assert read
    for name, at in read:
        assert name in written and written[name] < at, f"hack/k3s.md reads {name} before writing it"
