"""Scalars are typed by the field they land in, as MetalLB's Go decoder (gopkg.in/yaml.v2) typed them.

String fields keep the literal text of an unquoted scalar (YAML 1.1 would turn ``0123456`` into 42798,
``0x5ec7e7`` into 6211559, ``yes``/``on`` into true, ``1.50`` into 1.5, ``64500:10`` into 3870010,
``2024-01-01`` into a date); number fields read numbers as Go's ``strconv.ParseInt(s, 0, 64)``; boolean
fields take yaml.v2's boolean words. Every string field of the schema is tried; the BGP password is
followed all the way to the ExaBGP configuration the speaker writes, since a wrong MD5 key shows no
error on the speaker.
"""

from __future__ import annotations

import base64
import textwrap
from collections.abc import Callable
from typing import Any

import pytest

from lbspeaker.bgp.config_render import render_config
from lbspeaker.bgp.model import ResolvedPeer
from lbspeaker.config import Config, ConfigError, SecretRef, parse_config, parse_configmap
from lbspeaker.config.render import config_yaml
from lbspeaker.config.scalars import Plain, plain_bool, plain_int
from lbspeaker.config.yamlload import load_document
from lbspeaker.speaker.bgp import peers_for_node

# Unquoted scalars that YAML 1.1 (PyYAML) would read as something other than their text.
RETYPED = ["0123456", "0x5ec7e7", "yes", "on", "Off", "y", "1.50", "1e3", "12:30", "2024-01-01", "1_000", "0b101"]

PEER = "peers:\n- peer-address: 192.0.2.1\n  peer-asn: 64501\n  my-asn: 64500\n"
POOL = "address-pools:\n- name: p\n  protocol: bgp\n  addresses: [198.51.100.0/24]\n"


def _parse(text: str) -> Config:
    return parse_config(textwrap.dedent(text))


def _secret(cfg: Config) -> SecretRef:
    """The first peer's password-secret, which the documents below always give."""
    ref = cfg.peers[0].password_secret
    assert ref is not None
    return ref


# (string field, document with X where the scalar goes, how to read the field back)
STRING_FIELDS: list[tuple[str, str, Callable[[Config], Any]]] = [
    ("peers[].password", PEER + "  password: X\n", lambda c: c.peers[0].password),
    ("peers[].bfd-profile", "bfd-profiles: [{name: X}]\n" + PEER + "  bfd-profile: X\n",
     lambda c: c.peers[0].bfd_profile),
    ("bfd-profiles[].name", "bfd-profiles: [{name: X}]\n", lambda c: c.bfd_profiles[0].name),
    ("address-pools[].name", "address-pools: [{name: X, protocol: layer2, addresses: [192.0.2.0/24]}]\n",
     lambda c: c.address_pools[0].name),
    ("peers[].node-selectors[].match-labels value", PEER + "  node-selectors: [{match-labels: {rack: X}}]\n",
     lambda c: c.peers[0].node_selectors[0].match_labels["rack"]),
    ("peers[].node-selectors[].match-labels key", PEER + "  node-selectors: [{match-labels: {X: a}}]\n",
     lambda c: next(iter(c.peers[0].node_selectors[0].match_labels))),
    ("peers[].node-selectors[].match-expressions[].values",
     PEER + "  node-selectors: [{match-expressions: [{key: rack, operator: In, values: [X]}]}]\n",
     lambda c: c.peers[0].node_selectors[0].match_expressions[0].values[0]),
    ("peers[].node-selectors[].match-expressions[].key",
     PEER + "  node-selectors: [{match-expressions: [{key: X, operator: Exists}]}]\n",
     lambda c: c.peers[0].node_selectors[0].match_expressions[0].key),
    ("address-pools[].node-selectors[].match-labels value",
     POOL + "  node-selectors: [{match-labels: {rack: X}}]\n",
     lambda c: c.address_pools[0].node_selectors[0].match_labels["rack"]),
    ("bgp-communities key", "bgp-communities: {X: '65535:65282'}\n", lambda c: next(iter(c.bgp_communities))),
    ("bgp-advertisements[].communities (alias)",
     "bgp-communities: {X: '65535:65282'}\n" + POOL + "  bgp-advertisements: [{communities: [X]}]\n",
     lambda c: "X" if c.address_pools[0].bgp_advertisements[0].communities == ("65535:65282",) else None),
    ("peers[].password-secret.name", PEER + "  password-secret: {name: X}\n",
     lambda c: _secret(c).name),
    ("peers[].password-secret.key", PEER + "  password-secret: {name: s, key: X}\n",
     lambda c: _secret(c).key),
]  # fmt: skip

