"""The job registry: user functions the built-in runner can start, by name.

    from streams.jobs import job, Run

    @job("migrate")
    def migrate(run: Run) -> dict:
        ...                      # run.params, run.state (the cursor), run.event
        return {"last_pid": run.params["sip"]}   # the final state

A job may be sync (run in a thread pool) or async. It returns its final state (a JSON
object); returning None keeps ``run.state`` (as the job left it) as the final state.
``run.emit(event)`` sends events of its own (the feeder's "Deposition Creation").
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

JobResult = dict[str, Any] | None
JobFunction = Callable[["Run"], JobResult | Awaitable[JobResult]]
F = TypeVar("F", bound=JobFunction)

_REGISTRY: dict[str, JobFunction] = {}


@dataclass
class Run:
    """What a job gets: its parameters, its state (cursor) and what triggered it."""

    run_id: str
    job: str
    handler_id: str
    params: dict[str, Any]
    state: dict[str, Any] = field(default_factory=dict)
    event: dict[str, Any] | None = None
    trigger_kind: str = "event"
    attempt: int = 1
    emitted: list[dict[str, Any]] = field(default_factory=list)

    def emit(self, event: dict[str, Any]) -> None:
        """Emit an event (a JSON object) onto the events topic when the run ends.

        It carries the headers ``emitted_by_job`` and ``emitted_by_run`` and, unless it has
        one, the id ``<run_id>:emit:<n>``, so a repeated run emits nothing new downstream."""
        if not isinstance(event, dict):
            raise TypeError(f"an event must be a dict, not {type(event).__name__}")
        self.emitted.append(dict(event))


def job(name: str | None = None) -> Callable[[F], F]:
    """Register a function as a job (default name: the function's name)."""

    def register(fn: F) -> F:
        job_name = name or fn.__name__
        existing = _REGISTRY.get(job_name)
        if existing is not None and existing is not fn:
            raise ValueError(f"job {job_name!r} is already registered by {existing.__module__}")
        _REGISTRY[job_name] = fn
        return fn

    return register


def get(name: str) -> JobFunction | None:
    return _REGISTRY.get(name)


def names() -> list[str]:
    return sorted(_REGISTRY)


def load_modules(modules: list[str]) -> None:
    """Import the user's job modules so their @job functions register.

    Each is a module name, looked up in the current directory first and then on the
    path (``myjobs``, ``pkg.jobs``), or a file path (``./jobs/myjobs.py``)."""
    cwd = str(Path.cwd())
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    for module in modules:
        if module.endswith(".py") or "/" in module or "\\" in module:
            load_file(Path(module))
        else:
            importlib.import_module(module)


def load_file(path: Path) -> None:
    """Import a Python file as the module named after its stem."""
    if not path.is_file():
        raise ImportError(f"no file {str(path)!r}")
    name = path.stem
    spec = importlib.util.spec_from_file_location(name, path.resolve())
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {str(path)!r} (not a Python file?)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
