"""What ``signalbox dead-letters`` and ``signalbox rejections`` show of a record.

Both topics hold user data (a dead-lettered event, a rejected handler) that may carry
credentials. Nothing here prints a value as it is: by default only its size; with
``values=True`` a JSON value is shown with every field whose name looks like a secret
replaced by ``[redacted]``, and a value that is not JSON is never shown.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Message
from pydantic import BaseModel

SECRET_NAME = re.compile(r"pass(word|wd|phrase)?|secret|token|api.?key|private.?key|auth|credential|cookie|session",
                         re.IGNORECASE)
REDACTED = "[redacted]"
_SOURCE_HEADERS = ("reason", "source_topic", "source_partition", "source_offset")


def redact(value: Any) -> Any:
    """``value`` with the value of every object field whose name looks like a secret replaced."""
    if isinstance(value, dict):
        return {k: REDACTED if SECRET_NAME.search(k) else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def shown_value(raw: bytes | str | None) -> Any:
    """A value as it may be shown: parsed JSON, redacted; None when it is not JSON."""
    if raw is None:
        return None
    try:
        return redact(json.loads(raw))
    except (ValueError, UnicodeDecodeError):
        return None


def _time(msg: Message) -> datetime:
    return datetime.fromtimestamp(msg.timestamp()[1] / 1000, UTC)


def _headers(msg: Message) -> dict[str, str]:
    return {k: (v or b"").decode("utf-8", "replace") for k, v in (msg.headers() or [])}


class DeadLetter(BaseModel):
    """One record of the dead-letter topic."""

    time: datetime
    reason: str
    source: str | None  # topic/partition/offset of the record that could not be processed
    key: str | None
    value_bytes: int
    headers: dict[str, str]  # the others: handler_id, job, run_id, attempts, limit, truncated_from…
    value: Any = None  # only with values=True, redacted

    @classmethod
    def of(cls, msg: Message, values: bool = False) -> DeadLetter:
        headers = _headers(msg)
        source = None
        if "source_topic" in headers:
            source = "/".join(headers.get(h, "?") for h in ("source_topic", "source_partition", "source_offset"))
        raw = msg.value()
        return cls(time=_time(msg), reason=headers.get("reason", ""), source=source,
                   key=msg.key().decode("utf-8", "replace") if msg.key() is not None else None,
                   value_bytes=len(raw or b""), headers={k: v for k, v in headers.items() if k not in _SOURCE_HEADERS},
                   value=shown_value(raw) if values else None)

    def line(self) -> str:
        extra = "".join(f" {k}={v!r}" if k == "last_error" else f" {k}={v}" for k, v in self.headers.items())
        text = (f"{self.time:%Y-%m-%d %H:%M:%S} DEAD    reason={self.reason!r}"
                f"{f' from={self.source}' if self.source else ''} key={self.key} size={self.value_bytes}B{extra}")
        return text + (f" value={json.dumps(self.value)}" if self.value is not None else "")


class Rejection(BaseModel):
    """One record of the handler-rejections topic (a handler version no worker applied)."""

    time: datetime
    handler_id: str | None
    reason: str
    offset: int | None  # of the rejected version on the handlers topic
    value: Any = None  # only with values=True, redacted

    @classmethod
    def of(cls, msg: Message, values: bool = False) -> Rejection:
        record = json.loads(msg.value())
        return cls(time=_time(msg), handler_id=record.get("handler_id"), reason=record.get("reason", ""),
                   offset=record.get("offset"), value=shown_value(record.get("value")) if values else None)

    def line(self) -> str:
        text = (f"{self.time:%Y-%m-%d %H:%M:%S} REJECTED handler={self.handler_id} offset={self.offset} "
                f"reason={self.reason!r}")
        return text + (f" value={json.dumps(self.value)}" if self.value is not None else "")


def latest_first(messages: list[Message]) -> list[Message]:
    return sorted(messages, key=lambda m: (m.timestamp()[1], m.partition(), m.offset()), reverse=True)
