"""parse_config: valid MetalLB v0.12 documents, defaults, YAML typing quirks, and malformed documents."""

from __future__ import annotations

import textwrap

import pytest

from lbspeaker.config import BgpAdvertisement, Config, ConfigError, parse_config


def _parse(text: str) -> Config:
    return parse_config(textwrap.dedent(text))


def _errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(textwrap.dedent(text))
    assert info.value.errors, "ConfigError without messages"
    assert str(info.value) == "\n".join(info.value.errors)
    return info.value.errors


POOL = "address-pools:\n- name: a\n  protocol: layer2\n  addresses: [192.0.2.0/24]\n"
BGP_POOL = "address-pools:\n- name: a\n  protocol: bgp\n  addresses: [192.0.2.0/24]\n"
PEER = "peers:\n- peer-address: 203.0.113.1\n  peer-asn: 64501\n  my-asn: 64500\n"


# --- valid documents --------------------------------------------------------------------------------


def test_empty_document_is_an_empty_config() -> None:
    assert parse_config("") == Config()
    assert parse_config("# nothing configured yet\n") == Config()


def test_layer2_pool_defaults() -> None:
    cfg = _parse(POOL)
    (pool,) = cfg.address_pools
    assert (pool.name, pool.protocol, pool.addresses) == ("a", "layer2", ("192.0.2.0/24",))
    assert pool.auto_assign is True
    assert pool.avoid_buggy_ips is False
    assert pool.bgp_advertisements == ()
    assert pool.node_selectors == ()
    assert cfg.pool("a") is pool
    assert cfg.pool("b") is None


def test_bgp_pool_without_advertisements_gets_metallbs_default() -> None:
    (pool,) = _parse(BGP_POOL).address_pools
    assert pool.bgp_advertisements == (BgpAdvertisement(),)
    (adv,) = pool.bgp_advertisements
    assert (adv.aggregation_length, adv.aggregation_length_v6, adv.localpref) == (32, 128, None)
    assert (adv.communities, adv.large_communities) == ((), ())


def test_peer_defaults() -> None:
    (peer,) = _parse(PEER).peers
    assert (peer.peer_address, peer.peer_asn, peer.my_asn) == ("203.0.113.1", 64501, 64500)
    assert peer.peer_port == 179
    assert peer.hold_time == 90.0
    assert peer.keepalive_time == 30.0
    assert peer.router_id is None and peer.source_address is None
    assert peer.password is None and peer.password_secret is None
    assert peer.ebgp_multihop is False
    assert peer.node_selectors == () and peer.bfd_profile is None


def test_peer_timers_and_port_zero_like_go() -> None:
    cfg = _parse(
        """\
        peers:
        - {peer-address: 203.0.113.1, peer-asn: 1, my-asn: 2, hold-time: 1m30s, keepalive-time: 10s}
        - {peer-address: 203.0.113.2, peer-asn: 1, my-asn: 2, hold-time: 0, peer-port: 0}
        - {peer-address: 203.0.113.3, peer-asn: 1, my-asn: 2, hold-time: 4.9s}
        """
    )
    first, second, third = cfg.peers
    assert (first.hold_time, first.keepalive_time) == (90.0, 10.0)
    # hold-time 0 (a YAML number, which Go's time.ParseDuration accepts as "0") disables keepalives;
    # peer-port 0 is Go's zero value, i.e. "not set".
    assert (second.hold_time, second.keepalive_time, second.peer_port) == (0.0, 0.0, 179)
    # BGP timers are whole seconds: MetalLB rounds down, and the default keepalive is a third.
    assert (third.hold_time, third.keepalive_time) == (4.0, 1.0)


