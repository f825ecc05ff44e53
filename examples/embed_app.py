"""A Trio app that embeds roomcast: it serves WebSockets, answers its own command type,
and publishes a tick into `clock:ticks` every second.

    .venv/bin/python examples/embed_app.py --ticks 5

prints a token, serves ws://127.0.0.1:8000/ws for as long as it ticks (Ctrl-C stops it
sooner, just as gracefully), then shuts down. Connect with
`roomcast client ws://127.0.0.1:8000/ws --token … tail clock:ticks`.
"""

from __future__ import annotations

import argparse
import secrets
import signal
import sys
from typing import Any

import trio

import roomcast
from roomcast.cli import mint_token


async def tick(router: roomcast.Router, ticks: int) -> None:
    """Publish `ticks` ticks a second apart, then ask the router to shut down."""
    for n in range(1, ticks + 1):
        offset = await router.publish("clock:ticks", {"n": n}, event="tick")
        print(f"tick {n} published at offset {offset}", flush=True)
        await trio.sleep(1)
    router.shutdown()  # close every connection with 1001, then serve() returns


async def stop_on_signal(router: roomcast.Router) -> None:
    """Ctrl-C (or SIGTERM) shuts down as gracefully as the last tick does."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            print("stopping: closing every connection with 1001", flush=True)
            router.shutdown()
            return


async def main(ticks: int, port: int, http_port: int) -> None:
    settings = roomcast.Settings(
        jwt_secret=secrets.token_urlsafe(32), port=port, http_port=http_port,
        shutdown_grace=1,
    )
    print("token:", mint_token(settings, "demo", rooms=["*"], publish=["*"]), flush=True)

    async with roomcast.open_router(settings) as router, trio.open_nursery() as nursery:

        @router.command("request_metrics")
        async def request_metrics(principal: roomcast.Principal, payload: dict[str, Any]
                                  ) -> dict[str, Any]:
            """An app-specific command: answers with a few live numbers."""
            return {"asked_by": principal.user_id, **router.stats()}

        async def serve(task_status: trio.TaskStatus[None]) -> None:
            await router.serve(task_status=task_status)
            nursery.cancel_scope.cancel()  # drained: the ticks and the signal watch end too

        nursery.start_soon(stop_on_signal, router)
        await nursery.start(serve)
        print(f"serving ws://127.0.0.1:{router.ws_port}/ws", flush=True)
        nursery.start_soon(tick, router, ticks)
    print("stopped", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ticks", type=int, default=30)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--http-port", type=int, default=0)
    args = parser.parse_args()
    try:
        trio.run(main, args.ticks, args.port, args.http_port)
    except KeyboardInterrupt:  # Ctrl-C before the signal watch began
        sys.exit(130)
