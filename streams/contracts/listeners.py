"""Mistral's listeners as handlers: a webhook on the run lifecycle events of named jobs.

Pure: the CLI (`signalbox listeners add`) and the gateway (`POST /listeners`) both build
their handler here, so both accept and refuse the same input with the same messages.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from streams.contracts.records import STATUS_EVENT_TYPE
from streams.model import handlers

# Mistral's lifecycle names (and ours) -> the new_status of the status events
LIFECYCLE = {"launched": "started", "started": "started", "succeeded": "finished", "success": "finished",
             "finished": "finished", "failed": "failed", "error": "failed", "timed-out": "timed_out",
             "timed_out": "timed_out", "retrying": "retrying"}


def split_words(parts: Iterable[str]) -> list[str]:
    """``["a,b", "c"]`` -> ``["a", "b", "c"]``: options given repeated or comma-separated."""
    return [w.strip() for part in parts for w in part.split(",") if w.strip()]


def lifecycle_filter(jobs: list[str], events: list[str]) -> dict[str, Any]:
    """The event filter of a handler firing on these lifecycle events of these jobs.

    Raises InvalidHandler naming the unknown event names."""
    wanted = [w.lower() for w in events]
    unknown = [w for w in wanted if w not in LIFECYCLE]
    if unknown:
        raise handlers.InvalidHandler(f"unknown event(s) {', '.join(unknown)}; known: {', '.join(LIFECYCLE)}")
    if not jobs:
        raise handlers.InvalidHandler("name at least one job")
    if not wanted:
        raise handlers.InvalidHandler("name at least one event")
    return {"match": {"source": "internal", "event_type": STATUS_EVENT_TYPE},
            "pattern": {"job": sorted(set(jobs)), "new_status": sorted({LIFECYCLE[w] for w in wanted})}}


def webhook_listener(jobs: list[str], events: list[str], url: str, method: str = "POST",
                     headers: dict[str, Any] | None = None, secret: str | None = None,
                     listener_id: str | None = None) -> handlers.Handler:
    """A webhook handler on the lifecycle events of the named jobs; raises InvalidHandler."""
    event = lifecycle_filter(sorted(set(jobs)), events)
    jobs = event["pattern"]["job"]
    hid = listener_id or f"listener.{'+'.join(jobs)}.{hashlib.sha256(url.encode()).hexdigest()[:8]}"
    data = {"id": hid[:200], "description": f"webhook on {', '.join(w.lower() for w in events)} of {', '.join(jobs)}",
            "event": event,
            "webhook": {"url": url, "method": method.upper(), "headers": headers or {},
                        **({"secret": secret} if secret else {})}}
    return handlers.parse_handler(data)
