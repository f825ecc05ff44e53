"""The live-server fuzzer (roomcast.fuzz) against a real server on 127.0.0.1.

The number of examples follows the hypothesis profile: "ci" runs a few hundred, and
`--hypothesis-profile=long` ten thousand. Failing examples go to hypothesis's database
(.hypothesis/) and are replayed first on the next run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import trio
from hypothesis import settings

from roomcast import fuzz
from roomcast.codes import CloseCode
from roomcast.errors import RoomcastError
from roomcast.router import Router
from tests.support import SECRET, WAIT, running_server


def url(router: Router) -> str:
    return f"ws://127.0.0.1:{router.ws_port}/ws"


async def wait_for_no_connections(router: Router) -> None:
    """The server forgets every fuzz connection: nothing leaks."""
    with trio.fail_after(WAIT):
        await router.wait_drained()


async def test_the_server_keeps_the_contract_under_the_live_fuzzer() -> None:
    examples = settings().max_examples
    async with running_server(max_message_bytes=65_536) as router:
        report = await fuzz.fuzz(url(router), SECRET, examples=examples, timeout=WAIT)
        print(report.summary())  # shown with -s or -rP: what was exercised
        assert report.failure is None, report.summary()
        assert report.examples >= examples
        assert report.control_messages > 0 and report.pushes > 0
        assert router.metrics.handler_errors == 0
        assert router.metrics.closes[CloseCode.INTERNAL] == 0
        await wait_for_no_connections(router)


async def test_the_fuzzer_notices_a_room_served_beyond_the_token() -> None:
    # With default_rooms "*", a token without a `rooms` claim may read every room, where the
    # contract's default is its personal room only: the fuzzer must call that out.
    async with running_server(default_rooms=("*",)) as router:
        report = await fuzz.fuzz(url(router), SECRET, examples=200, seed=7, shrink=False,
                                 timeout=WAIT)
    assert report.failure is not None
    assert "succeeded; expected ['forbidden']" in report.failure


def test_the_fuzzer_refuses_a_target_that_is_not_loopback(capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    code = fuzz.main(["ws://10.1.2.3:8000/ws", "--jwt-secret", SECRET])
    assert code == 2
    assert "--allow-remote" in capsys.readouterr().err


def test_loopback_names_and_addresses_are_allowed_targets() -> None:
    for target in ("ws://127.0.0.1:1/ws", "ws://127.9.9.9:1/ws", "ws://[::1]:1/ws",
                   "wss://localhost/ws"):
        fuzz.parse_target(target)
    assert fuzz.parse_target("ws://10.1.2.3:8000/ws", allow_remote=True).host == "10.1.2.3"


def test_a_target_the_fuzzer_refuses_raises_a_roomcast_error_that_says_what_to_do() -> None:
    for target, hint in (("ws://10.1.2.3:8000/ws", "--allow-remote"),
                         ("http://127.0.0.1:8000/ws", "ws://127.0.0.1:8000/ws"),
                         ("ws://127.0.0.1:99999/ws", "invalid port")):
        with pytest.raises(fuzz.TargetError, match=hint) as caught:
            fuzz.parse_target(target)
        assert isinstance(caught.value, RoomcastError) and isinstance(caught.value, ValueError)


async def test_roomcast_fuzz_runs_from_the_command_line(tmp_path: Path) -> None:
    async with running_server() as router:
        with trio.fail_after(120):
            done = await trio.run_process(
                [sys.executable, "-m", "roomcast", "fuzz", url(router), "--jwt-secret", SECRET,
                 "--examples", "15", "--seed", "3", "--clients", "2"],
                cwd=str(tmp_path), capture_stdout=True, capture_stderr=True, check=False,
            )
    out = done.stdout.decode()
    assert done.returncode == 0, out + done.stderr.decode()
    assert "15 examples" in out and "OK: no contract violation found" in out
