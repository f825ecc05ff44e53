"""One Settings object built from flags > ROOMCAST_* environment > TOML file > defaults.

Every name is the contract's (protocol §10): the TOML key, `--flag-with-dashes` and
`ROOMCAST_NAME`. A bad value raises SettingsError with a one-line message naming it.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import platform
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from roomcast.errors import RoomcastError


class SettingsError(RoomcastError):
    """A setting is missing or has a value that cannot be used; the message names it."""


def _default_node() -> str:
    return f"{platform.node()}-{os.getpid()}"


@dataclass(frozen=True)
class Settings:
    """Everything the server can be told; defaults are the contract's."""

    host: str = "127.0.0.1"
    port: int = 8000
    path: str = "/ws"
    http_port: int = 8001
    node: str = field(default_factory=_default_node)
    jwt_secret: str | None = None
    jwt_public_key: str | None = None
    jwt_algorithms: tuple[str, ...] = ()
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway: float = 0.0
    default_rooms: tuple[str, ...] = ("user:{sub}",)
    api_key: str | None = None
    allowed_origins: tuple[str, ...] = ()
    max_message_bytes: int = 1_048_576
    rate_per_second: float = 20.0
    rate_burst: int = 40
    max_connections_per_user: int = 5
    max_connections_per_ip: int = 0
    max_connections: int = 100_000
    max_subscriptions: int = 100
    max_pending: int = 1000
    heartbeat_interval: float = 25.0
    heartbeat_timeout: float = 90.0
    history_size: int = 100
    history_ttl: float = 300.0
    presence_ttl: float = 60.0
    backplane: str = "memory"
    shutdown_grace: float = 10.0
    log_format: str = "text"
    jwt_jwks_url: str | None = None
    trusted_proxies: tuple[str, ...] = ()
    hook_secret: str | None = None
    hook_timeout: float = 3.0
    hook_headers: tuple[str, ...] = ("cookie", "user-agent", "x-request-id", "accept-language")
    connect_hook_url: str | None = None
    rpc_hook_url: str | None = None
    refresh_hook_url: str | None = None
    subscribe_hook_url: str | None = None
    subscribe_hook_rooms: tuple[str, ...] = ()
    publish_hook_url: str | None = None
    publish_hook_rooms: tuple[str, ...] = ()
    events_url: str | None = None
    events_delay: float = 5.0
    events_queue: int = 10_000
    # Beyond the contract's table; documented in docs/configuration.md.
    handshake_timeout: float = 5.0
    write_timeout: float = 10.0
    idempotency_window: float = 300.0
    idempotency_max_keys: int = 10_000
    max_binary_frames: int = 10
    log_level: str = "info"
    mailbox: str = "direct"
    max_handshakes: int = 16
    message_timeout: float = 5.0
    max_held_bytes: int = 64 * 1024 * 1024
    log_throttle_interval: float = 10.0
    workers: int = 1
    http_keepalive_timeout: float = 30.0
    http_body_timeout: float = 30.0
    http_max_batch_bytes: int = 16 * 1024 * 1024
    http_max_head_bytes: int = 16 * 1024
    http_max_connections: int = 10_000
    http_on_ws_port: bool = False

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def algorithms(self) -> tuple[str, ...]:
        """The allowed JWT algorithms: configured, or HS256 (RS256 with a public key or a
        key set)."""
        if self.jwt_algorithms:
            return self.jwt_algorithms
        return ("RS256",) if self.jwt_public_key or self.jwt_jwks_url else ("HS256",)

    def replace(self, **changes: Any) -> Settings:
        """A copy with some settings changed (validated again)."""
        return dataclasses.replace(self, **changes)


_POSITIVE = {
    "max_message_bytes", "rate_per_second", "rate_burst", "max_connections_per_user",
    "max_connections", "max_subscriptions", "max_pending", "heartbeat_interval",
    "heartbeat_timeout", "handshake_timeout", "write_timeout", "idempotency_window",
    "idempotency_max_keys", "max_binary_frames", "max_handshakes", "message_timeout",
    "max_held_bytes", "log_throttle_interval", "workers",
    "hook_timeout", "events_queue",
    "http_keepalive_timeout", "http_body_timeout", "http_max_batch_bytes",
    "http_max_head_bytes", "http_max_connections",
}
_NON_NEGATIVE = {
    "http_port", "port", "jwt_leeway", "max_connections_per_ip", "history_size",
    "history_ttl", "presence_ttl", "shutdown_grace", "events_delay",
}
LOG_LEVELS = ("debug", "info", "warning", "error")
MAILBOXES = ("direct", "channel")
_KNOWN_ALGORITHMS = {"HS256", "HS384", "HS512", "RS256", "ES256", "EdDSA"}


