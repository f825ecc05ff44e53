"""roomcast.api's pure parts: how each HTTP status and error body becomes an ApiError,
which calls are retried and how long after, and how batch answers are read."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from roomcast.api import (
    ApiError,
    BadRequest,
    Call,
    NotFound,
    NotSupported,
    PublishResult,
    RateLimited,
    Retry,
    RoomcastError,
    ServerError,
    Unauthorized,
    Unavailable,
)
from roomcast.api.batch import MAX_BATCH, batch_call
from roomcast.api.calls import parse_batch
from roomcast.api.errors import error_from_answer
from roomcast.api.http import may_retry, transport_error


@pytest.mark.parametrize(("status", "kind", "retriable"), [
    (400, BadRequest, False), (401, Unauthorized, False), (404, NotFound, False),
    (413, BadRequest, False), (429, RateLimited, True), (500, ServerError, True),
    (501, NotSupported, False), (503, Unavailable, True), (502, Unavailable, True),
])
def test_each_status_is_its_error_and_says_what_to_do(status: int, kind: type[ApiError],
                                                      retriable: bool) -> None:
    error = error_from_answer(status, {"error": "x", "message": "because"})
    assert type(error) is kind and isinstance(error, RoomcastError)
    assert (error.status, error.code, error.message, error.retriable) == (
        status, "x", "because", retriable)
    assert "because" in str(error) and error.advice in str(error)


def test_a_body_that_is_not_the_servers_still_gives_an_error() -> None:
    error = error_from_answer(502, "<html>bad gateway</html>")
    assert isinstance(error, Unavailable) and error.code == "http_error"
    limited = error_from_answer(429, None, retry_after="2")
    assert isinstance(limited, RateLimited) and limited.retry_after == 2.0


@given(attempt=st.integers(0, 50), rand=st.floats(0, 1))
def test_retry_delays_grow_within_the_cap_and_stop_after_the_attempts(attempt: int,
                                                                       rand: float) -> None:
    retry = Retry(attempts=5, initial=0.1, factor=2, maximum=1.0)
    delay = retry.delay(attempt, Unavailable(503, "u", "m"), lambda: rand)
    if attempt + 1 >= 5:
        assert delay is None
    else:
        assert delay is not None and 0 <= delay <= min(1.0, 0.1 * 2 ** attempt)
    assert retry.delay(0, BadRequest(400, "b", "m")) is None
    assert retry.delay(0, RateLimited(429, "r", "m", 30.0)) == 1.0


def test_a_publish_is_retried_after_any_failure_a_broadcast_only_when_surely_not_sent() -> None:
    request = httpx.Request("POST", "http://x/api/publish")
    not_sent = transport_error(httpx.ConnectError("refused", request=request), "u")
    lost = transport_error(httpx.ReadError("reset", request=request), "u")
    timed_out = transport_error(httpx.ReadTimeout("slow", request=request), "u")
    publish, broadcast = Call.publish("r", 1), Call.broadcast(["r"], 1)
    assert all(may_retry(publish, e) for e in (not_sent, lost, timed_out))
    assert [may_retry(broadcast, e) for e in (not_sent, lost, timed_out)] == [
        True, False, False]
    assert isinstance(timed_out, TimeoutError) and isinstance(lost, ConnectionError)


def test_a_publish_keeps_one_idempotency_key_however_often_it_is_sent() -> None:
    call = Call.publish("r", {"a": 1}, "e")
    key = call.params["idempotency_key"]
    assert len(key) == 32 and call.command()["params"]["idempotency_key"] == key
    assert Call.publish("r", 1, idempotency_key="mine").params["idempotency_key"] == "mine"
    assert call.parse({"offset": 3, "epoch": "e1", "duplicate": True}) == PublishResult(
        "r", 3, "e1", True, key)


def test_batch_answers_are_read_one_per_command() -> None:
    calls = [Call.publish("r", 1), Call.stats(), Call.presence("r")]
    body = {"replies": [{"result": {"offset": 1}},
                        {"error": {"error": "unavailable", "message": "down"}},
                        {"result": {"room": "r", "users": []}}]}
    first, second, third = parse_batch(calls, body)
    assert first.offset == 1 and isinstance(second, Unavailable) and third.users == []
    with pytest.raises(ApiError, match="one reply per command"):
        parse_batch(calls, {"replies": []})
    assert batch_call(calls).idempotent and not batch_call([Call.broadcast(["r"], 1)]).idempotent
    with pytest.raises(ValueError):
        batch_call([])
    assert MAX_BATCH == 1000
