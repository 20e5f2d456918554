"""What the metrics cost per event on the worker's hot path (not a test). One command:

    python bench/bench_metrics.py [--n 200000]

Times, in one process and without a broker, the calls Faust makes per message and event
with its default Monitor against its Prometheus sensor (what SIGNALBOX_METRICS_PORT turns
on), and the engine's own counting of a batch (engine/metrics.py). Bounded loops.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from faust.sensors.monitor import Monitor
from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from faust.types import TP

from streams.engine.metrics import FaustSensor, WorkerMetrics, count


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


if __name__ == "__main__":
    main()
