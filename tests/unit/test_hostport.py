"""``lbspeaker.hostport``: the one reader of HOST:PORT text, and how a listen address is bound."""

from __future__ import annotations

import socket

import pytest

from lbspeaker.hostport import BindTarget, bind_candidates, format_hostport, parse_listen, parse_peer


@pytest.mark.parametrize(("text", "expected"), [
    (":7472", ("", 7472)),
    ("0.0.0.0:7472", ("0.0.0.0", 7472)),
    ("127.0.0.1:0", ("127.0.0.1", 0)),
    ("[::]:7472", ("::", 7472)),
    ("[2001:DB8::1]:7946", ("2001:db8::1", 7946)),
    (" 192.0.2.1:65535 ", ("192.0.2.1", 65535)),
])
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize(("text", "says"), [
    ("::7472", "needs brackets"),                      # the old reader took this as host "" ...
    ("2001:db8::1:7472", "[2001:db8::1]:7472"),       # ... and this as 2001:db8::1 port 7472
    ("[192.0.2.1]:7472", "IPv6 addresses only"),
    ("[2001:db8::1:7472", "missing ']'"),
    ("[2001:db8::1]7472", "expected ':PORT'"),
    ("[not-an-ip]:7472", "not an IPv6 address"),
    ("7472", "not HOST:PORT"),
    ("", "not HOST:PORT"),
    (":65536", "port '65536'"),
    (":-1", "port '-1'"),
    (":http", "port 'http'"),
    ("localhost:7472", "host names are not looked up"),
    ("192.0.2.300:7472", "not an IP address"),
])
def test_parse_listen_rejects_with_the_reason(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=None) as got:
        parse_listen(text)
    assert says in str(got.value)


@pytest.mark.parametrize(("text", "expected"), [
    ("192.0.2.1:7472", ("192.0.2.1", 7472)),
    ("[2001:DB8::1]:1", ("2001:db8::1", 1)),
])
def test_parse_peer(text: str, expected: tuple[str, int]) -> None:
    assert parse_peer(text) == expected


@pytest.mark.parametrize("text", [":7946", "192.0.2.1:0", "2001:db8::1:7472", "[192.0.2.1]:7472", "host.example:1"])
def test_parse_peer_needs_an_ip_and_a_real_port(text: str) -> None:
    with pytest.raises(ValueError):
        parse_peer(text)


@pytest.mark.parametrize(("host", "port", "text"), [
    ("192.0.2.1", 7472, "192.0.2.1:7472"), ("2001:db8::1", 1, "[2001:db8::1]:1"), ("", 7472, ":7472")])
def test_format_is_the_inverse(host: str, port: int, text: str) -> None:
    assert format_hostport(host, port) == text
    assert parse_listen(text) == (host, port)


def test_bind_candidates() -> None:
    # Every address: IPv6 accepting IPv4 first, IPv4 alone where the node has no IPv6.
    assert bind_candidates("", 7472) == [BindTarget(socket.AF_INET6, ("::", 7472), True),
                                         BindTarget(socket.AF_INET, ("0.0.0.0", 7472), False)]
    assert bind_candidates("::", 1) == [BindTarget(socket.AF_INET6, ("::", 1), True)]
    assert bind_candidates("::1", 1) == [BindTarget(socket.AF_INET6, ("::1", 1), False)]
    assert bind_candidates("0.0.0.0", 1) == [BindTarget(socket.AF_INET, ("0.0.0.0", 1), False)]
