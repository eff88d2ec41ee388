"""ConfigMaps: parse_configmap, merge_configs across sources, load_file on manifests and bare YAML."""

from __future__ import annotations

import ipaddress
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from lbspeaker.config import Config, ConfigError, load_file, merge_configs, parse_config, parse_configmap, summarize

CONFIGS = Path(__file__).parent / "configs"


def _configmap(config: str, name: str = "config", namespace: str | None = "lbspeaker-system") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"config": textwrap.dedent(config)}}


def _pool(name: str, addresses: str, protocol: str = "layer2") -> str:
    return f"- {{name: {name}, protocol: {protocol}, addresses: [{addresses}]}}\n"


# --- parse_configmap ---------------------------------------------------------------------------------------


def test_parse_configmap_labels_errors_with_namespace_and_name() -> None:
    cm = _configmap("address-pools:\n" + _pool("a", "198.51.100.0/33"))
    with pytest.raises(ConfigError) as info:
        parse_configmap(cm)
    (error,) = info.value.errors
    assert error.startswith("lbspeaker-system/config: address-pools[0].addresses[0]: invalid CIDR '198.51.100.0/33'")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"data": {}}, "lbspeaker-system/config: data.config: required key is missing"),
        ({"data": None}, "lbspeaker-system/config: data.config: required key is missing"),
        (
            {"data": {"config": {"address-pools": []}}},
            "lbspeaker-system/config: data.config: expected the configuration as a string",
        ),
        ({"kind": "Secret"}, "lbspeaker-system/config: kind: expected ConfigMap, got 'Secret'"),
    ],
)
def test_parse_configmap_shape_errors(change: dict[str, Any], expected: str) -> None:
    cm = {**_configmap(""), **change}
    with pytest.raises(ConfigError) as info:
        parse_configmap(cm)
    (error,) = info.value.errors
    assert error.startswith(expected)


def test_parse_configmap_with_empty_config_and_no_namespace() -> None:
    assert parse_configmap(_configmap("", namespace=None)) == Config()
    with pytest.raises(ConfigError, match=r"^extra: peers: expected a list"):
        parse_configmap(_configmap("peers: 1", name="extra", namespace=None))


# --- merge_configs -----------------------------------------------------------------------------------------


def _cfg(text: str) -> Config:
    return parse_config(textwrap.dedent(text))


def test_merge_concatenates_in_the_given_order() -> None:
    main = _cfg(
        "bgp-communities: {na: '65535:65282'}\naddress-pools:\n" + _pool("a", "192.0.2.0/25") + "peers:\n"
        "- {peer-address: 192.0.2.251, peer-asn: 1, my-asn: 2}\n"
    )
    extra = _cfg(
        "bgp-communities: {na: '65535:65282', metro: '1:2'}\naddress-pools:\n"
        + _pool("b", "192.0.2.128/25")
        + "peers:\n"
        "- {peer-address: 192.0.2.252, peer-asn: 1, my-asn: 2}\n"
    )
    merged = merge_configs([("ns/config", main), ("ns/extra", extra)])
    assert [p.name for p in merged.address_pools] == ["a", "b"]
    assert [p.peer_address for p in merged.peers] == ["192.0.2.251", "192.0.2.252"]
    assert merged.bgp_communities == {"na": "65535:65282", "metro": "1:2"}
    assert merge_configs([("only", main)]) is main
    assert merge_configs([]) == Config()


def test_merge_conflicts_name_both_sources() -> None:
    main = _cfg(
        "bgp-communities: {na: '65535:65282'}\n"
        "bfd-profiles: [{name: fast, detect-multiplier: 3}]\n"
        "peers:\n- {peer-address: 192.0.2.251, peer-asn: 1, my-asn: 2}\n"
        "address-pools:\n" + _pool("a", "192.0.2.0/24") + _pool("c", "203.0.113.0/24")
    )
    extra = _cfg(
        "bgp-communities: {na: '65535:65281'}\n"
        "bfd-profiles: [{name: fast, detect-multiplier: 5}]\n"
        "peers:\n- {peer-address: 192.0.2.251, peer-asn: 7, my-asn: 2}\n"
        "address-pools:\n" + _pool("a", "198.51.100.0/24") + _pool("b", "203.0.113.200-203.0.113.210")
    )
    with pytest.raises(ConfigError) as info:
        merge_configs([("ns/config", main), ("ns/extra", extra)])
    assert sorted(info.value.errors) == sorted(
        [
            "ns/extra: bgp-communities.na: '65535:65281' conflicts with '65535:65282' given to the same alias in "
            "ns/config",
            "ns/extra: address-pools[0].name: duplicate pool name 'a', already defined at address-pools[0] in "
            "ns/config",
            "ns/extra: address-pools[1].addresses[0]: '203.0.113.200-203.0.113.210' of pool 'b' overlaps "
            "'203.0.113.0/24' of pool 'c' (address-pools[1].addresses[0] in ns/config); both contain 203.0.113.200",
            "ns/extra: peers[0]: duplicate of peers[0] in ns/config: same peer-address 192.0.2.251, peer-port 179, "
            "source-address and node-selectors",
            "ns/extra: bfd-profiles[0].name: duplicate bfd profile name 'fast', already defined at bfd-profiles[0] "
            "in ns/config",
        ]
    )


