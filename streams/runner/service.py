"""The built-in runner: job commands in, run results out, in its own consumer group.

It runs registered Python jobs (sync ones in a thread pool, async ones natively) with the
command's timeout, up to ``runner_concurrency`` at once, and writes one run result per
command. A partition's offsets are committed only up to the oldest command whose result
the broker has not acknowledged yet (at-least-once: a runner that dies re-runs what it
had not finished, with the same run ids). An external executor can take its
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
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from mode import Service

from streams import jobs
from streams.contracts import avro, records
from streams.contracts.topics import Topics
from streams.delivery import email, guard, webhook
from streams.engine.metrics import WorkerMetrics
from streams.kafka.connection import kafka_of
from streams.kafka.lag import assigned_lag
from streams.matching.handler_set import HandlerSet
from streams.model import provenance
from streams.settings import Settings

log = logging.getLogger(__name__)

COMMIT_INTERVAL_S = 0.1  # offsets of finished commands are committed at most this often
DELIVERY_JOB_PREFIXES = ("webhook.", "email.")  # runs of webhook and email handlers
DELIVERY_KEYS = tuple(p.encode() for p in DELIVERY_JOB_PREFIXES)  # the same, as record keys


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


def is_async_job(name: str) -> bool:
    """Whether the job registered as ``name`` runs on the event loop (else on a thread)."""
    return inspect.iscoroutinefunction(jobs.get(name))


async def execute(command: dict[str, Any], runner_name: str, handlers: HandlerSet | None = None,
                  settings: Settings | None = None, http: webhook.Client | None = None,
                  pool: Executor | None = None) -> tuple[dict[str, Any], jobs.Run | None]:
    """Run one decoded job command; returns the run result record and the Run (if started).
    ``http``: the runner's webhook client (without it, a webhook gets a connection of its own);
    ``pool``: the threads sync jobs run on (without it, the event loop's default executor)."""
    if command["job"].startswith(DELIVERY_JOB_PREFIXES):
        return await execute_delivery(command, runner_name, handlers, settings or Settings(), http), None
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
    try:
        run = jobs.Run(
            run_id=command["run_id"],
            job=command["job"],
            handler_id=command["handler_id"],
            params=json.loads(command["params_json"]),
            state=json.loads(command["initial_state_json"]) if command["initial_state_json"] else {},
            event=json.loads(command["event_json"]) if command["event_json"] else None,
            trigger_kind=command["trigger_kind"],
            attempt=command["attempt"],
        )
    except ValueError as exc:  # a command from another producer with broken JSON fields
        return {**result, "status": "failed", "finished_at": now_ms(), "error": f"malformed job command: {exc}"}, None
    try:
        if inspect.iscoroutinefunction(fn):
            returned = await asyncio.wait_for(fn(run), command["timeout_seconds"])
        else:
            # A timed-out sync job cannot be killed; its thread finishes in the background.
            returned = await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(pool, fn, run),
                                              command["timeout_seconds"])
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


async def execute_delivery(command: dict[str, Any], runner_name: str, handlers: HandlerSet | None,
                           settings: Settings, http: webhook.Client | None = None) -> dict[str, Any]:
    """A webhook or email handler's run: one delivery attempt (the handler as it is now)."""
    started = now_ms()
    result: dict[str, Any] = {
        "run_id": command["run_id"], "job": command["job"], "handler_id": command["handler_id"],
        "attempt": command["attempt"], "started_at": started, "runner": runner_name,
    }
    handler = handlers.get(command["handler_id"]) if handlers is not None else None
    transport = command["job"].split(".", 1)[0]
    if handler is not None and handler.webhook is not None and transport == "webhook":
        host = urlsplit(handler.webhook.url).hostname or ""
        allow = guard.parse_allow(settings.delivery_allow)
        if http is not None and http.allow == allow:
            outcome = await webhook.deliver(handler, command, http)
        else:
            async with webhook.Client(allow, keep_alive=False) as one_off:
                outcome = await webhook.deliver(handler, command, one_off)
    elif handler is not None and handler.email is not None and transport == "email":
        host = settings.smtp_host
        outcome = await email.deliver(handler, command, settings)
    else:
        outcome = webhook.Outcome(False, None, 0, f"{transport} handler {command['handler_id']!r} no longer exists",
                                  retry=False)
        host = ""
    if outcome.delivered:
        log.info("run %s: delivered to %s (HTTP %s, %d ms)", command["run_id"], host, outcome.status, outcome.ms)
    else:
        log.warning("run %s: delivery to %s failed: %s", command["run_id"], host, outcome.error)
    return {**result, "status": "succeeded" if outcome.delivered else "failed", "finished_at": now_ms(),
            "final_state_json": json.dumps(outcome.record(transport, host, command["attempt"]), separators=(",", ":")),
            "error": None if outcome.delivered else f"{transport} to {host}: {outcome.error}"}


