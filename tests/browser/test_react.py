"""The React bindings in Chromium: tests/js/page/app.tsx, built with esbuild (React's
development build, under StrictMode) and served from a test HTTP server, against a real
`roomcast serve` process that a test kills and starts again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import UI_WAIT
from tests.browser.jstools import JS_DIR, StaticServer, esbuild
from tests.support import ServerProcess, make_token

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>roomcast React test page</title></head>
<body><div id="root"></div><script type="module" src="/app.js"></script></body></html>
"""


@pytest.fixture(scope="module")
def react_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StaticServer]:
    folder: Path = tmp_path_factory.mktemp("react-page")
    esbuild(JS_DIR / "page" / "app.tsx", "--bundle", "--format=esm",
            f"--outfile={folder / 'app.js'}", '--tsconfig-raw={"compilerOptions":'
            '{"jsx":"react-jsx"}}', '--define:process.env.NODE_ENV="development"')
    (folder / "index.html").write_text(PAGE)
    site = StaticServer(folder)
    try:
        yield site
    finally:
        site.close()


class ReactPage:
    """The test page in its own browser context; page errors are collected and fail the test."""

    def __init__(self, browser: Browser, site: StaticServer, server: ServerProcess) -> None:
        self.context = browser.new_context()
        self.site = site
        self.server = server
        self.errors: list[str] = []

    def open(self, user: str, rooms: list[str] | None = None, **query: Any) -> Page:
        token = make_token(user, rooms=rooms or ["*"], publish=["*"])
        page = self.context.new_page()
        page.set_default_timeout(UI_WAIT)
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.goto(self.site.url("/?" + urlencode(
            {"url": self.server.ws_url(), "token": token, **query})))
        return page

    def close(self) -> None:
        self.context.close()
        assert not self.errors, f"uncaught errors in the page: {self.errors}"


@pytest.fixture
def react_page(browser: Browser, react_site: StaticServer,
               own_server: ServerProcess) -> Iterator[ReactPage]:
    opened = ReactPage(browser, react_site, own_server)
    yield opened
    opened.close()


def shown(page: Page, feed: str) -> list[tuple[str, int, str]]:
    """What a useRoom list shows, in order: (epoch, offset, data)."""
    items: list[list[Any]] = page.eval_on_selector_all(
        f"[data-testid={feed}] [data-testid=message]",
        "items => items.map(li => [li.dataset.epoch, Number(li.dataset.offset), li.textContent])")
    return [(epoch, offset, data) for epoch, offset, data in items]


def states(page: Page) -> list[str]:
    """Every state useRoomcast() rendered, repeats in a row taken out."""
    seen: list[str] = page.evaluate("() => window.states")
    return [s for i, s in enumerate(seen) if i == 0 or seen[i - 1] != s]


def test_use_room_lists_history_live_messages_and_what_a_restart_brought(
    react_page: ReactPage, own_server: ServerProcess
) -> None:
    server = own_server
    for n in range(3):
        server.publish("since", {"n": n})
    epoch = server.api("GET", "/api/history?room=since")[1]["epoch"]
    server.publish("all", {"n": "before 1"})
    server.publish("all", {"n": "before 2"})
    page = react_page.open("reader", all="all", filtered="filtered", since_room="since",
                           since_offset=1, since_epoch=epoch, initialDelay=200)

    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "connected")
    for feed in ("all", "filtered", "since"):
        expect(page.get_by_test_id(feed)).to_have_attribute("data-status", "live")
    # `history: 10` loaded what the room had; `since` got what followed its position.
    expect(page.locator("[data-testid=all] [data-testid=message]")).to_have_count(2)
    expect(page.locator("[data-testid=since] [data-testid=message]")).to_have_count(2)
    assert shown(page, "since") == [(epoch, 2, '{"n":1}'), (epoch, 3, '{"n":2}')]
    expect(page.locator("[data-testid=since] [data-testid=recovery]")).to_have_attribute(
        "data-recovered", "true")

    # Live: every message of the room; the filtered list only event `keep` with kind `a`.
    server.publish("all", {"n": "live"})
    server.publish("filtered", {"kind": "a", "n": 1}, event="keep")
    server.publish("filtered", {"kind": "a", "n": 2}, event="drop")
    server.publish("filtered", {"kind": "b", "n": 3}, event="keep")
    server.publish("filtered", {"kind": "a", "n": 4}, event="keep")
    expect(page.locator("[data-testid=all] [data-testid=message]")).to_have_count(3)
    expect(page.locator("[data-testid=filtered] [data-testid=message]")).to_have_count(2)
    old = page.get_by_test_id("all").get_attribute("data-epoch")
    assert shown(page, "all") == [(old, 1, '{"n":"before 1"}'), (old, 2, '{"n":"before 2"}'),
                                  (old, 3, '{"n":"live"}')]
    stream = page.get_by_test_id("filtered").get_attribute("data-epoch")  # each room has its own
    assert shown(page, "filtered") == [(stream, 1, '{"kind":"a","n":1}'),
                                       (stream, 4, '{"kind":"a","n":4}')]

    # A restart of the in-memory server loses its history: a new stream. The page may not
    # reconnect (its token function waits) until the new stream has messages of its own.
    page.evaluate("() => window.hold()")
    server.kill()
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "reconnecting")
    expect(page.get_by_test_id("status")).to_have_attribute("data-code", "1006")
    expect(page.get_by_test_id("all")).to_have_attribute("data-status", "recovering")
    server.start()
    server.publish("all", {"n": "after 1"})
    server.publish("all", {"n": "after 2"})
    server.publish("filtered", {"kind": "a", "n": 5}, event="drop")
    server.publish("filtered", {"kind": "a", "n": 6}, event="keep")
    server.publish("filtered", {"kind": "b", "n": 7}, event="keep")
    page.evaluate("() => window.release()")

    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "connected")
    expect(page.get_by_test_id("all")).to_have_attribute("data-status", "live")
    recovery = page.locator("[data-testid=all] [data-testid=recovery]")
    expect(recovery).to_have_attribute("data-epoch-changed", "true")
    expect(page.locator("[data-testid=all] [data-testid=message]")).to_have_count(5)
    new = page.get_by_test_id("all").get_attribute("data-epoch")
    assert new and new != old
    server.publish("all", {"n": "after 3"})
    expect(page.locator("[data-testid=all] [data-testid=message]")).to_have_count(6)
    assert shown(page, "all") == [
        (old, 1, '{"n":"before 1"}'), (old, 2, '{"n":"before 2"}'), (old, 3, '{"n":"live"}'),
        (new, 1, '{"n":"after 1"}'), (new, 2, '{"n":"after 2"}'), (new, 3, '{"n":"after 3"}')]
    # What history brought back is filtered like the subscription.
    expect(page.locator("[data-testid=filtered] [data-testid=message]")).to_have_count(3)
    assert shown(page, "filtered")[2][1:] == (2, '{"kind":"a","n":6}')
    assert shown(page, "filtered")[2][0] not in ("", stream)
    assert states(page)[-4:] == ["connecting", "connected", "reconnecting", "connected"]


