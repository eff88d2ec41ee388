"""`lbspeaker config check FILE`: exit codes and output, called directly and as `python -m`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lbspeaker.config.check import main

CONFIGS = Path(__file__).parent / "configs"
BAD = """\
address-pools:
- name: a
  protocol: layer3
  addresses: [203.0.113.0/33]
peers:
- {peer-address: 203.0.113.1, peer-asn: 1, my-asn: 2, hold-time: 1s}
"""


def test_valid_file_prints_summary_and_returns_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(CONFIGS / "metallb-v012-full.yaml")]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.startswith("address pools (3):\n  default: bgp, auto-assign yes, avoid-buggy-ips no\n")
    assert "  layer2-pool: layer2, auto-assign yes, avoid-buggy-ips yes" in out
    assert "peers (2):" in out
    assert "yourPassword" not in out


def test_invalid_file_prints_every_error_on_stderr_and_returns_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    assert main([str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"{path}: peers[0].hold-time: invalid hold-time '1s': must be 0 or at least 3s",
        f"{path}: address-pools[0].protocol: expected 'layer2' or 'bgp', got 'layer3'",
        f"{path}: address-pools[0].addresses[0]: invalid CIDR '203.0.113.0/33': '203.0.113.0/33' does not appear to be "
        "an IPv4 or IPv6 network",
    ]


def test_missing_file_returns_1_with_a_clear_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "absent.yaml"
    assert main([str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"lbspeaker config check: cannot read {path}: No such file or directory\n"


def test_directory_returns_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path)]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_usage_errors_return_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: lbspeaker config check" in capsys.readouterr().err
    assert main(["--help"]) == 0
    assert "FILE" in capsys.readouterr().out


@pytest.mark.parametrize(("name", "code"), [("bare.yaml", 0), ("bad", 1)])
def test_python_dash_m(tmp_path: Path, name: str, code: int) -> None:
    path = CONFIGS / name
    if name == "bad":
        path = tmp_path / "bad.yaml"
        path.write_text(BAD)
    proc = subprocess.run(
        [sys.executable, "-m", "lbspeaker.config.check", str(path)],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).parents[3],
    )
    assert proc.returncode == code, proc.stderr
    if code == 0:
        assert proc.stdout.startswith("address pools (1):\n  default: layer2") and proc.stderr == ""
    else:
        assert proc.stdout == "" and len(proc.stderr.splitlines()) == 3