def test_merge_names_the_earlier_source_even_when_its_range_starts_later() -> None:
    # The sweep meets the later source's range first; the message must still blame the later definition.
    first = _cfg("address-pools:\n" + _pool("a", "192.0.2.100-192.0.2.200"))
    second = _cfg("address-pools:\n" + _pool("b", "192.0.2.0/25"))
    with pytest.raises(ConfigError) as info:
        merge_configs([("ns/first", first), ("ns/second", second)])
    (error,) = info.value.errors
    assert error.startswith("ns/second: address-pools[0].addresses[0]: '192.0.2.0/25' of pool 'b' overlaps")
    assert "of pool 'a' (address-pools[0].addresses[0] in ns/first); both contain 192.0.2.100" in error


def test_identical_bfd_profile_in_two_sources_is_fine() -> None:
    part = _cfg("bfd-profiles: [{name: fast}]\n")
    assert [p.name for p in merge_configs([("x", part), ("y", part)]).bfd_profiles] == ["fast"]


_OFFSETS = st.tuples(st.integers(0, 24), st.integers(0, 12)).map(lambda t: (t[0], t[0] + t[1]))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(_OFFSETS, min_size=1, max_size=3), min_size=1, max_size=4))
def test_overlap_is_reported_exactly_when_two_entries_share_an_address(pools: list[list[tuple[int, int]]]) -> None:
    base = int(ipaddress.IPv4Address("192.0.2.0"))

    def text(lo: int, hi: int) -> str:
        return f"{ipaddress.IPv4Address(base + lo)}-{ipaddress.IPv4Address(base + hi)}"

    doc = "address-pools:\n" + "".join(
        _pool(f"p{i}", ", ".join(text(lo, hi) for lo, hi in entries)) for i, entries in enumerate(pools)
    )
    entries = [(f"address-pools[{i}].addresses[{j}]", e) for i, p in enumerate(pools) for j, e in enumerate(p)]
    overlapping = {
        path
        for path, (lo, hi) in entries
        for other, (olo, ohi) in entries
        if other != path and max(lo, olo) <= min(hi, ohi)
    }
    try:
        parse_config(doc)
    except ConfigError as exc:
        assert overlapping, exc.errors
        assert all("overlaps" in e for e in exc.errors)
        # Every entry involved in an overlap is named, as the entry at fault or as the one it overlaps.
        reported = "\n".join(exc.errors)
        assert all(path in reported for path in overlapping), (sorted(overlapping), exc.errors)
    else:
        assert not overlapping


# --- load_file ---------------------------------------------------------------------------------------------