def _validate(s: Settings) -> None:
    for f in dataclasses.fields(s):
        value = getattr(s, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise SettingsError(f"{f.name} must be a finite number, got {value!r}")
    for name in _POSITIVE:
        if getattr(s, name) <= 0:
            raise SettingsError(f"{name} must be greater than 0, got {getattr(s, name)!r}")
    for name in _NON_NEGATIVE:
        if getattr(s, name) < 0:
            raise SettingsError(f"{name} must be 0 or more, got {getattr(s, name)!r}")
    if s.port > 65535 or s.http_port > 65535:
        raise SettingsError("port and http_port must be at most 65535")
    if s.port and s.port == s.http_port:
        raise SettingsError(
            f"port and http_port are both {s.port}: give the HTTP listener its own port "
            f"(--http-port {s.port + 1 if s.port < 65535 else s.port - 1}), or 0 to turn it off"
        )
    if not s.path.startswith("/"):
        raise SettingsError(f"path must start with '/', got {s.path!r}")
    if s.log_format not in ("text", "json"):
        raise SettingsError(f"log_format must be 'text' or 'json', got {s.log_format!r}")
    if s.mailbox not in MAILBOXES:
        raise SettingsError(f"mailbox must be one of {', '.join(MAILBOXES)}, got {s.mailbox!r}")
    if s.log_level not in LOG_LEVELS:
        raise SettingsError(
            f"log_level must be one of {', '.join(LOG_LEVELS)}, got {s.log_level!r}"
        )
    if s.backplane != "memory" and not s.backplane.startswith(
            ("redis://", "rediss://", "redis+sentinel://", "redis+cluster://")):
        raise SettingsError(
            "backplane must be 'memory', 'redis://HOST:PORT/DB', "
            "'redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTER/DB' or "
            f"'redis+cluster://HOST:PORT[,HOST:PORT...]', got {s.backplane!r}"
        )
    if s.workers > 1 and s.backplane == "memory":
        raise SettingsError(
            f"workers = {s.workers} needs a shared backplane: add --backplane redis://HOST:PORT/DB"
        )
    for alg in s.jwt_algorithms:
        if alg not in _KNOWN_ALGORITHMS:
            raise SettingsError(
                f"jwt_algorithms: {alg!r} is not one of {', '.join(sorted(_KNOWN_ALGORITHMS))}"
            )
    if s.rate_burst < 1:
        raise SettingsError("rate_burst must be at least 1")
    _validate_section_14(s)
    for name in ("connect_hook_url", "rpc_hook_url", "subscribe_hook_url", "publish_hook_url",
                 "refresh_hook_url"):
        url = getattr(s, name)
        if url is not None and not url.startswith(("http://", "https://")):
            raise SettingsError(f"{name} must be an http:// or https:// URL, got {url!r}")


def _validate_section_14(s: Settings) -> None:
    """jwt_jwks_url and trusted_proxies (protocol §14)."""
    if s.jwt_jwks_url is not None:
        if not s.jwt_jwks_url.startswith(("https://", "http://")):
            raise SettingsError(
                f"jwt_jwks_url must be an https:// (or http://) URL, got {s.jwt_jwks_url!r}"
            )
        if s.jwt_public_key:
            raise SettingsError(
                "jwt_public_key and jwt_jwks_url are both set: keep the one that holds "
                "your identity provider's keys"
            )
    for entry in s.trusted_proxies:
        try:
            ipaddress.ip_network(entry.strip(), strict=False)
        except ValueError:
            raise SettingsError(
                f"trusted_proxies: {entry!r} is not an address or a CIDR range "
                "(write it like 10.0.0.7, 10.0.0.0/8 or 2001:db8::/32)"
            ) from None


FIELDS: dict[str, dataclasses.Field[Any]] = {f.name: f for f in dataclasses.fields(Settings)}

# The one text of every setting's default and meaning (Markdown): `roomcast serve --help`
# shows it, and docs/configuration.md holds reference_table() verbatim (a test checks).
DOCS: dict[str, tuple[str, str]] = {
    "host": ("`127.0.0.1`", "WebSocket (and HTTP) listener address"),
    "port": ("`8000`", "WebSocket listener port"),
    "path": ("`/ws`", "WebSocket endpoint path"),
    "http_port": ("`8001`", "HTTP listener (health, metrics, server API, demo page); `0` = off"),
    "node": ("host name + pid", "this node's name in `connected` and `/api/stats`"),
    "jwt_secret": ("none", "HMAC secret for HS256/384/512"),
    "jwt_public_key": ("none", "path of a PEM public key for RS256, ES256 or EdDSA"),
    "jwt_algorithms": ("`HS256` (`RS256` with a key)", "allowed algorithms, comma-separated"),
    "jwt_issuer": ("none", "required `iss` when set"),
    "jwt_audience": ("none", "required `aud` when set"),
    "jwt_leeway": ("`0`", "seconds of clock skew allowed on `exp`, `nbf`, `iat`"),
    "default_rooms": ("`user:{sub}`", "subscribe patterns for tokens without a `rooms` claim; "
                      "`{sub}` is the user id"),
    "api_key": ("none", "bearer key for `/api/`; without one `/api/` answers 401 to everybody"),
    "allowed_origins": ("empty", "allowed `Origin` values for the handshake; empty = any"),
    "max_message_bytes": ("`1048576`", "largest incoming frame (bigger → close 1009)"),
    "rate_per_second": ("`20`", "per-connection command rate (token bucket refill)"),
    "rate_burst": ("`40`", "per-connection burst; also the number of rejected commands in "
                   "10 s that closes with 4429"),
    "max_connections_per_user": ("`5`", "live connections per `sub` (next → 4429)"),
    "max_connections_per_ip": ("`0`", "live connections per remote address, `0` = off "
                               "(next → 1013)"),
    "max_connections": ("`100000`", "live connections per node (next → 1013)"),
    "max_subscriptions": ("`100`", "rooms per connection"),
    "max_pending": ("`1000`", "outgoing queue bound per connection, in frames "
                    "(overflow → 4409)"),
    "heartbeat_interval": ("`25`", "seconds between WebSocket pings"),
    "heartbeat_timeout": ("`90`", "seconds without any sign of life before closing with 4408"),
    "history_size": ("`100`", "messages kept per room; `0` = no history"),
    "history_ttl": ("`300`", "seconds a message is kept; `0` = no history"),
    "presence_ttl": ("`60`", "seconds a node's presence entries live without renewal "
                     "(Redis backplane)"),
    "backplane": ("`memory`", "`memory`, `redis://HOST:PORT/DB`, "
                  "`redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTER/DB` (Sentinel: the "
                  "master is asked of the sentinels on every connection) or "
                  "`redis+cluster://HOST:PORT[,HOST:PORT...]` (Redis Cluster: any of its "
                  "nodes; each room lives in its own hash slot); Redis 7 or newer"),
    "shutdown_grace": ("`10`", "on SIGTERM/SIGINT, close every connection with 1001 spread "
                       "over at most this many seconds (`--dev`: `1` unless set)"),
    "log_format": ("`text`", "`text` or `json`"),
    "jwt_jwks_url": ("none", "URL of a JSON Web Key Set (an identity provider's keys): "
                     "tokens are verified with the key their `kid` names; fetched at start, "
                     "again for an unknown `kid` (at most once per 30 s) and every 10 "
                     "minutes; a failed fetch keeps the last good set"),
    "trusted_proxies": ("empty", "addresses and CIDR ranges of proxies, comma-separated: "
                        "from them, the client's address is the rightmost untrusted one in "
                        "`X-Forwarded-For` (or `Forwarded: for=`)"),
    "hook_secret": ("none", "HMAC-SHA256 key of the `X-Roomcast-Signature: sha256=<hex>` "
                    "header on hooks and events, so the application can refuse other callers"),
    "hook_timeout": ("`3`", "seconds a hook or an event's `POST` may take before it counts "
                     "as failed"),
    "hook_headers": ("`cookie,user-agent,x-request-id,accept-language`", "request headers "
                     "passed to the connect hook (lower-case names)"),
    "connect_hook_url": ("none", "URL the application answers a handshake without a token "
                         "at (§11 connect: session-cookie login); none = such handshakes get "
                         "4401"),
    "rpc_hook_url": ("none", "URL the application answers command types roomcast does not "
                     "know at (§11 rpc); none = `unknown_type`"),
    "refresh_hook_url": ("none", "URL the application extends connections the connect hook "
                         "admitted with an `expires_at` at (§11 refresh); none = they close "
                         "with 4401 then"),
    "subscribe_hook_url": ("none", "URL the application decides subscriptions to "
                           "`subscribe_hook_rooms` at (§11 subscribe)"),
    "subscribe_hook_rooms": ("empty", "room patterns whose subscriptions the subscribe hook "
                             "decides instead of the token's `rooms`"),
    "publish_hook_url": ("none", "URL the application allows, refuses or rewrites client "
                         "publishes to `publish_hook_rooms` at (§11 publish)"),
    "publish_hook_rooms": ("empty", "room patterns whose client publishes the publish hook "
                           "decides instead of the token's `publish`"),
    "events_url": ("none", "URL that receives room and user events (`room_occupied`, "
                   "`room_vacated`, `user_online`, `user_offline`) by `POST`; none = off"),
    "events_delay": ("`5`", "seconds a room must stay empty (a user without connections) "
                     "before `room_vacated` (`user_offline`); a shorter absence sends nothing"),
    "events_queue": ("`10000`", "events waiting for delivery at most; more are dropped and "
                     "counted in `/metrics`"),
    "handshake_timeout": ("`5`", "seconds to read a request head, finish a WebSocket "
                          "handshake or a close handshake"),
    "write_timeout": ("`10`", "seconds a socket may take no bytes while frames wait for it "
                      "before the connection is aborted (4409)"),
    "idempotency_window": ("`300`", "seconds an `idempotency_key` is remembered per room"),
    "idempotency_max_keys": ("`10000`", "most `idempotency_key`s remembered per room "
                             "(oldest forgotten first)"),
    "max_binary_frames": ("`10`", "binary frames answered with an error before closing "
                          "with 4400"),
    "log_level": ("`info`", "`debug`, `info`, `warning` or `error`; every connection's open "
                  "and ordinary close is logged at `debug`, a close for a cause (4408, 4409, "
                  "4429, 4500, 1009, ...) at `info`"),
    "mailbox": ("`direct`", "how a connection's bounded outgoing queue reaches its socket: "
                "`direct` writes at once when nothing waits, `channel` is a memory channel "
                "with a writer task per connection (docs/architecture.md compares them)"),
    "max_handshakes": ("`16`", "handshakes being decided (upgrade checked, token verified, "
                       "admitted) at once; the next wait their turn, so a connect flood cannot "
                       "crowd out established connections"),
    "message_timeout": ("`5`", "seconds a message may take from its first byte to its last "
                        "(a fragmented or trickled one); longer → close 4408"),
    "max_held_bytes": ("`67108864`", "bytes all connections together may hold in unfinished "
                       "messages; over it, the connection holding the most is closed with 1013"),
    "log_throttle_interval": ("`10`", "seconds between log lines of one kind of refused "
                              "handshake; the next line says how many were not logged"),
    "workers": ("`1`", "processes serving the same ports (`SO_REUSEPORT`), supervised by a "
                "parent that restarts a dead one; more than 1 needs a Redis backplane"),
    "http_keepalive_timeout": ("`30`", "seconds an idle keep-alive HTTP connection is kept "
                               "open"),
    "http_body_timeout": ("`30`", "seconds for a whole HTTP request body once its head has "
                          "arrived (longer → 408 and close)"),
    "http_max_batch_bytes": ("`16777216`", "largest `/api/batch` body, for a request with the "
                             "right API key (others: `max_message_bytes`); never below "
                             "`max_message_bytes`"),
    "http_max_head_bytes": ("`16384`", "largest HTTP request head (longer → 431 and close); "
                            "past 16384 bytes only a head with CRLF line ends is read"),
    "http_max_connections": ("`10000`", "open connections on the HTTP port per node; the "
                             "next is answered 503 with `Retry-After: 1` and closed"),
    "http_on_ws_port": ("`false`", "serve plain HTTP requests (health, metrics, server API) "
                        "on the WebSocket port too, besides its upgrades"),
}
#: Settings beyond the contract's table (protocol §10), marked so in the reference.
BEYOND_CONTRACT = frozenset({"handshake_timeout", "write_timeout", "idempotency_window",
                             "idempotency_max_keys", "max_binary_frames", "log_level",
                             "mailbox", "max_handshakes", "message_timeout",
                             "max_held_bytes", "log_throttle_interval", "workers",
                             "http_keepalive_timeout", "http_body_timeout",
                             "http_max_batch_bytes", "http_max_head_bytes",
                             "http_max_connections", "http_on_ws_port"})


def flag(name: str) -> str:
    """The command-line flag of a setting: `--http-port` for http_port."""
    return "--" + name.replace("_", "-")


def help_text(name: str) -> str:
    """A setting's meaning and default as plain text, for `--help`."""
    default, meaning = DOCS[name]
    return f"{meaning} (default: {default})".replace("`", "")


def reference_table() -> str:
    """The Markdown table of every setting: name, flag, variable, default, meaning."""
    lines = ["| name | flag | variable | default | meaning |", "|---|---|---|---|---|"]
    for name in FIELDS:
        default, meaning = DOCS[name]
        extra = " *(beyond the contract)*" if name in BEYOND_CONTRACT else ""
        lines.append(f"| `{name}` | `{flag(name)}` | `ROOMCAST_{name.upper()}` | {default} | "
                     f"{meaning}{extra} |")
    return "\n".join(lines) + "\n"


def _field_kind(name: str) -> type:
    default = Settings.__dataclass_fields__[name].default
    annotation = str(FIELDS[name].type)
    if annotation.startswith("tuple"):
        return tuple
    if isinstance(default, bool):
        return bool
    if isinstance(default, int) and "float" not in annotation:
        return int
    if isinstance(default, float) or "float" in annotation:
        return float
    return str


def coerce(name: str, value: Any) -> Any:
    """Turn a raw value (a string from a flag or the environment, or a TOML value) into the
    setting's type, or raise SettingsError naming the setting."""
    if name not in FIELDS:
        raise SettingsError(f"unknown setting {name!r}")
    kind = _field_kind(name)
    try:
        if kind is tuple:
            if isinstance(value, str):
                items = [part.strip() for part in value.split(",")]
                return tuple(item for item in items if item)
            if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
                return tuple(value)
            raise ValueError("expected a list of strings")
        if kind is bool:
            return _boolean(value)
        if kind is int:
            if isinstance(value, bool):
                raise ValueError("expected an integer")
            if isinstance(value, int):
                return value
            if isinstance(value, str):
                return int(value.strip())
            raise ValueError("expected an integer")
        if kind is float:
            if isinstance(value, bool):
                raise ValueError("expected a number")
            if isinstance(value, int | float):
                return float(value)
            if isinstance(value, str):
                return float(value.strip())
            raise ValueError("expected a number")
        if not isinstance(value, str):
            raise ValueError("expected a string")
        return value
    except ValueError as exc:
        raise SettingsError(f"{name}: cannot use {value!r} ({exc})") from None


def _boolean(value: Any) -> bool:
    """true/false from TOML, or from a flag or variable as true/false, yes/no, on/off, 1/0."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word in ("true", "yes", "on", "1"):
            return True
        if word in ("false", "no", "off", "0"):
            return False
    raise ValueError("expected true or false")


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The settings in a TOML file (flat, top-level keys)."""
    try:
        with Path(path).open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise SettingsError(f"config: file {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"config: {str(path)!r} is not valid TOML ({exc})") from None
    for key in data:
        if key not in FIELDS:
            raise SettingsError(f"config: unknown setting {key!r} in {str(path)!r}")
    return data


def from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """The ROOMCAST_* variables that name a setting, still as strings."""
    found: dict[str, Any] = {}
    for name in FIELDS:
        key = "ROOMCAST_" + name.upper()
        if key in environ:
            found[name] = environ[key]
    return found


def load_settings(
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    config: str | os.PathLike[str] | None = None,
) -> Settings:
    """Settings from flags > environment > TOML file > defaults. Flags set to None are unset."""
    environ = os.environ if environ is None else environ
    if config is None:
        config = environ.get("ROOMCAST_CONFIG") or None
    merged: dict[str, Any] = {}
    layers: list[Mapping[str, Any]] = [
        read_toml(config) if config else {},
        from_environment(environ),
        {k: v for k, v in (flags or {}).items() if v is not None},
    ]
    for layer in layers:
        for name, value in layer.items():
            merged[name] = coerce(name, value)
    return Settings(**merged)
