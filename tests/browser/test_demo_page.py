"""The demo page at `/`, in headless Chromium against a real `roomcast serve` process."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import websockets.sync.client
from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import UI_WAIT, PageOpener, wait_ready
from tests.cluster.conftest import RedisServer
from tests.support import ServerProcess, make_token

GREEN = "rgb(31, 157, 85)"
RED = "rgb(214, 64, 69)"


def wait_subscribed(page: Page, room: str) -> None:
    """The page has its `subscribed` reply for the room (it lists the room then)."""
    expect(page.locator(f'[data-testid=room][data-room="{room}"]')).to_be_visible()


def message(page: Page, room: str, offset: int, epoch: str | None = None) -> object:
    selector = f'li.message[data-room="{room}"][data-offset="{offset}"]'
    if epoch is not None:
        selector += f'[data-epoch="{epoch}"]'
    return page.locator(selector)


def feed_messages(page: Page) -> list[dict[str, str]]:
    """What the feed shows, in order: room, offset, epoch, how it came, and the data."""
    result: list[dict[str, str]] = page.eval_on_selector_all(
        "li.message",
        "items => items.map(li => ({room: li.dataset.room, offset: li.dataset.offset, "
        "epoch: li.dataset.epoch, via: li.dataset.via, "
        "data: li.querySelector('[data-testid=message-data]').textContent}))",
    )
    return result


def dot_colour(page: Page) -> str:
    colour: str = page.eval_on_selector(
        "#status-dot", "dot => getComputedStyle(dot).backgroundColor")
    return colour


def test_the_page_loads_connects_and_shows_a_green_dot(open_page: PageOpener) -> None:
    page = open_page(rooms=())
    status = page.get_by_test_id("status")
    expect(status).to_have_attribute("data-state", "connected")
    expect(page.get_by_test_id("status-label")).to_have_text("connected")
    assert dot_colour(page) == GREEN


def test_the_page_shows_a_message_published_through_the_api(
    open_page: PageOpener, server: ServerProcess
) -> None:
    page = open_page()
    room = open_page.room
    wait_subscribed(page, room)
    offset = server.publish(room, {"text": "hello from the API"}, "greeting")
    item = message(page, room, offset)
    expect(item).to_contain_text('{"text":"hello from the API"}')
    expect(item).to_have_attribute("data-event", "greeting")
    expect(item).to_have_attribute("data-via", "live")


def test_the_page_shows_reconnecting_during_a_restart_then_the_messages_published_meanwhile(
    open_own_page: PageOpener, own_server: ServerProcess
) -> None:
    open_page, server = open_own_page, own_server
    # The first reconnect attempt comes exactly 4 s after the loss (no jitter), long
    # enough for the restart and the publishes to happen while the page is away.
    page = open_page(initialDelay=4000, jitter=0)
    room = open_page.room
    wait_subscribed(page, room)
    server.publish(room, {"n": 1})
    expect(message(page, room, 1)).to_be_visible()
    old_epoch = message(page, room, 1).get_attribute("data-epoch")

    server.kill()
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "reconnecting")
    assert dot_colour(page) == RED
    server.start()
    # In-memory history died with the process: the new server starts a new epoch, so
    # resuming with `since` cannot replay these; the contract says `recovered: false`.
    server.publish(room, {"n": 2})
    server.publish(room, {"n": 3})
    assert page.get_by_test_id("status").get_attribute("data-state") == "reconnecting", (
        "the page came back before the messages were published: the test proves nothing")

    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "connected")
    expect(page.get_by_test_id("notice").filter(has_text="history was reset")).to_be_visible()
    # The page reloads from the server's history on a new epoch: both are there.
    expect(message(page, room, 2)).to_be_visible()
    server.publish(room, {"n": 4})
    expect(message(page, room, 3)).to_be_visible()
    shown = feed_messages(page)
    assert [(m["data"], m["via"]) for m in shown] == [
        ('{"n":1}', "live"), ('{"n":2}', "history"), ('{"n":3}', "history"),
        ('{"n":4}', "live"),
    ]
    assert shown[0]["epoch"] == old_epoch
    assert {m["epoch"] for m in shown[1:]} == {shown[1]["epoch"]} != {old_epoch}


def test_the_page_resumes_with_since_after_a_4409_and_shows_every_message_once(
    open_page: PageOpener, server: ServerProcess
) -> None:
    page = open_page(initialDelay=1500, jitter=0)
    room = open_page.room
    wait_subscribed(page, room)
    for n in (1, 2, 3):
        server.publish(room, {"n": n})
    expect(message(page, room, 3)).to_be_visible()

    status, body = server.api("POST", "/api/disconnect",
                              {"user_id": open_page.user, "code": 4409, "reason": "too slow"})
    assert (status, body) == (200, {"closed": 1})
    # The connection is closing from here on: these reach the page only through `since`.
    for n in (4, 5, 6):
        server.publish(room, {"n": n})

    expect(page.get_by_test_id("notice").filter(
        has_text="resumed after offset 3, nothing lost")).to_be_visible()
    expect(message(page, room, 6)).to_be_visible()
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "connected")
    shown = feed_messages(page)
    assert [m["offset"] for m in shown] == ["1", "2", "3", "4", "5", "6"]
    assert [m["data"] for m in shown] == [json.dumps({"n": n}, separators=(",", ":"))
                                          for n in range(1, 7)]
    assert [m["via"] for m in shown] == ["live"] * 3 + ["replay"] * 3
    assert len({m["epoch"] for m in shown}) == 1


def test_the_publish_box_publishes_and_the_feed_shows_it(open_page: PageOpener) -> None:
    page = open_page()
    room = open_page.room
    wait_subscribed(page, room)
    page.get_by_test_id("pub-event").fill("note.added")
    page.get_by_test_id("pub-data").fill('{"text": "from the page"}')
    page.get_by_test_id("publish").click()
    expect(page.get_by_test_id("pub-result")).to_have_text(f"published to {room} at offset 1")
    item = message(page, room, 1)
    expect(item).to_contain_text('{"text":"from the page"}')
    expect(item).to_contain_text(f"from {open_page.user}")


def test_the_publish_box_refuses_data_that_is_not_json(open_page: PageOpener) -> None:
    page = open_page()
    room = open_page.room
    wait_subscribed(page, room)
    page.get_by_test_id("pub-data").fill("{not json")
    page.get_by_test_id("publish").click()
    expect(page.get_by_test_id("pub-result")).to_contain_text("data must be JSON")
    expect(page.locator("li.message")).to_have_count(0)


def test_the_subscribe_box_subscribes_to_a_room(open_page: PageOpener,
                                                 server: ServerProcess) -> None:
    page = open_page(rooms=())
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "connected")
    room = f"project:{open_page.room}"
    page.get_by_test_id("sub-room").fill(room)
    page.get_by_test_id("subscribe").click()
    wait_subscribed(page, room)
    offset = server.publish(room, {"task_id": 7}, "task.created")
    expect(message(page, room, offset)).to_contain_text('{"task_id":7}')


def test_the_presence_list_shows_users_joining_and_leaving(
    open_page: PageOpener, server: ServerProcess
) -> None:
    page = open_page()
    room = open_page.room
    wait_subscribed(page, room)
    presence = page.get_by_test_id("presence")
    expect(presence.locator(f'[data-user="{open_page.user}"]')).to_be_visible()
    bob_token = make_token("bob", rooms=["*"])
    with websockets.sync.client.connect(server.ws_url(bob_token), open_timeout=5) as bob:
        assert json.loads(bob.recv(timeout=5))["type"] == "connected"
        bob.send(json.dumps({"type": "subscribe", "id": 1, "rooms": [room]}))
        assert json.loads(bob.recv(timeout=5))["type"] == "subscribed"
        expect(presence.locator('[data-user="bob"]')).to_be_visible()
    expect(presence.locator('[data-user="bob"]')).to_have_count(0, timeout=UI_WAIT)
    expect(presence.locator(f'[data-user="{open_page.user}"]')).to_be_visible()


def test_the_page_fills_a_gap_the_server_did_not_replay_from_history(browser: Browser) -> None:
    # A tiny outbox: the server replays only the newest few messages on resume and
    # reports the rest as `missed`; the page fetches those from history.
    server = ServerProcess("--max-pending", "8")
    server.start()
    opener = PageOpener(browser, server)
    try:
        page = opener(initialDelay=1500, jitter=0)
        room = opener.room
        wait_subscribed(page, room)
        server.publish(room, {"n": 1})
        expect(message(page, room, 1)).to_be_visible()
        status, _ = server.api("POST", "/api/disconnect", {"user_id": opener.user, "code": 4409})
        assert status == 200
        # The whole gap in one request, well inside the page's reconnect delay even on a
        # busy machine (ten separate publishes could straddle it).
        status, answer = server.api("POST", "/api/batch", {"commands": [
            {"method": "publish", "params": {"room": room, "data": {"n": n}}}
            for n in range(2, 12)]})
        assert status == 200, answer
        expect(page.get_by_test_id("notice").filter(has_text="were not replayed")).to_be_visible()
        expect(message(page, room, 2)).to_be_visible()
        shown = feed_messages(page)
        assert [int(m["offset"]) for m in shown] == list(range(1, 12))
        assert {m["via"] for m in shown[1:]} == {"replay", "history"}
        assert shown[-1]["via"] == "replay" and shown[1]["via"] == "history"
    finally:
        opener.close()
        server.kill()


def test_the_page_finds_the_websocket_listener_without_a_url_parameter(
    browser: Browser, server: ServerProcess
) -> None:
    assert server.port != server.http_port - 1  # not the default layout the page guesses
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(10_000)
        token = make_token("locator", rooms=["*"], publish=["*"])
        page.goto(server.http_url("/?" + urlencode({"token": token})))
        expect(page.get_by_test_id("status")).to_have_attribute("data-state", "connected")
        assert page.input_value("#url") == f"ws://127.0.0.1:{server.port}/ws"
    finally:
        context.close()


# ------------------------------------------------------------------ the first ten minutes
def test_the_room_fields_are_filled_and_an_empty_subscribe_says_what_to_do(
    open_page: PageOpener, server: ServerProcess
) -> None:
    page = open_page(rooms=())
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "connected")
    assert page.input_value("#sub-room") == "project:12"
    assert page.input_value("#pub-room") == "project:12"
    page.get_by_test_id("sub-room").fill("")
    page.get_by_test_id("subscribe").click()
    expect(page.get_by_test_id("notice").filter(has_text="name a room to subscribe to")
           ).to_be_visible()
    room = f"project:{open_page.room}"
    page.get_by_test_id("sub-room").fill(room)
    page.get_by_test_id("subscribe").click()
    wait_subscribed(page, room)


def test_presence_is_cleared_when_the_connection_is_lost(
    open_own_page: PageOpener, own_server: ServerProcess
) -> None:
    page = open_own_page(initialDelay=60_000, jitter=0)  # stays away for the test
    wait_subscribed(page, open_own_page.room)
    presence = page.get_by_test_id("presence")
    expect(presence.locator(f'[data-user="{open_own_page.user}"]')).to_be_visible()
    own_server.kill()
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "reconnecting")
    expect(presence.locator("li")).to_have_count(0)
    expect(page.locator("#presence-empty")).to_have_text(
        "Not connected: the list comes back with the connection.")


def test_after_a_refused_token_the_page_says_how_to_get_one_that_works(
    open_page: PageOpener
) -> None:
    wrong = make_token(open_page.user, rooms=["*"], secret="another-secret-0123456789-abcdef")
    page = open_page(token=wrong, rooms=())
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "disconnected")
    expect(page.get_by_test_id("status-label")).to_contain_text("4401")
    hint = page.get_by_test_id("notice").filter(has_text="refused this token")
    expect(hint).to_contain_text("./scripts/serve-dev")
    expect(hint).to_contain_text("roomcast token")


# ---------------------------------------------------------------- a replaced stream (§17)


def test_after_redis_restarts_empty_the_page_says_the_stream_was_reset_and_shows_the_new_one(
    browser: Browser, redis_node: tuple[RedisServer, ServerProcess]
) -> None:
    redis, node = redis_node
    opener = PageOpener(browser, node)
    try:
        page = opener()
        room = opener.room
        wait_subscribed(page, room)
        assert [node.publish(room, {"n": n}) for n in (1, 2, 3)] == [1, 2, 3]
        expect(message(page, room, 3)).to_be_visible()
        old = message(page, room, 1).get_attribute("data-epoch")

        redis.kill()
        wait_ready(node, False)
        redis.start()  # empty: the room's stream is gone, the next one starts at 1 again
        wait_ready(node, True)
        # The new stream's offsets 1-3 are not the old stream's: the feed shows them.
        assert [node.publish(room, {"n": n}) for n in (4, 5, 6)] == [1, 2, 3]
        reset = page.get_by_test_id("notice").filter(has_text=f"the stream of {room} was reset")
        expect(reset).to_be_visible()
        expect(page.get_by_test_id("notice").filter(has_text="(after the reset)")).to_be_visible()
        expect(page.locator("li.message")).to_have_count(6)
        shown = feed_messages(page)
        assert [(m["offset"], m["data"]) for m in shown] == [
            (str(offset), json.dumps({"n": n}, separators=(",", ":")))
            for offset, n in [(1, 1), (2, 2), (3, 3), (1, 4), (2, 5), (3, 6)]]
        new = shown[3]["epoch"]
        assert [m["epoch"] for m in shown] == [old] * 3 + [new] * 3 and new != old
        expect(reset).to_contain_text(f"new epoch {new}")
        expect(reset).to_contain_text("reloading")
    finally:
        opener.close()


def test_a_reset_with_a_missed_range_says_which_offsets_were_lost_and_reloads(
    open_page: PageOpener, server: ServerProcess
) -> None:
    page = open_page()
    room = open_page.room
    wait_subscribed(page, room)
    for n in (1, 2):
        server.publish(room, {"n": n})
    expect(message(page, room, 2)).to_be_visible()
    epoch = message(page, room, 1).get_attribute("data-epoch")
    # The frame a node sends when a gap in the same stream cannot be filled (no real path
    # produces it on one node on demand), fed to the page's client as if it had arrived.
    page.evaluate("(frame) => window.roomcast._onFrame(JSON.stringify(frame))", {
        "type": "reset", "room": room, "epoch": epoch, "offset": 5,
        "missed": {"from": 3, "to": 5}})
    expect(page.get_by_test_id("notice").filter(
        has_text=f"{room}: offsets 3–5 were lost")).to_contain_text("reloading")
    expect(page.get_by_test_id("notice").filter(
        has_text=f"{room}: 2 message(s) from the server's history (after the reset)")
    ).to_be_visible()
    assert [m["offset"] for m in feed_messages(page)] == ["1", "2"]