def test_extensions_parse() -> None:
    cfg = _parse(
        """\
        peers:
        - peer-address: 2001:db8::1
          peer-asn: 64501
          my-asn: 64500
          password-secret: {name: bgp-secret, key: md5}
        address-pools:
        - name: edge
          protocol: bgp
          addresses: [2001:db8:5::/64]
          bgp-advertisements:
          - aggregation-length-v6: 64
            large-communities: ["64500:1:2", "4294967295:0:007"]
          node-selectors:
          - match-expressions: [{key: edge, operator: Exists}]
        """
    )
    (peer,) = cfg.peers
    assert peer.password_secret is not None
    assert (peer.password_secret.name, peer.password_secret.key) == ("bgp-secret", "md5")
    (pool,) = cfg.address_pools
    assert pool.bgp_advertisements[0].large_communities == ("64500:1:2", "4294967295:0:7")
    assert pool.node_selectors[0].matches({"edge": "yes"})
    assert not pool.node_selectors[0].matches({"core": "yes"})


def test_password_secret_key_defaults_to_password() -> None:
    (peer,) = _parse(PEER + "  password-secret: {name: bgp}\n").peers
    assert peer.password_secret is not None and peer.password_secret.key == "password"


def test_communities_are_resolved_and_normalised() -> None:
    cfg = _parse(
        """\
        bgp-communities:
          no-advertise: 65535:65282
          metro: "064500:010"
        address-pools:
        - name: a
          protocol: bgp
          addresses: [198.51.100.0/24]
          bgp-advertisements:
          - communities: [no-advertise, metro, "1:2"]
        """
    )
    assert cfg.bgp_communities == {"no-advertise": "65535:65282", "metro": "64500:10"}
    assert cfg.address_pools[0].bgp_advertisements[0].communities == ("65535:65282", "64500:10", "1:2")


def test_aggregation_length_follows_metallbs_widest_prefix_rule() -> None:
    # 192.0.2.1-192.0.2.6 is covered by .1/32, .2/31, .4/31, .6/32: the widest block is a /31.
    ok = BGP_POOL.replace("192.0.2.0/24", "192.0.2.1-192.0.2.6") + "  bgp-advertisements: [{aggregation-length: 31}]\n"
    assert _parse(ok).address_pools[0].bgp_advertisements[0].aggregation_length == 31
    errors = _errors(ok.replace("aggregation-length: 31", "aggregation-length: 30"))
    assert errors == [
        "address-pools[0].bgp-advertisements[0].aggregation-length: 30 is shorter than /31, the widest prefix of "
        "'192.0.2.1-192.0.2.6' (addresses[0]); a /30 route would cover addresses outside the pool"
    ]


def test_single_address_range_and_host_bits_are_accepted() -> None:
    cfg = _parse(POOL.replace("192.0.2.0/24", "192.0.2.7-192.0.2.7, 192.0.2.9, 192.0.2.17/28"))
    assert cfg.address_pools[0].ipset.size(4) == 1 + 1 + 16


def test_ipset_is_cached_and_equality_ignores_the_cache() -> None:
    first, second = _parse(POOL).address_pools[0], _parse(POOL).address_pools[0]
    assert first.ipset is first.ipset
    assert "192.0.2.200" in first.ipset and "192.0.3.1" not in first.ipset
    assert first == second


# --- YAML typing: as permissive as MetalLB's Go decoder, no more ------------------------------------


def test_unquoted_community_is_not_a_base60_number() -> None:
    # PyYAML alone reads 64500:10 as the YAML 1.1 sexagesimal integer 3870010; Go reads a string.
    cfg = _parse("bgp-communities:\n  metro: 64500:10\n")
    assert cfg.bgp_communities == {"metro": "64500:10"}


def test_yaml_11_booleans_numbers_as_names_and_nulls() -> None:
    cfg = _parse(
        """\
        peers: ~
        address-pools:
        - name: 123
          protocol: layer2
          addresses: [192.0.2.0/24]
          auto-assign: no
          avoid-buggy-ips: yes
        - name: 2024-01-01
          protocol: layer2
          addresses: [198.51.100.0/24]
          auto-assign: ~
        """
    )
    first, second = cfg.address_pools
    assert (first.name, first.auto_assign, first.avoid_buggy_ips) == ("123", False, True)
    # A date-like name stays text, and null means "not set", so the default applies.
    assert (second.name, second.auto_assign) == ("2024-01-01", True)
    assert cfg.peers == ()


