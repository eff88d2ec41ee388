"""`lbspeaker config check` agrees with MetalLB v0.12.1 on every input of MetalLB's own parser test.

The cases (metallb_cases/, a copy of ../shared/metallb-v0.12-cases, see its README) are one file each:
good/ ones must pass (exit 0, a summary), bad/ ones must fail (exit 1) with messages that lead with the
field at fault, and no input may produce a traceback. Every file found is a test: adding a case adds a
test. Each case also runs through PyYAML's pure-Python parser (used when libyaml is missing).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lbspeaker.config import BgpAdvertisement, NodeSelector, load_file, parse_config, selects, yamlload
from lbspeaker.config.check import main
from lbspeaker.speaker.bgp import peers_for_node

CASES = Path(__file__).parent / "metallb_cases"
GOOD = sorted((CASES / "good").glob("*.yaml"))
BAD = sorted((CASES / "bad").glob("*.yaml"))
PARSERS = ["libyaml", "python"]

# The field each rejection must name: for the cases that lack `addresses` (MetalLB stops there), the
# field of the rule the case is about, since every error is reported at once. A case not listed here
# still has to name some field.
FIELD = {
    "02-invalid-yaml": "(top level)",
    "05-invalid-peer-address": "peers[0].peer-address",
    "06-invalid-my-asn": "peers[0].my-asn",
    "07-invalid-peer-asn": "peers[0].peer-asn",
    "08-invalid-ebgp-multihop": "peers[0].ebgp-multihop",
    "09-invalid-hold-time-wrong-format": "peers[0].hold-time",
    "10-invalid-hold-time-too-short": "peers[0].hold-time",
    "11-invalid-router-id": "peers[0].router-id",
    "13-invalid-label-node-selector-shape": "peers[0].node-selectors[0].match-labels.foo",
    "14-invalid-expression-node-selector-missing-key": "peers[0].node-selectors[0].match-expressions[0].key",
    "15-invalid-expression-node-selector-missing-operator": "peers[0].node-selectors[0].match-expressions[0].operator",
    "16-invalid-expression-node-selector-invalid-operator": "peers[0].node-selectors[0].match-expressions[0].operator",
    "17-invalid-router-id": "peers[0].router-id",
    "18-duplicate-peers": "peers[1]",
    "19-no-pool-name": "address-pools[0].name",
    "20-address-pool-with-no-addresses": "address-pools[0].addresses",
    "21-address-pool-with-no-protocol": "address-pools[0].protocol",
    "22-address-pool-with-unknown-protocol": "address-pools[0].protocol",
    "23-invalid-pool-cidr": "address-pools[0].addresses[0]",
    "24-invalid-pool-cidr-prefix-length": "address-pools[0].addresses[0]",
    "25-invalid-pool-cidr-first-address-of-the-range-is-after-the-second": "address-pools[0].addresses[0]",
    "28-bad-aggregation-length-too-long": "address-pools[0].bgp-advertisements[0].aggregation-length",
    "29-bad-aggregation-length-incompatible-with-cidr": "address-pools[0].bgp-advertisements[0].aggregation-length",
    "31-aggregation-length-by-range-too-wide": "address-pools[0].bgp-advertisements[0].aggregation-length",
    "32-bad-community-literal-wrong-format": "address-pools[0].bgp-advertisements[0].communities[0]",
    "33-bad-community-literal-asn-part-doesnt-fit": "address-pools[0].bgp-advertisements[0].communities[0]",
    "34-bad-community-literal-community-part-doesnt-fit": "address-pools[0].bgp-advertisements[0].communities[0]",
    "35-bad-community-ref-unknown-ref": "address-pools[0].bgp-advertisements[0].communities[0]",
    "36-bad-community-ref-ref-asn-doesnt-fit": "bgp-communities.flarb",
    "37-bad-community-ref-ref-community-doesnt-fit": "bgp-communities.flarb",
    "38-duplicate-pool-definition": "address-pools[1].name",
    "39-duplicate-cidrs": "address-pools[1].addresses[0]",
    "40-overlapping-cidrs": "address-pools[1].addresses[0]",
    "41-bgp-advertisements-in-layer2-pool": "address-pools[0].bgp-advertisements",
    "43-peer-with-non-existing-bfd-profile": "peers[0].bfd-profile",
    "44-multiple-bfd-profiles-with-the-same-name": "bfd-profiles[2].name",
    "46-bfd-profile-with-too-low-receive-interval": "bfd-profiles[0].receive-interval",
    "47-bfd-profile-with-too-high-range-receive-interval": "bfd-profiles[0].receive-interval",
    "48-duplicate-bgp-advertisment-definition": "address-pools[0].bgp-advertisements[1]",
    "49-duplicate-communities-definition": "address-pools[0].bgp-advertisements[0].communities",
}
# "<file>: <field path>: <what>" where the path starts at a section (or is the whole document).
_FIELD_MESSAGE = re.compile(r"^[^:]+: (\(top level\)|(peers|address-pools|bgp-communities|bfd-profiles)\b\S*): \S")


@pytest.fixture(params=PARSERS)
def parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "python":
        monkeypatch.setattr(yamlload, "_Loader", yamlload._PyLoader)
    return str(request.param)


def test_every_case_file_is_collected() -> None:
    # MetalLB v0.12.1's TestParse has 49 inputs; a lost directory must not pass as "nothing to check".
    assert len(GOOD) + len(BAD) == 49
    assert set(FIELD) <= {p.stem for p in BAD}


def _check(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main([str(path)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.stem)
def test_metallb_accepts_so_do_we(path: Path, parser: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _check(path, capsys)
    assert code == 0, err
    assert err == ""
    assert out.startswith("address pools (")


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_metallb_rejects_so_do_we_naming_the_field(path: Path, parser: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _check(path, capsys)
    assert code == 1, out
    assert out == ""
    lines = err.splitlines()
    assert lines and "Traceback" not in err
    assert all(line.startswith(f"{path}: ") for line in lines), lines
    assert all(_FIELD_MESSAGE.match(line) for line in lines), lines
    field = FIELD.get(path.stem)
    if field is not None:
        assert any(line.startswith(f"{path}: {field}: ") for line in lines), (field, lines)


def test_simple_advertisement_is_one_advertisement_with_every_default() -> None:
    cfg = load_file(str(CASES / "good" / "26-simple-advertisement.yaml"))
    assert cfg.address_pools[0].bgp_advertisements == (BgpAdvertisement(),)


def test_a_null_node_selector_selects_every_node() -> None:
    cfg = parse_config(
        "peers:\n- {peer-address: 192.0.2.1, peer-asn: 64501, my-asn: 64500, node-selectors: [null]}\n"
        "address-pools:\n- {name: p, protocol: layer2, addresses: [192.0.2.0/24], node-selectors: [~]}\n"
    )
    (peer,) = cfg.peers
    assert peer.node_selectors == (NodeSelector(),)
    assert selects(peer.node_selectors, {}) and selects(peer.node_selectors, {"kubernetes.io/hostname": "n1"})
    assert selects(cfg.address_pools[0].node_selectors, {"rack": "a"})
    peers, problems = peers_for_node(cfg, "n1", {"rack": "a"}, {}, "192.0.2.11")
    assert [p.peer_address for p in peers] == ["192.0.2.1"] and problems == []
