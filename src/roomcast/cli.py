"""The `roomcast` command: serve, token (and the client, bench and fuzz tools)."""

from __future__ import annotations

import argparse
import errno
import gc
import math
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jwt
import trio

from roomcast import log
from roomcast.settings import (
    FIELDS,
    Settings,
    SettingsError,
    flag,
    help_text,
    load_settings,
    read_toml,
)

if TYPE_CHECKING:
    from roomcast.router import Router

DEV_BANNER = "DEVELOPMENT ONLY"
#: Where `serve --dev` keeps its secret, under the directory it is started from.
DEV_SECRET_FILE = Path(".roomcast") / "dev-secret"
#: `serve --dev` drains for at most this long on Ctrl-C, unless shutdown_grace is set.
DEV_SHUTDOWN_GRACE = 1.0


class _WholeWordsHelp(argparse.HelpFormatter):
    """Wraps help at spaces only: a default such as `user-agent` stays in one piece."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        import textwrap

        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("settings (also ROOMCAST_<NAME> or --config FILE)")
    for name in FIELDS:
        group.add_argument(flag(name), dest=name, default=None, metavar="VALUE",
                           help=help_text(name).replace("%", "%%"))
    parser.add_argument("--config", default=None, metavar="FILE", help="a TOML settings file")


def _settings_from(args: argparse.Namespace) -> Settings:
    flags = {name: getattr(args, name) for name in FIELDS}
    return load_settings(flags, os.environ, args.config)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="roomcast", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the router server",
                           formatter_class=_WholeWordsHelp)
    serve.add_argument("--dev", action="store_true",
                       help="development only: keep a made-up JWT secret in "
                            f"{DEV_SECRET_FILE} (under the current directory), print a "
                            "token, drain for 1 s on Ctrl-C")
    _add_setting_flags(serve)
    token = sub.add_parser("token", help="mint a JWT with the configured secret")
    token.add_argument("--sub", required=True, help="the user id")
    token.add_argument("--rooms", action="append", default=None,
                       help="subscribe pattern (repeat, or comma-separated)")
    token.add_argument("--publish", action="append", default=None,
                       help="publish pattern (repeat, or comma-separated)")
    token.add_argument("--ttl", type=float, default=3600.0,
                       help="seconds until it expires, more than 0 (default: 3600)")
    token.add_argument("--jti", default=None)
    token.add_argument("--info", default=None, help="a JSON object shown in presence")
    _add_setting_flags(token)
    for extra in ("client", "bench", "fuzz"):
        tool = sub.add_parser(extra, help=f"see `roomcast {extra} --help`", add_help=False)
        tool.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def _patterns(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    return [part.strip() for v in values for part in v.split(",") if part.strip()]


def mint_token(settings: Settings, sub: str, rooms: list[str] | None = None,
               publish: list[str] | None = None, ttl: float = 3600.0,
               jti: str | None = None, info: dict[str, Any] | None = None) -> str:
    """A signed token for `sub` with the configured HMAC secret, good for `ttl` seconds."""
    if not (math.isfinite(ttl) and ttl >= 1):
        raise SettingsError(f"--ttl must be a number of seconds, at least 1, got {ttl:g}")
    if not settings.jwt_secret:
        raise SettingsError("jwt_secret is required to mint tokens (--jwt-secret or "
                            "ROOMCAST_JWT_SECRET)")
    algorithm = next((a for a in settings.algorithms if a.startswith("HS")), None)
    if algorithm is None:
        raise SettingsError("jwt_algorithms has no HS algorithm to mint tokens with")
    now = int(time.time())
    claims: dict[str, Any] = {"sub": sub, "iat": now, "exp": now + int(ttl)}
    if rooms is not None:
        claims["rooms"] = rooms
    if publish is not None:
        claims["publish"] = publish
    if jti:
        claims["jti"] = jti
    if info is not None:
        claims["info"] = info
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    return jwt.encode(claims, settings.jwt_secret, algorithm=algorithm)


def dev_secret(directory: Path) -> tuple[str, Path]:
    """The development secret kept in `directory`/.roomcast/dev-secret, made on first use,
    so that tokens minted by one `serve --dev` are still good after a restart."""
    path = (directory / DEV_SECRET_FILE).absolute()
    try:
        kept = path.read_text(encoding="utf-8").strip() if path.is_file() else ""
        if kept:
            return kept, path
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        ignore = path.parent / ".gitignore"
        if not ignore.exists():
            ignore.write_text("# roomcast's local development state; never commit it\n*\n")
        secret = secrets.token_urlsafe(48)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(secret + "\n")
    except OSError as exc:
        raise SettingsError(
            f"cannot keep the development secret in {path} ({exc.strerror or exc}): run from "
            f"a directory you can write to, or give --jwt-secret"
        ) from None
    return secret, path


def _explicit(args: argparse.Namespace, name: str) -> bool:
    """Whether the user set `name` (flag, variable or file), not just left its default."""
    if getattr(args, name) is not None or f"ROOMCAST_{name.upper()}" in os.environ:
        return True
    config: str | None = args.config or os.environ.get("ROOMCAST_CONFIG")
    return config is not None and name in read_toml(config)


def _dev_banner(settings: Settings, kept: Path | None) -> str:
    """What `serve --dev` prints: the secret, where it is kept, a token and where to use it."""
    token = mint_token(settings, "dev", rooms=["*"], publish=["*"], ttl=7 * 86400)
    bar = "=" * 72
    if kept is not None:
        where = (f"  kept in {kept}: tokens minted with it stay good across restarts\n"
                 f"  (delete the file for a new secret; every old token then stops working)")
        again = f'"$(cat {kept})"'
    else:
        where, again = "  (given with --jwt-secret)", '"$SECRET"'
    lines = [
        bar, f"{DEV_BANNER}: a development secret and token. Never use --dev in production.",
        "", f"  secret: {settings.jwt_secret}", where, "",
        "  token for user 'dev' (rooms *, publish *, 7 days):", f"  {token}", "",
    ]
    if settings.http_port:
        lines.append(f"  page:    http://{settings.host}:{settings.http_port}/?token={token}")
    if settings.port:
        lines.append(f"  connect: ws://{settings.host}:{settings.port}{settings.path}"
                     f"?token={token}")
    program = sys.argv[0] if Path(sys.argv[0]).name == "roomcast" else "roomcast"
    lines += [f"  more:    {program} token --jwt-secret {again} --sub alice --rooms 'project:*'",
              bar]
    return "\n".join(lines)


def _listen_failure(settings: Settings, error: OSError) -> str:
    """One line for a listener that could not be opened: which port, which setting."""
    culprit = _port_taken(settings)
    if culprit is not None:
        name, port = culprit
        also = "; 0 turns the HTTP listener off" if name == "http_port" else ""
        return (f"port {port} on {settings.host} is already in use (another roomcast?): stop "
                f"that server, or choose another port with {flag(name)} "
                f"(ROOMCAST_{name.upper()}{also})")
    ports = f"{settings.port}" + (f" and {settings.http_port}" if settings.http_port else "")
    return (f"cannot listen on {settings.host} port {ports} ({error.strerror or error}): check "
            f"--host, --port and --http-port")


def _port_taken(settings: Settings) -> tuple[str, int] | None:
    """The first listener port (setting name, number) that something else holds now."""
    for name in ("port", "http_port"):
        port: int = getattr(settings, name)
        if not port:
            continue
        try:
            addresses = socket.getaddrinfo(settings.host, port, type=socket.SOCK_STREAM,
                                           flags=socket.AI_PASSIVE)
        except OSError:
            return None
        for family, kind, proto, _, address in addresses:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                try:
                    probe.bind(address)
                except OSError as exc:
                    if exc.errno == errno.EADDRINUSE:
                        return name, port
    return None


async def _watch_signals(router: Router, signals: AsyncIterator[int],
                         scope: trio.CancelScope) -> None:
    """The first SIGINT/SIGTERM drains (saying for how long); a second stops at once."""
    stopping = False
    async for signum in signals:
        name = signal.Signals(signum).name
        if not stopping:
            stopping = True
            grace = router.settings.shutdown_grace
            log.event("signal", signal=name)
            log.event("stopping", connections=len(router.conns),
                      grace=f"{grace:g}s", hint="Ctrl-C again to stop at once")
            router.shutdown()
        else:
            log.event("stopping at once", signal=name)
            scope.cancel()
            return


async def _serve(settings: Settings) -> str | None:
    """Serve until a signal; a one-line reason instead when the listeners cannot open."""
    from roomcast.server import open_router

    failure: str | None = None
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with open_router(settings) as router, trio.open_nursery() as nursery:
            nursery.start_soon(_watch_signals, router, signals, nursery.cancel_scope)

            async def run(task_status: trio.TaskStatus[None]) -> None:
                await router.serve(task_status=task_status)
                nursery.cancel_scope.cancel()  # drained: stop watching for signals

            try:
                await nursery.start(run)
            except* OSError as group:
                failure = _listen_failure(settings, _first_os_error(group))
            if failure is not None:
                nursery.cancel_scope.cancel()
    return failure


def _first_os_error(group: BaseExceptionGroup[OSError]) -> OSError:
    leaves = group.exceptions
    while isinstance(leaves[0], BaseExceptionGroup):
        leaves = leaves[0].exceptions
    first = leaves[0]
    assert isinstance(first, OSError)
    return first


def serve_command(args: argparse.Namespace) -> int:
    settings = _settings_from(args)
    log.configure(settings.log_format, settings.log_level.upper())
    kept: Path | None = None
    has_key = (settings.jwt_secret or settings.jwt_public_key or settings.jwt_jwks_url
               or settings.connect_hook_url)
    if args.dev:
        if not has_key:
            secret, kept = dev_secret(Path.cwd())
            settings = settings.replace(jwt_secret=secret)
        if not _explicit(args, "shutdown_grace"):
            settings = settings.replace(shutdown_grace=DEV_SHUTDOWN_GRACE)
    elif not has_key:
        raise SettingsError(
            "jwt_secret, jwt_public_key or jwt_jwks_url is required (or run `roomcast serve "
            "--dev` for a development secret)"
        )
    from roomcast.auth import Authenticator
    from roomcast.workers import supervise, worker_node

    Authenticator(settings)  # fail now, with a one-line message, on a bad key
    node = worker_node()
    if node is not None:  # a worker: its siblings share the ports (SO_REUSEPORT)
        settings = settings.replace(node=node)
    else:
        taken = _port_taken(settings)
        if taken is not None:  # say so before any banner
            raise SettingsError(_listen_failure(settings, OSError(errno.EADDRINUSE, "in use")))
        if settings.workers > 1:
            return supervise(settings, sys.argv[1:])
    if args.dev and settings.jwt_secret:
        print(_dev_banner(settings, kept), file=sys.stderr, flush=True)
    if settings.jwt_secret and len(settings.jwt_secret.encode()) < 32:
        print("roomcast: warning: jwt_secret is shorter than 32 bytes; anyone who can try "
              "many guesses may forge tokens. Use a long random secret.", file=sys.stderr)
    # Tens of thousands of live connections are millions of tracked objects: with the
    # default thresholds full collections come often and stall the loop for ~100 ms.
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    # A big buffer (an unfinished message) goes back to the system as soon as it is freed,
    # instead of staying in glibc's heap after a burst (docs/security.md).
    from roomcast.limits import fix_mmap_threshold

    fix_mmap_threshold()
    failure = trio.run(_serve, settings)
    if failure is not None:
        raise SettingsError(failure)
    return 0


def token_command(args: argparse.Namespace) -> int:
    import json

    settings = _settings_from(args)
    info = None
    if args.info:
        try:
            info = json.loads(args.info)
        except ValueError:
            raise SettingsError("--info must be a JSON object") from None
        if not isinstance(info, dict):
            raise SettingsError("--info must be a JSON object")
    print(mint_token(settings, args.sub, _patterns(args.rooms), _patterns(args.publish),
                     args.ttl, args.jti, info))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("client", "bench", "fuzz"):
        return _tool(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            return serve_command(args)
        return token_command(args)
    except SettingsError as exc:
        print(f"roomcast: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


def _tool(name: str, argv: list[str]) -> int:
    """The client, bench and fuzz tools live in their own modules."""
    import importlib
    from pathlib import Path

    if name == "bench":
        # The harness lives in the source checkout (benchmarks/), not in the package:
        # with an editable install the checkout is three levels above this file.
        checkout = Path(__file__).resolve().parents[2]
        if (checkout / "benchmarks" / "__main__.py").is_file() and str(checkout) not in sys.path:
            sys.path.insert(0, str(checkout))

    try:
        module = importlib.import_module(
            {"client": "roomcast.cli_client", "bench": "benchmarks.__main__",
             "fuzz": "roomcast.fuzz"}[name]
        )
    except ModuleNotFoundError as exc:
        print(f"roomcast {name}: not available ({exc})", file=sys.stderr)
        return 2
    result: int = module.main(argv)
    return result


if __name__ == "__main__":
    sys.exit(main())