# --- malformed documents: (yaml, path the message names, bad value the message names) ---------------

MALFORMED: list[tuple[str, str, str, str]] = [
    # id, document, expected path, expected value
    ("yaml-syntax", "address-pools: [\n", "invalid YAML", "line 2"),
    ("yaml-duplicate-key", POOL + "  name: b\n", "line 5", "'name'"),
    ("top-level-list", "- name: a\n", "(top level)", "a list"),
    ("unknown-top-key", "adress-pools: []\n", "adress-pools", "did you mean 'address-pools'"),
    ("unknown-pool-key-snake-case", POOL + "  auto_assign: true\n", "address-pools[0].auto_assign", "'auto_assign'"),
    ("unknown-pool-key-null", POOL + "  colour: ~\n", "address-pools[0].colour", "'colour'"),
    ("unknown-peer-key", PEER + "  hold_time: 90s\n", "peers[0].hold_time", "'hold_time'"),
    (
        "unknown-advertisement-key",
        BGP_POOL + "  bgp-advertisements: [{aggregation-lenght: 24}]\n",
        "address-pools[0].bgp-advertisements[0].aggregation-lenght",
        "did you mean 'aggregation-length'",
    ),
    (
        "unknown-selector-key",
        PEER + "  node-selectors: [{matchLabels: {a: b}}]\n",
        "peers[0].node-selectors[0].matchLabels",
        "'matchLabels'",
    ),
    (
        "unknown-expression-key",
        PEER + "  node-selectors: [{match-expressions: [{key: a, operator: In, value: [b]}]}]\n",
        "peers[0].node-selectors[0].match-expressions[0].value",
        "'value'",
    ),
    (
        "unknown-bfd-key",
        "bfd-profiles: [{name: p, echo-receive-interval: 20}]\n",
        "bfd-profiles[0].echo-receive-interval",
        "'echo-receive-interval'",
    ),
    (
        "unknown-secret-ref-key",
        PEER + "  password-secret: {name: s, namespace: other}\n",
        "peers[0].password-secret.namespace",
        "'namespace'",
    ),
    ("peers-not-a-list", "peers: {peer-address: 203.0.113.1}\n", "peers", "a mapping"),
    (
        "addresses-not-a-list",
        POOL.replace("[192.0.2.0/24]", "192.0.2.0/24"),
        "address-pools[0].addresses",
        "'192.0.2.0/24'",
    ),
    ("bad-cidr", POOL.replace("192.0.2.0/24", "203.0.113.0/33"), "address-pools[0].addresses[0]", "'203.0.113.0/33'"),
    ("bad-address", POOL.replace("192.0.2.0/24", "banana"), "address-pools[0].addresses[0]", "'banana'"),
    (
        "reversed-range",
        POOL.replace("192.0.2.0/24", "192.0.2.0/24, 203.0.113.9-203.0.113.1"),
        "address-pools[0].addresses[1]",
        "'203.0.113.9-203.0.113.1'",
    ),
    (
        "mixed-family-range",
        POOL.replace("192.0.2.0/24", "203.0.113.1-2001:db8::1"),
        "address-pools[0].addresses[0]",
        "mixes IPv4 and IPv6",
    ),
    ("no-addresses", POOL.replace("[192.0.2.0/24]", "[]"), "address-pools[0].addresses", "at least one"),
    ("missing-protocol", POOL.replace("  protocol: layer2\n", ""), "address-pools[0].protocol", "missing"),
    ("bad-protocol", POOL.replace("layer2", "layer3"), "address-pools[0].protocol", "'layer3'"),
    ("missing-name", POOL.replace("- name: a\n  protocol", "- protocol"), "address-pools[0].name", "missing"),
    ("empty-name", POOL.replace("name: a", 'name: ""'), "address-pools[0].name", "empty"),
    (
        "duplicate-pool-name",
        POOL + "- name: a\n  protocol: layer2\n  addresses: [198.51.100.0/24]\n",
        "address-pools[1].name",
        "'a'",
    ),
    (
        "overlapping-pools",
        POOL + "- name: b\n  protocol: layer2\n  addresses: [192.0.2.128/25]\n",
        "address-pools[1].addresses[0]",
        "'192.0.2.128/25' of pool 'b' overlaps '192.0.2.0/24' of pool 'a' (address-pools[0].addresses[0]); "
        "both contain 192.0.2.128",
    ),
    (
        "overlap-inside-a-pool",
        POOL.replace("192.0.2.0/24", "192.0.2.0/24, 192.0.2.10-192.0.2.12"),
        "address-pools[0].addresses[1]",
        "both contain 192.0.2.10",
    ),
    (
        "advertisements-on-layer2",
        POOL + "  bgp-advertisements: [{aggregation-length: 32}]\n",
        "address-pools[0].bgp-advertisements",
        "pool 'a' is layer2",
    ),
    (
        "aggregation-shorter-than-cidr",
        BGP_POOL.replace("/24", "/25") + "  bgp-advertisements: [{aggregation-length: 24}]\n",
        "address-pools[0].bgp-advertisements[0].aggregation-length",
        "24 is shorter than /25",
    ),
    (
        "aggregation-over-32",
        BGP_POOL + "  bgp-advertisements: [{aggregation-length: 33}]\n",
        "address-pools[0].bgp-advertisements[0].aggregation-length",
        "got 33",
    ),
    (
        "aggregation-v6-over-128",
        BGP_POOL + "  bgp-advertisements: [{aggregation-length-v6: 129}]\n",
        "address-pools[0].bgp-advertisements[0].aggregation-length-v6",
        "got 129",
    ),
    (
        "aggregation-v6-shorter-than-cidr",
        BGP_POOL.replace("192.0.2.0/24", "2001:db8::/64") + "  bgp-advertisements: [{aggregation-length-v6: 48}]\n",
        "address-pools[0].bgp-advertisements[0].aggregation-length-v6",
        "48 is shorter than /64",
    ),
    (
        "community-part-too-big",
        BGP_POOL + "  bgp-advertisements: [{communities: ['70000:1']}]\n",
        "address-pools[0].bgp-advertisements[0].communities[0]",
        "'70000'",
    ),
    (
        "community-three-parts",
        BGP_POOL + "  bgp-advertisements: [{communities: ['1:2:3']}]\n",
        "address-pools[0].bgp-advertisements[0].communities[0]",
        "'1:2:3'",
    ),
    (
        "undefined-community-alias",
        BGP_POOL + "  bgp-advertisements: [{communities: [no-export]}]\n",
        "address-pools[0].bgp-advertisements[0].communities[0]",
        "'no-export'",
    ),
    (
        "repeated-community",
        "bgp-communities: {na: '65535:65282'}\n"
        + BGP_POOL
        + "  bgp-advertisements: [{communities: [na, '65535:65282']}]\n",
        "address-pools[0].bgp-advertisements[0].communities",
        "65535:65282",
    ),
    ("bad-community-definition", "bgp-communities: {foo: '1234'}\n", "bgp-communities.foo", "'1234'"),
    (
        "bad-large-community",
        BGP_POOL + "  bgp-advertisements: [{large-communities: ['1:2']}]\n",
        "address-pools[0].bgp-advertisements[0].large-communities[0]",
        "'1:2'",
    ),
    (
        "large-community-part-too-big",
        BGP_POOL + "  bgp-advertisements: [{large-communities: ['1:2:4294967296']}]\n",
        "address-pools[0].bgp-advertisements[0].large-communities[0]",
        "'4294967296'",
    ),
    (
        "duplicate-advertisement",
        BGP_POOL + "  bgp-advertisements: [{localpref: 5}, {localpref: 5}]\n",
        "address-pools[0].bgp-advertisements[1]",
        "same as bgp-advertisements[0]",
    ),
    (
        "negative-localpref",
        BGP_POOL + "  bgp-advertisements: [{localpref: -1}]\n",
        "address-pools[0].bgp-advertisements[0].localpref",
        "got -1",
    ),
    ("auto-assign-quoted-yes", POOL + '  auto-assign: "yes"\n', "address-pools[0].auto-assign", "got 'yes'"),
    ("avoid-buggy-ips-number", POOL + "  avoid-buggy-ips: 1\n", "address-pools[0].avoid-buggy-ips", "got 1"),
    ("hold-time-1s", PEER + "  hold-time: 1s\n", "peers[0].hold-time", "'1s'"),
    ("hold-time-no-unit", PEER + '  hold-time: "90"\n', "peers[0].hold-time", "missing unit"),
    ("hold-time-number", PEER + "  hold-time: 90\n", "peers[0].hold-time", "'90': missing unit"),
    ("hold-time-list", PEER + "  hold-time: [90s]\n", "peers[0].hold-time", "a list ['90s']"),
    ("hold-time-garbage", PEER + "  hold-time: soon\n", "peers[0].hold-time", "'soon'"),
    ("hold-time-too-long", PEER + "  hold-time: 24h\n", "peers[0].hold-time", "'24h'"),
    (
        "keepalive-not-below-hold",
        PEER + "  hold-time: 90s\n  keepalive-time: 90s\n",
        "peers[0].keepalive-time",
        "90s must be shorter than hold-time 90s",
    ),
    ("keepalive-with-hold-0", PEER + "  hold-time: 0s\n  keepalive-time: 5s\n", "peers[0].keepalive-time", "5s"),
    (
        "keepalive-0-with-hold",
        PEER + "  hold-time: 90s\n  keepalive-time: 0s\n",
        "peers[0].keepalive-time",
        "0s sends no keepalives",
    ),
    ("asn-zero", PEER.replace("64501", "0"), "peers[0].peer-asn", "got 0"),
    ("asn-too-big", PEER.replace("64500", "4294967296"), "peers[0].my-asn", "4294967296"),
    ("asn-quoted", PEER.replace("64500", '"64500"'), "peers[0].my-asn", "'64500'"),
    ("missing-my-asn", PEER.replace("  my-asn: 64500\n", ""), "peers[0].my-asn", "missing"),
    ("bad-peer-address", PEER.replace("203.0.113.1", "203.0.113.256"), "peers[0].peer-address", "'203.0.113.256'"),
    ("peer-port-too-big", PEER + "  peer-port: 70000\n", "peers[0].peer-port", "70000"),
    ("router-id-ipv6", PEER + "  router-id: 2001:db8::1\n", "peers[0].router-id", "'2001:db8::1'"),
    ("bad-source-address", PEER + "  source-address: here\n", "peers[0].source-address", "'here'"),
    (
        "source-address-other-family",
        PEER + "  source-address: 2001:db8::2\n",
        "peers[0].source-address",
        "'2001:db8::2'",
    ),
    (
        "password-and-secret",
        PEER + "  password: x\n  password-secret: {name: s}\n",
        "peers[0].password-secret",
        "password",
    ),
    (
        "ebgp-multihop-on-ibgp",
        PEER.replace("64501", "64500") + "  ebgp-multihop: true\n",
        "peers[0].ebgp-multihop",
        "64500",
    ),
    ("undefined-bfd-profile", PEER + "  bfd-profile: fast\n", "peers[0].bfd-profile", "'fast'"),
    (
        "bfd-multiplier-range",
        "bfd-profiles: [{name: p, detect-multiplier: 1}]\n",
        "bfd-profiles[0].detect-multiplier",
        "got 1",
    ),
    ("duplicate-bfd-profile", "bfd-profiles: [{name: p}, {name: p}]\n", "bfd-profiles[1].name", "'p'"),
    ("duplicate-peer", PEER + PEER.replace("peers:\n", ""), "peers[1]", "203.0.113.1"),
    (
        "bad-operator",
        PEER + "  node-selectors: [{match-expressions: [{key: rack, operator: in, values: [a]}]}]\n",
        "peers[0].node-selectors[0].match-expressions[0].operator",
        "'in'",
    ),
    (
        "in-without-values",
        PEER + "  node-selectors: [{match-expressions: [{key: rack, operator: In}]}]\n",
        "peers[0].node-selectors[0].match-expressions[0].values",
        "'In'",
    ),
    (
        "exists-with-values",
        POOL + "  node-selectors: [{match-expressions: [{key: rack, operator: Exists, values: [a]}]}]\n",
        "address-pools[0].node-selectors[0].match-expressions[0].values",
        "['a']",
    ),
    (
        "bad-label-key",
        POOL + "  node-selectors: [{match-labels: {'bad key': x}}]\n",
        "address-pools[0].node-selectors[0].match-labels['bad key']",
        "'bad key'",
    ),
    (
        "bad-label-value",
        POOL + "  node-selectors: [{match-labels: {rack: 'a b'}}]\n",
        "address-pools[0].node-selectors[0].match-labels.rack",
        "'a b'",
    ),
]


