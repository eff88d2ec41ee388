"""Bounded parsing: document size, nesting depth, alias expansion, message length, message count.

A 530-byte "billion laughs" ConfigMap once kept the controller busy for 54 s at 2.5 GB. These tests
check that each bound rejects its attack with a clear message; how fast (figures) is measured by
hack/bench/config_parse.py. The timeout marks are guards against a regression hanging the suite,
not measurements.
"""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbspeaker.config import ConfigError, parse_config, parse_configmap
from lbspeaker.config.errors import MAX_MESSAGES, MAX_SHOWN
from lbspeaker.config.load import MAX_FILE_BYTES, load_inputs, read_text
from lbspeaker.config.yamlload import MAX_DEPTH, MAX_DOCUMENT_BYTES, MAX_NODES, load_document


def laughs(levels: int = 9, width: int = 9, where: str = "peers") -> str:
    """The classic: each level an anchored list of ``width`` aliases to the level below."""
    lines = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for n in range(1, levels):
        lines.append(f"l{n}: &l{n} [{','.join([f'*l{n - 1}'] * width)}]")
    lines.append(f"{where}: *l{levels - 1}")
    return "\n".join(lines) + "\n"


def _errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    return info.value.errors


@pytest.mark.timeout(10)
def test_billion_laughs_is_refused_by_the_expansion_bound() -> None:
    text = laughs()
    assert len(text) < 600
    (error,) = _errors(text)
    assert error.endswith(f"the document expands to more than {MAX_NODES} values (aliases count as every value "
                          "they repeat); refusing to read it")  # fmt: skip
    assert error.startswith("line ")


@pytest.mark.timeout(10)
def test_billion_laughs_through_the_controllers_path_and_merge_keys() -> None:
    cm = {"metadata": {"name": "config", "namespace": "lbspeaker-system"}, "data": {"config": laughs(where="x")}}
    with pytest.raises(ConfigError, match=r"^lbspeaker-system/config: line \d+, column \d+: the document expands"):
        parse_configmap(cm)
    merges = ["m0: &m0 {a: 1, b: 2, c: 3, d: 4, e: 5, f: 6, g: 7, h: 8}"]
    merges += [f"m{n}: &m{n} {{{', '.join(f'k{j}: *m{n - 1}' for j in range(8))}}}" for n in range(1, 9)]
    merges.append("y: {<<: *m8}")
    assert "expands to more than" in _errors("\n".join(merges) + "\n")[0]


