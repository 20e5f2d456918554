"""The worker's Prometheus metrics: every one defined here, served at ``/metrics``.

A worker serves them on Faust's web server (``SIGNALBOX_METRICS_PORT``, host
``SIGNALBOX_WEB_HOST``, 127.0.0.1 by default), together with Faust's own sensor
(``faust.sensors.prometheus``, names ``signalbox_faust_*``) for the framework's internals:
messages received per topic, table operations, commits, rebalances. The README lists
every metric with its labels.

Rules:

- Every counter exists from the start at 0: label sets that are known in advance (event
  results, dead-letter reasons, delivery outcomes) are created here; those of a job when a
  handler of that job is applied (:meth:`WorkerMetrics.job_seen`).
- Labels are bounded: ``job`` (by the handlers applied), a trigger kind, a status, a
  reason class, a transport, an outcome, a topic and partition. Never a run id, an event
  id or free text: a dead letter's reason is a class (:data:`DEAD_LETTER_REASONS`), its
  text stays in the record's ``reason`` header.
- The hot path counts cheaply: the match and schedule steps add up a batch in plain
  dicts and increment each series once per batch (:meth:`WorkerMetrics.add`); gauges
  (queue depth, state bytes, consumer lag) are computed when scraped, not maintained,
  on the loop; the text is rendered in a thread (:func:`render`). One
  exception: the schedule step's ``fetched`` stage is observed per record (a histogram
  observation, under 1 µs; a record costs the step about a hundred times that).
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from typing import Any, cast

import faust
from aiohttp.web import Response
from faust.sensors.monitor import Monitor
from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

EVENT_RESULTS = ("matched", "not_matched", "dead_lettered")
TRIGGER_KINDS = ("event", "after", "cron", "manual")
RUN_STATUSES = ("succeeded", "failed", "timed_out")
DELIVERY_TRANSPORTS = ("webhook", "email")
DELIVERY_OUTCOMES = ("delivered", "failed", "permanent_failure")
# What a dead letter's ``kind`` may be (runbook.DeadLetter.kind, agents.dead_letter).
DEAD_LETTER_REASONS = (
    "invalid_event",        # not one acceptable JSON object: null, not UTF-8, not JSON, too large, too deep
    "match_error",          # matching the event raised
    "undecodable_record",   # a triggers record or a run result that cannot be decoded
    "processing_error",     # a trigger or result whose processing raised (rolled back)
    "queue_full",           # the job's queue holds SIGNALBOX_JOB_QUEUE_MAX triggers
    "command_unencodable",  # the job command cannot be encoded (Avro)
    "unknown_run",          # a run result for a run never scheduled (or its dedup entry expired)
    "invalid_final_state",  # a run result whose final state is not a JSON object
    "gave_up",              # a run with a retry policy gave up (attempts, max age, permanent failure)
    "other",
)
disable_created_metrics()  # no *_created series: half the output, and nothing reads them

# seconds; runs of a few ms (Python jobs) to minutes (timeouts)
RUN_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)

# seconds; a young generation's collection takes well under a millisecond, a full one over
# a large heap a tenth of a second or more (engine/heap.py)
GC_PAUSE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
# seconds; the schedule step's stages take milliseconds, a backlog seconds
SCHEDULE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SCHEDULE_STAGES = ("fetched", "decided", "written")
HANDOVER_RECORDS = ("result", "command")  # engine/handover.py
HANDOVER_OUTCOMES = ("offered", "skipped")

# (job, queue depth, runs in flight) of each job this worker owns
JobGauges = Callable[[], Iterable[tuple[str, int, int]]]
# (job, bytes) of each stored state this worker owns
StateSizes = Callable[[], Iterable[tuple[str, int]]]
# (topic, partition, lag) of each partition a consumer is assigned
Lag = Callable[[], Iterable[tuple[str, int, int]]]


class WorkerMetrics:
    """The worker's own metrics in one registry (per app: two apps in one process do not
    collide). Faust's sensor registers its metrics in the same registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.events = Counter("signalbox_events_consumed", "Events read by the match step, by result",
                              ["result"], registry=r)
        self.triggers = Counter("signalbox_triggers", "Triggers written by the match step and the cron timer",
                                ["job", "kind"], registry=r)
        self.commands = Counter("signalbox_commands_written", "Job commands written (acknowledged by the broker)",
                                ["job"], registry=r)
        self.duplicates = Counter("signalbox_dedup_dropped_triggers",
                                  "Triggers dropped because their run was scheduled before (de-duplication)",
                                  ["job"], registry=r)
        self.runs = Counter("signalbox_runs", "Runs settled by the schedule step, by final status",
                            ["job", "status"], registry=r)
        self.retries = Counter("signalbox_run_retries", "Failed attempts retried (a retry policy)", ["job"],
                               registry=r)
        self.duration = Histogram("signalbox_run_duration_seconds",
                                  "Run time of each attempt (its result's finished_at - started_at)",
                                  ["job"], buckets=RUN_DURATION_BUCKETS, registry=r)
        self.schedule = Histogram(
            "signalbox_schedule_seconds",
            "Where the schedule step's time goes, by stage: fetched (each triggers record and run result, "
            "from its producer's timestamp to the schedule step), decided (each batch's decisions), written "
            "(each batch, from its commands sent to its tables written)",
            ["stage"], buckets=SCHEDULE_BUCKETS, registry=r)
        self.schedule_fetched, self.schedule_decided, self.schedule_written = (
            self.schedule.labels(stage) for stage in SCHEDULE_STAGES)
        self.handovers = Counter(
            "signalbox_handovers",
            "Records handed between the worker's schedule step and its own runner beside the topic (record: "
            "result, command), by outcome: offered (taken by the other side), skipped (the second copy of a "
            "record, from the handover or the topic, the first one taken)", ["record", "outcome"], registry=r)
        for record in HANDOVER_RECORDS:
            for outcome in HANDOVER_OUTCOMES:
                self.handovers.labels(record, outcome)
        self.gc_pause = Histogram(
            "signalbox_gc_pause_seconds",
            "Python's cyclic garbage collections, by generation (0, 1, 2: full): how long each stopped the "
            "process (engine/heap.py)", ["generation"], buckets=GC_PAUSE_BUCKETS, registry=r)
        self.dead_letters = Counter("signalbox_dead_letters", "Records written to the dead-letter topic, by reason",
                                    ["reason"], registry=r)
        self.rejections = Counter("signalbox_handler_rejections", "Handlers not applied (invalid)", registry=r)
        self.match_gaps = Counter(
            "signalbox_match_offset_gaps",
            "Offsets of the events topic a fetch of the match step skipped, by what followed: reread (the partition "
            "read again from there), skipped (read twice and still missing: a compacted topic or transaction "
            "markers) (kafka/batch_consumer.py)", ["partition", "outcome"], registry=r)
        self.deliveries = Counter("signalbox_deliveries", "Delivery attempts of webhook and e-mail listeners",
                                  ["transport", "outcome"], registry=r)
        for result in EVENT_RESULTS:
            self.events.labels(result)
        for reason in DEAD_LETTER_REASONS:
            self.dead_letters.labels(reason)
        for transport in DELIVERY_TRANSPORTS:
            for outcome in DELIVERY_OUTCOMES:
                self.deliveries.labels(transport, outcome)
        self._children: dict[tuple[Any, ...], Any] = {}
        self._jobs: set[str] = set()
        self.gauges = _Gauges()
        r.register(self.gauges)

    def job_seen(self, job: str) -> None:
        """Create the series of a job at 0 (a handler of that job was applied)."""
        if job in self._jobs:
            return
        self._jobs.add(job)
        for kind in TRIGGER_KINDS:
            self.triggers.labels(job, kind)
        for status in RUN_STATUSES:
            self.runs.labels(job, status)
        self.commands.labels(job)
        self.duplicates.labels(job)
        self.retries.labels(job)
        self.duration.labels(job)

    def _child(self, metric: Any, labels: tuple[str, ...]) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def add(self, metric: Counter, counts: dict[Any, int]) -> None:
        """Increment a counter's series by a batch's counts (key: a label or a tuple of labels)."""
        for labels, n in counts.items():
            if n:
                self._child(metric, labels if isinstance(labels, tuple) else (labels,)).inc(n)

    def observe(self, job: str, seconds: float) -> None:
        self._child(self.duration, (job,)).observe(seconds)

    def handover_counters(self, record: str) -> dict[str, Any]:
        """``signalbox_handovers_total``'s series of ``record`` (result, command), by outcome."""
        return {outcome: self._child(self.handovers, (record, outcome)) for outcome in HANDOVER_OUTCOMES}

    def dead_letter(self, reason: str) -> None:
        self._child(self.dead_letters, (reason if reason in DEAD_LETTER_REASONS else "other",)).inc()

    def delivery(self, transport: str, outcome: str) -> None:
        self._child(self.deliveries, (transport, outcome)).inc()


