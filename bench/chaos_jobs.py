"""The jobs bench/chaos.py's workers run (--jobs chaos_jobs): fast cursors that count.

Job ``chaos<i>`` (i < CHAOS_JOBS, default 1000) returns ``{"count": state.count + 1}``
after sleeping CHAOS_SLEEP_MS milliseconds (default 3), so every job's final count must
equal the number of distinct events it was triggered by, whatever was killed meanwhile.
Imports only ``streams.jobs``, which every checkout has, so it runs against any ``--root``.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from streams.jobs import Run, job

JOBS = int(os.environ.get("CHAOS_JOBS", "1000"))
SLEEP_S = float(os.environ.get("CHAOS_SLEEP_MS", "3")) / 1000


async def count(run: Run) -> dict[str, Any]:
    await asyncio.sleep(SLEEP_S)
    return {"count": int(run.state.get("count", 0)) + 1}


for _i in range(JOBS):
    job(f"chaos{_i}")(count)