class Runner(Service):
    """Consumes job commands (group ``<app_id>-runner``) and produces run results."""

    def __init__(self, settings: Settings, topics: Topics, handlers: HandlerSet | None = None,
                 metrics: WorkerMetrics | None = None, ready: Callable[[], Awaitable[Any]] | None = None,
                 handover: Callable[[int, int, bytes, bytes | None], Any] | None = None, **kwargs: Any) -> None:
        """``ready``: awaited before the first command is read (the handler feed has read
        the handlers topic: a delivery run needs its listener). ``handover``: called with
        (partition, offset, value, key) of each run result once the broker acknowledged it
        (the worker's schedule step, when the runner runs inside it: engine/handover.py)."""
        super().__init__(**kwargs)
        self.ready = ready
        self.handover = handover
        self.settings = settings
        self.topics = topics
        self.handlers = handlers
        self.metrics = metrics if metrics is not None else WorkerMetrics()
        self.metrics.gauges.lag["runner"] = self.lag
        self._committed: dict[TopicPartition, int] = {}  # the offsets this runner committed last
        self.name_ = f"{socket.gethostname()}/{os.getpid()}"
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._pending: dict[TopicPartition, deque[tuple[int, asyncio.Task[None]]]] = {}
        # commands the worker's schedule step handed over (offer), running or run, whose
        # record was not read yet; and per partition the last offset read
        self._handed: dict[tuple[TopicPartition, int], asyncio.Task[None]] = {}
        self._read: dict[TopicPartition, int] = {}
        self._admitted: asyncio.Semaphore | None = None  # set once commands are read
        self._job_slots = asyncio.Semaphore(settings.runner_concurrency)
        # deliveries wait on the network, not the CPU: a pool of their own, so a slow
        # receiver holds webhook/e-mail slots only, never the jobs' (and the reverse)
        self._delivery_slots = asyncio.Semaphore(settings.delivery_concurrency)
        self._handover_counts = self.metrics.handover_counters("command")
        # one HTTP session for every webhook this runner delivers (keep-alive connections)
        self._http = webhook.Client(guard.parse_allow(settings.delivery_allow))
        # A thread per job slot: a sync job starts as soon as it has a slot (the loop's default
        # executor has min(32, CPUs + 4) threads, and a job queued there spent its timeout
        # waiting). A timed-out sync job keeps its thread until it returns (a thread cannot be
        # killed): the pool is then renewed, so stuck threads never starve the slots.
        self._pool = self._new_pool()

    def _new_pool(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=self.settings.runner_concurrency, thread_name_prefix="signalbox-job")

    def _renew_pool(self) -> None:
        """Later sync jobs run on a fresh pool; the old one's threads end as their jobs return."""
        old, self._pool = self._pool, self._new_pool()
        old.shutdown(wait=False)

    async def on_start(self) -> None:
        s = self.settings
        # Subscribed in the task, not here: start() would otherwise wait for the group join
        # and hold up the services started after this one.
        self._consumer = AIOKafkaConsumer(
            **kafka_of(s).aiokafka_kwargs(),
            group_id=f"{s.app_id}-runner",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(s.session_timeout_seconds * 1000),
            heartbeat_interval_ms=int(s.heartbeat_seconds * 1000),
            fetch_max_wait_ms=s.fetch_max_wait_ms,
            max_poll_interval_ms=3_600_000,
        )
        self._producer = AIOKafkaProducer(**kafka_of(s).aiokafka_kwargs(), acks="all", linger_ms=2)
        await self._producer.start()
        await self._consumer.start()

    async def on_stop(self) -> None:
        if self._consumer is not None:
            # Runs under way finish (within a few seconds) and are committed, so a
            # graceful stop leaves nothing to run twice.
            tasks = [task for queue in self._pending.values() for _, task in queue] + list(self._handed.values())
            if tasks:
                await asyncio.wait(tasks, timeout=10)
            try:
                await self._commit_finished(self._pending)
            except Exception as exc:
                log.warning("runner: final commit failed (%s); those commands will run again", exc)
            await self._consumer.stop()
        await self._http.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._producer is not None:
            await self._producer.stop()

    @Service.task
    async def _run_commands(self) -> None:
        """Start each command as soon as it is read (at most runner_concurrency at once), so
        a slow job holds up nothing but its own slot; commit, per partition, the offsets
        below the oldest command whose result is not yet acknowledged."""
        assert self._consumer is not None
        if self.ready is not None:
            await self.ready()
        self._consumer.subscribe([self.topics.job_commands])
        log.info("runner: reading job commands (group %s-runner)", self.settings.app_id)
        s = self.settings
        # commands read ahead of a free slot, bounded
        self._admitted = admitted = asyncio.Semaphore(2 * (s.runner_concurrency + s.delivery_concurrency))
        pending = self._pending
        last_commit = time.monotonic()
        while not self.should_stop:
            batches = await self._consumer.getmany(timeout_ms=200, max_records=s.runner_concurrency)
            for tp, fetched in batches.items():
                for record in fetched:
                    self._read[tp] = record.offset
                    task = self._handed.pop((tp, record.offset), None)
                    if task is not None:  # handed over and started already: committed once it is done
                        self._handover_counts["skipped"].inc()
                    else:
                        await admitted.acquire()
                        task = asyncio.create_task(self._run_one(record.value, record.offset, tp, record.key))
                    pending.setdefault(tp, deque()).append((record.offset, task))
            if time.monotonic() - last_commit >= COMMIT_INTERVAL_S:
                await self._commit_finished(pending)
                self._forget_handed()
                last_commit = time.monotonic()

    def offer(self, partition: int, offset: int, value: bytes, key: bytes | None) -> bool:
        """A job command the worker's schedule step wrote, acknowledged by the broker at
        (partition, offset), handed over beside the topic (``engine/handover.py``): started
        now if this runner reads that partition and has not read the record yet. Its
        record, when read, is not run again; its offset is committed once the run is done
        (as a command read from the topic). Returns whether it was taken."""
        consumer, admitted = self._consumer, self._admitted
        if consumer is None or admitted is None or self.should_stop:
            return False
        tp = TopicPartition(self.topics.job_commands, partition)
        if offset <= self._read.get(tp, -1) or (tp, offset) in self._handed or tp not in consumer.assignment():
            return False
        self._handed[(tp, offset)] = asyncio.ensure_future(self._admit_and_run(value, offset, tp, key))
        self._handover_counts["offered"].inc()
        return True

    def _forget_handed(self) -> None:
        """Handed commands of partitions this runner no longer reads, done: their records go
        to the partition's new reader, which runs them again (a repeat, README Guarantees)."""
        assert self._consumer is not None
        assigned = self._consumer.assignment()
        for key in [k for k, task in self._handed.items() if task.done() and k[0] not in assigned]:
            del self._handed[key]

    async def _admit_and_run(self, value: bytes, offset: int, tp: TopicPartition, key: bytes | None) -> None:
        assert self._admitted is not None
        await self._admitted.acquire()
        await self._run_one(value, offset, tp, key)

    async def _run_one(self, value: bytes, offset: int, tp: TopicPartition, key: bytes | None) -> None:
        """One admitted command: wait for a slot of its pool (commands are keyed by job: the
        key says which pool without decoding), run it, release its admission."""
        assert self._admitted is not None
        slots = self._delivery_slots if (key or b"").startswith(DELIVERY_KEYS) else self._job_slots
        try:
            await slots.acquire()
            await self._run_in_slot(value, offset, tp, slots)
        finally:
            self._admitted.release()

    async def _run_in_slot(self, value: bytes, offset: int, tp: TopicPartition, slots: asyncio.Semaphore) -> None:
        """Run one command in a slot; the slot is free again once the job has returned,
        while the result is still on its way to the broker (the slots bound running jobs,
        not network round trips; the offset is committed only after the acknowledgement)."""
        assert self._producer is not None
        try:
            try:
                command = avro.commands().decode(value)
            except (avro.AvroDecodeError, EOFError, ValueError) as exc:
                log.error("runner: skipping undecodable job command at %s/%s/%s: %s",
                          tp.topic, tp.partition, offset, exc)
                return
            # Mistral's TASK_LAUNCHED, keyed by job like the other status events (one partition: in order)
            started = json.dumps(records.started_event(command), separators=(",", ":")).encode()
            await self._producer.send(self.topics.events, key=command["job"].encode(), value=started,
                                      headers=provenance.emitted_by(command["job"], command["run_id"]))
            result, run = await execute(command, self.name_, self.handlers, self.settings, self._http, self._pool)
            if result["status"] == "timed_out" and run is not None and not is_async_job(run.job):
                self._renew_pool()  # before the slot is free: the next job gets a thread of the new pool
            if command["job"].startswith(DELIVERY_JOB_PREFIXES):
                self.metrics.delivery(command["job"].split(".", 1)[0], delivery_outcome(result))
            if result["status"] == "failed" and command["job"].startswith("webhook."):
                await self._disable_if_gone(command, result)
        finally:
            slots.release()
        sent = [
            # Emitted events first: by the time the result settles, they are on the topic.
            await self._producer.send(self.topics.events, value=v, headers=h)
            for v, h in (emitted_events(run) if run is not None else [])
        ]
        key, value = result["job"].encode(), avro.results().encode(result)
        sent.append(await self._producer.send(self.topics.run_results, key=key, value=value))
        acknowledged = await asyncio.gather(*sent)
        if self.handover is not None:
            self.handover(acknowledged[-1].partition, acknowledged[-1].offset, value, key)

    async def _disable_if_gone(self, command: dict[str, Any], result: dict[str, Any]) -> None:
        """A receiver that answered 410 Gone wants no more deliveries: publish its listener
        again with ``enabled: false`` (applying the handler again re-enables it)."""
        assert self._producer is not None
        delivery = json.loads(result["final_state_json"] or "{}").get("delivery") or {}
        handler = self.handlers.get(command["handler_id"]) if self.handlers is not None else None
        if not delivery.get("gone") or handler is None or not handler.enabled:
            return
        disabled = handler.model_dump(mode="json", exclude_none=True) | {"enabled": False}
        await self._producer.send_and_wait(self.topics.handlers, key=handler.id.encode(),
                                           value=json.dumps(disabled).encode())
        log.warning("listener %s disabled: its receiver answered 410 Gone", handler.id)

    async def _commit_finished(self, pending: dict[TopicPartition, deque[tuple[int, asyncio.Task[None]]]]) -> None:
        assert self._consumer is not None
        offsets = {}
        for tp, queue in pending.items():
            done_up_to = None
            while queue and queue[0][1].done():
                offset, task = queue.popleft()
                task.result()  # a send that failed stops the runner: its command is not committed
                done_up_to = offset
            if done_up_to is not None:
                offsets[tp] = done_up_to + 1
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
            self._committed.update(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # The partition moved to another runner: it will run those commands again.
            log.warning("runner: commit after a rebalance failed (%s); commands will be redelivered", exc)

    def lag(self) -> list[tuple[str, int, int]]:
        """(topic, partition, lag) of each assigned partition (``kafka/lag.py``)."""
        return assigned_lag(self._consumer, self._committed)


def delivery_outcome(result: dict[str, Any]) -> str:
    """A delivery run's outcome, a metric label: delivered, failed (may be retried) or
    permanent_failure (the receiver refused it for good, or the listener is gone)."""
    if result["status"] == "succeeded":
        return "delivered"
    try:
        delivery = json.loads(result.get("final_state_json") or "{}").get("delivery") or {}
    except (ValueError, AttributeError):
        delivery = {}
    return "permanent_failure" if delivery.get("retry") is False else "failed"