def install_faust_sensor(app: faust.App, metrics: WorkerMetrics, prefix: str = "signalbox_faust") -> None:
    """Faust's Prometheus sensor (``faust.sensors.prometheus``: its metrics, named
    ``<prefix>_*``) in the worker's registry, and ``/metrics`` on Faust's web server,
    rendered by :func:`render` (Faust's own page renders on the loop)."""
    app.monitor = FaustSensor(metrics=FaustMetrics.create(metrics.registry, prefix), loop=app.loop)

    @app.page("/metrics")
    async def metrics_page(self: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        body = await render(metrics)
        return cast(faust.web.Response, Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST}))


# The gauges of the scrape under way, computed on the loop (see render)
_GAUGES: ContextVar[list[Metric] | None] = ContextVar("signalbox_scraped_gauges", default=None)


async def render(metrics: WorkerMetrics) -> bytes:
    """The text of /metrics. Rendering every series takes long: 25 ms with 128 jobs, 240 ms
    with 1,024 (``bench/bench_metrics.py``), and on the loop it would stop every record for
    as long at each scrape. So only the gauges are computed on the loop (their sources are
    the loop's tables and consumers: one job-runs record read per job this worker owns),
    and the text is rendered in a thread, which hands the GIL back to the loop every switch
    interval."""
    token = _GAUGES.set(list(metrics.gauges.compute()))
    try:
        return await asyncio.to_thread(generate_latest, metrics.registry)  # the thread sees _GAUGES
    finally:
        _GAUGES.reset(token)


