"""`lbspeaker config check FILE...`: exit codes and output, several files merged as the cluster merges
them, standard input, ConfigMaps the cluster would ignore, pool sizes, --show; called directly, through
`lbspeaker config check` and as `python -m`."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.allocator import Allocator
from controller.reconcile import pool_specs
from lbspeaker.cli import main as cli_main
from lbspeaker.config import Config, load_file, parse_config
from lbspeaker.config.check import main
from lbspeaker.config.render import config_yaml

ROOT = Path(__file__).parents[3]
CONFIGS = Path(__file__).parent / "configs"
EXAMPLES = sorted((ROOT / "deploy" / "examples").glob("*.yaml"))
BAD = """\
address-pools:
- name: a
  protocol: layer3
  addresses: [203.0.113.0/33]
peers:
- {peer-address: 203.0.113.1, peer-asn: 1, my-asn: 2, hold-time: 1s}
"""


def _configmap(
    config: str, name: str = "config", namespace: str | None = "lbspeaker-system", labels: dict[str, str] | None = None
) -> str:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    if labels:
        meta["labels"] = labels
    return yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"config": config}})


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _pool(name: str, addresses: str, protocol: str = "layer2", extra: str = "") -> str:
    return f"address-pools:\n- {{name: {name}, protocol: {protocol}, addresses: [{addresses}]{extra}}}\n"


# --- one file --------------------------------------------------------------------------------------------


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
    path = _write(tmp_path, "bad.yaml", BAD)
    assert main([path]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"{path}: peers[0].hold-time: invalid hold-time '1s': must be 0 or at least 3s",
        f"{path}: address-pools[0].protocol: expected 'layer2' or 'bgp', got 'layer3'",
        f"{path}: address-pools[0].addresses[0]: invalid CIDR '203.0.113.0/33': '203.0.113.0/33' does not appear to be "
        "an IPv4 or IPv6 network",
    ]


def test_every_error_at_once_duplicate_pool_names_included(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Both pools are broken otherwise; the duplicate name is still reported, beside their own errors.
    path = _write(
        tmp_path,
        "dup.yaml",
        "address-pools:\n- {name: a, protocol: bgp}\n- {name: a, protocol: layer2, addresses: [bogus]}\n"
        "- {name: b, protocol: layer2, addresses: [192.0.2.0/24], bgp-advertisements: [{communities: [nope]}]}\n",
    )
    assert main([path]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"{path}: address-pools[0].addresses: required key is missing",
        f"{path}: address-pools[1].addresses[0]: invalid address range 'bogus': expected CIDR, a-b range or address",
        f"{path}: address-pools[1].name: duplicate pool name 'a', already defined at address-pools[0]",
        f"{path}: address-pools[2].bgp-advertisements: only valid in a bgp pool, pool 'b' is layer2",
    ]


def test_missing_file_returns_1_with_a_clear_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "absent.yaml"
    assert main([str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"lbspeaker config check: cannot read {path}: No such file or directory\n"


def test_directory_and_binary_files_return_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path)]) == 1
    assert "cannot read" in capsys.readouterr().err
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00")
    assert main([str(tmp_path / "bin.yaml")]) == 1
    assert capsys.readouterr().err == f"{tmp_path / 'bin.yaml'}: not UTF-8 text (byte 0)\n"


def test_usage_errors_return_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: lbspeaker config check" in capsys.readouterr().err
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "FILE" in out and "--show" in out and "(default: lbspeaker-system)" in out


# --- several files, merged as the cluster would --------------------------------------------------------


def test_the_examples_merge_as_in_the_cluster(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(p) for p in EXAMPLES]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    first, *_ = out.splitlines()
    # The main ConfigMap first, then the labelled ones by name, whatever the order of the files.
    assert first.startswith("merged (3): lbspeaker-system/config (")
    assert first.index("lbspeaker-system/bgp (") < first.index("lbspeaker-system/dual-stack (")
    # bgp-pool.yaml: 203.0.113.0/28 with avoid-buggy-ips: 16 addresses, 203.0.113.0 skipped.
    assert "    size: 15 IPv4 addresses (1 ending in .0 or .255 skipped by avoid-buggy-ips)\n" in out


def test_conflicts_across_files_name_both_configmaps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _write(tmp_path, "a.yaml", _configmap(_pool("web", "192.0.2.0/24")))
    b = _write(
        tmp_path, "b.yaml", _configmap(_pool("web", "192.0.2.128/25"), name="extra", labels={"lbspeaker.io/config": ""})
    )
    assert main([a, b]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "lbspeaker-system/extra: address-pools[0].name: duplicate pool name 'web', already defined at "
        "address-pools[0] in lbspeaker-system/config",
        "lbspeaker-system/extra: address-pools[0].addresses[0]: '192.0.2.128/25' of pool 'web' overlaps "
        "'192.0.2.0/24' of pool 'web' (address-pools[0].addresses[0] in lbspeaker-system/config); both contain "
        "192.0.2.128",
    ]


def test_errors_in_several_files_are_all_reported_with_their_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = _write(tmp_path, "a.yaml", _configmap(_pool("a", "bogus")))
    b = _write(tmp_path, "b.yaml", _pool("b", "192.0.2.0/33"))
    c = _write(tmp_path, "c.yaml", "address-pools: [\n")
    assert main([a, b, c, str(tmp_path / "nope.yaml")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"lbspeaker config check: cannot read {tmp_path / 'nope.yaml'}: No such file or directory"
    assert err[1].startswith(f"{b}: address-pools[0].addresses[0]: invalid CIDR '192.0.2.0/33'")
    assert err[2].startswith(f"{c}: invalid YAML")
    assert err[3].startswith(f"{a}: lbspeaker-system/config: address-pools[0].addresses[0]: invalid address range")
    assert len(err) == 4


def test_stdin_and_bare_files_merge_with_configmaps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(_pool("piped", "198.51.100.0/24").encode())))
    main_cm = _write(tmp_path, "main.yaml", _configmap(_pool("main", "192.0.2.0/24")))
    assert main([main_cm, "-"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.startswith(f"merged (2): lbspeaker-system/config ({main_cm}), <stdin>\naddress pools (2):\n  main:")
    assert "  piped: layer2" in out


def test_stdin_errors_are_labelled(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"peers: 1\n")))
    assert main(["-"]) == 1
    assert capsys.readouterr().err == "<stdin>: peers: expected a list, got 1\n"


# --- ConfigMaps the cluster would ignore ------------------------------------------------------------------


def test_metallb_namespace_is_ignored_with_the_migration_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, "metallb.yaml", _configmap(_pool("old", "192.0.2.0/24"), namespace="metallb-system"))
    assert main([path]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        f"warning: {path}: ConfigMap metallb-system/config would be ignored by the cluster: it is in MetalLB's "
        "namespace metallb-system, and lbspeaker reads ConfigMaps in lbspeaker-system only: change "
        "metadata.namespace to lbspeaker-system (the schema needs no change)",
        "warning: the cluster would read none of the ConfigMaps given: see the warnings above",
    ]
    assert out.startswith("address pools (0):")


def test_other_namespace_other_name_and_no_namespace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = "---\n".join(
        [
            _configmap(_pool("main", "192.0.2.0/24")),
            _configmap(_pool("team", "198.51.100.0/24"), namespace="default"),
            _configmap(_pool("unlabelled", "203.0.113.0/24"), name="pools"),
            _configmap(
                _pool("nons", "203.0.113.0/24"), name="labelled", namespace=None, labels={"lbspeaker.io/config": "true"}
            ),
        ]
    )
    path = _write(tmp_path, "all.yaml", text)
    assert main([path]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        f"warning: {path}: ConfigMap default/config would be ignored by the cluster: it is in namespace default, "
        "and lbspeaker reads ConfigMaps in lbspeaker-system only: move it there",
        f"warning: {path}: ConfigMap lbspeaker-system/pools would be ignored by the cluster: lbspeaker reads the "
        "ConfigMap named 'config' and those labelled lbspeaker.io/config: rename it or add the label "
        'lbspeaker.io/config: "true"',
        f"warning: {path}: ConfigMap labelled has no metadata.namespace: it must be applied to lbspeaker-system "
        "(kubectl apply -n lbspeaker-system)",
    ]
    assert out.startswith(f"merged (2): lbspeaker-system/config ({path}), labelled ({path})\n")
    assert "  main:" in out and "  nons:" in out and "team" not in out and "unlabelled" not in out


def test_errors_of_ignored_configmaps_still_count(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "m.yaml", _configmap(_pool("old", "bogus"), namespace="metallb-system"))
    assert main([path]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("warning: ") and "metallb-system" in err[0]
    assert err[2].startswith(f"{path}: metallb-system/config: address-pools[0].addresses[0]: invalid address range")


def test_namespace_and_config_name_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "m.yaml", _configmap(_pool("p", "192.0.2.0/24"), name="pools", namespace="lb"))
    assert main([path, "--namespace", "lb", "--config-name", "pools"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and "  p: layer2" in out


def test_same_configmap_in_two_files_keeps_the_last(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _write(tmp_path, "a.yaml", _configmap(_pool("first", "192.0.2.0/24")))
    b = _write(tmp_path, "b.yaml", _configmap(_pool("second", "192.0.2.0/24")))
    assert main([a, b]) == 0
    out, err = capsys.readouterr()
    assert err == (
        f"warning: {b}: ConfigMap lbspeaker-system/config is also defined in {a}; applying both keeps the one "
        "applied last, this one is checked\n"
    )
    assert "  second:" in out and "first" not in out


def test_a_file_without_configmaps_is_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ns = _write(tmp_path, "ns.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: lbspeaker-system}\n")
    cm = _write(tmp_path, "cm.yaml", _configmap(_pool("p", "192.0.2.0/24")))
    assert main([ns, cm]) == 0
    assert capsys.readouterr().err == f"warning: {ns}: no ConfigMap in this file, nothing to check in it\n"


# --- sizes: one counting rule with the controller --------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    ranges=st.lists(st.tuples(st.integers(0, 3000), st.integers(0, 700)), min_size=1, max_size=4),
    avoid=st.booleans(),
)
def test_pool_size_is_the_controllers_total(ranges: list[tuple[int, int]], avoid: bool) -> None:
    base = 0xC6336400  # 198.51.100.0 and up (sizes only; nothing is sent)
    cursor, entries = base, []
    for gap, length in ranges:  # disjoint ranges, in order
        first = cursor + gap
        entries.append(f"{first >> 24}.{first >> 16 & 255}.{first >> 8 & 255}.{first & 255}-"
                       f"{(first + length) >> 24}.{(first + length) >> 16 & 255}.{(first + length) >> 8 & 255}."
                       f"{(first + length) & 255}")  # fmt: skip
        cursor = first + length + 1
    cfg = parse_config(_pool("p", ", ".join(entries), extra=f", avoid-buggy-ips: {str(avoid).lower()}"))
    (usage,) = Allocator(pool_specs(cfg)).usage()
    assert cfg.address_pools[0].size(4) == usage.total


def test_sizes_for_both_families_and_no_skip_note_without_avoid_buggy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, "p.yaml", _pool("p", "192.0.2.0/24, 2001:db8::/120", extra=", avoid-buggy-ips: true"))
    assert main([path]) == 0
    out = capsys.readouterr().out
    assert "    size: 254 IPv4, 256 IPv6 addresses (2 ending in .0 or .255 skipped by avoid-buggy-ips)\n" in out
    path = _write(tmp_path, "q.yaml", _pool("q", "192.0.2.0/24"))
    assert main([path]) == 0
    assert "    size: 256 IPv4 addresses\n" in capsys.readouterr().out


# --- --show ----------------------------------------------------------------------------------------------

SHOW_INPUT = """\
peers:
- peer-address: 192.0.2.1
  peer-asn: 0x10
  my-asn: 010
  password: 0123456
  hold-time: 1m30s
  node-selectors: [null]
