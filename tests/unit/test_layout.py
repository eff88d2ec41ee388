"""The repository's layout rules that import-linter cannot see: scripts under hack/ use the test kit,
never the tests, and the product's distribution carries neither."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[2]


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_hack_scripts_never_import_the_tests() -> None:
    scripts = sorted(ROOT.joinpath("hack").rglob("*.py"))
    assert scripts
    offenders = {str(p.relative_to(ROOT)): sorted(m for m in imported_modules(p) if m.split(".")[0] == "tests")
                 for p in scripts}
    assert {p: m for p, m in offenders.items() if m} == {}


def test_the_wheel_holds_only_the_product() -> None:
    project = tomllib.loads(ROOT.joinpath("pyproject.toml").read_text())
    include = project["tool"]["setuptools"]["packages"]["find"]["include"]
    assert sorted(include) == ["controller", "controller.*", "lbspeaker", "lbspeaker.*"]
    assert not ROOT.joinpath("lbspeaker", "testing").exists()
    runtime = " ".join(project["project"]["dependencies"])
    assert "scapy" not in runtime and "testkit" not in runtime
