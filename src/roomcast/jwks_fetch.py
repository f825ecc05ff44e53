"""Fetching jwt_jwks_url (protocol §14): one task keeps the Authenticator's key set.

The set is fetched at start and whenever roomcast.jwks.FetchRule says it is due: again
for a token with an unknown `kid` (at most once every 30 s), every 10 minutes anyway,
and while none was ever fetched after a growing pause. A failed fetch (no answer in time,
not 200, not a usable JWKS) keeps the last good set. A handshake whose token needs a key
the set lacks waits for the fetch in flight, or one due now, for at most 2 s.
"""

from __future__ import annotations

import logging

import httpx
import trio

from roomcast.auth import Authenticator
from roomcast.jwks import FetchRule, KeySet, KeySetError
from roomcast.log import event

__all__ = ["FETCH_TIMEOUT", "MAX_KEY_SET_BYTES", "WAIT_FOR_KEY", "KeySetFetcher"]

FETCH_TIMEOUT = 5.0
"""Seconds one fetch may take, connecting included."""
WAIT_FOR_KEY = 2.0
"""Seconds a handshake waits for a fetch that may bring its token's key."""
MAX_KEY_SET_BYTES = 1024 * 1024
"""A larger answer is not a key set: the fetch fails (and the last good set stays)."""


class KeySetFetcher:
    """Keeps `authenticator.key_set` filled from `url`; run it as one task (`run`)."""

    def __init__(self, url: str, authenticator: Authenticator,
                 timeout: float = FETCH_TIMEOUT, rule: FetchRule | None = None) -> None:
        self.url = url
        self.authenticator = authenticator
        self.timeout = timeout
        self.rule = rule or FetchRule()
        self.attempts = 0
        """Fetches started so far (for tests and stats)."""
        self._fetching = False
        self._wake = trio.Event()
        self._done = trio.Event()  # set, and replaced, when a fetch ends
        authenticator.on_unknown_key = self.want

    def want(self) -> None:
        """A token named a key the set lacks: fetch again as soon as the rule allows."""
        self.rule.want()
        self._wake.set()

    async def await_key(self, token: str | None) -> None:
        """Before verifying a handshake's token: when it needs a key the set lacks, ask
        for a refetch and wait (WAIT_FOR_KEY at most) for the fetch in flight or due now.
        Returns at once when no fetch can come in time; the verification then says why."""
        if not self.authenticator.key_missing(token):
            return
        self.want()
        now = trio.current_time()
        if not self._fetching and self.rule.due(now) > now:
            return
        done = self._done
        with trio.move_on_after(WAIT_FOR_KEY):
            await done.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Fetch whenever the rule says a fetch is due, until cancelled."""
        async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=False) as client:
            task_status.started()
            while True:
                now = trio.current_time()
                due = self.rule.due(now)
                if due <= now:
                    await self._fetch(client)
                    continue
                with trio.move_on_at(due):
                    await self._wake.wait()
                self._wake = trio.Event()

    async def _fetch(self, client: httpx.AsyncClient) -> None:
        """One fetch; the set is replaced only by a usable one."""
        self.rule.started(trio.current_time())
        self._fetching = True
        self.attempts += 1
        keys: KeySet | None = None
        try:
            with trio.move_on_after(self.timeout):
                keys = await self._get(client)
            if keys is None:
                self._failed(f"no answer within {self.timeout:g} s")
            else:
                self.authenticator.key_set = keys
                event("key set fetched", logging.INFO, url=self.url, keys=len(keys.by_kid))
        except (httpx.HTTPError, httpx.InvalidURL, OSError, KeySetError) as exc:
            self._failed(str(exc) or type(exc).__name__)
        finally:
            self._fetching = False
            self.rule.finished(keys is not None)
            done, self._done = self._done, trio.Event()
            done.set()

    async def _get(self, client: httpx.AsyncClient) -> KeySet:
        """GET the URL: a 200 answer of at most MAX_KEY_SET_BYTES holding a usable set."""
        async with client.stream("GET", self.url, headers={"accept": "application/json"}
                                 ) as response:
            if response.status_code != 200:
                raise KeySetError(f"the server answered {response.status_code}, not 200")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_KEY_SET_BYTES:
                    raise KeySetError(f"the answer is larger than {MAX_KEY_SET_BYTES} bytes")
        return KeySet.from_json(bytes(body), self.authenticator.key_set_algorithms)

    def _failed(self, why: str) -> None:
        kept = ("the last good set is kept" if self.authenticator.key_set is not None else
                "no set yet: handshakes with a token are refused with 1013 until one comes")
        event("key set fetch failed", logging.WARNING, url=self.url, error=why, then=kept)
