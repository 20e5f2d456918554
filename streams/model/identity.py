"""Event identity and deterministic run ids."""

from __future__ import annotations

import uuid
from typing import Any

RUN_NAMESPACE = uuid.UUID("6f1d6a2e-3c39-5d7e-9b1e-7a3f0c2f4b10")


def event_identity(event: dict[str, Any], topic: str, partition: int, offset: int) -> str:
    """The event's ``id`` field when it is a string or integer, else topic/partition/offset."""
    event_id = event.get("id")
    if isinstance(event_id, str) and event_id:
        return f"id:{event_id}"
    if isinstance(event_id, int) and not isinstance(event_id, bool):
        return f"id:{event_id}"
    return f"offset:{topic}/{partition}/{offset}"


def run_id(handler_id: str, trigger_ref: str) -> str:
    """Same handler + same trigger reference => same run id (UUIDv5)."""
    return str(uuid.uuid5(RUN_NAMESPACE, f"{handler_id}\n{trigger_ref}"))
