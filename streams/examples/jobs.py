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
