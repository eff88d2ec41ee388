"""The built image as a node receives it: the archive's format and name, its size, what it holds.

The archive is read as containerd's importer reads it (tests/image/archive.py), and imported for
real with Debian's containerd and ctr, which are what ``kind load image-archive`` and ``k3s ctr
images import`` run on a node. Each trim rule of the Dockerfile has its check here.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.image import archive, kubelet
from tests.image.conftest import BuiltImage

SITE = "opt/lbspeaker/lib/python3.11/site-packages"
MAX_UNPACKED = 250_000_000
pytestmark = pytest.mark.timeout(1500)  # the first test pays for the image build (see conftest.py)


@pytest.fixture(scope="module")
def contents(image: BuiltImage) -> archive.ArchiveImage:
    return archive.read(image.archive, keep_data_under=(f"{SITE}/lbspeaker/__pycache__/cli.",))


def _deployed_image() -> str:
    """The image reference deploy/ runs, kustomization.yaml's images: override applied; one for both."""
    images: set[str] = {kubelet.only_container(kubelet.pod_spec(kubelet.deployed(kind, name)))["image"]
                         for kind, name in (("DaemonSet", "speaker"), ("Deployment", "controller"))}
    assert len(images) == 1, images
    return images.pop()


def test_archive_names_the_image_deploy_runs(contents: archive.ArchiveImage) -> None:
    """containerd stores a docker archive's tags normalised; the kubelet looks the manifests' image up
    the same way, so the two must meet (a podman-style localhost/ name would not)."""
    assert contents.config_digest_ok, "the config file's name is not its sha256"
    assert [archive.normalize_reference(t) for t in contents.repo_tags] == \
        [archive.normalize_reference(_deployed_image())]


def test_image_runs_lbspeaker_as_nonroot_by_default(contents: archive.ArchiveImage) -> None:
    config = contents.config["config"]
    assert config["User"] == "65532:65532"
    assert config["Entrypoint"] == ["lbspeaker"]
    assert next(e for e in config["Env"] if e.startswith("PATH=")).startswith("PATH=/opt/lbspeaker/bin:")
    assert contents.config["architecture"] == "amd64" and contents.config["os"] == "linux"


def test_unpacked_size_is_within_target(contents: archive.ArchiveImage, image: BuiltImage) -> None:
    unpacked = sum(contents.layer_sizes)
    base = contents.layer_sizes[0]
    print(f"image: {unpacked / 1e6:.0f} MB unpacked in {len(contents.layer_sizes)} layers "
          f"(base {base / 1e6:.0f} MB), archive {image.archive.stat().st_size / 1e6:.0f} MB")
    assert unpacked <= MAX_UNPACKED, f"{unpacked / 1e6:.0f} MB unpacked, the target is {MAX_UNPACKED / 1e6:.0f} MB"


def _present(contents: archive.ArchiveImage, *paths: str) -> list[str]:
    return [p for p in paths if any(f == p or f.startswith(p + "/") for f in contents.files)]


def test_no_test_kit_and_no_scapy(contents: archive.ArchiveImage) -> None:
    assert _present(contents, f"{SITE}/lbspeaker_testkit", f"{SITE}/scapy") == []
    assert not [f for f in contents.files if "testkit" in f or "/scapy" in f]


