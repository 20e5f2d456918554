"""E-mail deliveries (brainlife's notifications): one message per run of an email handler.

Subject and body are Jinja2 templates rendered in a sandbox over the triggering event
(its fields at the top level, the whole event as ``event``); a field the event lacks is
an error of that delivery (permanent: the same event would fail again), never a crash.
The message goes through the SMTP server of the settings (``SIGNALBOX_SMTP_*``) with
aiosmtplib, over STARTTLS or TLS when the settings say so (the server's certificate checked
against the system's CAs and ``SIGNALBOX_SMTP_CA_FILE``), with SMTP AUTH when a user is set
(the password: a secret's name). A refused connection, a timeout, a certificate that is not
trusted or a 4xx answer is retried, a 5xx answer is permanent.
"""

from __future__ import annotations

import functools
import json
import ssl
import time
from email.message import EmailMessage
from typing import Any

import aiosmtplib
from jinja2 import StrictUndefined, Template, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from streams.delivery import secrets
from streams.delivery.webhook import Outcome
from streams.model.handlers import Handler
from streams.settings import Settings

_templates = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


@functools.lru_cache(maxsize=256)
def _compiled(template: str) -> Template:
    return _templates.from_string(template)


def render(template: str, event: dict[str, Any] | None) -> str:
    context = {**(event or {}), "event": event or {}}
    return _compiled(template).render(context)


def message_of(handler: Handler, command: dict[str, Any], sender: str) -> EmailMessage:
    """The message; TemplateError (naming the missing field) when the event lacks one."""
    assert handler.email is not None
    event = json.loads(command["event_json"]) if command.get("event_json") else None
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(handler.email.to)
    msg["Subject"] = render(handler.email.subject, event).replace("\n", " ").strip()
    msg["Message-ID"] = f"<{command['run_id']}@signalbox>"  # the same on every attempt
    msg.set_content(render(handler.email.message, event))
    return msg


async def deliver(handler: Handler, command: dict[str, Any], settings: Settings) -> Outcome:
    started = time.monotonic()

    def ms() -> int:
        return int((time.monotonic() - started) * 1000)

    try:
        msg = message_of(handler, command, settings.smtp_from)
        password = secrets.resolve(settings.smtp_password_secret) if settings.smtp_password_secret else None
    except TemplateError as exc:
        return Outcome(False, None, ms(), f"template: {exc}", retry=False)
    except secrets.MissingSecret as exc:
        return Outcome(False, None, ms(), str(exc), retry=False)
    try:
        await aiosmtplib.send(msg, hostname=settings.smtp_host, port=settings.smtp_port,
                              username=settings.smtp_user or None, password=password,
                              start_tls=settings.smtp_starttls, use_tls=settings.smtp_tls,
                              cert_bundle=str(settings.smtp_ca_file) if settings.smtp_ca_file else None,
                              timeout=settings.smtp_timeout_seconds)
    except aiosmtplib.SMTPResponseException as exc:
        return Outcome(False, exc.code, ms(), f"SMTP {exc.code}: {exc.message}"[:300], retry=exc.code < 500)
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        untrusted = _untrusted(exc)
        if untrusted is not None:
            return Outcome(False, None, ms(), f"TLS: the SMTP server's certificate is not trusted "
                           f"({untrusted.verify_message}); SIGNALBOX_SMTP_CA_FILE names a CA to trust"[:300])
        return Outcome(False, None, ms(), f"{type(exc).__name__}: {exc}"[:300])
    return Outcome(True, 250, ms())


def _untrusted(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate error behind ``exc`` (aiosmtplib may wrap it), if that is what it is."""
    seen = 0
    cause: BaseException | None = exc
    while cause is not None and seen < 5:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return cause
        cause, seen = cause.__cause__ or cause.__context__, seen + 1
    return None
