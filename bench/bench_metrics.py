"""What the metrics cost per event on the worker's hot path (not a test). One command:

    python bench/bench_metrics.py [--n 200000]

Times, in one process and without a broker, the calls Faust makes per message and event
with its default Monitor against its Prometheus sensor (what SIGNALBOX_METRICS_PORT turns
on), and the engine's own counting of a batch (engine/metrics.py); then what a scrape of
/metrics costs with 128 and 1,024 jobs' series, and how long the event loop stops
meanwhile, rendered on the loop against through ``render`` (a thread). Bounded loops.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from faust.sensors.monitor import Monitor
from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from faust.types import TP
from prometheus_client import generate_latest

from streams.engine.metrics import FaustSensor, WorkerMetrics, count, render


class Fake:
    """A stand-in stream, table or message (Faust keeps weak references to streams)."""

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)


def per_message(monitor: Monitor, n: int) -> float:
    """µs per message: in, stream event in/out, one table get and set, out, end offset."""
    tp = TP("t.signalbox.events", 3)
    stream: Any = Fake(shortlabel="Stream: Topic: t.signalbox.events", task_owner=Fake(name="match"))
    table: Any = Fake(name="job-runs")
    message: Any = Fake(tp=tp, offset=0, stream_meta={})
    event: Any = Fake(message=message)
    start = time.perf_counter()
    for offset in range(n):
        message.offset = offset
        monitor.on_message_in(tp, offset, message)
        monitor.track_tp_end_offset(tp, offset + 1)
        state = monitor.on_stream_event_in(tp, offset, stream, event)
        monitor.on_table_get(table, "m:job")
        monitor.on_table_set(table, "m:job", None)
        monitor.on_stream_event_out(tp, offset, stream, event, state)
        monitor.on_message_out(tp, offset, message)
    return (time.perf_counter() - start) / n * 1e6


def engine_batch(n: int, batch: int = 500, jobs: int = 128) -> float:
    """µs per event: the match step's counting of a batch (each event one trigger)."""
    m = WorkerMetrics()
    triggers = [{"job": f"job{i % jobs}", "trigger_kind": "event"} for i in range(batch)]
    start = time.perf_counter()
    for _ in range(n // batch):
        kinds: dict[tuple[str, str], int] = {}
        for t in triggers:
            count(kinds, (t["job"], t["trigger_kind"]))
        m.add(m.events, {"matched": batch, "not_matched": 0, "dead_lettered": 0})
        m.add(m.triggers, kinds)
    return (time.perf_counter() - start) / (n // batch * batch) * 1e6


def jobs_metrics(jobs: int) -> WorkerMetrics:
    """A worker's registry with ``jobs`` jobs' series (one run observed each) and gauges."""
    m = WorkerMetrics()
    for j in range(jobs):
        m.job_seen(f"job{j}")
        m.observe(f"job{j}", 0.01)
    m.gauges.jobs = lambda: [(f"job{j}", 0, 1) for j in range(jobs)]
    m.gauges.states = lambda: [(f"job{j}", 100) for j in range(jobs)]
    return m


async def scrape_stop(m: WorkerMetrics, on_loop: bool, scrapes: int = 5) -> tuple[float, float]:
    """(ms a scrape took, the longest the loop waited meanwhile, ms): a task that sleeps 1 ms
    at a time records how late it woke, while /metrics is rendered on the loop (as Faust's
    page did) or through ``render`` (the worker's page)."""
    longest, stop = 0.0, False

    async def ticker() -> None:
        nonlocal longest
        while not stop:
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            longest = max(longest, (time.perf_counter() - t) * 1000 - 1)

    task = asyncio.ensure_future(ticker())
    await asyncio.sleep(0.01)
    took = 0.0
    for _ in range(scrapes):
        start = time.perf_counter()
        if on_loop:
            generate_latest(m.registry)
        else:
            await render(m)
        took += (time.perf_counter() - start) * 1000 / scrapes
        await asyncio.sleep(0.01)  # one scrape at a time: the ticker catches up in between
    stop = True
    await task
    return took, longest


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200_000)
    args = ap.parse_args()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    plain = Monitor(loop=loop)
    metrics = WorkerMetrics()
    sensor = PrometheusMonitor(metrics=FaustMetrics.create(metrics.registry, "signalbox_faust"), loop=loop)
    ours = FaustSensor(metrics=FaustMetrics.create(WorkerMetrics().registry, "signalbox_faust"), loop=loop)
    base = per_message(plain, args.n)
    prom = per_message(sensor, args.n)
    cached = per_message(ours, args.n)
    print(f"Faust's default Monitor:     {base:6.2f} µs per message")
    print(f"Faust's Prometheus sensor:   {prom:6.2f} µs per message (+{prom - base:.2f})")
    print(f"the worker's (FaustSensor):  {cached:6.2f} µs per message (+{cached - base:.2f})")
    print(f"engine counting, per event:  {engine_batch(args.n):6.2f} µs (batches of 500, 128 jobs)")
    sys.setswitchinterval(0.001)  # as workers do (SIGNALBOX_GIL_SWITCH_INTERVAL_MS)
    for jobs in (128, 1024):
        m = jobs_metrics(jobs)
        took, stopped = loop.run_until_complete(scrape_stop(m, on_loop=True))
        took_r, stopped_r = loop.run_until_complete(scrape_stop(m, on_loop=False))
        print(f"/metrics with {jobs} jobs: rendered on the loop {took:5.1f} ms, the loop stopped up to "
              f"{stopped:5.1f} ms; through render() {took_r:5.1f} ms, the loop stopped up to {stopped_r:5.1f} ms")


if __name__ == "__main__":
    main()