def test_trimmed_away(contents: archive.ArchiveImage) -> None:
    assert _present(contents, f"{SITE}/lbspeaker", f"{SITE}/controller", f"{SITE}/kubernetes/client",
                    f"{SITE}/exabgp", "opt/lbspeaker/bin/lbspeaker", "usr/bin/python3") == [
        f"{SITE}/lbspeaker", f"{SITE}/controller", f"{SITE}/kubernetes/client", f"{SITE}/exabgp",
        "opt/lbspeaker/bin/lbspeaker", "usr/bin/python3"], "the programs themselves are missing"
    # kubernetes' asyncio client and the aiohttp stack only it uses
    assert _present(contents, f"{SITE}/kubernetes/aio", f"{SITE}/aiohttp", f"{SITE}/yarl", f"{SITE}/multidict",
                    f"{SITE}/frozenlist", f"{SITE}/propcache", f"{SITE}/aiosignal", f"{SITE}/attr") == []
    # no installer at run time, in the venv or the base
    assert _present(contents, f"{SITE}/pip", f"{SITE}/setuptools", f"{SITE}/pkg_resources",
                    "opt/lbspeaker/bin/pip", "opt/lbspeaker/bin/activate", "usr/share/python-wheels",
                    "usr/lib/python3.11/ensurepip") == []
    assert not [f for f in contents.files if f.startswith(SITE) and f.rsplit("/", 1)[-1] in ("tests", "test")]
    # the base: no package lists, caches or manuals
    assert not [f for f in contents.files if f.startswith(("var/lib/apt/lists/", "var/cache/apt/", "usr/share/man/"))
                and contents.files[f].kind == "file"]


def test_bytecode_is_hash_based_and_skips_unused_kubernetes_code(contents: archive.ArchiveImage) -> None:
    """PEP 552: flags 0b01 in the .pyc header = hash-based and not checked against the source, valid on
    a read-only root whatever the files' times."""
    pyc = [e for f, e in contents.files.items() if f.startswith(f"{SITE}/lbspeaker/__pycache__/cli.")]
    assert len(pyc) == 1 and pyc[0].data is not None
    assert int.from_bytes(pyc[0].data[4:8], "little") == 0b01
    assert [f for f in contents.files if f.startswith(f"{SITE}/kubernetes/client/__pycache__/api_client.")]
    assert not [f for f in contents.files if f.startswith((f"{SITE}/kubernetes/client/api/",
                                                           f"{SITE}/kubernetes/client/models/")) and f.endswith(".pyc")]


@contextlib.contextmanager
def _containerd() -> Iterator[str]:
    """A containerd of our own (own root, state and socket; no CRI plugin), stopped afterwards."""
    work = Path(tempfile.mkdtemp(prefix="lbs-ctrd-"))
    sock = work / "containerd.sock"
    (work / "config.toml").write_text(
        f'version = 2\nroot = "{work}/root"\nstate = "{work}/state"\n'
        f'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n[grpc]\n  address = "{sock}"\n')
    log = (work / "log").open("wb")
    proc = subprocess.Popen(["containerd", "--config", str(work / "config.toml")], stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while subprocess.run(["ctr", "-a", str(sock), "version"], capture_output=True, timeout=10).returncode:
            assert proc.poll() is None and time.monotonic() < deadline, (work / "log").read_text()[-3000:]
            time.sleep(0.2)
        yield str(sock)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
        subprocess.run(["umount", "-R", str(work / "state")], capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.skipif(shutil.which("containerd") is None or shutil.which("ctr") is None,
                    reason="containerd and ctr not installed (`make deps` installs Debian's containerd)")
@pytest.mark.parametrize("flags", [["--all-platforms", "--digests"], []], ids=["kind-load", "k3s-ctr"])
def test_ctr_images_import_takes_the_archive(image: BuiltImage, flags: list[str]) -> None:
    """`kind load image-archive` runs `ctr -n k8s.io images import --all-platforms --digests -` on each
    node; `k3s ctr images import FILE` is ctr's import without flags. Both must store the image under
    the name deploy/ uses, fully unpacked."""
    with _containerd() as sock:
        ctr = ["ctr", "-a", sock, "-n", "k8s.io"]
        with image.archive.open("rb") as stream:
            done = subprocess.run([*ctr, "images", "import", *flags, "-"], stdin=stream, capture_output=True,
                                  text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        wanted = archive.normalize_reference(_deployed_image())
        listed = subprocess.run([*ctr, "images", "ls", "-q"], capture_output=True, text=True, timeout=60).stdout
        assert wanted in listed.split()
        check = subprocess.run([*ctr, "images", "check", f"name=={wanted}"], capture_output=True, text=True,
                               timeout=60).stdout
        assert "complete" in check and check.rstrip().endswith("true"), check
