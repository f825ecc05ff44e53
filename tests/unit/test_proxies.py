"""Clients behind proxies (protocol §14): the client's address is the rightmost forwarded
address that is not trusted, and only a trusted peer's headers count."""

from __future__ import annotations

import re

import pytest

from roomcast.proxies import client_address, forwarded_for, parse_address, trusted_networks
from roomcast.settings import Settings, SettingsError, coerce

TRUSTED = trusted_networks(("10.0.0.0/8", "127.0.0.1", "2001:db8:cafe::/48"))


def client(peer: str, **headers: str) -> str:
    return client_address(peer, {k.replace("_", "-"): v for k, v in headers.items()}, TRUSTED)


def test_headers_from_an_untrusted_peer_are_ignored() -> None:
    assert client("198.51.100.7", x_forwarded_for="203.0.113.1") == "198.51.100.7"
    assert client("198.51.100.7", forwarded="for=203.0.113.1") == "198.51.100.7"
    assert client_address("127.0.0.1", {"x-forwarded-for": "203.0.113.1"}, ()) == "127.0.0.1"


def test_the_rightmost_untrusted_address_is_the_client() -> None:
    # The client made up the first two entries; 10.1.1.1 is our own inner proxy.
    chain = "1.1.1.1, 2.2.2.2, 203.0.113.9, 10.1.1.1"
    assert client("10.0.0.2", x_forwarded_for=chain) == "203.0.113.9"
    assert client("127.0.0.1", x_forwarded_for="203.0.113.9") == "203.0.113.9"


def test_a_trusted_peer_without_the_headers_is_the_client() -> None:
    assert client("10.0.0.2") == "10.0.0.2"


def test_when_every_entry_is_trusted_the_leftmost_is_the_client() -> None:
    assert client("10.0.0.2", x_forwarded_for="10.9.9.9, 10.1.1.1") == "10.9.9.9"


@pytest.mark.parametrize(("value", "expected"), [
    ("for=192.0.2.60;proto=http;by=203.0.113.43", "192.0.2.60"),
    ('for="[2001:db8::17]:4711"', "2001:db8::17"),
    ('For="[2001:db8::17]"', "2001:db8::17"),
    ('for="192.0.2.60:8080"', "192.0.2.60"),
    ("for=192.0.2.43, for=198.51.100.17;by=10.0.0.5", "198.51.100.17"),
    ('for=192.0.2.43, for="[2001:db8:cafe::17]:4711"', "192.0.2.43"),
    ('for="x, y;z", for=198.51.100.17', "198.51.100.17"),
])
def test_forwarded_for_forms(value: str, expected: str) -> None:
    assert client("10.0.0.2", forwarded=value) == expected


def test_x_forwarded_for_wins_over_forwarded() -> None:
    assert client("10.0.0.2", x_forwarded_for="203.0.113.1",
                  forwarded="for=198.51.100.17") == "203.0.113.1"


def test_repeated_headers_count_as_one_list() -> None:
    # The head parser joins repeats with ", ": the last header's entries are rightmost.
    assert client("10.0.0.2", x_forwarded_for="203.0.113.1, 203.0.113.2") == "203.0.113.2"


@pytest.mark.parametrize(("chain", "expected"), [
    ("203.0.113.9, garbage, 10.1.1.1", "10.1.1.1"),  # nothing left of garbage is vouched for
    ("203.0.113.9, unknown", "10.0.0.2"),
    ("", "10.0.0.2"),
    (" , 203.0.113.9", "203.0.113.9"),
    ("garbage, 203.0.113.9", "203.0.113.9"),  # left of the client: never read
    ("203.0.113.9:5555", "203.0.113.9"),
    ("[2001:db8::1]:443, 10.1.1.1", "2001:db8::1"),
    ("::ffff:203.0.113.9", "203.0.113.9"),
    ("203.0.113.9:port", "10.0.0.2"),
    ("[2001:db8::1]x", "10.0.0.2"),
    ("2001:db8:cafe::1, 2001:db8::2, 2001:db8:cafe::3", "2001:db8::2"),
])
def test_garbage_and_odd_entries(chain: str, expected: str) -> None:
    assert client("10.0.0.2", x_forwarded_for=chain) == expected


def test_an_ipv4_mapped_peer_is_its_ipv4_address() -> None:
    assert client("::ffff:10.0.0.2", x_forwarded_for="203.0.113.9") == "203.0.113.9"


def test_parse_address_and_forwarded_for() -> None:
    assert str(parse_address(' "[::1]:80" ')) == "::1"
    assert parse_address("_hidden") is None
    assert parse_address("[::1") is None
    assert forwarded_for('for=a;by=b, proto=https, FOR="c"') == ["a", "", '"c"']


def test_trusted_proxies_setting() -> None:
    settings = Settings(trusted_proxies=coerce("trusted_proxies", "10.0.0.0/8, ::1,127.0.0.1"))
    assert settings.trusted_proxies == ("10.0.0.0/8", "::1", "127.0.0.1")
    assert len(trusted_networks(settings.trusted_proxies)) == 3
    assert Settings(trusted_proxies=("10.0.0.1/8",)).trusted_proxies == ("10.0.0.1/8",)
    with pytest.raises(SettingsError, match=re.escape("'10.0.0.0/33' is not an address")):
        Settings(trusted_proxies=("10.0.0.0/8", "10.0.0.0/33"))
    with pytest.raises(SettingsError, match=re.escape("'proxy.internal'")):
        Settings(trusted_proxies=("proxy.internal",))
