"""The built-in runner: job commands in, run results out, in its own consumer group.

It runs registered Python jobs (sync ones in a thread pool, async ones natively) with the
command's timeout and writes one run result per command. Offsets are committed only after
the results of a batch are acknowledged by the broker (at-least-once; run ids let the
settle step and downstream consumers drop repeats). An external executor can take its
place by consuming the job-commands topic and producing run results.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import socket
import time
import traceback
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from mode import Service

from . import avro, jobs, provenance
from .settings import Settings
from .topics import Topics

log = logging.getLogger(__name__)


def now_ms() -> int:
    return int(time.time() * 1000)


def emitted_events(run: jobs.Run) -> list[tuple[bytes, list[tuple[str, bytes]]]]:
    """The events a run emitted, as (value, headers) records for the events topic."""
    headers = provenance.emitted_by(run.job, run.run_id)
    out = []
    for n, event in enumerate(run.emitted):
        body = {"id": f"{run.run_id}:emit:{n}", **event}
        out.append((json.dumps(body, separators=(",", ":"), default=str).encode(), headers))
    return out


async def execute(command: dict[str, Any], runner_name: str) -> tuple[dict[str, Any], jobs.Run | None]:
    """Run one decoded job command; returns the run result record and the Run (if started)."""
    started = now_ms()
    result: dict[str, Any] = {
        "run_id": command["run_id"],
        "job": command["job"],
        "handler_id": command["handler_id"],
        "attempt": command["attempt"],
        "started_at": started,
        "runner": runner_name,
        "final_state_json": None,
        "error": None,
    }
    fn = jobs.get(command["job"])
    if fn is None:
        return {**result, "status": "failed", "finished_at": now_ms(),
                "error": f"no job named {command['job']!r} is registered with this runner"}, None
    state = json.loads(command["initial_state_json"]) if command["initial_state_json"] else {}
    run = jobs.Run(
        run_id=command["run_id"],
        job=command["job"],
        handler_id=command["handler_id"],
        params=json.loads(command["params_json"]),
        state=state,
        event=json.loads(command["event_json"]) if command["event_json"] else None,
        trigger_kind=command["trigger_kind"],
        attempt=command["attempt"],
    )
    try:
        if inspect.iscoroutinefunction(fn):
            returned = await asyncio.wait_for(fn(run), command["timeout_seconds"])
        else:
            # A timed-out sync job cannot be killed; its thread finishes in the background.
            returned = await asyncio.wait_for(asyncio.to_thread(fn, run), command["timeout_seconds"])
        final = run.state if returned is None else returned
        if not isinstance(final, dict):
            raise TypeError(f"a job must return a dict or None, not {type(final).__name__}")
        return {**result, "status": "succeeded", "finished_at": now_ms(),
                "final_state_json": json.dumps(final, separators=(",", ":"), default=str)}, run
    except TimeoutError:
        return {**result, "status": "timed_out", "finished_at": now_ms(),
                "error": f"timed out after {command['timeout_seconds']}s"}, run
    except Exception as exc:
        text = "".join(traceback.format_exception_only(exc)).strip()
        log.warning("job %s run %s failed: %s", command["job"], command["run_id"], text)
        return {**result, "status": "failed", "finished_at": now_ms(), "error": text}, run


class Runner(Service):
    """Consumes job commands (group ``<app_id>-runner``) and produces run results."""

    def __init__(self, settings: Settings, topics: Topics, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.topics = topics
        self.name_ = f"{socket.gethostname()}/{os.getpid()}"
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None

    async def on_start(self) -> None:
        s = self.settings
        # Subscribed in the task, not here: start() would otherwise wait for the group join
        # and hold up the services started after this one.
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=s.bootstrap_servers,
            group_id=f"{s.app_id}-runner",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(s.session_timeout_seconds * 1000),
            heartbeat_interval_ms=int(s.heartbeat_seconds * 1000),
            fetch_max_wait_ms=10 if s.embedded else 500,
            max_poll_interval_ms=3_600_000,
        )
        self._producer = AIOKafkaProducer(bootstrap_servers=s.bootstrap_servers, acks="all", linger_ms=2)
        await self._producer.start()
        await self._consumer.start()

    async def on_stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()

    @Service.task
    async def _run_commands(self) -> None:
        assert self._consumer is not None and self._producer is not None
        self._consumer.subscribe([self.topics.job_commands])
        commands_codec, results_codec = avro.commands(), avro.results()
        limit = asyncio.Semaphore(self.settings.runner_concurrency)

        async def bounded(command: dict[str, Any]) -> tuple[dict[str, Any], jobs.Run | None]:
            async with limit:
                return await execute(command, self.name_)

        while not self.should_stop:
            batches = await self._consumer.getmany(timeout_ms=500, max_records=self.settings.runner_concurrency * 4)
            commands = []
            for records in batches.values():
                for record in records:
                    try:
                        commands.append(commands_codec.decode(record.value))
                    except (avro.AvroDecodeError, EOFError, ValueError) as exc:
                        log.error("runner: skipping undecodable job command at %s/%s/%s: %s",
                                  record.topic, record.partition, record.offset, exc)
            if not batches:
                continue
            outcomes = await asyncio.gather(*(bounded(c) for c in commands))
            sent = []
            for result, run in outcomes:
                # Emitted events first: by the time the result settles, they are on the topic.
                for value, headers in emitted_events(run) if run is not None else []:
                    sent.append(await self._producer.send(self.topics.events, value=value, headers=headers))
                sent.append(await self._producer.send(
                    self.topics.run_results, key=result["job"].encode(), value=results_codec.encode(result)))
            await asyncio.gather(*sent)
            await self._consumer.commit()
