"""Start one worker process: check topics, load jobs, run the Faust app (+ the runner)."""

from __future__ import annotations

import asyncio
import sys

from faust import Worker
from mode import Worker as ServiceWorker
from prometheus_client import start_http_server

from streams import jobs, native
from streams.contracts import topics as topics_mod
from streams.engine.agents import build_app
from streams.engine.handler_feed import HandlerFeed
from streams.engine.heap import HeapKeeper
from streams.engine.metrics import WorkerMetrics
from streams.kafka import aio_check, client
from streams.kafka.connection import kafka_of
from streams.matching.handler_set import HandlerSet
from streams.runner.service import Runner
from streams.settings import Settings


def preflight(command: str, settings: Settings, topics: topics_mod.Topics, job_modules: list[str]) -> int | None:
    """Check the broker and its topics, import the job modules: an exit code, or None."""
    try:  # aiokafka's view of the connection: a TLS or SASL failure is one line, not a retry loop
        asyncio.run(aio_check.check(kafka_of(settings)))
    except client.BrokerUnreachable as exc:
        print(f"signalbox {command}: {exc}", file=sys.stderr)
        return 1
    problems = topics_mod.check(client.admin(kafka_of(settings)), topics)
    if problems:
        print(f"signalbox {command}: the broker's topics differ from topics.yaml; not starting:", file=sys.stderr)
        for line in problems:
            print(f"  {line}", file=sys.stderr)
        return 2
    try:
        jobs.load_modules(job_modules)
    except ImportError as exc:
        print(f"signalbox {command}: cannot import job module: {exc}", file=sys.stderr)
        return 2
    return None


def tune_process(settings: Settings, metrics: WorkerMetrics, feed: HandlerFeed,
                 loop: asyncio.AbstractEventLoop) -> HeapKeeper:
    """What a worker and a runner process both set for the interpreter: the thread switch
    interval now, and the heap keeper (a service to start) that freezes the heap once
    ``feed`` is loaded (engine/heap.py)."""
    sys.setswitchinterval(settings.gil_switch_interval_ms / 1000)
    return HeapKeeper(metrics, feed.wait_ready, lambda: feed.changes, settings.gc_freeze_seconds, loop=loop)


def run_worker(settings: Settings, topics: topics_mod.Topics, job_modules: list[str], runner: bool = True,
               loglevel: str = "info") -> int:
    failed = preflight("worker", settings, topics, job_modules)
    if failed is not None:
        return failed
    engine = build_app(settings, topics)
    services = [*engine.services, tune_process(settings, engine.metrics, engine.feed, engine.app.loop)]
    if runner:
        built_in = Runner(settings, topics, engine.handlers, metrics=engine.metrics, ready=engine.feed.wait_ready,
                          handover=engine.handover.offer, loop=engine.app.loop)
        engine.handover.runner = built_in.offer  # commands, the other way (engine/handover.py)
        services.append(built_in)
    worker = Worker(engine.app, *services, loglevel=loglevel, redirect_stdouts=False)
    # Faust's terminal spinner sets the root logger to DEBUG at levels >= WARNING, which
    # makes every debug call in the hot path build a log record (10% of a busy worker).
    worker.spinner = None
    # Faust configures logging only in execute_from_commandline: print, so it is always seen.
    print(f"signalbox worker: jobs registered: {', '.join(jobs.names()) or '(none)'}", file=sys.stderr, flush=True)
    mode, why = native.status()
    print(f"signalbox worker: matcher: {mode} ({why})", file=sys.stderr, flush=True)
    port = settings.metrics_port or settings.web_port
    if port is not None:
        print(f"signalbox worker: metrics at http://{settings.web_host}:{port}/metrics", file=sys.stderr, flush=True)
    worker.execute_from_commandline()
    return 0


def run_runner(settings: Settings, topics: topics_mod.Topics, job_modules: list[str], loglevel: str = "info") -> int:
    """The built-in runner alone (``signalbox runner``): job commands in, run results out,
    in the group ``<app_id>-runner``, next to workers started with ``--no-runner``. It
    keeps its own copy of the handlers (for webhook and e-mail runs) and serves /metrics
    on ``--metrics-port``."""
    failed = preflight("runner", settings, topics, job_modules)
    if failed is not None:
        return failed
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    metrics = WorkerMetrics()
    handlers = HandlerSet()
    feed = HandlerFeed(settings, topics, handlers, metrics=metrics, loop=loop)
    runner = Runner(settings, topics, handlers, metrics=metrics, ready=feed.wait_ready, loop=loop)
    if settings.metrics_port is not None:
        start_http_server(settings.metrics_port, addr=settings.web_host, registry=metrics.registry)
        print(f"signalbox runner: metrics at http://{settings.web_host}:{settings.metrics_port}/metrics",
              file=sys.stderr, flush=True)
    print(f"signalbox runner: jobs registered: {', '.join(jobs.names()) or '(none)'}", file=sys.stderr, flush=True)
    heap = tune_process(settings, metrics, feed, loop)
    RunnerWorker(feed, runner, heap, loglevel=loglevel, redirect_stdouts=False, loop=loop).execute_from_commandline()
    return 0


class RunnerWorker(ServiceWorker):
    async def on_started(self) -> None:
        self.log.info("Ready")  # as a Faust worker says it (its services have started)
        await super().on_started()
