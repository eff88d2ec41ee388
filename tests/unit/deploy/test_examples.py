"""The example pool ConfigMaps in deploy/examples/ are valid, and valid together."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from lbspeaker.config import load_file
from lbspeaker.config.cluster import config_sources, load_config

EXAMPLES = sorted((Path(__file__).parents[3] / "deploy" / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_each_example_is_valid(path: Path) -> None:
    cfg = load_file(str(path))
    assert cfg.address_pools, f"{path.name} defines no pool"


def test_examples_merge_without_conflict() -> None:
    assert len(EXAMPLES) >= 3
    cms = [yaml.safe_load(p.read_text()) for p in EXAMPLES]
    sources = config_sources(cms, "config")
    assert sources[0]["metadata"]["name"] == "config"
    cfg, errors = load_config(sources)
    assert errors == [] and cfg is not None
    assert {p.protocol for p in cfg.address_pools} == {"layer2", "bgp"}
    assert any(len(p.ipset.families) == 2 for p in cfg.address_pools), "a dual-stack pool is shown"


def test_secrets_the_examples_ask_for_are_the_ones_they_use() -> None:
    """An example that tells to create a Secret references exactly that Secret (name and key), and the
    other way round: no instruction for a Secret the config never reads, no Secret read without one."""
    for path in EXAMPLES:
        told = {(m.group(1), m.group(2)) for m in re.finditer(
            r"create secret generic (\S+) --from-literal=([\w.-]+)=", path.read_text())}
        cfg = load_file(str(path))
        used = {(p.password_secret.name, p.password_secret.key) for p in cfg.peers if p.password_secret}
        assert told == used, path.name