def test_use_roomcast_shows_a_stop_code_and_use_room_a_refused_room(
    react_page: ReactPage, own_server: ServerProcess
) -> None:
    page = react_page.open("limited", rooms=["mine:*"], all="mine:1", filtered="theirs:1")
    expect(page.get_by_test_id("all")).to_have_attribute("data-status", "live")
    expect(page.get_by_test_id("filtered")).to_have_attribute("data-status", "error")
    expect(page.locator("[data-testid=filtered] [data-testid=error]")).to_contain_text(
        "forbidden")
    expect(page.get_by_test_id("since")).to_have_attribute("data-status", "idle")
    status, body = own_server.api("POST", "/api/disconnect",
                                  {"user_id": "limited", "code": 4403, "reason": "go away"})
    assert (status, body) == (200, {"closed": 1})
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "disconnected")
    expect(page.get_by_test_id("status")).to_have_attribute("data-code", "4403")
    assert states(page)[-3:] == ["connecting", "connected", "disconnected"]


def test_use_room_fetches_the_range_a_reset_says_was_missed(
    react_page: ReactPage, own_server: ServerProcess
) -> None:
    """A `reset` frame naming a gap of the same stream (fed to the page's client): the list
    fetches what history still has of it, in offset order before what came live."""
    for n in range(1, 6):
        own_server.publish("gap", {"n": n})
    page = react_page.open("gapper", since_room="gap")
    expect(page.get_by_test_id("since")).to_have_attribute("data-status", "live")
    epoch = page.get_by_test_id("since").get_attribute("data-epoch")
    own_server.publish("gap", {"n": 6})
    expect(page.locator("[data-testid=since] [data-testid=message]")).to_have_count(1)
    page.evaluate("""(epoch) => window.client._onFrame(JSON.stringify({type: "reset",
        room: "gap", epoch, offset: 6, missed: {from: 2, to: 4}}))""", epoch)
    expect(page.locator("[data-testid=since] [data-testid=message]")).to_have_count(4)
    assert [offset for _, offset, _ in shown(page, "since")] == [2, 3, 4, 6]


def test_hooks_on_one_room_share_its_subscription_until_the_last_unmounts(
    react_page: ReactPage, own_server: ServerProcess
) -> None:
    page = react_page.open("twins", all="shared", twin="1", filtered="other")
    for feed in ("all", "twin", "filtered"):
        expect(page.get_by_test_id(feed)).to_have_attribute("data-status", "live")
    own_server.publish("shared", {"n": 1})
    for feed in ("all", "twin"):
        expect(page.locator(f"[data-testid={feed}] [data-testid=message]")).to_have_count(1)
    page.get_by_test_id("hide-twin").click()
    expect(page.get_by_test_id("twin")).to_have_count(0)
    own_server.publish("shared", {"n": 2})
    expect(page.locator("[data-testid=all] [data-testid=message]")).to_have_count(2)
    assert page.evaluate("() => window.client.subscriptions.has('shared')")

    page.evaluate("() => { window.seen = []; "
                  "window.client.on('frame', (f) => window.seen.push(f)); }")
    page.get_by_test_id("hide-all").click()
    page.wait_for_function("() => window.seen.some((f) => f.type === 'unsubscribed')")
    assert page.evaluate("() => window.seen.find((f) => f.type === 'unsubscribed').rooms") == [
        "shared"]
    # Nothing of the room comes any more: a message published after it, then one of another
    # room, and only the other arrives.
    own_server.publish("shared", {"n": 3})
    own_server.publish("other", {"kind": "a"}, event="keep")
    expect(page.locator("[data-testid=filtered] [data-testid=message]")).to_have_count(1)
    assert page.evaluate("() => window.seen.filter((f) => f.type === 'message')"
                         ".map((f) => f.room)") == ["other"]
