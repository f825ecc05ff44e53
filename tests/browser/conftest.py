"""Browser tests: Debian's chromium, headless, driven by playwright's sync API.

The server runs as a `roomcast serve` child process (so a test can kill and restart it);
playwright runs its own asyncio loop in this (test) process, never inside a trio run.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.cluster.conftest import RedisServer
from tests.support import ServerProcess, make_token

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
UI_WAIT = 10_000  # ms: every wait for the page has this time-out unless it says otherwise


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: run `scripts/setup.sh --test` (apt-get install "
                    "chromium); these tests are never skipped")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    """One server for a module's tests: each test has its own user and room on it."""
    process = ServerProcess()
    process.start()
    try:
        yield process
    finally:
        process.kill()


@pytest.fixture
def own_server() -> Iterator[ServerProcess]:
    """A server for one test alone (one that kills and restarts it)."""
    process = ServerProcess()
    process.start()
    try:
        yield process
    finally:
        process.kill()


_unique = itertools.count(1)


class PageOpener:
    """Opens the demo page of a server, as this test's own user (`user`) and subscribed to
    its own room (`room`) unless told otherwise, with client options in the page URL."""

    def __init__(self, browser: Browser, server: ServerProcess) -> None:
        n = next(_unique)
        self.user = f"user{n}"
        self.room = f"room{n}"
        self.browser = browser
        self.server = server
        self.context = browser.new_context()
        self.pages: list[Page] = []
        self.errors: list[str] = []

    def token(self, **claims: Any) -> str:
        return make_token(self.user, rooms=["*"], publish=["*"], **claims)

    def __call__(self, *, token: str | None = None, rooms: tuple[str, ...] | None = None,
                 **options: Any) -> Page:
        query = {"token": token or self.token(), "url": self.server.ws_url(), **options}
        rooms = (self.room,) if rooms is None else rooms
        if rooms:
            query["room"] = ",".join(rooms)
        page = self.context.new_page()
        page.set_default_timeout(UI_WAIT)
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.goto(self.server.http_url("/?" + urlencode(query)))
        self.pages.append(page)
        return page

    def close(self) -> None:
        self.context.close()
        assert not self.errors, f"uncaught errors in the page: {self.errors}"


@pytest.fixture
def open_page(browser: Browser, server: ServerProcess) -> Iterator[PageOpener]:
    opener = PageOpener(browser, server)
    yield opener
    opener.close()


@pytest.fixture
def open_own_page(browser: Browser, own_server: ServerProcess) -> Iterator[PageOpener]:
    opener = PageOpener(browser, own_server)
    yield opener
    opener.close()


@pytest.fixture
def redis_node(redis: RedisServer) -> Iterator[tuple[RedisServer, ServerProcess]]:
    """A real redis-server and a `roomcast serve` process on it."""
    node = ServerProcess("--backplane", redis.url)
    try:
        node.start()
        yield redis, node
    finally:
        node.kill()


def wait_ready(node: ServerProcess, ready: bool, timeout: float = 15.0) -> None:
    """Poll /readyz (another process: nothing to await) until it says `ready`, bounded."""
    deadline = time.monotonic() + timeout
    while (node.api("GET", "/readyz")[0] == 200) != ready:
        assert time.monotonic() < deadline, f"/readyz did not become {ready} in {timeout} s"
        time.sleep(0.05)