def test_aliases_within_the_bound_work() -> None:
    # Anchors are legitimate YAML: one address list reused, within the bound.
    cfg = parse_config(
        "address-pools:\n"
        "- {name: a, protocol: bgp, addresses: [198.51.100.0/24], bgp-advertisements: &adv [{localpref: 5}]}\n"
        "- {name: b, protocol: bgp, addresses: [203.0.113.0/24], bgp-advertisements: *adv}\n"
    )
    assert cfg.address_pools[0].bgp_advertisements == cfg.address_pools[1].bgp_advertisements
    assert len(load_document("a: &a [" + ",".join(["x"] * (MAX_NODES // 2 - 10)) + "]\nb: *a\n")["b"]) > 0


def test_recursive_alias_is_refused() -> None:
    assert _errors("a: &a [1, *a]\n") == ["line 1, column 11: alias *'a' is used inside its own anchor"]
    assert _errors("a: &a {b: *a}\n") == ["line 1, column 11: alias *'a' is used inside its own anchor"]


def test_undefined_alias_is_a_yaml_error() -> None:
    (error,) = _errors("a: *nowhere\n")
    assert error.startswith("invalid YAML: found undefined alias")


def test_nesting_depth_bound() -> None:
    assert load_document("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None
    (error,) = _errors("a: " + "[" * MAX_DEPTH + "]" * MAX_DEPTH)
    assert error == f"line 1, column {MAX_DEPTH + 3}: nested more than {MAX_DEPTH} levels deep; refusing to read it"
    # Far deeper than Python's recursion limit: refused before any recursion gets there (by libyaml's
    # own limit of 1000 when it scans that far ahead, else by ours).
    (error,) = _errors("a: " + "[" * 100_000)
    assert "nested more than" in error or "exceeded maximum nesting depth" in error


def test_document_size_bound() -> None:
    filler = "# " + "x" * 97 + "\n"  # 100 bytes
    just_fits = filler * (MAX_DOCUMENT_BYTES // 100) + "#" * (MAX_DOCUMENT_BYTES % 100)
    assert len(just_fits.encode()) == MAX_DOCUMENT_BYTES
    assert parse_config(just_fits).address_pools == ()
    assert _errors(just_fits + "#") == [
        f"the document is {MAX_DOCUMENT_BYTES + 1} bytes, more than the 1024 KiB allowed; refusing to read it"
    ]
    # Counted in UTF-8 bytes, not characters.
    assert "bytes, more than" in _errors("#" + "é" * (MAX_DOCUMENT_BYTES // 2))[0]


def test_file_size_bound() -> None:
    assert read_text(io.BytesIO(b"a" * MAX_FILE_BYTES), "f") == "a" * MAX_FILE_BYTES
    with pytest.raises(ConfigError, match=r"^f: larger than 8 MiB; refusing to read it$"):
        read_text(io.BytesIO(b"a" * (MAX_FILE_BYTES + 1)), "f")


@pytest.mark.parametrize(
    "document",
    [
        "address-pools: [{name: NAME, protocol: layer2, addresses: [192.0.2.0/24]}, "
        "{name: NAME, protocol: layer2, addresses: [198.51.100.0/24]}]\n",
        "NAME: 1\n",
        "address-pools: [{name: p, protocol: layer2, addresses: [NAME]}]\n",
        "address-pools: [{name: p, protocol: NAME, addresses: [192.0.2.0/24]}]\n",
        "peers: [{peer-address: NAME, peer-asn: 1, my-asn: 2}]\n",
        "peers: [{peer-address: 192.0.2.1, peer-asn: 1, my-asn: 2, hold-time: NAME}]\n",
        "bgp-communities: {NAME: NAME}\n",
        "address-pools: [{name: p, protocol: bgp, addresses: [192.0.2.0/24], "
        "bgp-advertisements: [{communities: [NAME]}]}]\n",
        "peers: [{peer-address: 192.0.2.1, peer-asn: 1, my-asn: 2, node-selectors: [{match-labels: {NAME: NAME}}]}]\n",
        "peers: [{peer-address: 192.0.2.1, peer-asn: 1, my-asn: 2, bfd-profile: NAME}]\n",
        "peers: [{peer-address: 192.0.2.1, peer-asn: NAME, my-asn: 2}]\n",
        "address-pools: [{name: p, protocol: layer2, addresses: NAME}]\n",
        "{NAME: 1, NAME: 2}\n",
        "? NAME\n: 1\n",
        "address-pools: [{name: p, protocol: layer2, addresses: [192.0.2.0/24], ? NAME : 1}]\n",
    ],
)
def test_messages_never_render_a_long_value_whole(document: str) -> None:
    long_value = "v" * 200_000
    errors = _errors(document.replace("NAME", long_value))
    assert errors
    for error in errors:
        assert len(error) < 600, error[:300]
        assert "v" * (MAX_SHOWN + 1) not in error
    # A YAML key is at most 1024 characters (the YAML spec), so a long key is a syntax error instead.
    assert any("(200000 characters)" in e or "v..." in e or e.startswith("invalid YAML") for e in errors), errors


def test_a_password_is_never_rendered() -> None:
    secret = "s3cr3t-" * 20  # too long for TCP MD5
    errors = _errors(f"peers: [{{peer-address: 192.0.2.1, peer-asn: 1, my-asn: 2, password: {secret}}}]\n")
    assert errors == ["peers[0].password: is longer than the 80 bytes TCP MD5 allows (value not shown)"]
    errors = _errors("peers: [{peer-address: 192.0.2.1, peer-asn: 1, my-asn: 2, password: [s3cr3t]}]\n")
    assert errors == ["peers[0].password: expected a string, got a value (not shown)"]


def test_error_count_is_capped() -> None:
    pools = "".join(f"- {{name: p{i}, protocol: nope, addresses: [192.0.2.{i % 250}/32]}}\n" for i in range(500))
    errors = _errors("address-pools:\n" + pools)
    assert len(errors) == MAX_MESSAGES + 1
    assert errors[-1] == f"... and {500 - MAX_MESSAGES} more errors"


@pytest.mark.timeout(60)
def test_checks_are_not_quadratic() -> None:
    # 8,000 address entries x 8,000 advertisements would be 64 million aggregation checks if they were
    # compared pairwise, and 8,000 communities a quadratic repeat check.
    n = 8000
    addresses = ",".join(f"10.{i // 256}.{i % 256}.0/24" for i in range(n))
    advertisements = ",".join(f"{{localpref: {i}, aggregation-length: 24}}" for i in range(n))
    communities = ",".join(f"'1:{i}'" for i in range(n))
    cfg = parse_config(
        f"address-pools:\n- name: p\n  protocol: bgp\n  addresses: [{addresses}]\n"
        f"  bgp-advertisements: [{advertisements}, {{communities: [{communities}]}}]\n"
    )
    assert len(cfg.address_pools[0].bgp_advertisements) == n + 1


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ("peers: [{my-asn: !!int 1e999}]\n", 'invalid YAML: a tagged value cannot be read: "invalid literal for int'),
        ("a: !!timestamp never\n", "invalid YAML: a tagged value cannot be read: "),
        ("a: !!int\n", "invalid YAML: a tagged value cannot be read: "),
        ("a: !!binary 'not base64!'\n", "invalid YAML: "),
        ("a: !custom x\n", "invalid YAML: could not determine a constructor for the tag '!custom'"),
    ],
)
def test_explicitly_tagged_values_that_cannot_be_read(document: str, expected: str) -> None:
    (error,) = _errors(document)
    assert error.startswith(expected), error


def test_text_that_is_not_valid_unicode() -> None:
    # JSON from the API server can carry a lone surrogate, which no YAML parser accepts.
    assert _errors("a: \ud800\n") == ["not valid Unicode text: surrogates not allowed (character 3)"]
    assert _errors("a: \x00\n")[0].startswith("invalid YAML: unacceptable character #x0000")


_TOKENS = st.one_of(
    st.sampled_from(
        ["address-pools", "peers", "name", "protocol", "addresses", "bgp-advertisements", "node-selectors", ": ",
         "- ", "\n", "  ", "[", "]", "{", "}", ", ", "&a ", "*a", "<<", "!!int", "!!str", "~", "192.0.2.0/24", "1:2",
         "kind: ConfigMap", "data", "config: |", "password", "my-asn", "0x1", "yes", "'", '"', "#", "%", "?", "|", ">"]
    ),
    st.text(alphabet="-:[]{}&*!|>'\"#%@`,?~ \n\tab01./\\\u00e9\ud800\x00", max_size=4),
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(_TOKENS, max_size=30))
def test_no_input_raises_anything_but_a_config_error(parts: list[str]) -> None:
    text = "".join(parts)
    try:
        parse_config(text)
    except ConfigError as exc:
        assert exc.errors
    loaded = load_inputs([("f.yaml", text)])
    assert (loaded.config is None) == bool(loaded.errors)
