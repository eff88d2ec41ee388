"""Config models and value parsers: node selectors, Python construction, secrets kept out of text, parsers."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lbspeaker.config import (
    AddressPool,
    Config,
    ConfigError,
    NodeSelector,
    Peer,
    SelectorRequirement,
    parse_config,
    selects,
    summarize,
)
from lbspeaker.config.values import (
    parse_community,
    parse_go_duration,
    parse_large_community,
    widest_prefix,
    widest_prefix_len,
)

SECRET = "s3cr3t-Passw0rd"

# --- node selectors ----------------------------------------------------------------------------------


def _req(key: str, operator: str, *values: str) -> SelectorRequirement:
    return SelectorRequirement(key=key, operator=operator, values=values)


@pytest.mark.parametrize(
    ("requirement", "labels", "expected"),
    [
        (_req("rack", "In", "a", "b"), {"rack": "a"}, True),
        (_req("rack", "In", "a", "b"), {"rack": "c"}, False),
        (_req("rack", "In", "a"), {}, False),
        (_req("rack", "NotIn", "a"), {"rack": "b"}, True),
        (_req("rack", "NotIn", "a"), {"rack": "a"}, False),
        (_req("rack", "NotIn", "a"), {}, True),  # Kubernetes: NotIn holds when the label is absent
        (_req("rack", "Exists"), {"rack": ""}, True),
        (_req("rack", "Exists"), {"zone": "x"}, False),
        (_req("rack", "DoesNotExist"), {"zone": "x"}, True),
        (_req("rack", "DoesNotExist"), {"rack": "a"}, False),
    ],
)
def test_selector_requirement(requirement: SelectorRequirement, labels: dict[str, str], expected: bool) -> None:
    assert requirement.matches(labels) is expected


def test_selector_needs_labels_and_expressions_together() -> None:
    sel = NodeSelector(match_labels={"rack": "frontend"}, match_expressions=(_req("speed", "NotIn", "slow"),))
    assert sel.matches({"rack": "frontend", "speed": "fast"})
    assert not sel.matches({"rack": "frontend", "speed": "slow"})
    assert not sel.matches({"rack": "backend"})


def test_selects_empty_list_means_every_node_and_list_means_any() -> None:
    assert selects([], {})
    assert NodeSelector().matches({"anything": "x"})
    sels = [NodeSelector(match_labels={"a": "1"}), NodeSelector(match_labels={"b": "2"})]
    assert selects(sels, {"b": "2"})
    assert not selects(sels, {"c": "3"})


@given(st.dictionaries(st.sampled_from(["a", "b", "c"]), st.sampled_from(["x", "y"])), st.sampled_from(["a", "b"]))
def test_in_and_notin_are_complements_when_the_label_is_present(labels: dict[str, str], key: str) -> None:
    inside, outside = _req(key, "In", "x"), _req(key, "NotIn", "x")
    if key in labels:
        assert inside.matches(labels) != outside.matches(labels)
    else:
        assert not inside.matches(labels) and outside.matches(labels)


# --- construction from Python ----------------------------------------------------------------------


def test_models_construct_from_python_with_snake_case_names() -> None:
    pool = AddressPool(name="p", protocol="bgp", addresses=("192.0.2.0/28",), auto_assign=False)
    assert pool.auto_assign is False
    assert pool.bgp_advertisements[0].aggregation_length == 32  # default advertisement, as from YAML
    peer = Peer(peer_address="2001:db8::0:1", peer_asn=1, my_asn=2, hold_time=30)
    assert (peer.peer_address, peer.hold_time, peer.keepalive_time) == ("2001:db8::1", 30.0, 10.0)
    cfg = Config(address_pools=(pool,), peers=(peer,))
    assert cfg.pool("p") == pool


def test_models_are_frozen() -> None:
    pool = AddressPool(name="p", protocol="layer2", addresses=("192.0.2.0/28",))
    with pytest.raises(ValueError, match="frozen"):
        pool.name = "q"


# --- secrets stay out of text --------------------------------------------------------------------------


def test_password_never_appears_in_repr_str_summary_or_errors() -> None:
    doc = f"peers:\n- {{peer-address: 203.0.113.1, peer-asn: 1, my-asn: 2, password: {SECRET}}}\n"
    cfg = parse_config(doc)
    assert cfg.peers[0].password == SECRET
    for text in (repr(cfg), str(cfg), repr(cfg.peers[0]), str(cfg.peers[0]), summarize(cfg)):
        assert SECRET not in text
    assert "password set (hidden)" in summarize(cfg)

    with pytest.raises(ConfigError) as info:
        parse_config(doc.replace("my-asn: 2", "my-asn: 0"))
    assert "peers[0].my-asn" in str(info.value) and SECRET not in str(info.value)


@pytest.mark.parametrize(
    ("password", "message"),
    [
        (f'"{SECRET}\\nmore"', "control characters"),
        ("x" * 70 + SECRET, "longer than the 80 bytes"),
        (f"[{SECRET}]", "expected a string"),
    ],
)
def test_bad_password_errors_do_not_echo_it(password: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(f"peers:\n- {{peer-address: 203.0.113.1, peer-asn: 1, my-asn: 2, password: {password}}}\n")
    (error,) = info.value.errors
    assert error.startswith("peers[0].password: ") and message in error
    assert SECRET not in error


# --- value parsers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("1m30s", 90), ("1.5h", 5400), ("0", 0), ("500ms", 0.5), (".5m", 30), ("2h45m", 9900)],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "90", "s", "1x", "1m30", "--1s", "1 s"])
def test_bad_go_durations(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_go_duration(text)


@given(st.integers(0, 10**6), st.sampled_from([("s", 1), ("m", 60), ("h", 3600), ("ms", 0.001)]))
def test_duration_of_one_unit(number: int, unit: tuple[str, float]) -> None:
    assert parse_go_duration(f"{number}{unit[0]}") == pytest.approx(number * unit[1])


@given(st.integers(0, 65535), st.integers(0, 65535), st.integers(0, 3))
def test_community_round_trip_with_leading_zeros(a: int, b: int, zeros: int) -> None:
    assert parse_community(f"{'0' * zeros}{a}:{b}") == f"{a}:{b}"


@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_large_community_round_trip(a: int, b: int, c: int) -> None:
    assert parse_large_community(f"{a}:{b}:{c}") == f"{a}:{b}:{c}"


@pytest.mark.parametrize("text", ["65536:1", "1:-1", "a:b", "1", "1:2:3", "+1:2", "\uff11:2"])
def test_bad_communities(text: str) -> None:
    with pytest.raises(ValueError, match="invalid community"):
        parse_community(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.0/24", (4, 24)),
        ("192.0.2.0-192.0.2.255", (4, 24)),
        ("192.0.2.1-192.0.2.6", (4, 31)),
        ("192.0.2.7", (4, 32)),
        ("2001:db8::/64", (6, 64)),
        ("2001:db8::1-2001:db8::ffff", (6, 113)),
    ],
)
def test_widest_prefix_of_an_entry(text: str, expected: tuple[int, int]) -> None:
    assert widest_prefix_len(text) == expected


@given(version=st.sampled_from([4, 6]), data=st.data())
def test_widest_prefix_agrees_with_ipaddress(version: int, data: st.DataObject) -> None:
    bits = 32 if version == 4 else 128
    first = data.draw(st.integers(0, (1 << bits) - 1))
    last = data.draw(
        st.integers(
            first, min((1 << bits) - 1, first + data.draw(st.sampled_from([0, 1, 255, 1 << 20, 1 << (bits - 1)])))
        )
    )
    cls = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    expected = min(net.prefixlen for net in ipaddress.summarize_address_range(cls(first), cls(last)))
    assert widest_prefix(version, first, last) == expected
