"""Calling the application's hooks over HTTP (protocol §11): one pooled keep-alive client,
the signature, the time-out, and a count per hook and outcome.

A hook call waits only for the connection that asked; whatever goes wrong comes back as a
`Failed` outcome (never an exception), so a dead backend never closes an established
connection.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import httpx
import msgspec

from roomcast.hookwire import SIGNATURE_HEADER, Allowed, Denied, Failed, Outcome, read_answer
from roomcast.hookwire import signature as sign
from roomcast.log import event
from roomcast.settings import Settings

_encode = msgspec.json.Encoder().encode


class HookClient:
    """POSTs hook requests to the URLs the settings name."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.urls: dict[str, str] = {name: url for name, url in (
            ("connect", settings.connect_hook_url), ("rpc", settings.rpc_hook_url),
            ("subscribe", settings.subscribe_hook_url), ("publish", settings.publish_hook_url),
            ("refresh", settings.refresh_hook_url),
        ) if url}
        # a handshake without a token must wait for the connect hook, not for the pool
        self.limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
        self.outcomes: Counter[tuple[str, str]] = Counter()  # (hook, outcome) -> count
        self._client: httpx.AsyncClient | None = None

    def enabled(self, hook: str) -> bool:
        return hook in self.urls

    async def call(self, hook: str, body: dict[str, Any]) -> Outcome:
        """One hook request; the answer as an outcome (failures included)."""
        data = _encode({"hook": hook, **body})
        headers = {"Content-Type": "application/json"}
        if self.settings.hook_secret:
            headers[SIGNATURE_HEADER] = sign(self.settings.hook_secret, data)
        if self._client is None:  # made on first use, inside the running event loop
            self._client = httpx.AsyncClient(timeout=self.settings.hook_timeout,
                                             follow_redirects=False, limits=self.limits)
        try:
            response = await self._client.post(self.urls[hook], content=data, headers=headers)
            outcome = read_answer(response.status_code, response.content)
        except httpx.TimeoutException:
            outcome = Failed(f"no answer within {self.settings.hook_timeout:g} s")
        except httpx.HTTPError as exc:
            outcome = Failed(f"{type(exc).__name__}: {exc}"[:200])
        kind = ("allowed" if isinstance(outcome, Allowed) else
                "denied" if isinstance(outcome, Denied) else "failed")
        self.outcomes[(hook, kind)] += 1
        if isinstance(outcome, Failed):
            # what failed and why, never the body (it may hold cookies or tokens)
            event("hook failed", logging.WARNING, hook=hook, url=self.urls[hook],
                  reason=outcome.reason)
        return outcome

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