def test_full_metallb_v012_manifest_loads_unchanged() -> None:
    cfg = load_file(str(CONFIGS / "metallb-v012-full.yaml"))
    with open(CONFIGS / "metallb-v012-full.yaml") as f:
        assert parse_configmap(yaml.safe_load(f)) == cfg

    first, second = cfg.peers
    assert (first.peer_address, first.peer_asn, first.my_asn, first.peer_port) == ("192.0.2.251", 64501, 64500, 1179)
    assert (first.hold_time, first.keepalive_time) == (120.0, 30.0)
    assert (first.router_id, first.source_address, first.password) == ("192.0.2.252", "192.0.2.252", "yourPassword")
    assert (first.bfd_profile, first.ebgp_multihop) == ("bfdprofile1", True)
    assert first.node_selectors[0].matches({"rack": "frontend", "network-speed": "fast"})
    assert first.node_selectors[1].matches({"kubernetes.io/hostname": "hostB"})
    assert (second.peer_address, second.hold_time, second.keepalive_time) == ("2001:db8::1", 90.0, 30.0)

    assert cfg.bgp_communities == {"no-advertise": "65535:65282", "metro": "64500:10"}
    (profile,) = cfg.bfd_profiles
    assert (profile.name, profile.detect_multiplier, profile.echo_interval, profile.minimum_ttl) == (
        "bfdprofile1",
        5,
        62,
        254,
    )

    default, expensive, l2 = cfg.address_pools
    assert default.addresses == ("198.51.100.0/24", "2001:db8:1::/64")
    assert [(a.aggregation_length, a.aggregation_length_v6, a.localpref) for a in default.bgp_advertisements] == [
        (32, 128, 100),
        (24, 64, None),
    ]
    assert default.bgp_advertisements[0].communities == ("65535:65282", "64500:10")
    assert default.bgp_advertisements[1].communities == ("65535:65281",)
    assert (expensive.auto_assign, len(expensive.bgp_advertisements)) == (False, 1)
    assert (l2.protocol, l2.avoid_buggy_ips, l2.ipset.size(4)) == ("layer2", True, 11)

    summary = summarize(cfg)
    assert "BFD profile bfdprofile1 (multihop, UDP 4784)" in summary
    assert ("  bfdprofile1: receive 179 ms, transmit 180 ms, multiplier 5 (peer down after 895 ms or more of silence), "
            "passive no, minimum TTL 254 (multihop)") in summary
    assert "not supported" not in summary
    echo = summarize(cfg.model_copy(update={"bfd_profiles": (profile.model_copy(update={"echo_mode": True}),)}))
    assert "bfd profile 'bfdprofile1': echo-mode is not supported; its sessions run in asynchronous mode only" in echo
    assert "size: 256 IPv4, 18446744073709551616 IPv6 addresses" in summary
    assert "yourPassword" not in summary


def test_multi_document_manifest_merges_every_configmap_and_skips_other_kinds() -> None:
    cfg = load_file(str(CONFIGS / "multi.yaml"))
    assert [p.name for p in cfg.address_pools] == ["lan", "public"]
    (peer,) = cfg.peers
    assert peer.password_secret is not None and peer.password_secret.name == "bgp-secret"
    assert cfg.address_pools[1].bgp_advertisements[0].communities == ("65535:65282",)


def test_bare_config_file() -> None:
    cfg = load_file(str(CONFIGS / "bare.yaml"))
    (pool,) = cfg.address_pools
    assert (pool.ipset.size(4), pool.ipset.size(6)) == (11, 256)
    assert pool.node_selectors[0].match_labels == {"node-role.kubernetes.io/edge": ""}


def test_errors_of_every_configmap_in_a_file_are_reported(tmp_path: Path) -> None:
    docs = [
        _configmap("address-pools:\n" + _pool("a", "192.0.2.0/24")),
        _configmap("address-pools:\n" + _pool("b", "bogus"), name="b"),
        _configmap("peers: [{peer-address: x, peer-asn: 1, my-asn: 2}]", name="c"),
    ]
    path = tmp_path / "cms.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    with pytest.raises(ConfigError) as info:
        load_file(str(path))
    assert [e.split(":", 2)[:2] for e in info.value.errors] == [
        ["lbspeaker-system/b", " address-pools[0].addresses[0]"],
        ["lbspeaker-system/c", " peers[0].peer-address"],
    ]


def test_conflicts_between_configmaps_of_one_file(tmp_path: Path) -> None:
    docs = [
        _configmap("address-pools:\n" + _pool("a", "192.0.2.0/24")),
        _configmap("address-pools:\n" + _pool("a", "198.51.100.0/24"), name="x"),
    ]
    path = tmp_path / "cms.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    with pytest.raises(
        ConfigError, match=r"^lbspeaker-system/x: .*duplicate pool name 'a'.* in lbspeaker-system/config"
    ):
        load_file(str(path))


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("address-pools: [\n", "invalid YAML"),
        ("peers: []\n---\naddress-pools: []\n", "2 YAML documents and no ConfigMap"),
        ("apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n", "no ConfigMap in this file"),
        ("kind: ConfigMap\nmetadata: {name: c}\ndata: {config: ''}\n---\npeers: []\n", "document 2: not a Kubernetes"),
    ],
)
def test_bad_files(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "f.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError) as info:
        load_file(str(path))
    assert any(e.startswith(f"{path}: ") and expected in e for e in info.value.errors), info.value.errors


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"address-pools: []\n# caf\xe9\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_file(str(path))


def test_missing_file_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_file(str(tmp_path / "nope.yaml"))
    assert not os.path.exists(tmp_path / "nope.yaml")
