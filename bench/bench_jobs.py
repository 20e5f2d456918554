"""The job the end-to-end benchmark's worker runs: a cursor that counts, nothing else."""

from __future__ import annotations

from typing import Any

from streams.jobs import Run, job

JOBS = 128  # bench_e2e.py spreads its handlers over this many jobs by default


def count(run: Run) -> dict[str, Any]:
    return {"count": run.state.get("count", 0) + 1}


for _i in range(JOBS):
    job(f"job{_i}")(count)
job("chain")(count)
