"""Webhook deliveries: one signed HTTP request per run of a webhook handler.

The body is ``{"type", "id", "timestamp", "data"}`` (``data``: the triggering event), the
headers are the handler's own plus Standard Webhooks' ``webhook-id`` (the run id: the
same on every retry, the receiver's idempotency key), ``webhook-timestamp`` and
``webhook-signature``. 2xx is delivered; redirects are not followed (a failure); 408, 429,
5xx, timeouts and connection errors are worth another attempt (``Retry-After`` honoured);
any other status, a refused address or a missing secret is permanent; 410 Gone also
disables the listener (the runner publishes it again with ``enabled: false``).

A runner process sends through one ``Client``: one aiohttp session, so deliveries to the same
receiver reuse keep-alive connections. Its connector resolves through the guard's resolver,
so every connection it opens (and so every pooled one) goes to an address the guard checked;
IP-literal URLs are checked before each request. It keeps no cookies: one listener's
receiver cannot hand another listener's requests anything.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from streams.delivery import guard, secrets, signing
from streams.model.handlers import Handler, SecretRef, WebhookTarget

RETRYABLE = {408, 429}
RESPONSE_EXCERPT = 300  # characters of a failed response kept in the run's error
# Idle pooled connections are closed after this long: shorter than most servers' keep-alive,
# so a connection is rarely reused just as its server closes it (that attempt would be retried).
KEEPALIVE_SECONDS = 4.0


class Client:
    """The HTTP client of one runner process (``keep_alive=False``: one connection per request,
    for a one-off delivery). The session is made in the running event loop, at first use."""

    def __init__(self, allow: Sequence[guard.Network], keep_alive: bool = True) -> None:
        self.allow = tuple(allow)
        self.keep_alive = keep_alive
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            pooling: dict[str, Any] = {"keepalive_timeout": KEEPALIVE_SECONDS} if self.keep_alive \
                else {"force_close": True}
            # limit=0: the runner's slots already bound how many deliveries run at once, and a
            # wait for a pooled connection would eat into a delivery's own timeout
            connector = aiohttp.TCPConnector(resolver=guard.GuardedResolver(self.allow), limit=0, **pooling)
            self._session = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


@dataclass
class Outcome:
    delivered: bool
    status: int | None
    ms: int
    error: str | None = None
    retry: bool = True
    retry_after_seconds: float | None = None
    gone: bool = False  # 410 Gone: the receiver asks for no more deliveries

    def record(self, transport: str, host: str, attempt: int) -> dict[str, Any]:
        """What the run result says of this delivery (its ``final_state_json``)."""
        out: dict[str, Any] = {"transport": transport, "host": host, "status": self.status, "ms": self.ms,
                               "attempt": attempt}
        if not self.delivered:
            out.update(retry=self.retry, error=self.error)
            if self.retry_after_seconds is not None:
                out["retry_after_seconds"] = self.retry_after_seconds
            if self.gone:
                out["gone"] = True
        return {"delivery": out}


def event_type(event: dict[str, Any] | None) -> str:
    """``run.<status>`` for run lifecycle events, else the event's own type."""
    if not event:
        return "event"
    if event.get("source") == "internal" and event.get("new_status"):
        return f"run.{event['new_status']}"
    kind = event.get("type") or event.get("event_type") or "event"
    return str(kind)


def body_of(command: dict[str, Any]) -> bytes:
    event = json.loads(command["event_json"]) if command.get("event_json") else None
    when = command.get("event_time")
    stamp = when if isinstance(when, datetime) else datetime.now(UTC)
    return json.dumps({"type": event_type(event), "id": command["run_id"],
                       "timestamp": stamp.isoformat().replace("+00:00", "Z"), "data": event},
                      separators=(",", ":")).encode()


def headers_of(target: WebhookTarget, msg_id: str, body: bytes) -> dict[str, str]:
    """The request headers; MissingSecret (naming the secret, never a value) when unresolved."""
    out: dict[str, str] = {"content-type": "application/json"}
    for name, value in target.headers.items():
        out[name] = secrets.resolve(value.secret) if isinstance(value, SecretRef) else value
    now = int(time.time())
    out["webhook-id"] = msg_id
    out["webhook-timestamp"] = str(now)
    names = target.signing_secrets
    if names:
        out["webhook-signature"] = signing.signature([secrets.resolve(n) for n in names], msg_id, now, body)
    return out


def retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        from email.utils import parsedate_to_datetime

        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


async def excerpt(response: aiohttp.ClientResponse) -> str:
    """The start of a failed answer's body: read no further than needed (a hostile receiver's
    endless body would otherwise fill memory until the timeout); its connection is then
    closed, not pooled."""
    raw = b""
    while len(raw) < RESPONSE_EXCERPT * 4:  # up to 4 bytes a character
        chunk = await response.content.read(RESPONSE_EXCERPT * 4 - len(raw))
        if not chunk:
            break
        raw += chunk
    try:
        return raw.decode(response.charset or "utf-8", errors="replace")[:RESPONSE_EXCERPT]
    except LookupError:  # a charset Python does not know
        return raw.decode("utf-8", errors="replace")[:RESPONSE_EXCERPT]


async def deliver(handler: Handler, command: dict[str, Any], client: Client) -> Outcome:
    assert handler.webhook is not None
    target = handler.webhook
    started = time.monotonic()

    def ms() -> int:
        return int((time.monotonic() - started) * 1000)

    body = body_of(command)
    try:
        headers = headers_of(target, command["run_id"], body)
        guard.check_literal(urlsplit(target.url).hostname or "", client.allow)
    except (secrets.MissingSecret, ValueError, guard.RefusedTarget) as exc:
        return Outcome(False, None, ms(), str(exc), retry=False)
    timeout = aiohttp.ClientTimeout(total=target.timeout_seconds)
    try:
        async with client.session().request(target.method, target.url, data=body, headers=headers,
                                             allow_redirects=False, timeout=timeout) as response:
            status = response.status
            if 200 <= status < 300:
                return Outcome(True, status, ms())
            text = await excerpt(response)
            error = f"HTTP {status}" + (f": {text}" if text else "")
            if status == 410:
                return Outcome(False, status, ms(), error + " (the listener is disabled: apply it again to "
                               "re-enable it)", retry=False, gone=True)
            retryable = status in RETRYABLE or status >= 500
            return Outcome(False, status, ms(), error, retry=retryable,
                           retry_after_seconds=retry_after(response.headers.get("Retry-After")))
    except guard.RefusedTarget as exc:
        return Outcome(False, None, ms(), str(exc), retry=False)
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.os_error, guard.RefusedTarget):
            return Outcome(False, None, ms(), str(exc.os_error), retry=False)
        return Outcome(False, None, ms(), f"cannot connect: {exc.os_error or exc}")
    except TimeoutError:
        return Outcome(False, None, ms(), f"timed out after {target.timeout_seconds:g}s")
    except (aiohttp.ClientError, OSError, asyncio.IncompleteReadError) as exc:
        return Outcome(False, None, ms(), f"{type(exc).__name__}: {exc}")