bgp-communities:
  yes: 64500:10
address-pools:
- name: 0123
  protocol: bgp
  addresses: [198.51.100.0/24]
  bgp-advertisements:
  -
  - communities: [yes]
"""


def test_show_prints_the_normalised_configuration(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "in.yaml", SHOW_INPUT)
    assert main(["--show", path]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out == textwrap.dedent(
        """\
        peers:
        - peer-address: 192.0.2.1
          peer-asn: 16
          my-asn: 8
          peer-port: 179
          hold-time: 90s
          keepalive-time: 30s
          password: <redacted, 7 characters>
          ebgp-multihop: false
          node-selectors:
          - {}
        bgp-communities:
          'yes': '64500:10'
        address-pools:
        - name: '0123'
          protocol: bgp
          addresses:
          - 198.51.100.0/24
          auto-assign: true
          avoid-buggy-ips: false
          bgp-advertisements:
          - aggregation-length: 32
            aggregation-length-v6: 128
          - aggregation-length: 32
            aggregation-length-v6: 128
            communities:
            - '64500:10'
        """
    )


@pytest.mark.parametrize("path", [CONFIGS / "metallb-v012-full.yaml", *EXAMPLES], ids=lambda p: p.name)
def test_show_output_reads_back_as_the_same_configuration(path: Path, tmp_path: Path) -> None:
    def without_passwords(cfg: Config) -> Config:
        return cfg.model_copy(update={"peers": tuple(p.model_copy(update={"password": None}) for p in cfg.peers)})

    cfg = load_file(str(path))
    again = parse_config(config_yaml(cfg))
    assert without_passwords(again) == without_passwords(cfg)
    assert [p.password is None for p in again.peers] == [p.password is None for p in cfg.peers]


def test_show_of_an_empty_configuration(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--show", _write(tmp_path, "e.yaml", "")]) == 0
    assert capsys.readouterr().out == "{}\n"


# --- through the CLI entry points -----------------------------------------------------------------------


def test_lbspeaker_config_check_uses_this_module(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["config", "check", *map(str, EXAMPLES)]) == 0
    assert capsys.readouterr().out.startswith("merged (3): ")
    assert cli_main(["config", "check", "--show", _write(tmp_path, "bad.yaml", BAD)]) == 1
    assert len(capsys.readouterr().err.splitlines()) == 3


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
        cwd=ROOT,
    )
    assert proc.returncode == code, proc.stderr
    if code == 0:
        assert proc.stdout.startswith("address pools (1):\n  default: layer2") and proc.stderr == ""
    else:
        assert proc.stdout == "" and len(proc.stderr.splitlines()) == 3


def test_stdin_through_a_real_pipe() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "lbspeaker.config.check", "--show", "-"],
        input=_configmap("peers: [{peer-address: 192.0.2.1, peer-asn: 1, my-asn: 2, password: 0x5ec7e7}]\n"),
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert "password: <redacted, 8 characters>" in proc.stdout and "0x5ec7e7" not in proc.stdout
