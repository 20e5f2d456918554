"""Jobs the end-to-end tests start through a real worker (--jobs tests.e2e_jobs)."""

from __future__ import annotations

import sys
import time
from typing import Any

from streams.jobs import Run, job


@job("count")
def count(run: Run) -> dict[str, Any]:
    """A cursor: the number of runs so far and every parameter seen."""
    seen = [*run.state.get("seen", []), run.params]
    return {"runs": run.state.get("runs", 0) + 1, "seen": seen}


@job("grow")
def grow(run: Run) -> dict[str, Any]:
    """Final state of about params.size bytes."""
    return {"runs": run.state.get("runs", 0) + 1, "pad": "x" * int(run.params["size"])}


@job("explode")
def explode(run: Run) -> None:
    raise ValueError(f"bad input {run.params.get('n')}")


@job("sleepy")
def sleepy(run: Run) -> None:
    time.sleep(float(run.params["seconds"]))


@job("nap")
def nap(run: Run) -> dict[str, float]:
    """Sleeps params.seconds; its final state says when its thread began and ended."""
    began = time.time()
    time.sleep(float(run.params["seconds"]))
    return {"began": began, "ended": time.time()}


for _i in range(1, 3):
    job(f"nap{_i}")(nap)


# Each test uses its own job names, so job states (cursors) never mix between tests.
for _i in range(10):
    job(f"count{_i}")(count)
    job(f"grow{_i}")(grow)


@job("chain")
def chain(run: Run) -> dict[str, Any]:
    """A flow step: keeps the state it got and adds its own mark."""
    return {**run.state, run.job: run.trigger_kind}


for _name in ("flowA", "flowB", "flowC", "flowD"):
    job(_name)(chain)


@job("deposit")
def deposit(run: Run) -> dict[str, Any]:
    """The feeder's deposition: emits a "Deposition Creation" event of its own."""
    run.emit({"source": "internal", "event_type": "Deposition Creation", "resource_type": "deposition",
              "package_format": run.params["format"], "resource_value": run.params["deposition"]})
    return {"deposited": run.params["deposition"]}


@job("flaky")
def flaky(run: Run) -> dict[str, Any]:
    """Fails until its attempt reaches params.succeed_at."""
    if run.attempt < int(run.params["succeed_at"]):
        raise RuntimeError(f"attempt {run.attempt} fails")
    return {"attempts": run.attempt}


@job("switchinterval")
def switchinterval(run: Run) -> dict[str, Any]:
    """What the worker set Python's thread switch interval to (SIGNALBOX_GIL_SWITCH_INTERVAL_MS)."""
    return {"seconds": sys.getswitchinterval()}


@job("tick")
def tick(run: Run) -> dict[str, Any]:
    """A cursor that counts its runs, a few ms each (long enough for runs to overlap)."""
    time.sleep(0.003)
    return {"count": run.state.get("count", 0) + 1}


for _i in range(10):
    job(f"tick{_i}")(tick)
    job(f"explode{_i}")(explode)
    job(f"sleepy{_i}")(sleepy)
    job(f"load{_i}")(tick)
for _i in range(10, 140):
    job(f"load{_i}")(tick)


@job("flakycount")
def flakycount(run: Run) -> dict[str, Any]:
    """A cursor whose first attempt of every run fails."""
    if run.attempt == 1:
        raise RuntimeError("first attempt fails")
    return {"count": run.state.get("count", 0) + 1}
