"""``HOST:PORT`` text, read in one place: our listen addresses (flags) and the peer addresses in Leases.

Forms: ``:7472`` (every address of the node), ``0.0.0.0:7472``, ``192.0.2.1:7472``, ``[::]:7472``,
``[2001:db8::1]:7472``. An IPv6 address needs brackets, as in a URL: ``2001:db8::1:7472`` could be
port 7472 of ``2001:db8::1`` or port 1:7472 of something else, so it is rejected, not guessed.
Hosts are IP literals; names are not resolved (a listen address or a peer's published address is
never a DNS lookup).

``bind_candidates`` says how to bind a listening socket for a parsed address: the empty host means
IPv6 ``::`` accepting IPv4 too (dual-stack), then IPv4 ``0.0.0.0`` where the node has no IPv6, so
the same default works on IPv4-only, dual-stack and IPv6-only nodes.

Pure: no sockets, no DNS. Cost: O(length of the text).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

__all__ = ["BindTarget", "HostPortError", "bind_candidates", "format_hostport", "parse_listen", "parse_peer"]


class HostPortError(ValueError):
    """Text that is not a usable ``HOST:PORT``; the message quotes it and says what is wrong."""


def _split(text: str) -> tuple[str, str]:
    """(host without brackets, port text); ValueError saying what is wrong with ``text``."""
    text = text.strip()
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise HostPortError(f"{text!r}: missing ']' after the IPv6 address")
        host, rest = text[1:close], text[close + 1:]
        if not rest.startswith(":"):
            raise HostPortError(f"{text!r}: expected ':PORT' after ']'")
        try:
            version = ipaddress.ip_address(host).version
        except ValueError:
            raise HostPortError(f"{text!r}: {host!r} is not an IPv6 address") from None
        if version != 6:
            raise HostPortError(f"{text!r}: brackets are for IPv6 addresses only")
        return host, rest[1:]
    host, sep, port = text.rpartition(":")
    if not sep:
        raise HostPortError(f"{text!r} is not HOST:PORT (for example :7472 or 192.0.2.1:7472)")
    if ":" in host:
        raise HostPortError(f"{text!r}: an IPv6 address needs brackets, for example [{host}]:{port}")
    return host, port


def _port(text: str, whole: str, lowest: int) -> int:
    if not text.isdigit() or not lowest <= int(text) <= 65535:
        raise HostPortError(f"{whole!r}: port {text!r} is not a number from {lowest} to 65535")
    return int(text)


def _ip(host: str, whole: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        raise HostPortError(f"{whole!r}: {host!r} is not an IP address (host names are not looked up)") from None


def parse_listen(text: str) -> tuple[str, int]:
    """A listen address: ``(host, port)``, host "" for every address; port 0 asks for a free port."""
    host, port = _split(text)
    return (_ip(host, text) if host else ""), _port(port, text, 0)


def parse_peer(text: str) -> tuple[str, int]:
    """A peer's address, as published in its Lease: an IP literal and a port from 1 to 65535."""
    host, port = _split(text)
    if not host:
        raise HostPortError(f"{text!r}: a peer address needs a host")
    return _ip(host, text), _port(port, text, 1)


def format_hostport(host: str, port: int) -> str:
    """The inverse of ``parse_*``: ``192.0.2.1:7472``, ``[2001:db8::1]:7472``, ``:7472``."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class BindTarget:
    """One way to bind a listening socket: family, socket address, and whether IPv4 is accepted on IPv6."""

    family: socket.AddressFamily
    address: tuple[str, int]
    dual_stack: bool = False


def bind_candidates(host: str, port: int) -> list[BindTarget]:
    """What to try, in order, to listen on a ``parse_listen`` result.

    "" (every address): IPv6 ``::`` with IPv4 accepted too, then IPv4 ``0.0.0.0`` for nodes without
    IPv6. ``::`` itself is dual-stack as well (IPv4 reaches it where the kernel allows it); any other
    address binds exactly that address.
    """
    if not host:
        return [BindTarget(socket.AF_INET6, ("::", port), True), BindTarget(socket.AF_INET, ("0.0.0.0", port))]
    addr = ipaddress.ip_address(host)
    if addr.version == 6:
        return [BindTarget(socket.AF_INET6, (str(addr), port), addr.is_unspecified)]
    return [BindTarget(socket.AF_INET, (str(addr), port))]
