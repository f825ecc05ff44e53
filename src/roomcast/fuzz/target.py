"""The server to fuzz: a ws:// or wss:// URL, loopback only unless the user says otherwise."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from roomcast.errors import RoomcastError


class TargetError(RoomcastError, ValueError):
    """The URL cannot be fuzzed: not ws:// or wss://, a bad port, or not a loopback host."""


@dataclass(frozen=True)
class Target:
    """Where the fuzz clients connect: the URL, split into what a raw socket needs."""

    url: str
    secure: bool
    host: str
    port: int
    path: str

    @property
    def hostport(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def url_with(self, token: str) -> str:
        scheme = "wss" if self.secure else "ws"
        return f"{scheme}://{self.hostport}{self.path}?token={quote(token, safe='')}"


def parse_target(url: str, allow_remote: bool = False) -> Target:
    """Check the URL; refuse anything but a loopback host unless `allow_remote` (TargetError)."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise TargetError(f"{url!r} is not a ws:// or wss:// URL, e.g. ws://127.0.0.1:8000/ws")
    host = parts.hostname
    if not allow_remote:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            raise TargetError(
                f"refusing to fuzz {host}: the fuzzer sends malformed and abusive traffic, so "
                "only loopback addresses (127.0.0.1, ::1, localhost) are allowed; pass "
                "--allow-remote if you run that server and mean it"
            )
    try:
        port = parts.port or (443 if parts.scheme == "wss" else 80)
    except ValueError:
        raise TargetError(f"{url!r} has an invalid port") from None
    return Target(url, parts.scheme == "wss", host, port, parts.path or "/")

