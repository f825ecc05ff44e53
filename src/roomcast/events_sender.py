"""Delivers room and user events (protocol §13) to `events_url`: one task under the
Router's nursery, started only when events_url is set.

The backplane reports cluster-wide transitions (`transition`, never waiting); the pure
`roomcast.events` decides what to send and when; this task waits for the next due time,
asks the backplane whether a "gone" still holds, and POSTs each event, signed with
`hook_secret`, retrying a failure with backoff while later events of that key wait.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time

import httpx
import trio

from roomcast.backplane.base import Backplane, BackplaneUnavailable
from roomcast.events import KINDS, Debouncer, Event, Outbox
from roomcast.log import event as log_event
from roomcast.metrics import Metrics
from roomcast.settings import Settings

__all__ = ["SIGNATURE_HEADER", "EventSender", "signature"]

SIGNATURE_HEADER = "X-Roomcast-Signature"
MAX_IN_FLIGHT = 16  # POSTs at once (each to a different room or user)


def signature(secret: str, body: bytes) -> str:
    """The header value for `body`: `sha256=<hex HMAC-SHA256 under secret>`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class EventSender:
    """Hears transitions from the backplane and sends the events they make."""

    def __init__(self, settings: Settings, metrics: Metrics, backplane: Backplane) -> None:
        if settings.events_url is None:
            raise ValueError("EventSender needs events_url set")
        self.url = settings.events_url
        self.secret = settings.hook_secret
        self.timeout = settings.hook_timeout
        self.metrics = metrics
        self.backplane = backplane
        # Alone, this process numbers the transitions: from the time it started in ms, so
        # that a restart never repeats an id the application has seen (§13).
        self.debouncer = Debouncer(settings.events_delay, base=int(time.time() * 1000))
        self.outbox = Outbox(settings.events_queue)
        self._kick = trio.Event()
        self._limit = trio.CapacityLimiter(MAX_IN_FLIGHT)
        self._attempted = trio.Event()
        backplane.transitions = self

    # ------------------------------------------------------------ the backplane's side
    def transition(self, kind: str, name: str, up: bool, seq: int | None = None,
                   confirmed: int | None = None, confirmed_wall: float | None = None) -> None:
        """A room's subscribers or a user's connections went from none to some or back."""
        now, wall = trio.current_time(), time.time()
        if up:
            for ev in self.debouncer.up(kind, name, now, wall, seq, confirmed, confirmed_wall):
                self._queue(ev)
        else:
            self.debouncer.down(kind, name, now, wall, seq)
        self._kick.set()

    def gone(self, kind: str, name: str, seq: int, wall: float) -> None:
        """A "gone" another node held and could not send (it stopped): send it now."""
        self._queue(Event(KINDS[kind][1], kind, name, seq, wall))
        self._kick.set()

    def _queue(self, ev: Event) -> None:
        if not self.outbox.push(ev):
            self.metrics.events_dropped += 1
            log_event("room or user event dropped: events_queue is full", logging.WARNING,
                      id=ev.id, events_queue=self.outbox.limit)

    # ------------------------------------------------------------ the task
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Send events as they fall due, until cancelled."""
        async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=False) as client, \
                trio.open_nursery() as nursery:
            task_status.started()
            while True:
                for ev in self.debouncer.due(trio.current_time()):
                    if await self._still_gone(ev):
                        self._queue(ev)
                for ev in self.outbox.take(trio.current_time()):
                    nursery.start_soon(self._deliver, client, ev)
                wakes = [t for t in (self.debouncer.next_deadline(), self.outbox.next_wake())
                         if t is not None]
                with trio.move_on_at(min(wakes, default=float("inf"))):
                    await self._kick.wait()
                self._kick = trio.Event()

    async def _still_gone(self, ev: Event) -> bool:
        """Ask the backplane (cluster-wide) before telling that a key has gone; while it
        cannot answer, the event is sent (at least once beats never)."""
        try:
            return await self.backplane.still_gone(ev.kind, ev.name, ev.seq)
        except BackplaneUnavailable:
            return True

    async def _deliver(self, client: httpx.AsyncClient, ev: Event) -> None:
        """One try of one event; the outbox decides what comes next."""
        async with self._limit:
            error = await self._post(client, ev)
        if error is None:
            self.metrics.events_sent += 1
            self.outbox.done(ev)
        else:
            self.metrics.events_failed += 1
            retry_at = self.outbox.failed(ev, trio.current_time())
            if retry_at is None:
                self.metrics.events_given_up += 1
                log_event("room or user event given up after its tries", logging.WARNING,
                          id=ev.id, url=self.url, error=error)
            else:
                log_event("room or user event not delivered; retrying", logging.INFO,
                          id=ev.id, error=error, retry_in=round(retry_at - trio.current_time()))
        self._kick.set()
        self._attempted.set()
        self._attempted = trio.Event()

    async def attempted(self) -> None:
        """Return once the next delivery attempt is over and counted (tests, embedding)."""
        await self._attempted.wait()

    async def _post(self, client: httpx.AsyncClient, ev: Event) -> str | None:
        """POST the event; None when answered with a 2xx, else what went wrong."""
        body = ev.body()
        headers = {"Content-Type": "application/json"}
        if self.secret is not None:
            headers[SIGNATURE_HEADER] = signature(self.secret, body)
        try:
            with trio.move_on_after(self.timeout) as scope:
                response = await client.post(self.url, content=body, headers=headers)
            if scope.cancelled_caught:
                return f"no answer within {self.timeout:g} s"
        except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
            return f"{type(exc).__name__}: {exc}"
        if 200 <= response.status_code < 300:
            return None
        return f"HTTP {response.status_code}"
