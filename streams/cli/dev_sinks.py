"""What `signalbox dev` delivers to: a webhook receiver and an SMTP sink, both on loopback.

One thread runs one event loop with both servers (aiohttp, aiosmtpd). They print nothing
themselves: each request or message becomes one line on ``lines``, which dev prints
between its job commands and run results. The receiver checks each request's Standard
Webhooks signature with the dev secret (which it never shows).
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import os
import queue
import threading
from email import message_from_bytes, policy
from typing import Any

from aiohttp import web
from aiosmtpd.smtp import SMTP

from streams.delivery import signing

LOOPBACK = "127.0.0.1"
FIRST_LINES = 2  # of a message's body, shown after its subject


def new_secret() -> str:
    """A fresh ``whsec_`` secret for this dev run."""
    return signing.PREFIX + base64.b64encode(os.urandom(32)).decode()


def verified(secret: str, headers: Any, body: bytes) -> bool:
    """Whether one of the request's ``v1,`` signatures is the one ``secret`` makes."""
    msg_id, stamp = headers.get("webhook-id", ""), headers.get("webhook-timestamp", "")
    if not msg_id or not stamp.isdigit():
        return False
    expected = signing.signature([secret], msg_id, int(stamp), body)
    return any(hmac.compare_digest(expected, given) for given in headers.get("webhook-signature", "").split())


class DevSinks:
    """The receiver (``webhook_url``) and the SMTP sink (``smtp_port``), started at once."""

    def __init__(self, secret: str) -> None:
        self._secret = secret
        self.lines: queue.Queue[str] = queue.Queue()
        self.http_port = 0
        self.smtp_port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._failed: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name="dev-sinks", daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise TimeoutError("the dev webhook receiver and SMTP sink did not start")
        if self._failed is not None:
            raise self._failed

    @property
    def webhook_url(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}"

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._start())
        except BaseException as exc:  # reported to the caller, in its thread
            self._failed = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._webhook)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, LOOPBACK, 0)
        await site.start()
        self.http_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        handler = _Mail(self.lines)
        self._smtp = await self._loop.create_server(lambda: SMTP(handler, hostname="signalbox-dev"), LOOPBACK, 0)
        self.smtp_port = self._smtp.sockets[0].getsockname()[1]

    async def _webhook(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            kind = str(json.loads(body).get("type"))
        except (ValueError, AttributeError):
            kind = "?"
        ok = verified(self._secret, request.headers, body)
        msg_id = request.headers.get("webhook-id")
        self.lines.put(f"WEBHOOK received {request.method} {request.path} webhook-id={msg_id} type={kind} "
                       f"signature={'verified' if ok else 'NOT VERIFIED'}")
        return web.Response(text="ok")

    def close(self) -> None:
        if not self._thread.is_alive():
            return

        async def stop() -> None:
            self._smtp.close()
            await self._runner.cleanup()

        try:
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)


class _Mail:
    """aiosmtpd's handler: one line per accepted message."""

    def __init__(self, lines: queue.Queue[str]) -> None:
        self.lines = lines

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        msg = message_from_bytes(envelope.content, policy=policy.default)
        try:
            body = msg.get_body(("plain",))
            text = body.get_content() if body is not None else ""
        except (KeyError, LookupError, ValueError):
            text = ""
        first = " / ".join([line.strip() for line in text.splitlines() if line.strip()][:FIRST_LINES])
        self.lines.put(f"MAIL    received to={','.join(envelope.rcpt_tos)} subject={msg['Subject']!r}"
                       f" text={first[:120]!r}")
        return "250 OK"
