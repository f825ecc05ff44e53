"""The `roomcast` command: serve, token (and the client, bench and fuzz tools)."""

from __future__ import annotations

import argparse
import gc
import os
import secrets
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

import jwt
import trio

from roomcast import log
from roomcast.settings import FIELDS, Settings, SettingsError, load_settings

DEV_BANNER = "DEVELOPMENT ONLY"


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("settings (also ROOMCAST_<NAME> or --config FILE)")
    for name in FIELDS:
        group.add_argument("--" + name.replace("_", "-"), dest=name, default=None,
                           metavar="VALUE")
    parser.add_argument("--config", default=None, metavar="FILE", help="a TOML settings file")


def _settings_from(args: argparse.Namespace) -> Settings:
    flags = {name: getattr(args, name) for name in FIELDS}
    return load_settings(flags, os.environ, args.config)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="roomcast", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the router server")
    serve.add_argument("--dev", action="store_true",
                       help="make up a JWT secret and print a token (development only)")
    _add_setting_flags(serve)
    token = sub.add_parser("token", help="mint a JWT with the configured secret")
    token.add_argument("--sub", required=True, help="the user id")
    token.add_argument("--rooms", action="append", default=None,
                       help="subscribe pattern (repeat, or comma-separated)")
    token.add_argument("--publish", action="append", default=None,
                       help="publish pattern (repeat, or comma-separated)")
    token.add_argument("--ttl", type=float, default=3600.0, help="seconds until it expires")
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
    """A signed token for `sub` with the configured HMAC secret."""
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


async def _serve(settings: Settings) -> None:
    from roomcast.router import open_router

    async with open_router(settings) as router, trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:

            async def on_signal() -> None:
                async for signum in signals:
                    log.event("signal", signal=signal.Signals(signum).name)
                    router.shutdown()
                    return

            nursery.start_soon(on_signal)
            await router.serve()
            nursery.cancel_scope.cancel()


def serve_command(args: argparse.Namespace) -> int:
    settings = _settings_from(args)
    log.configure(settings.log_format, settings.log_level.upper())
    if not settings.jwt_secret and not settings.jwt_public_key:
        if not args.dev:
            raise SettingsError(
                "jwt_secret or jwt_public_key is required (or run `roomcast serve --dev` "
                "for a made-up development secret)"
            )
        settings = settings.replace(jwt_secret=secrets.token_urlsafe(48))
        token = mint_token(settings, "dev", rooms=["*"], publish=["*"], ttl=7 * 86400)
        bar = "=" * 72
        print(f"{bar}\n{DEV_BANNER}: roomcast made up a JWT secret for this run.\n"
              f"Never use --dev in production.\n\n"
              f"  secret: {settings.jwt_secret}\n"
              f"  token for user 'dev' (rooms *, publish *, 7 days):\n  {token}\n\n"
              f"  connect: ws://{settings.host}:{settings.port}{settings.path}?token={token}\n"
              f"{bar}", file=sys.stderr, flush=True)
    from roomcast.auth import Authenticator

    Authenticator(settings)  # fail now, with a one-line message, on a bad key
    if settings.jwt_secret and len(settings.jwt_secret.encode()) < 32:
        print("roomcast: warning: jwt_secret is shorter than 32 bytes; anyone who can try "
              "many guesses may forge tokens. Use a long random secret.", file=sys.stderr)
    # Tens of thousands of live connections are millions of tracked objects: with the
    # default thresholds full collections come often and stall the loop for ~100 ms.
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    trio.run(_serve, settings)
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
