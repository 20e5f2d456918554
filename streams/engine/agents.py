"""The worker's engine: the match step (a batch consumer), the schedule step (a Faust
agent) and its tables.

    events ──match──► triggers ─┐
                                ├─schedule──► job-commands      (runner: runner.py)
    run-results ────────────────┘     └──► job state + internal events ──► events

    cron and retry timer ──► triggers      (on the worker that owns the job's partition)

``match`` is stateless: it runs on a batch consumer of its own
(``kafka/batch_consumer.py``, group ``<app_id>-match``), below Faust's per-record stream
machinery. ``schedule`` consumes triggers and run results, both keyed by job with the
same partition count, so one worker owns a job's records and its tables. It decides
with :class:`runbook.RunBook` and writes through :class:`overlay.Overlay` only after the
broker acknowledged the commands. The tables are RocksDB-backed with
changelogs, so a worker that lost its disk, or takes over a partition, gets them back:

- ``job-state``: job -> last accepted final state (the cursor);
- ``job-runs``: per job its running slots, queue, retry timers, once flags and cron ticks
  (``runbook.py``), and the de-duplication entries of settled runs (``dedup.py``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import faust

from streams.contracts import avro, records
from streams.contracts.topics import Topics
from streams.engine.dedup import RunDedup
from streams.engine.handler_feed import HandlerFeed
from streams.engine.handover import Handover, is_handed
from streams.engine.metrics import WorkerMetrics, count, install_faust_sensor
from streams.engine.overlay import Layer, Overlay, processing
from streams.engine.runbook import DeadLetter, Outputs, RunBook, meta_key, parse_retry_key, write_order
from streams.kafka.batch_consumer import BatchConsumer, committed_offsets
from streams.kafka.connection import kafka_of
from streams.kafka.faust_driver import App, acknowledge_only_delivered
from streams.kafka.faust_driver import register as register_transports
from streams.kafka.partitioning import job_partition
from streams.matching.handler_set import Applied, HandlerSet
from streams.matching.match import extract_params
from streams.model import cron, jsonvalue, provenance
from streams.model.identity import event_identity
from streams.settings import Settings

log = logging.getLogger(__name__)

MATCH_BATCH_MAX = 500
SCHEDULE_BATCH_MAX = 1000
SETTLE_TIMEOUT_S = 10.0  # a rebalance waits this long for the schedule step's batches on their way
SCHEDULE_IN_FLIGHT = 2  # batches decided (their commands sent) and not yet written: one waits while one is written
SCHEDULE_INBOX_MAX = 5000
TWIN_WAKE_S = 0.2  # a result whose handed twin was taken waits this long at most for a batch
SCHEDULE_TRIGGER_BYTES = 128 << 10  # triggers records a batch takes (at least one), ~400 triggers
RETRY_RESEND_S = 30.0  # a retry record not acted on is sent again after this long
DEAD_LETTER_MAX_VALUE = 64 << 10
TRIGGERS_RECORD_MAX_BYTES = 512 << 10  # a triggers record holds as many triggers as fit


@dataclass(slots=True)
class Plan:
    """A decided batch on its way: its records, outputs and sealed table writes."""

    batch: list[Any]
    now: int
    out: Outputs
    accepted: list[tuple[Any, list[str]]]  # (event, run ids settled) for the dedup record
    started: set[str]  # the same run ids, for batches decided before this one is written
    dead: list[tuple[Any, DeadLetter]]
    runs: Layer
    states: Layer
    sent: list[asyncio.Future[Any]] = field(default_factory=list)  # the commands' acknowledgements
    sent_at: float = 0.0  # time.monotonic() once its commands were sent


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Engine:
    app: faust.App
    feed: HandlerFeed
    handlers: HandlerSet
    metrics: WorkerMetrics
    services: list[Any]  # started after the app, stopped before it (the match hop)
    handover: Handover  # records handed between the schedule step and the in-process runner (handover.py)


def build_app(settings: Settings, topics: Topics, handlers: HandlerSet | None = None) -> Engine:
    handlers = handlers if handlers is not None else HandlerSet()
    embedded = settings.embedded
    register_transports()
    settings.datadir.mkdir(parents=True, exist_ok=True)
    kafka = kafka_of(settings)
    web_port = settings.metrics_port or settings.web_port
    app = App(
        settings.app_id,
        broker=kafka.faust_broker("tansu" if embedded else "signalbox"),
        broker_credentials=kafka.faust_credentials(),
        store="rocksdb://",
        datadir=str(settings.datadir),
        web_enabled=web_port is not None,
        web_host=settings.web_host,
        web_port=web_port or 6066,
        broker_session_timeout=settings.session_timeout_seconds,
        broker_heartbeat_interval=settings.heartbeat_seconds,
        broker_request_timeout=max(40.0, settings.session_timeout_seconds + 5),
        consumer_auto_offset_reset="earliest",
        # A few ms of linger lets triggers, commands and changelog writes share requests.
        producer_linger=settings.producer_linger_ms / 1000,
        topic_allow_declare=True,
        table_standby_replicas=settings.standby_replicas,
    )
    metrics = WorkerMetrics()
    if web_port is not None:
        install_faust_sensor(app, metrics)  # Faust's own sensor for its internals; /metrics
    event_limits = settings.event_limits
    feed = HandlerFeed(settings, topics, handlers, loop=app.loop, beacon=app.beacon, metrics=metrics)
    app.add_dependency(feed)

    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    n = topics.job_partitions
    for written in (topics.events, topics.dead_letter, topics.triggers, topics.job_commands):
        app.topic(written, partitions=n, **raw)  # declared: Faust knows every topic it writes

    # Changelogs are JSON: key = job name, value = the final state object.
    states = app.Table("job-state", partitions=n, key_type=str, default=None)
    # Job queues, slots, retries, once flags, cron ticks and the dedup batches: one table,
    # so one changelog partition keeps a job's writes in the order they were made.
    runs = app.Table("job-runs", partitions=n, key_type=str, default=None)
    dedup = RunDedup(app, runs, int(settings.dedup_retention_seconds * 1000), settings.dedup_sweep_interval_seconds)
    commands_codec, results_codec = avro.commands(), avro.results()
    def changelog_refused(exc: BaseException) -> None:
        # A table write the broker refused is in neither the changelog nor RocksDB: the
        # worker stops, as when a command is refused, and its successor replays the batch.
        log.critical("a table's changelog record was refused (%r); stopping this worker", exc)
        os.kill(os.getpid(), signal.SIGTERM)

    runs_view, states_view = Overlay(runs, changelog_refused), Overlay(states, changelog_refused)
    book = RunBook(runs_view, states_view, settings.state_limits, settings.job_queue_max,
                   handlers.job_concurrency, commands_codec.encode)

    schedule_writers: set[asyncio.Queue[Any]] = set()  # the schedule step's batches on their way
    handover_counts = metrics.handover_counters("result")
    handover = Handover(topics.run_results, lambda: owned_partitions(), lambda: bool(app.rebalancing),
                        lambda outcome: handover_counts[outcome].inc())

    async def partitions_moved(app: Any, partitions: Any, **kwargs: Any) -> None:
        """Partitions gained or lost: the batches decided are written, the table writes on
        their way settle into RocksDB, and the job queues' index of waiting run ids is read
        again from the table when next asked (another worker may have changed them). Run
        results the runner handed over and not yet taken are dropped (the topic has them)."""
        handover.forget()
        for written in list(schedule_writers):
            try:
                await asyncio.wait_for(asyncio.shield(written.join()), SETTLE_TIMEOUT_S)
            except TimeoutError:
                log.warning("schedule batches still unwritten after %.0f s of a rebalance", SETTLE_TIMEOUT_S)
        await runs_view.settle()
        await states_view.settle()
        book.forget_queues()

    app.on_partitions_revoked.connect(partitions_moved)
    app.on_partitions_assigned.connect(partitions_moved)

    async def send_raw(topic: str, key: bytes | None, value: bytes | None, partition: int | None = None,
                       headers: Any = None) -> Any:
        """Bytes straight to the producer (below Faust's Topic.send and its per-message
        bookkeeping); returns the future of the broker's acknowledgement."""
        return await app.producer.send(topic, key, value, partition, None, headers)

    async def dead_letter(message: Any, reason: str, value: bytes | None = None,
                          extra: dict[str, str] | None = None, kind: str = "other") -> list[asyncio.Future[Any]]:
        """Keep a record we cannot process, with its reason (``kind``: the reason's class, a
        metric label). A value too large for the dead-letter topic keeps its first
        DEAD_LETTER_MAX_VALUE bytes (header ``truncated_from``: its size); the whole record
        stays on its own topic. Returns the broker's acknowledgement to come (none if the
        send failed)."""
        log.warning("dead-lettered %s/%s/%s: %s", message.topic, message.partition, message.offset, reason)
        value = message.value if value is None else value
        headers = [
            ("reason", reason.encode("utf-8", "backslashreplace")),
            ("source_topic", message.topic.encode()),
            ("source_partition", str(message.partition).encode()),
            ("source_offset", str(message.offset).encode()),
            *((k, v.encode("utf-8", "backslashreplace")) for k, v in (extra or {}).items()),
        ]
        if value is not None and len(value) > DEAD_LETTER_MAX_VALUE:
            headers.append(("truncated_from", str(len(value)).encode()))
            value = value[:DEAD_LETTER_MAX_VALUE]
        try:
            ack = await send_raw(topics.dead_letter, message.key, value, None, headers)
        except Exception:  # never let a dead letter take the agent down with it
            log.exception("dead letter for %s/%s/%s not written", message.topic, message.partition, message.offset)
            return []
        metrics.dead_letter(kind)
        return [ack]

    async def match_batch(batch: list[Any]) -> list[asyncio.Future[Any]]:
        """One batch of events (aiokafka records, read by ``match_hop``): their triggers
        sent as one record per job partition, so the schedule step pays Faust's per-record
        cost once per batch. Returns the acknowledgements to come; an event that cannot be
        matched is dead-lettered, its neighbours go on."""
        by_partition: dict[int, list[dict[str, Any]]] = {}
        matched = dead = 0
        acks: list[asyncio.Future[Any]] = []
        for message in batch:
            try:
                doc, text = jsonvalue.load_event_text(message.value, event_limits)
                headers = provenance.header_map(message.headers)
                found = triggers_for(doc, text, message, headers)
            except jsonvalue.NotAJsonObject as exc:
                dead += 1
                acks += await dead_letter(message, str(exc), kind="invalid_event")
                continue
            except Exception as exc:  # no event may stop the hop or its neighbours
                log.exception("event %s/%s/%s not matched", message.topic, message.partition, message.offset)
                dead += 1
                acks += await dead_letter(message, f"event cannot be matched: {type(exc).__name__}: {exc}"[:1000],
                                          kind="match_error")
                continue
            if found:
                matched += 1
            for trigger in found:
                by_partition.setdefault(job_partition(trigger["job"], n), []).append(trigger)
        kinds: dict[tuple[str, str], int] = {}
        for partition, triggers in by_partition.items():
            acks += await send_triggers(partition, triggers)
            for trigger in triggers:
                count(kinds, (trigger["job"], trigger["trigger_kind"]))
        metrics.add(metrics.events, {"matched": matched, "not_matched": len(batch) - matched - dead,
                                     "dead_lettered": dead})
        metrics.add(metrics.triggers, kinds)
        return acks

    match_hop = BatchConsumer(
        kafka, topics.events, f"{settings.app_id}-match", match_batch, ready=feed.wait_ready,
        seed=lambda fresh: committed_offsets(kafka, settings.app_id, fresh),
        max_records=MATCH_BATCH_MAX, session_timeout_ms=int(settings.session_timeout_seconds * 1000),
        heartbeat_interval_ms=int(settings.heartbeat_seconds * 1000), fetch_max_wait_ms=settings.fetch_max_wait_ms,
        on_gap=lambda tp, first, count, outcome: metrics.match_gaps.labels(str(tp.partition), outcome).inc(count),
        loop=app.loop)
    metrics.gauges.lag["match"] = match_hop.lag

    async def send_triggers(partition: int, triggers: list[dict[str, Any]]) -> list[asyncio.Future[Any]]:
        """Records on the triggers topic: JSON lists of triggers of one job partition, each
        at most TRIGGERS_RECORD_MAX_BYTES (one trigger alone may be larger). Returns the
        broker's acknowledgements to come."""
        # Trigger fields are strings and plain numbers (params are JSON text already), so the
        # standard library's C encoder serves; it is several times faster here.
        encoded = [json.dumps(t, separators=(",", ":")).encode() for t in triggers]
        start, size, acks = 0, 0, []
        for i, one in enumerate(encoded):
            if i > start and size + len(one) > TRIGGERS_RECORD_MAX_BYTES:
                acks.append(await send_raw(topics.triggers, None, b"[" + b",".join(encoded[start:i]) + b"]", partition))
                start, size = i, 0
            size += len(one) + 1
        acks.append(await send_raw(topics.triggers, None, b"[" + b",".join(encoded[start:]) + b"]", partition))
        return acks

    def triggers_for(doc: dict[str, Any], text: str, message: Any, headers: dict[str, str]) -> list[dict[str, Any]]:
        """Every trigger one event starts: event handlers, flow/catch handlers, run requests."""
        out = []
        matches = [m for m in handlers.events.match(doc) if provenance.constraints_hold(m.handler.event, headers)]
        if matches and records.is_status_event(doc) and doc["job"].startswith(("webhook.", "email.")):
            # a delivery's own lifecycle never starts another delivery (no loops)
            matches = [m for m in matches if m.handler.webhook is None and m.handler.email is None]
        if matches:
            ref = event_identity(doc, message.topic, message.partition, message.offset)
            timestamp = message.timestamp or None  # aiokafka: milliseconds
            for m in matches:
                out.append(records.trigger_for_event(m, text, ref, timestamp, once_token(m.handler)))
        if records.is_status_event(doc):
            for h in handlers.after(doc["job"]):
                if not records.after_fires(h, doc):
                    continue
                params = extract_params(h, doc)
                if params is not None:
                    out.append(records.trigger_for_after(h, params, doc, text, once_token(h)))
        if records.is_run_request(doc):
            h = handlers.get(doc["handler_id"])
            if h is None:
                log.warning("run requested for unknown handler %s; ignored", doc["handler_id"])
            else:
                out.append(records.trigger_for_request(h, doc, text))
        return out

    def once_token(handler: Any) -> int | None:
        applied = handlers.applied(handler.id)
        return applied.offset if handler.once and applied is not None else None

    acknowledge_only_delivered([topics.triggers, topics.run_results])  # faust_driver.py: skipped records

    @app.agent(app.topic(topics.triggers, topics.run_results, partitions=n, **raw), name="schedule")
    async def schedule(stream: faust.StreamT) -> None:
        """Triggers and run results of the job partitions this worker owns, in batches: every
        decision is made first (``RunBook``), then the commands are sent and acknowledged,
        and only then are the tables written and the run ids recorded as scheduled.

        Records are read while a batch waits for its acknowledgements (Faust's
        ``take_events`` stops reading while its consumer works, which made the schedule
        step's throughput its round trip): this loop only collects them, and
        ``schedule_loop`` takes everything collected so far as the next batch. Each
        record is acknowledged to Faust (so its offset may be committed) only once its
        batch is written."""
        manual = stream.noack()
        inbox: list[Any] = []
        arrived, drained = asyncio.Event(), asyncio.Event()
        wake: asyncio.TimerHandle | None = None  # the batch a twin waits for, at the latest
        loop = asyncio.ensure_future(schedule_loop(manual, inbox, arrived, drained))
        handover.attach(inbox, arrived)
        try:
            async for event in manual.events():
                if loop.done():
                    loop.result()  # the loop crashed: raise its error here, in the agent
                if event.message.timestamp:  # seconds, the producer's clock
                    metrics.schedule_fetched.observe(max(0.0, time.time() - event.message.timestamp))
                inbox.append(event)
                if event.message.topic == topics.run_results and handover.taken(event.message):
                    # its handed copy was settled: it goes along with the next batch (a batch
                    # of its own would hold a slot behind the batch being written)
                    if wake is None or wake.when() <= app.loop.time():
                        wake = app.loop.call_later(TWIN_WAKE_S, arrived.set)
                else:
                    arrived.set()
                if len(inbox) >= SCHEDULE_INBOX_MAX:
                    drained.clear()
                    await drained.wait()
        finally:
            handover.detach()
            loop.cancel()

    batch_window_s = settings.schedule_batch_window_ms / 1000  # SIGNALBOX_SCHEDULE_BATCH_WINDOW_MS

    async def schedule_loop(stream: Any, inbox: list[Any], arrived: asyncio.Event, drained: asyncio.Event) -> None:
        """Decide each batch and send its commands, then hand it to ``write_loop``, which
        waits for the acknowledgements and writes the tables: the next batch is decided
        (reading the writes still on their way, ``Overlay.seal``) and its commands sent
        while the previous one waits, at most SCHEDULE_IN_FLIGHT batches decided and not
        written."""
        written: asyncio.Queue[Plan] = asyncio.Queue()
        slots = asyncio.Semaphore(SCHEDULE_IN_FLIGHT)
        writer = asyncio.ensure_future(write_loop(stream, written, slots))
        schedule_writers.add(written)
        try:
            while True:
                await slots.acquire()
                await arrived.wait()
                await asyncio.sleep(batch_window_s)  # let a few more records join the batch
                batch = take_batch(inbox)
                if not inbox:
                    arrived.clear()
                drained.set()
                if writer.done():
                    return  # the writer stopped the worker (below)
                try:
                    deciding = time.perf_counter()
                    plan = decide_batch(batch)
                    metrics.schedule_decided.observe(time.perf_counter() - deciding)
                    plan.sent = [await send_raw(topics.job_commands, job.encode(), value)
                                 for job, value in plan.out.commands]
                    handover.hand_commands(plan.out.commands, plan.sent)
                    plan.sent_at = time.monotonic()
                except Exception:
                    stop_worker()
                    return
                written.put_nowait(plan)
        finally:
            schedule_writers.discard(written)
            writer.cancel()

    async def write_loop(stream: Any, written: asyncio.Queue[Plan], slots: asyncio.Semaphore) -> None:
        """Write the decided batches in the order decided; then acknowledge their records to
        Faust (their offsets may be committed)."""
        while True:
            plan = await written.get()
            try:
                await write_batch(plan)
            except Exception:
                stop_worker()
                return  # its batch stays unmarked: a rebalance waiting for it gives up after its timeout
            metrics.schedule_written.observe(time.monotonic() - plan.sent_at)
            for event in plan.batch:
                if not is_handed(event):  # a result the runner handed over: its record on the topic is acked
                    await stream.ack(event)
            written.task_done()
            slots.release()

    def stop_worker() -> None:
        # The broker refused a send (after the client's own retries), or a bug: the batch's
        # records are neither processed nor acknowledged. Restarting the agent would skip
        # them until the next rebalance, so the whole worker stops (gracefully: what was
        # acknowledged is committed, this batch is not) and its records go to its
        # successor, or to itself once restarted.
        log.critical("schedule step failed; stopping this worker so its records are processed again",
                     exc_info=True)
        os.kill(os.getpid(), signal.SIGTERM)

    def take_batch(inbox: list[Any]) -> list[Any]:
        """The next batch, taken out of ``inbox``: every run result first (settling one frees
        its job's slot, and the next waiting trigger is dispatched in the same batch), then
        triggers records in arrival order up to SCHEDULE_TRIGGER_BYTES. Under a backlog of
        triggers, a result then waits for one small batch, not for thousands of triggers to
        be queued. Each partition's records stay in order; the two topics have no order
        between them to keep."""
        batch = [event for event in inbox if event.message.topic == topics.run_results][:SCHEDULE_BATCH_MAX]
        budget = SCHEDULE_TRIGGER_BYTES
        for event in inbox:
            if len(batch) >= SCHEDULE_BATCH_MAX or budget <= 0:
                break
            if event.message.topic != topics.run_results:
                batch.append(event)
                budget -= len(event.message.value or b"")
        taken = {id(event) for event in batch}
        inbox[:] = [event for event in inbox if id(event) not in taken]
        return batch

    settling: dict[str, int] = {}  # run ids settled in batches not written yet -> how many such batches

    def decide_batch(batch: list[Any]) -> Plan:
        """Every decision of a batch (no await: nothing else runs meanwhile), its table
        writes sealed (readable by the next batch, sent once its commands are acknowledged)."""
        now = now_ms()
        out = Outputs()
        accepted: list[tuple[Any, list[str]]] = []  # (event, run ids) for the dedup record
        started: set[str] = set()  # run ids settled in this batch (not yet in the dedup index)
        dead: list[tuple[Any, DeadLetter]] = []
        owned: set[int] | None = None
        for event in batch:
            message = event.message
            with processing(event):
                if message.topic == topics.triggers:
                    dedup.sweep(message.partition, now)
                    units = trigger_units(message, now, started)
                else:
                    handed = is_handed(event)
                    if handed:
                        owned = owned_partitions() if owned is None else owned
                        if message.partition not in owned:
                            continue  # its partition moved: its record on the topic goes to the new owner
                    if not handover.first(message, handed):
                        continue  # the other copy of this result was taken before
                    units = [(lambda message=message: message.value,
                              lambda one, message=message: settle_result(message, now, started, one))]
                run_ids: list[str] = []
                for raw, unit in units:
                    one = isolated(message, raw, unit)
                    dead += [(message, d) for d in one.dead]
                    one.dead = []
                    run_ids += one.accepted
                    started.update(one.accepted)
                    out.merge(one)
                if run_ids:
                    accepted.append((event, run_ids))
        for run_id in started:
            settling[run_id] = settling.get(run_id, 0) + 1
        return Plan(batch, now, out, accepted, started, dead, runs_view.seal(), states_view.seal())

    async def write_batch(plan: Plan) -> None:
        """Write a decided batch (its commands are on their way): the states, then the
        job-runs records. The two tables have separate changelogs, and a kill -9 can leave
        any subset of the records in flight: a job's new state is sent only once every
        earlier job-runs record is acknowledged (the slot of the run that left it exists on
        the changelog), and this batch's job-runs records only once its commands and states
        are (a successor never finds the run settled without its state, nor a run recorded
        as sent without its command). A state or a later batch's command may land while
        this batch's commands do not: the successor settles the same results again, to the
        same states, and sends the commands again (README, Guarantees)."""
        # 1. the states, with the commands (sent when the batch was decided)
        sent = list(plan.sent)
        if plan.states:
            await runs_view.acknowledged()
        sent += await states_view.apply(send_raw, layer=plan.states)  # an empty layer: taken off the view
        if sent:
            await asyncio.gather(*sent)
        # 2. the job-runs table (queues, slots), then the run ids as scheduled
        per_partition: dict[int, tuple[Any, list[str]]] = {}  # one entry per partition and batch
        for event, run_ids in plan.accepted:
            partition = event.message.partition
            per_partition[partition] = (event, per_partition.get(partition, (event, []))[1] + run_ids)
        for partition, (event, run_ids) in per_partition.items():
            with processing(event):
                dedup.record(partition, run_ids, plan.now, plan.runs.set)
        for run_id in plan.started:
            if settling[run_id] == 1:
                del settling[run_id]
            else:
                settling[run_id] -= 1
        await runs_view.apply(send_raw, write_order, layer=plan.runs)
        # 3. what follows from them
        out = plan.out
        for job, internal in out.events:
            value = jsonvalue.dumps(internal).encode("utf-8", "backslashreplace")
            await send_raw(topics.events, job.encode(), value, None, provenance.emitted_by(job, internal["run_id"]))
        for message, d in plan.dead:
            await dead_letter(message, d.reason, d.value, d.headers, d.kind)
        tally(out)

    def tally(out: Outputs) -> None:
        """Count a written batch (its commands, runs, retries, drops) in the metrics."""
        commands: dict[str, int] = {}
        for job, _ in out.commands:
            count(commands, job)
        metrics.add(metrics.commands, commands)
        if out.duplicates:
            dropped: dict[str, int] = {}
            for job in out.duplicates:
                count(dropped, job)
            metrics.add(metrics.duplicates, dropped)
        for job, seconds in out.attempts:
            metrics.observe(job, seconds)
        if out.retries:
            retried: dict[str, int] = {}
            for job in out.retries:
                count(retried, job)
            metrics.add(metrics.retries, retried)
        if out.settled:
            settled: dict[tuple[str, str], int] = {}
            for key in out.settled:
                count(settled, key)
            metrics.add(metrics.runs, settled)
        for job, size in out.states:
            state_bytes[job] = size

    Unit = tuple[Callable[[], bytes | None], Callable[[Outputs], None]]  # (its bytes, the work)

    def isolated(message: Any, raw: Callable[[], bytes | None], unit: Callable[[Outputs], None]) -> Outputs:
        """Run one unit of work (a trigger, a result); if it breaks, undo its table writes and
        dead-letter its bytes with the reason: its neighbours are not affected."""
        mark = (runs_view.savepoint(), states_view.savepoint())
        one = Outputs()
        try:
            unit(one)
        except Exception as exc:
            runs_view.rollback(mark[0])
            states_view.rollback(mark[1])
            book.forget_queues()  # its index of waiting runs may hold the unit's entries
            log.exception("%s/%s/%s: a unit not processed", message.topic, message.partition, message.offset)
            reason = f"cannot be processed: {type(exc).__name__}: {exc}"[:1000]
            one = Outputs(dead=[DeadLetter(raw() or b"", reason, kind="processing_error")])
        return one

    def trigger_units(message: Any, now: int, started: set[str]) -> list[Unit]:
        """One unit per trigger of a triggers record (a JSON list), or a dead letter."""
        try:
            items = json.loads(message.value)
            if not isinstance(items, list):
                raise ValueError("not a JSON list")
        except (ValueError, TypeError, RecursionError) as exc:
            reason = f"undecodable triggers record: {exc}"[:1000]
            dead = DeadLetter(message.value or b"", reason, kind="undecodable_record")
            return [(lambda: message.value, lambda one: one.dead.append(dead))]
        seen = seen_in(message.partition, now, started)

        def unit(item: Any) -> Callable[[Outputs], None]:
            def run(one: Outputs) -> None:
                if not isinstance(item, dict):
                    raise TypeError(f"a trigger must be a JSON object, not {type(item).__name__}")
                if item.get("kind") == "retry":
                    book.on_retry_due(item, now, one)
                else:
                    book.on_trigger(item, now, seen, one)
            return run

        return [(lambda item=item: json.dumps(item).encode(), unit(item)) for item in items]

    def seen_in(partition: int, now: int, started: set[str]) -> Callable[[str], bool]:
        """Whether a run id was accepted: settled in this batch, in one not written yet, or
        in the dedup index."""
        return lambda run_id: run_id in started or run_id in settling or dedup.seen(partition, run_id, now)

    def settle_result(message: Any, now: int, started: set[str], out: Outputs) -> None:
        try:
            result = results_codec.decode(message.value)
        except (avro.AvroDecodeError, EOFError, ValueError, TypeError) as exc:
            out.dead.append(DeadLetter(message.value or b"", f"undecodable run result: {exc}",
                                       kind="undecodable_record"))
            return
        book.on_result(result, message.value, now, seen_in(message.partition, now, started), out)

    sent_ticks: dict[str, float] = {}
    grace = max(2 * settings.cron_interval_seconds, 1.0)

    @app.timer(settings.cron_interval_seconds, name="cron")
    async def cron_timer() -> None:
        """Send the due ticks of the cron handlers whose job partition this worker owns.

        The schedule step records each accepted tick (in the job's ``m:`` record)
        and drops a tick's run id when it sees it twice, so a tick sent by two workers
        during a rebalance still starts one run; ticks missed while nobody owned the job
        are found from that entry by the next owner (run_once) or dropped (skip)."""
        if not feed.ready.is_set() or app.rebalancing:
            return
        owned = owned_partitions()
        await send_due_retries(owned)
        for applied in handlers.cron():
            try:
                await send_due_ticks(applied, owned, time.time())
            except Exception:  # one bad schedule must not stop the others, nor the worker
                log.exception("cron %s: ticks not sent", applied.handler.id)

    def owned_partitions() -> set[int]:
        return {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == topics.triggers}

    retries_sent: dict[str, float] = {}

    async def send_due_retries(owned: set[int]) -> None:
        """Send a retry record for each due retry of the job partitions this worker owns.
        The schedule step starts an attempt once, however often its record arrives."""
        now = now_ms()
        for partition in owned:
            db = runs.data._db_for_partition(partition)
            due = []
            for raw_key, raw_value in db.items(from_key=b'"t:'):
                if not raw_key.startswith(b'"t:'):
                    break
                key = json.loads(raw_key)
                due_ms, job, run_id = parse_retry_key(key)
                if due_ms > now:
                    break
                if time.monotonic() - retries_sent.get(key, -RETRY_RESEND_S) >= RETRY_RESEND_S:
                    due.append({"kind": "retry", "job": job, "run_id": run_id, "attempt": json.loads(raw_value),
                                "key": key})
                    retries_sent[key] = time.monotonic()
            if due:
                log.info("retries due on partition %d: %s", partition, ", ".join(d["run_id"] for d in due))
                await send_triggers(partition, due)
        if len(retries_sent) > 10_000:
            retries_sent.clear()

    async def send_due_ticks(applied: Applied, owned: set[int], now: float) -> None:
        h = applied.handler
        assert h.cron is not None
        if job_partition(h.job, n) not in owned:
            sent_ticks.pop(h.id, None)
            return
        meta = runs.get(meta_key(h.job)) or {}
        accepted = (meta.get("cron") or {}).get(h.id)
        last = max(float(accepted or applied.timestamp_ms / 1000), sent_ticks.get(h.id, 0.0))
        for tick in cron.ticks_between(h.cron.schedule, h.cron.timezone, last, now):
            sent_ticks[h.id] = tick
            if h.cron.misfire == "skip" and tick < now - grace:
                log.info("cron %s: tick %s missed, skipped (misfire: skip)", h.id, tick)
                continue
            trigger = records.trigger_for_tick(h, tick)
            log.info("cron %s: tick %s sent", h.id, trigger["trigger_ref"])
            await send_triggers(job_partition(h.job, n), [trigger])
            metrics.add(metrics.triggers, {(h.job, "cron"): 1})

    # -- the gauges computed when /metrics is scraped ----------------------------------

    state_bytes: dict[str, int] = {}  # job -> size of the state it stored last (schedule step)

    def owned_jobs() -> list[str]:
        owned = owned_partitions()
        return sorted(job for job in handlers.jobs() if job_partition(job, n) in owned)

    def job_gauges() -> list[tuple[str, int, int]]:
        out = []
        for job in owned_jobs():
            meta = runs.get(meta_key(job)) or {}
            out.append((job, int(meta.get("tail", 0)) - int(meta.get("head", 0)), len(meta.get("running") or ())))
        return out

    def state_sizes() -> list[tuple[str, int]]:
        out = []
        for job in owned_jobs():
            if job not in state_bytes:  # stored before this worker owned the job: measured once
                state = states.get(job)
                state_bytes[job] = len(jsonvalue.dumps(state).encode("utf-8", "backslashreplace")) if state else 0
            out.append((job, state_bytes[job]))
        return out

    def engine_lag() -> list[tuple[str, int, int]]:
        monitor = app.monitor
        committed = monitor.tp_committed_offsets
        out = []
        for tp, end in list(monitor.tp_end_offsets.items()):
            if tp.topic in consumed and tp in committed:
                out.append((tp.topic, tp.partition, max(0, int(end) - int(committed[tp]))))
        return sorted(out)

    consumed = {topics.triggers, topics.run_results}  # the events topic: match_hop.lag
    metrics.gauges.jobs = job_gauges
    metrics.gauges.states = state_sizes
    metrics.gauges.handlers = lambda: len(handlers)
    metrics.gauges.lag["engine"] = engine_lag

    return Engine(app=app, feed=feed, handlers=handlers, metrics=metrics, services=[match_hop], handover=handover)