class FaustSensor(PrometheusMonitor):
    """Faust's Prometheus sensor, the same metrics, with each label set's series looked up
    once instead of at every message: its ``labels()`` calls (six a message, plus a regex
    on the stream's name at every event) cost 28 µs a message, this about 4 µs
    (``bench/bench_metrics.py``). The series Faust removes at a rebalance are looked up
    again after it."""

    def __init__(self, metrics: FaustMetrics, **kwargs: Any) -> None:
        super().__init__(metrics=metrics, **kwargs)
        self._series: dict[tuple[Any, ...], Any] = {}
        self._streams: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()

    def _one(self, metric: Any, *labels: Any) -> Any:
        key = (id(metric), *labels)
        child = self._series.get(key)
        if child is None:
            child = self._series[key] = metric.labels(*labels)
        return child

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        Monitor.on_message_in(self, tp, offset, message)
        m = self._metrics
        m.messages_received.inc()
        m.active_messages.inc()
        self._one(m.messages_received_per_topics, tp.topic).inc()
        self._one(m.messages_received_per_topics_partition, tp.topic, tp.partition).set(offset)

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> dict[Any, Any] | None:
        state = Monitor.on_stream_event_in(self, tp, offset, stream, event)
        m = self._metrics
        m.total_events.inc()
        m.total_active_events.inc()
        child = self._streams.get(stream)
        if child is None:
            child = self._streams[stream] = m.total_events_per_stream.labels(
                stream=f"stream.{self._stream_label(stream)}.events")
        child.inc()
        return state

    def on_table_get(self, table: Any, key: Any) -> None:
        Monitor.on_table_get(self, table, key)
        self._one(self._metrics.table_operations, f"table.{table.name}", self.KEYS_RETRIEVED).inc()

    def on_table_set(self, table: Any, key: Any, value: Any) -> None:
        Monitor.on_table_set(self, table, key, value)
        self._one(self._metrics.table_operations, f"table.{table.name}", self.KEYS_UPDATED).inc()

    def on_table_del(self, table: Any, key: Any) -> None:
        Monitor.on_table_del(self, table, key)
        self._one(self._metrics.table_operations, f"table.{table.name}", self.KEYS_DELETED).inc()

    def track_tp_end_offset(self, tp: Any, offset: int) -> None:
        Monitor.track_tp_end_offset(self, tp, offset)
        self._one(self._metrics.topic_partition_end_offset, tp.topic, tp.partition).set(offset)

    def _clear_partition_related_metrics(self) -> None:
        super()._clear_partition_related_metrics()
        self._series.clear()  # the per-topic series were removed: look them up again


def count(counts: dict[Any, int], key: Any, n: int = 1) -> None:
    counts[key] = counts.get(key, 0) + n


class _Gauges(Collector):
    """The gauges computed when scraped, from sources the worker sets once built."""

    def __init__(self) -> None:
        self.jobs: JobGauges | None = None
        self.states: StateSizes | None = None
        self.handlers: Callable[[], int] | None = None
        self.lag: dict[str, Lag] = {}  # consumer ("engine", "runner") -> its partitions' lag

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        computed = _GAUGES.get()  # a scrape through render(): computed on the loop already
        yield from computed if computed is not None else self.compute()

    def compute(self) -> Iterator[Metric]:
        families = self._families()
        queue, running, states, handlers, lag, frozen = families
        if self.jobs is not None:
            for job, depth, in_flight in self.jobs():
                queue.add_metric([job], depth)
                running.add_metric([job], in_flight)
        if self.states is not None:
            for job, size in self.states():
                states.add_metric([job], size)
        if self.handlers is not None:
            handlers.add_metric([], self.handlers())
        for consumer, source in list(self.lag.items()):
            for topic, partition, behind in source():
                lag.add_metric([consumer, topic, str(partition)], behind)
        frozen.add_metric([], gc.get_freeze_count())
        yield from families

    @staticmethod
    def _families() -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily("signalbox_job_queue_depth", "Triggers waiting in the job's queue (jobs this worker "
                              "owns)", labels=["job"]),
            GaugeMetricFamily("signalbox_job_runs_in_flight", "Runs of the job in flight (jobs this worker owns)",
                              labels=["job"]),
            GaugeMetricFamily("signalbox_job_state_bytes", "Size of the job's stored state, JSON (jobs this worker "
                              "owns)", labels=["job"]),
            GaugeMetricFamily("signalbox_handlers", "Handlers applied on this worker"),
            GaugeMetricFamily("signalbox_consumer_lag", "Records not yet processed: the partition's end offset "
                              "minus the consumer's committed offset", labels=["consumer", "topic", "partition"]),
            GaugeMetricFamily("signalbox_gc_frozen_objects", "Objects in Python's permanent generation, left out "
                              "of the garbage collector's walks (engine/heap.py)"),
        ]