# Label names and Secret names cannot hold every one of these (':', '_', upper case): those pairs are left out.
_INVALID_FOR = {
    "peers[].node-selectors[].match-labels key": {"12:30"},
    "peers[].node-selectors[].match-expressions[].key": {"12:30"},
    "peers[].node-selectors[].match-labels value": {"12:30"},
    "peers[].node-selectors[].match-expressions[].values": {"12:30"},
    "address-pools[].node-selectors[].match-labels value": {"12:30"},
    "peers[].password-secret.name": {"0x5ec7e7", "yes", "on", "Off", "y", "1e3", "12:30", "1_000", "0b101", "1.50"},
    "peers[].password-secret.key": {"12:30"},
}


_CASES = [(f, doc, read, x) for f, doc, read in STRING_FIELDS for x in RETYPED if x not in _INVALID_FOR.get(f, set())]


@pytest.mark.parametrize(("field", "document", "read", "scalar"), _CASES, ids=[f"{c[0]}={c[3]}" for c in _CASES])
def test_string_fields_keep_the_literal_text(
    field: str, document: str, read: Callable[[Config], Any], scalar: str
) -> None:
    value = read(parse_config(document.replace("X", scalar)))
    expected = "X" if "(alias)" in field else scalar
    assert value == expected
    assert type(value) is str  # never the loader's Plain marker, which must not leak into the models


def test_community_values_are_not_base_60_numbers() -> None:
    # YAML 1.1 reads 65535:10 as 65535*60+10 and 1:2:3 as 3723; Go keeps the text.
    cfg = _parse(
        POOL + "  bgp-advertisements: [{communities: [65535:10, 0064500:010], large-communities: [1:2:3]}]\n"
        "bgp-communities: {metro: 64500:10}\n"
    )
    adv = cfg.address_pools[0].bgp_advertisements[0]
    assert adv.communities == ("65535:10", "64500:10")
    assert adv.large_communities == ("1:2:3",)
    assert cfg.bgp_communities == {"metro": "64500:10"}


def test_timers_are_text_until_read_as_durations() -> None:
    cfg = _parse(PEER + "  hold-time: 0\n")
    assert (cfg.peers[0].hold_time, cfg.peers[0].keepalive_time) == (0.0, 0.0)
    with pytest.raises(ConfigError, match=r"peers\[0\]\.hold-time: invalid duration '90': missing unit"):
        _parse(PEER + "  hold-time: 90\n")
    with pytest.raises(ConfigError, match=r"peers\[0\]\.keepalive-time: invalid duration '1:30'"):
        _parse(PEER + "  keepalive-time: 1:30\n")


def test_null_in_a_string_list_or_map_is_the_empty_string_as_in_go() -> None:
    cfg = _parse(
        PEER
        + "  node-selectors: [{match-labels: {edge: ~}, match-expressions: [{key: a, operator: In, values: [~]}]}]\n"
    )
    sel = cfg.peers[0].node_selectors[0]
    assert sel.match_labels == {"edge": ""} and sel.match_expressions[0].values == ("",)
    assert sel.matches({"edge": "", "a": ""}) and not sel.matches({"edge": "x", "a": ""})


# --- number fields: Go's ParseInt(s, 0, 64) after dropping "_", and floats truncated ------------------


@pytest.mark.parametrize(
    ("text", "number"),
    [("64500", 64500), ("010", 8), ("0o17", 15), ("0x10", 16), ("0X1f", 31), ("0b101", 5), ("1_000", 1000),
     ("+7", 7), ("1e3", 1000), ("64500.0", 64500), ("42.9", 42), ("08", 8), ("0", 0), ("-1", -1)],
)  # fmt: skip
def test_plain_int_follows_yaml_v2(text: str, number: int) -> None:
    assert plain_int(Plain(text)) == number


@pytest.mark.parametrize("text", ["abc", "yes", "1:30", "0x", "1e", ".inf", "-1.5", "9" * 200, "0b102"])
def test_plain_int_leaves_non_numbers_for_the_field_to_reject(text: str) -> None:
    value = Plain(text)
    assert plain_int(value) is value


def test_plain_int_and_bool_leave_quoted_and_python_values_alone() -> None:
    assert plain_int("64500") == "64500" and type(plain_int("64500")) is str
    assert plain_int(5) == 5 and plain_bool("yes") == "yes" and plain_bool(True) is True


def test_number_fields_read_go_numbers() -> None:
    cfg = _parse(
        """\
        peers:
        - {peer-address: 192.0.2.1, peer-asn: 0x10, my-asn: 010, peer-port: 0o17}
        - {peer-address: 192.0.2.2, peer-asn: 1e3, my-asn: 64_500}
        address-pools:
        - name: p
          protocol: bgp
          addresses: [198.51.100.0/24]
          bgp-advertisements: [{aggregation-length: 0x18, localpref: 0100}]
        bfd-profiles: [{name: f, receive-interval: 0x32, detect-multiplier: 3.0}]
        """
    )
    first, second = cfg.peers
    assert (first.peer_asn, first.my_asn, first.peer_port) == (16, 8, 15)
    assert (second.peer_asn, second.my_asn) == (1000, 64500)
    adv = cfg.address_pools[0].bgp_advertisements[0]
    assert (adv.aggregation_length, adv.localpref) == (24, 64)
    assert (cfg.bfd_profiles[0].receive_interval, cfg.bfd_profiles[0].detect_multiplier) == (50, 3)


