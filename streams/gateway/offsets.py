"""Offset tokens: where in the events topic a subscription stands, valid on any gateway.

A token is the base64url (no padding) of a JSON list: for every partition of the events
topic, in partition order, the next offset to read. A message's token is the connection's
position right after that message's record, so resuming from it delivers exactly the
records the connection had not read yet, whichever gateway serves the new connection.

``since`` is either such a token, a time (ISO-8601 with a zone, or epoch milliseconds:
the first record at or after it, by Kafka's offsets_for_times), or ``"earliest"`` /
``"latest"``.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime

MAX_TOKEN_CHARS = 4096


class SinceError(ValueError):
    """A ``since`` value that is neither a token nor a time."""


def encode(positions: list[int]) -> str:
    raw = json.dumps(positions, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode(token: str) -> list[int]:
    if len(token) > MAX_TOKEN_CHARS:
        raise SinceError("offset token too long")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        positions = json.loads(raw)
    except (binascii.Error, ValueError):
        raise SinceError("not an offset token or a time") from None
    if (not isinstance(positions, list) or not positions
            or not all(isinstance(p, int) and not isinstance(p, bool) and p >= 0 for p in positions)):
        raise SinceError("not an offset token (a list of offsets)")
    return positions


@dataclass(frozen=True)
class Since:
    """A parsed ``since``: exactly one of ``positions``, ``timestamp_ms``, ``edge``."""

    positions: list[int] | None = None
    timestamp_ms: int | None = None
    edge: str | None = None  # "earliest" or "latest"


def parse_since(value: str | None) -> Since:
    if value is None or value == "" or value == "latest":
        return Since(edge="latest")
    if value == "earliest":
        return Since(edge="earliest")
    if value.isdigit():
        return Since(timestamp_ms=int(value))
    if value[:4].isdigit() and value[4:5] == "-":
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise SinceError(f"not an ISO-8601 time: {value[:40]!r}") from None
        if when.tzinfo is None:
            raise SinceError("a since time needs a zone (Z or +hh:mm)")
        return Since(timestamp_ms=int(when.timestamp() * 1000))
    return Since(positions=decode(value))
