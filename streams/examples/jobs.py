"""Example jobs for `signalbox dev` (import with `--jobs streams.examples.jobs`)."""

from __future__ import annotations

import asyncio
from typing import Any

from streams.jobs import Run, job


@job("migrate-pid")
async def migrate_pid(run: Run) -> dict[str, Any]:
    """The feeder's Fedora 3 -> 6 migration: one run per MigratablePID event."""
    await asyncio.sleep(0.05)  # stands in for requesting a DIP
    migrated = [*run.state.get("migrated", [])[-9:], run.params["sip"]]
    return {"migrated": migrated, "count": run.state.get("count", 0) + 1}


@job("register-patient")
def register_patient(run: Run) -> dict[str, Any]:
    """OpenFn's message filter: keep a cursor of the newest submission seen."""
    last = run.state.get("last_submission")
    submitted = run.params["submitted"]
    newest = max(last, submitted) if last else submitted
    return {"last_submission": newest, "registered": run.state.get("registered", 0) + 1}


@job("always-fails")
def always_fails(run: Run) -> None:
    raise RuntimeError(f"cannot process {run.params}")


@job("report")
def report(run: Run) -> dict[str, Any]:
    """A cron job with a cursor: how many reports so far."""
    return {"reports": run.state.get("reports", 0) + 1}


@job("notify-archivist")
def notify_archivist(run: Run) -> None:
    """Flow: starts with the migration's final state; emits an event of its own."""
    run.emit({"event_type": "Migration Reported", "migrated": run.state.get("migrated", [])})


@job("alert")
def alert(run: Run) -> dict[str, Any]:
    """Catch: counts the failures it was told about."""
    return {"alerts": run.state.get("alerts", 0) + 1, "last_error": run.params["error"]}


@job("run-task")
def run_task(run: Run) -> dict[str, Any]:
    """The task the Aviso listener releases."""
    return {"released_for": run.params["date"]}


@job("record-event")
def record_event(run: Run) -> dict[str, Any]:
    """What the EventBridge, creator and emitted_by examples start: counts what it was given."""
    return {"recorded": run.state.get("recorded", 0) + 1, "last": run.params}