@pytest.mark.parametrize(
    ("value", "shown"), [('"64500"', "'64500'"), ("yes", "yes"), ("abc", "'abc'"), ("1:30", "'1:30'"), ("~0", "'~0'")]
)
def test_number_fields_reject_text_and_quoted_numbers(value: str, shown: str) -> None:
    with pytest.raises(ConfigError) as info:
        _parse(PEER.replace("64500", value))
    assert info.value.errors == [f"peers[0].my-asn: expected an integer, got {shown}"]


def test_out_of_range_numbers_are_shown_as_written() -> None:
    with pytest.raises(ConfigError) as info:
        _parse(PEER.replace("64500", "0x100000000"))
    assert info.value.errors == ["peers[0].my-asn: must be at most 4294967295, got 0x100000000"]


# --- boolean fields: yaml.v2's words --------------------------------------------------------------------


@pytest.mark.parametrize(("text", "flag"), [("y", True), ("Yes", True), ("ON", True), ("true", True),
                                            ("n", False), ("NO", False), ("off", False), ("False", False)])  # fmt: skip
def test_boolean_fields_take_yaml_v2_words(text: str, flag: bool) -> None:
    cfg = _parse(f"address-pools: [{{name: p, protocol: layer2, addresses: [192.0.2.0/24], auto-assign: {text}}}]\n")
    assert cfg.address_pools[0].auto_assign is flag
    cfg = _parse(PEER.replace("64501", "64502") + f"  ebgp-multihop: {text}\n")
    assert cfg.peers[0].ebgp_multihop is flag


@pytest.mark.parametrize(
    ("text", "shown"), [('"yes"', "'yes'"), ("1", "1"), ("maybe", "'maybe'"), ("'true'", "'true'")]
)
def test_boolean_fields_reject_other_values(text: str, shown: str) -> None:
    with pytest.raises(ConfigError) as info:
        _parse(f"address-pools: [{{name: p, protocol: layer2, addresses: [192.0.2.0/24], avoid-buggy-ips: {text}}}]\n")
    assert info.value.errors == [f"address-pools[0].avoid-buggy-ips: expected a boolean (true or false), got {shown}"]


# --- the loader itself -------------------------------------------------------------------------------------


def test_loader_marks_unquoted_scalars_and_keeps_quoted_ones_plain_strings() -> None:
    doc = load_document("a: 0123\nb: '0123'\nc: ~\nd: null\ne:\nf: !!int 5\n<<: {g: x}\n")
    assert doc == {"a": "0123", "b": "0123", "c": None, "d": None, "e": None, "f": 5, "g": "x"}
    assert type(doc["a"]) is Plain and type(doc["b"]) is str


def test_duplicate_keys_compare_as_text_as_in_go() -> None:
    # Go decodes both keys of a map[string]string as the string "1": a duplicate for the strict decoder.
    with pytest.raises(ConfigError, match=r"line 1, column 29: key '1' appears twice"):
        _parse("bgp-communities: {1: '1:1', '1': '1:2'}\n")


# --- the password, from the ConfigMap to the ExaBGP configuration ------------------------------------------

PASSWORDS = ["0123456", "0x5ec7e7", "yes", "on", "1.50", "12:30", "1_000", "2024-01-01", "1e3", "0b101"]


@pytest.mark.parametrize("password", PASSWORDS)
def test_unquoted_password_reaches_exabgp_as_written(password: str) -> None:
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "config", "namespace": "lbspeaker-system"},
        "data": {
            "config": f"peers:\n- peer-address: 192.0.2.1\n  peer-asn: 64501\n  my-asn: 64500\n  password: {password}\n"
        },
    }
    cfg = parse_configmap(cm)
    assert cfg.peers[0].password == password
    (peer,), problems = peers_for_node(cfg, "node-1", {}, {}, "192.0.2.11")
    assert problems == [] and peer.password == password
    text = render_config([ResolvedPeer(peer, "192.0.2.11", "192.0.2.11")], ["/usr/bin/python3", "relay.py"])
    (line,) = [ln.strip() for ln in text.splitlines() if "md5-password" in ln]
    assert base64.b64decode(line.removeprefix("md5-password ").rstrip(";")).decode() == password
    # --show says how long the password was read, never the password itself.
    shown = config_yaml(cfg)
    assert f"password: <redacted, {len(password)} characters>" in shown and password not in shown.replace(
        "192.0.2.1", ""
    )
