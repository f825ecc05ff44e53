"""Clients behind proxies (protocol §14): the client's address from a trusted proxy's headers.

Pure code. When the TCP peer is one of `trusted_proxies`, the client is the rightmost
address in `X-Forwarded-For` (or, without that header, in `Forwarded: for=`) that is not
itself trusted: every entry to its right was written by a proxy we trust, everything to
its left may have been made up by the client. From any other peer the headers are ignored.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Mapping

__all__ = ["Network", "client_address", "forwarded_for", "parse_address", "trusted_networks"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@functools.lru_cache(maxsize=8)
def trusted_networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    """The `trusted_proxies` setting as networks (a bare address is a /32 or /128); Settings
    has checked each entry, ValueError for one that is neither an address nor a range."""
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries)


def parse_address(text: str) -> Address | None:
    """An address as proxies write it: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`,
    `[2001:db8::1]` or `[2001:db8::1]:443`, optionally in double quotes; an IPv4-mapped
    IPv6 address is its IPv4 one. None for anything else (`unknown`, `_hidden`, garbage)."""
    text = text.strip().strip('"').strip()
    if text.startswith("["):
        host, sep, tail = text[1:].partition("]")
        if not sep or (tail and not (tail.startswith(":") and tail[1:].isdigit())):
            return None
        text = host
    elif text.count(":") == 1:  # IPv4 with a port; bare IPv6 has two colons or more
        host, _, port = text.partition(":")
        if not port.isdigit():
            return None
        text = host
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    """`text` split at `separator`, except inside double-quoted strings (RFC 7239)."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def forwarded_for(value: str) -> list[str]:
    """The `for=` values of a `Forwarded` header, in order, still unparsed; an element
    without `for=` gives "" (an entry that names no address)."""
    out = []
    for element in _split_outside_quotes(value, ","):
        found = ""
        for pair in _split_outside_quotes(element, ";"):
            name, sep, item = pair.partition("=")
            if sep and name.strip().lower() == "for":
                found = item.strip()
        out.append(found)
    return out


def _is_trusted(address: Address, trusted: Iterable[Network]) -> bool:
    return any(address in network for network in trusted)


def client_address(peer_ip: str, headers: Mapping[str, str],
                   trusted: tuple[Network, ...]) -> str:
    """The client's address: `peer_ip` itself unless the peer is a trusted proxy; then the
    rightmost forwarded address that is not trusted. Walking from the right stops at an
    entry that names no address (`unknown`, garbage): what lies left of it cannot be
    vouched for, so the last trusted address walked is the answer. When every entry is
    trusted, the leftmost one is."""
    peer = parse_address(peer_ip)
    if not trusted or peer is None or not _is_trusted(peer, trusted):
        return peer_ip
    if "x-forwarded-for" in headers:
        entries = headers["x-forwarded-for"].split(",")
    elif "forwarded" in headers:
        entries = forwarded_for(headers["forwarded"])
    else:
        return peer_ip
    client = peer
    for entry in reversed(entries):
        address = parse_address(entry)
        if address is None:
            break
        client = address
        if not _is_trusted(address, trusted):
            break
    return str(client)