@pytest.mark.parametrize(("document", "path", "value"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_document_names_path_and_value(document: str, path: str, value: str) -> None:
    errors = _errors(document)
    matching = [e for e in errors if path in e and value in e]
    assert matching, f"no error names both {path!r} and {value!r}; got: {errors}"
    # The path leads the message, so the user reads where before what.
    assert any(e.startswith(path) or e.startswith("line") or e.startswith("invalid YAML") for e in matching)


def test_table_is_big_enough() -> None:
    assert len(MALFORMED) >= 30
    assert len({m[0] for m in MALFORMED}) == len(MALFORMED)


# --- several errors in one document ------------------------------------------------------------------


def test_every_error_of_a_document_is_reported_in_document_order() -> None:
    errors = _errors(
        """\
        peers:
        - peer-address: 203.0.113.1
          peer-asn: 0
          my-asn: 64500
          hold-time: 1s
        address-pools:
        - name: a
          protocol: layer2
          addresses: [203.0.113.0/33]
        - name: b
          protocol: layer2
          addresses: [192.0.2.0/24]
          bgp-advertisements: [{}]
        - name: c
          protocol: layer2
          addresses: [192.0.2.5]
          auto-assign: maybe
        bgp-communities: {bad: "x:y"}
        """
    )
    assert [e.split(":", 1)[0] for e in errors] == [
        "bgp-communities.bad",
        "peers[0].peer-asn",
        "peers[0].hold-time",
        "address-pools[0].addresses[0]",
        "address-pools[1].bgp-advertisements",
        "address-pools[2].auto-assign",
    ]


def test_cross_checks_still_run_beside_broken_entries() -> None:
    errors = _errors(
        """\
        address-pools:
        - {name: a, protocol: layer2, addresses: [192.0.2.0/24]}
        - {name: broken, protocol: nope, addresses: [198.51.100.0/24]}
        - {name: a, protocol: layer2, addresses: [192.0.2.64/26]}
        """
    )
    assert len(errors) == 3
    assert errors[0].startswith("address-pools[1].protocol: expected 'layer2' or 'bgp', got 'nope'")
    assert errors[1] == "address-pools[2].name: duplicate pool name 'a', already defined at address-pools[0]"
    assert errors[2].startswith("address-pools[2].addresses[0]: '192.0.2.64/26' of pool 'a' overlaps")


def test_source_label_prefixes_messages() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("address-pools: 5\n", source="lbspeaker-system/extra")
    assert info.value.errors == ["lbspeaker-system/extra: address-pools: expected a list, got 5"]
