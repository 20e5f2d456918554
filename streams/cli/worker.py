"""Start one worker process: check topics, load jobs, run the Faust app (+ the runner)."""

from __future__ import annotations

import asyncio
import sys

from faust import Worker

from streams import jobs
from streams.contracts import topics as topics_mod
from streams.engine.agents import build_app
from streams.kafka import aio_check, client
from streams.kafka.connection import kafka_of
from streams.runner.service import Runner
from streams.settings import Settings


def run_worker(settings: Settings, topics: topics_mod.Topics, job_modules: list[str], runner: bool = True,
               loglevel: str = "info") -> int:
    try:  # aiokafka's view of the connection: a TLS or SASL failure is one line, not a retry loop
        asyncio.run(aio_check.check(kafka_of(settings)))
    except client.BrokerUnreachable as exc:
        print(f"signalbox worker: {exc}", file=sys.stderr)
        return 1
    problems = topics_mod.check(client.admin(kafka_of(settings)), topics)
    if problems:
        print("signalbox worker: the broker's topics differ from topics.yaml; not starting:", file=sys.stderr)
        for line in problems:
            print(f"  {line}", file=sys.stderr)
        return 2
    try:
        jobs.load_modules(job_modules)
    except ImportError as exc:
        print(f"signalbox worker: cannot import job module: {exc}", file=sys.stderr)
        return 2
    engine = build_app(settings, topics)
    services = list(engine.services)
    if runner:
        services.append(Runner(settings, topics, engine.handlers, metrics=engine.metrics, loop=engine.app.loop))
    worker = Worker(engine.app, *services, loglevel=loglevel, redirect_stdouts=False)
    # Faust's terminal spinner sets the root logger to DEBUG at levels >= WARNING, which
    # makes every debug call in the hot path build a log record (10% of a busy worker).
    worker.spinner = None
    # Faust configures logging only in execute_from_commandline: print, so it is always seen.
    print(f"signalbox worker: jobs registered: {', '.join(jobs.names()) or '(none)'}", file=sys.stderr, flush=True)
    port = settings.metrics_port or settings.web_port
    if port is not None:
        print(f"signalbox worker: metrics at http://{settings.web_host}:{port}/metrics", file=sys.stderr, flush=True)
    worker.execute_from_commandline()
    return 0
