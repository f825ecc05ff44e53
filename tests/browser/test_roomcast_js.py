"""roomcast.js's own behaviour in Chromium: close-code rules, new tokens after 4401, token
refresh, backoff, dead-link detection. Each test drives the demo page (its token box is
the client's token function) against a real `roomcast serve` process."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import PageOpener, wait_ready
from tests.cluster.conftest import RedisServer
from tests.support import ServerProcess, TcpProxy


def status(page: Page) -> object:
    return page.get_by_test_id("status")


def notice(page: Page, text: str) -> object:
    return page.get_by_test_id("notice").filter(has_text=text)


def connected(page: Page) -> None:
    expect(status(page)).to_have_attribute("data-state", "connected")


def connected_twice(page: Page, user: str) -> None:
    """The page connected, lost the connection and connected again."""
    expect(page.get_by_test_id("notice").filter(has_text=f"connected as {user}")
           ).to_have_count(2)


def test_a_4401_then_a_new_token_from_the_token_function_reconnects(
    open_page: PageOpener, server: ServerProcess
) -> None:
    first = open_page.token(jti=f"{open_page.user}-first")
    page = open_page(token=first)
    expect(page.get_by_test_id("room")).to_have_count(1)
    page.get_by_test_id("token").fill(open_page.token(jti=f"{open_page.user}-second"))
    assert server.api("POST", "/api/revoke", {"jti": f"{open_page.user}-first"})[0] == 200
    expect(notice(page, "connection lost (4401: token revoked)")).to_be_visible()
    connected_twice(page, open_page.user)
    connected(page)
    # It came back subscribed: a new message arrives.
    offset = server.publish(open_page.room, {"after": "4401"})
    expect(page.locator(f'li.message[data-offset="{offset}"]')).to_be_visible()


def test_a_4401_with_the_same_token_stops_for_good(
    open_page: PageOpener, server: ServerProcess
) -> None:
    token = open_page.token(jti=f"{open_page.user}-only")
    page = open_page(token=token)
    connected(page)
    assert server.api("POST", "/api/revoke", {"jti": f"{open_page.user}-only"})[0] == 200
    expect(status(page)).to_have_attribute("data-state", "disconnected")
    expect(page.get_by_test_id("status-label")).to_have_text(
        "disconnected (4401: token revoked)")
    assert page.evaluate("window.roomcast._timers.reconnect") is None


@pytest.mark.parametrize("code", [1000, 4400, 4403])
def test_a_stop_code_from_the_server_ends_reconnecting(
    open_page: PageOpener, server: ServerProcess, code: int
) -> None:
    page = open_page(rooms=())
    connected(page)
    status_code, body = server.api("POST", "/api/disconnect",
                                   {"user_id": open_page.user, "code": code, "reason": "go away"})
    assert (status_code, body) == (200, {"closed": 1})
    expect(page.get_by_test_id("status-label")).to_have_text(f"disconnected ({code}: go away)")
    assert page.evaluate("window.roomcast._timers.reconnect") is None


@pytest.mark.parametrize("code", [4408, 4500])
def test_a_retryable_close_code_reconnects(
    open_page: PageOpener, server: ServerProcess, code: int
) -> None:
    page = open_page(rooms=())
    connected(page)
    server.api("POST", "/api/disconnect", {"user_id": open_page.user, "code": code})
    expect(notice(page, f"connection lost ({code}")).to_be_visible()
    connected_twice(page, open_page.user)
    connected(page)


def test_a_4429_waits_the_long_backoff(open_page: PageOpener, server: ServerProcess) -> None:
    page = open_page(rooms=(), jitter=0, longDelay=7000)
    connected(page)
    server.api("POST", "/api/disconnect", {"user_id": open_page.user, "code": 4429})
    expect(page.get_by_test_id("status-label")).to_have_text(
        "reconnecting in 7.0 s (attempt 1, close 4429)")


def test_the_token_is_refreshed_before_it_expires(
    open_page: PageOpener, server: ServerProcess
) -> None:
    page = open_page(token=open_page.token(ttl=4), rooms=())
    connected(page)
    page.get_by_test_id("token").fill(open_page.token(ttl=3600))
    expect(notice(page, "token refreshed, now valid until")).to_be_visible()
    connected(page)
    assert page.get_by_test_id("notice").filter(has_text="connection lost").count() == 0


def test_a_link_that_stops_answering_pings_is_dropped_and_reconnected(
    open_page: PageOpener, server: ServerProcess
) -> None:
    proxy = TcpProxy(server.port)
    try:
        page = open_page(rooms=(), url=proxy.url(), pingInterval=300, pingTimeout=700)
        connected(page)
        proxy.hold()  # nothing gets through any more, and nothing is closed
        expect(notice(page, "no answer to a ping within 700 ms")).to_be_visible()
        connected_twice(page, open_page.user)
        connected(page)
    finally:
        proxy.close()


def test_backoff_grows_by_the_factor_up_to_the_cap_with_full_jitter(
    open_page: PageOpener,
) -> None:
    page = open_page(rooms=())
    delays = page.evaluate("""async () => {
        const { backoffDelay } = await import("/roomcast.js");
        const top = (a) => backoffDelay(a, {}, () => 0);
        const bottom = (a) => backoffDelay(a, {}, () => 0.999999);
        const custom = (a) => backoffDelay(a, {initialDelay: 100, factor: 2, maxDelay: 1000,
                                               jitter: 0}, () => 0.5);
        return {top: [0, 1, 2, 3, 30].map(top), bottom: [0, 30].map(bottom),
                custom: [0, 1, 2, 3, 4, 5].map(custom)};
    }""")
    assert delays["top"] == [500, 750, 1125, 1687.5, 30000]
    assert all(0 <= d < 0.1 for d in delays["bottom"])
    assert delays["custom"] == [100, 200, 400, 800, 1000, 1000]


def test_a_publish_whose_reply_was_lost_is_sent_again_and_not_doubled(
    open_page: PageOpener, server: ServerProcess
) -> None:
    proxy = TcpProxy(server.port)
    try:
        page = open_page(url=proxy.url(), initialDelay=300)
        room = open_page.room
        expect(page.locator(f'[data-testid=room][data-room="{room}"]')).to_be_visible()
        proxy.hold(up=False, down=True)  # the server gets the publish; its reply is lost
        page.get_by_test_id("pub-data").fill('{"once": true}')
        page.get_by_test_id("publish").click()
        expect(page.get_by_test_id("pub-result")).to_have_text("publishing…")
        # The server has it once it is in history (another process: poll, bounded).
        deadline = time.monotonic() + 10
        while not server.api("GET", f"/api/history?room={room}")[1]["messages"]:
            assert time.monotonic() < deadline, "the publish never reached the server"
            page.wait_for_timeout(50)
        proxy.cut()  # the page reconnects and sends it again with the same key
        expect(page.get_by_test_id("pub-result")).to_have_text(
            f"published to {room} at offset 1 (duplicate)")
        expect(page.locator("li.message")).to_have_count(1)
        history = server.api("GET", f"/api/history?room={room}")[1]
        assert [m["data"] for m in history["messages"]] == [{"once": True}]
    finally:
        proxy.close()


# ---------------------------------------------------------------- epochs (protocol §17)
COLLECT = """() => {
    window.got = {messages: [], resets: []};
    window.roomcast.on("message", (m) => window.got.messages.push(
        [window.roomcast.positions.get(m.room).epoch, m.offset]));
    window.roomcast.on("reset", (r) => window.got.resets.push(r));
}"""


def subscribed_page(open_page: PageOpener) -> Page:
    """The demo page, subscribed to its room, recording messages (with the epoch the client
    holds them in) and reset events in `window.got`."""
    page = open_page()
    page.wait_for_function("(room) => window.roomcast && window.roomcast.positions.has(room)",
                           arg=open_page.room)
    page.evaluate(COLLECT)
    return page


def test_roomcast_js_takes_a_new_streams_offsets_after_a_reset_frame(
    open_page: PageOpener, server: ServerProcess
) -> None:
    """Frames fed to the client in the page: a reset into a new epoch, then offsets the old
    stream had already used, each delivered once; a same-epoch gap moves past it."""
    page = subscribed_page(open_page)
    room = open_page.room
    for n in range(3):
        server.publish(room, {"n": n})
    page.wait_for_function("() => window.got.messages.length === 3")
    old = page.evaluate("(room) => window.roomcast.positions.get(room).epoch", room)
    feed = """([room, frames]) => { for (const f of frames)
        window.roomcast._onFrame(JSON.stringify({room, ...f})); }"""
    message = {"type": "message", "event": None, "data": {}, "sender": None, "ts": ""}
    page.evaluate(feed, [room, [
        {"type": "reset", "epoch": "e-new", "offset": 0},
        *[{**message, "offset": n} for n in (1, 2, 2, 3, 1)],
        {"type": "reset", "epoch": "e-new", "offset": 6, "missed": {"from": 4, "to": 6}},
        *[{**message, "offset": n} for n in (5, 6, 7)],
        {"type": "reset", "epoch": "e-new", "offset": 2, "missed": {"from": 1, "to": 2}},
        {**message, "offset": 7},
    ]])
    got = page.evaluate("() => window.got")
    assert got["messages"] == [[old, 1], [old, 2], [old, 3], ["e-new", 1], ["e-new", 2],
                               ["e-new", 3], ["e-new", 7]]
    assert [(r["epoch"], r["offset"], r["missed"], r["epochChanged"], r["previous"])
            for r in got["resets"]] == [
        ("e-new", 0, None, True, {"offset": 3, "epoch": old}),
        ("e-new", 6, {"from": 4, "to": 6}, False, {"offset": 3, "epoch": "e-new"}),
        ("e-new", 2, {"from": 1, "to": 2}, False, {"offset": 7, "epoch": "e-new"}),
    ]
    assert page.evaluate("(room) => window.roomcast.positions.get(room)", room) == {
        "offset": 7, "epoch": "e-new"}




def test_roomcast_js_gets_a_reset_and_the_whole_new_stream_after_redis_restarts_empty(
    browser: Browser, redis_node: tuple[RedisServer, ServerProcess]
) -> None:
    redis, node = redis_node
    opener = PageOpener(browser, node)
    try:
        page = subscribed_page(opener)
        room = opener.room
        assert [node.publish(room, {"n": n}) for n in range(3)] == [1, 2, 3]
        page.wait_for_function("() => window.got.messages.length === 3")
        old = page.evaluate("(room) => window.roomcast.positions.get(room).epoch", room)
        redis.kill()
        wait_ready(node, False)
        redis.start()  # empty: every stream is gone
        wait_ready(node, True)
        assert [node.publish(room, {"n": n}) for n in range(3, 6)] == [1, 2, 3]
        page.wait_for_function("() => window.got.messages.length === 6")
        got = page.evaluate("() => window.got")
        (reset,) = got["resets"]
        assert reset["room"] == room and reset["offset"] == 0 and reset["epochChanged"]
        assert reset["epoch"] != old and reset["previous"] == {"offset": 3, "epoch": old}
        assert got["messages"] == [[old, 1], [old, 2], [old, 3],
                                   [reset["epoch"], 1], [reset["epoch"], 2],
                                   [reset["epoch"], 3]]
    finally:
        opener.close()


def test_roomcast_js_logs_in_with_the_pages_cookie_through_the_connect_hook(
    browser: Browser,
) -> None:
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class App(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            hook = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            cookie = hook["headers"].get("cookie", "")
            answer = ({"result": {"user_id": "cookie-user"}} if "session=ok" in cookie
                      else {"error": {"code": 4401, "message": "log in first"}})
            body = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    app = ThreadingHTTPServer(("127.0.0.1", 0), App)
    threading.Thread(target=app.serve_forever, daemon=True).start()
    server = ServerProcess("--connect-hook-url", f"http://127.0.0.1:{app.server_port}/hook")
    server.start()
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(server.http_url("/"))  # an origin on 127.0.0.1, where the cookie lives
        user = page.evaluate("""async (url) => {
            document.cookie = "session=ok; path=/";
            const { RoomcastClient } = await import("/roomcast.js");
            const client = new RoomcastClient(url, { token: null });
            const hello = new Promise((resolve) => client.on("connected", resolve));
            client.connect();
            const frame = await hello;
            client.close();
            return frame.user_id;
        }""", server.ws_url())
        assert user == "cookie-user"
    finally:
        context.close()
        server.kill()
        app.shutdown()
