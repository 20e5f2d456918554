"""The jobs the end-to-end benchmark's worker runs: cursors that count, nothing else; the
full-pipeline phase's ``pipe<i>`` and ``flow<i>`` jobs also carry the event's send time
and tag along (final state -> status event -> the flow handler's params -> the flow run's state)."""

from __future__ import annotations

import os
from typing import Any

from streams.jobs import Run, job

JOBS = 128  # bench_e2e.py spreads its handlers over this many jobs by default
LANES = 64  # phase 6: pipe<i> -> (status event, after-handler) -> flow<i>


def count(run: Run) -> dict[str, Any]:
    return {"count": run.state.get("count", 0) + 1}


for _i in range(int(os.environ.get("BENCH_JOBS", JOBS))):  # bench_e2e.py --jobs
    job(f"job{_i}")(count)
job("chain")(count)


def carry(run: Run) -> dict[str, Any]:
    return {"count": run.state.get("count", 0) + 1, "sent": run.params.get("sent"), "tag": run.params.get("tag")}


for _i in range(LANES):
    job(f"pipe{_i}")(carry)
    job(f"flow{_i}")(carry)
