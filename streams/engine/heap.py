"""The process's heap and Python's cyclic garbage collector.

A worker holds, once its handler feed is ready, a few hundred thousand objects that live
as long as the process: the handlers and their compiled filters (10,000 handlers are about
300,000 objects), Faust's and aiokafka's machinery, the metrics' series. Python's cyclic
collector walks all of them at every full (generation 2) collection, and a busy worker
triggers one every second or two. On a 2-core machine each took 155–215 ms, the event
loop stopped for that long, and a record that arrived meanwhile waited: the tail of the
produce -> command latency (bench/bench_e2e.py, phase 4).

:class:`HeapKeeper` moves what the process holds once the feed is ready into the
collector's permanent generation (:func:`gc.freeze`): full collections then walk only
what was allocated since, and took 1–9 ms in the same run. Objects in the permanent
generation are still freed by reference counting; only garbage in reference cycles among
them would stay. So after the handlers change (a handler replaced or deleted leaves its
compiled filter behind, which may hold cycles), the keeper unfreezes, collects once and
freezes again, at most every ``SIGNALBOX_GC_FREEZE_SECONDS`` (0 turns all of this off).

It also times every collection, by generation: ``signalbox_gc_pause_seconds``.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from mode import Service

from streams.engine.metrics import WorkerMetrics

log = logging.getLogger(__name__)


class HeapKeeper(Service):
    """Freezes the heap once ``ready`` returns, again after ``changes()`` moved, at most
    every ``interval_s`` seconds; times every collection into ``metrics``."""

    def __init__(self, metrics: WorkerMetrics, ready: Callable[[], Awaitable[None]],
                 changes: Callable[[], int], interval_s: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.metrics = metrics
        self.ready = ready
        self.changes = changes
        self.interval_s = interval_s
        self.freezes = 0
        self._pauses = [metrics.gc_pause.labels(str(generation)) for generation in range(3)]
        self._since = 0.0

    async def on_start(self) -> None:
        gc.callbacks.append(self._timed)

    async def on_stop(self) -> None:
        if self._timed in gc.callbacks:
            gc.callbacks.remove(self._timed)

    def _timed(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._since = time.perf_counter()
        elif self._since:
            self._pauses[info["generation"]].observe(time.perf_counter() - self._since)
            self._since = 0.0

    @Service.task
    async def _keep(self) -> None:
        if self.interval_s <= 0:
            return
        await self.ready()
        seen = self.changes()
        self.freeze()
        while not self.should_stop:
            await self.sleep(self.interval_s)
            if self.changes() != seen:
                seen = self.changes()
                self.freeze()

    def freeze(self) -> None:
        """Collect everything (the frozen objects included) once, then freeze what is left."""
        started = time.perf_counter()
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        self.freezes += 1
        log.info("heap frozen: %d objects left out of the collector's walks (%.0f ms)",
                 gc.get_freeze_count(), (time.perf_counter() - started) * 1000)
