"""Who an event comes from: Kafka headers, and the handler constraints on them.

- ``creator``: set by trusted ingest (the service that writes events on behalf of an
  authenticated client). signalbox does not authenticate producers: only principals
  allowed by Kafka ACLs to write the events topic can set it, so grant that right to
  your ingest service and to signalbox workers only. ``signalbox send --creator`` sets it
  for operators.
- ``emitted_by_job`` / ``emitted_by_run``: set by the runner on events a job emitted and by
  the settle step on internal status events.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

CREATOR = "creator"
EMITTED_BY_JOB = "emitted_by_job"
EMITTED_BY_RUN = "emitted_by_run"


def header_map(headers: Iterable[tuple[str, bytes | None]] | Mapping[str, bytes | None] | None) -> dict[str, str]:
    items = headers.items() if isinstance(headers, Mapping) else (headers or [])
    return {k: v.decode("utf-8", "replace") for k, v in items if v is not None}


def emitted_by(job: str, run_id: str) -> list[tuple[str, bytes]]:
    return [(EMITTED_BY_JOB, job.encode()), (EMITTED_BY_RUN, run_id.encode())]


def constraints_hold(trigger: Any, headers: dict[str, str]) -> bool:
    """The feeder's handler constraints: the event's creator, the job that emitted it."""
    creator = getattr(trigger, "creator", None)
    if creator is not None and headers.get(CREATOR) != creator:
        return False
    job = getattr(trigger, "emitted_by", None)
    return job is None or headers.get(EMITTED_BY_JOB) == job
