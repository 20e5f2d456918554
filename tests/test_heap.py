"""The heap keeper (streams/engine/heap.py): the heap frozen out of the garbage collector's
walks once the handlers are loaded, frozen again after they change so that cyclic
garbage among frozen objects is still collected, and every collection timed.

Units here drive the keeper in this process; the last test runs a real worker."""

from __future__ import annotations

import asyncio
import gc
import time
import weakref
from collections.abc import Callable, Iterator

import pytest

from streams.engine.heap import HeapKeeper
from streams.engine.metrics import WorkerMetrics
from tests.conftest import Stack, unique
from tests.test_metrics import free_port, scrape, value


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # the rest of the suite runs with a collector that sees everything


class Cycle:
    def __init__(self) -> None:
        self.me = self


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, "timed out"
        await asyncio.sleep(0.01)


def test_the_heap_is_frozen_once_ready_and_cyclic_garbage_is_collected_after_a_change() -> None:
    async def scenario() -> None:
        ready = asyncio.Event()
        changes = [0]
        keeper = HeapKeeper(WorkerMetrics(), ready.wait, lambda: changes[0], 0.05)
        await keeper.start()
        cycle = Cycle()
        ref = weakref.ref(cycle)
        await asyncio.sleep(0.2)
        assert keeper.freezes == 0 and gc.get_freeze_count() == 0  # not before the handlers are loaded
        ready.set()
        await until(lambda: keeper.freezes == 1)
        assert gc.get_freeze_count() > 1000
        del cycle
        gc.collect()
        assert ref() is not None  # frozen: a full collection does not walk it
        await asyncio.sleep(0.2)
        assert keeper.freezes == 1  # nothing changed: no new freeze
        changes[0] += 1
        await until(lambda: keeper.freezes == 2)
        assert ref() is None  # the refreeze collected it first
        await keeper.stop()

    asyncio.run(scenario())


def test_a_freeze_interval_of_0_never_freezes() -> None:
    async def scenario() -> None:
        ready = asyncio.Event()
        ready.set()
        keeper = HeapKeeper(WorkerMetrics(), ready.wait, lambda: 1, 0)
        await keeper.start()
        await asyncio.sleep(0.3)
        assert keeper.freezes == 0 and gc.get_freeze_count() == 0
        await keeper.stop()

    asyncio.run(scenario())


def test_every_collection_is_timed_by_generation_while_the_keeper_runs() -> None:
    metrics = WorkerMetrics()

    def full_collections() -> float:
        return metrics.registry.get_sample_value("signalbox_gc_pause_seconds_count", {"generation": "2"}) or 0.0

    async def scenario() -> None:
        keeper = HeapKeeper(metrics, asyncio.Event().wait, lambda: 0, 0)
        await keeper.start()
        for _ in range(3):
            gc.collect()
        assert full_collections() == 3
        assert (metrics.registry.get_sample_value("signalbox_gc_pause_seconds_sum", {"generation": "2"}) or 0) > 0
        await keeper.stop()
        gc.collect()
        assert full_collections() == 3  # stopped: its callback is gone

    asyncio.run(scenario())
    assert metrics.registry.get_sample_value("signalbox_gc_frozen_objects") == 0


@pytest.mark.broker
def test_a_worker_freezes_its_heap_after_loading_the_handlers_and_again_after_they_change(stack: Stack) -> None:
    port = free_port()
    worker = stack.start_worker("heap", env={"SIGNALBOX_METRICS_PORT": str(port),
                                             "SIGNALBOX_GC_FREEZE_SECONDS": "0.5"})
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        job = unique("heap")
        ids = [unique("heap-h") for _ in range(200)]
        for i, handler_id in enumerate(ids):
            stack.apply_handler({"id": handler_id, "job": "count",
                                 "event": {"match": {"type": job, "n": i}}}, wait=False)
        worker.wait_ready()
        stack.wait_logged(f"handler {ids[-1]} applied")
        stack.wait_logged("heap frozen")
        end = time.monotonic() + 30
        while worker.log_text().count("heap frozen") < 2 and time.monotonic() < end:
            time.sleep(0.1)  # the handlers may have arrived after the first freeze
        first = worker.log_text().count("heap frozen")
        samples = scrape(url)
        assert value(samples, "signalbox_gc_frozen_objects") > 20_000
        full = value(samples, "signalbox_gc_pause_seconds_count", generation="2")
        assert full >= first  # each freeze collects once, fully
        for handler_id in ids[:100]:  # a change: half the handlers deleted
            stack.delete_handler(handler_id, wait=False)
        stack.wait_logged(f"handler {ids[99]} deleted")
        end = time.monotonic() + 30
        while worker.log_text().count("heap frozen") <= first and time.monotonic() < end:
            time.sleep(0.1)
        assert worker.log_text().count("heap frozen") > first, worker.tail()
        samples = scrape(url)
        assert value(samples, "signalbox_gc_pause_seconds_count", generation="2") > full
        assert value(samples, "signalbox_handlers") >= 100
    finally:
        worker.stop()
