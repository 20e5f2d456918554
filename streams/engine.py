"""The Faust app: the match, schedule and settle steps as agents, and their tables.

    events ──match──► triggers ──schedule──► job-commands      (runner: runner.py)
    run-results ──settle──► job state table + internal events ──► events

    cron timer ──► triggers      (on the worker that owns the job's partition)

``match`` is stateless. ``schedule`` and ``settle`` consume topics keyed by job with the
same partition count, so Faust's assignor gives one worker a job's partition of both and
of the tables they share. The tables are RocksDB-backed with changelogs, so a worker that
lost its disk, or takes over a partition, gets them back from Kafka:

- ``job-state``: job -> last accepted final state (the cursor);
- ``run-dedup``: the run ids started, one entry per triggers record (``dedup.py``): a run
  id is scheduled once;
- ``once-fired``: handler id -> arm token it last fired with (a once-handler is armed
  while its current token differs);
- ``cron-last``: handler id -> the last tick scheduled (epoch seconds).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import faust
from aiokafka.partitioner import murmur2

from . import avro, cron, jsonvalue, provenance, records
from .dedup import RunDedup
from .faust_driver import register as register_tansu_driver
from .handler_feed import HandlerFeed
from .handler_set import Applied, HandlerSet
from .identity import event_identity
from .matching import extract_params
from .settings import Settings
from .topics import Topics

log = logging.getLogger(__name__)

MATCH_BATCH_MAX = 500
MATCH_BATCH_WITHIN_S = 0.005


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Engine:
    app: faust.App
    feed: HandlerFeed
    handlers: HandlerSet


def job_partition(job: str, partitions: int) -> int:
    """The partition a job's records land on (murmur2, as Java, aiokafka and our CLI send)."""
    return (murmur2(job.encode()) & 0x7FFFFFFF) % partitions


def build_app(settings: Settings, topics: Topics, handlers: HandlerSet | None = None) -> Engine:
    handlers = handlers if handlers is not None else HandlerSet()
    embedded = settings.embedded
    if embedded:
        register_tansu_driver()
    settings.datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=f"{'tansu' if embedded else 'kafka'}://{settings.bootstrap_servers}",
        store="rocksdb://",
        datadir=str(settings.datadir),
        web_enabled=settings.web_port is not None,
        web_host="127.0.0.1",
        web_port=settings.web_port or 6066,
        broker_session_timeout=settings.session_timeout_seconds,
        broker_heartbeat_interval=settings.heartbeat_seconds,
        broker_request_timeout=max(40.0, settings.session_timeout_seconds + 5),
        consumer_auto_offset_reset="earliest",
        # A few ms of linger lets triggers, commands and changelog writes share requests.
        producer_linger=0.005,
        topic_allow_declare=True,
        table_standby_replicas=1,
    )
    feed = HandlerFeed(settings, topics, handlers, loop=app.loop, beacon=app.beacon)
    app.add_dependency(feed)

    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    events_topic = app.topic(topics.events, **raw)
    dead_letter_topic = app.topic(topics.dead_letter, **raw)
    n = topics.job_partitions
    triggers_topic = app.topic(topics.triggers, partitions=n, **raw)
    commands_topic = app.topic(topics.job_commands, partitions=n, **raw)
    results_topic = app.topic(topics.run_results, partitions=n, **raw)
    app.topic(topics.run_results, partitions=n, **raw)

    # Changelogs are JSON: key = job name, value = the final state object.
    states = app.Table("job-state", partitions=n, key_type=str, default=None)
    # one entry per triggers record: see dedup.py
    dedup = RunDedup(app, app.Table("run-dedup", partitions=n, key_type=str, default=None),
                     int(settings.dedup_retention_seconds * 1000), settings.dedup_sweep_interval_seconds)
    once_fired = app.Table("once-fired", partitions=n, key_type=str, default=None)
    cron_last = app.Table("cron-last", partitions=n, key_type=str, default=None)
    limits = settings.state_limits
    commands_codec, results_codec = avro.commands(), avro.results()

    async def dead_letter(message: Any, reason: str) -> None:
        log.warning("dead-lettered %s/%s/%s: %s", message.topic, message.partition, message.offset, reason)
        await dead_letter_topic.send(
            key=message.key,
            value=message.value,
            headers=[
                ("reason", reason.encode()),
                ("source_topic", message.topic.encode()),
                ("source_partition", str(message.partition).encode()),
                ("source_offset", str(message.offset).encode()),
            ],
        )

    @app.agent(events_topic, name="match")
    async def match(stream: faust.StreamT) -> None:
        await feed.wait_ready()
        # Events are taken in small batches and their triggers sent as one record per job
        # partition: the schedule step then pays Faust's per-record cost once per batch.
        async for batch in stream.take_events(MATCH_BATCH_MAX, within=MATCH_BATCH_WITHIN_S):
            by_partition: dict[int, list[dict[str, Any]]] = {}
            for event in batch:
                message = event.message
                try:
                    doc = jsonvalue.load_object(message.value)
                except jsonvalue.NotAJsonObject as exc:
                    await dead_letter(message, str(exc))
                    continue
                text = message.value.decode("utf-8")
                headers = provenance.header_map(message.headers)
                for trigger in triggers_for(doc, text, message, headers):
                    by_partition.setdefault(job_partition(trigger["job"], n), []).append(trigger)
            for partition, triggers in by_partition.items():
                await send_triggers(partition, triggers)

    async def send_triggers(partition: int, triggers: list[dict[str, Any]]) -> None:
        """One record on the triggers topic: a JSON list of triggers of one job partition."""
        # Trigger fields are strings and plain numbers (params are JSON text already), so the
        # standard library's C encoder serves; it is several times faster here.
        await triggers_topic.send(partition=partition, value=json.dumps(triggers, separators=(",", ":")).encode())

    def triggers_for(doc: dict[str, Any], text: str, message: Any, headers: dict[str, str]) -> list[dict[str, Any]]:
        """Every trigger one event starts: event handlers, flow/catch handlers, run requests."""
        out = []
        matches = [m for m in handlers.events.match(doc) if provenance.constraints_hold(m.handler.event, headers)]
        if matches:
            ref = event_identity(doc, message.topic, message.partition, message.offset)
            timestamp = int(message.timestamp * 1000) if message.timestamp else None
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

    @app.agent(triggers_topic, name="schedule")
    async def schedule(stream: faust.StreamT) -> None:
        async for event in stream.events():
            message = event.message
            try:
                triggers = json.loads(message.value)
                if not isinstance(triggers, list):
                    raise ValueError("not a JSON list")
            except ValueError as exc:
                await dead_letter(message, f"undecodable triggers record: {exc}")
                continue
            now = now_ms()
            dedup.sweep(message.partition, now)
            started: list[str] = []
            for trigger in triggers:
                if trigger["run_id"] in started:  # the same event twice in one batch
                    log.info("run %s already scheduled; trigger %s ignored", trigger["run_id"], trigger["trigger_ref"])
                elif await schedule_one(trigger, message.partition, now):
                    started.append(trigger["run_id"])
            dedup.record(message.partition, message.offset, started, now)

    async def schedule_one(trigger: dict[str, Any], partition: int, now: int) -> bool:
        """Send the trigger's job command unless its run was started already; True if sent.

        The command goes out before the batch's dedup entry is written: a crash between the
        two can repeat a command (runs are idempotent by run id) but never lose one."""
        if dedup.seen(partition, trigger["run_id"], now):
            log.info("run %s already scheduled; trigger %s ignored", trigger["run_id"], trigger["trigger_ref"])
            return False
        token = trigger.get("once_token")
        if token is not None and once_fired.get(trigger["handler_id"]) == token:
            log.info("listener %s is disarmed; trigger %s ignored", trigger["handler_id"], trigger["trigger_ref"])
            return False
        state = states.get(trigger["job"])
        command = records.command_from_trigger(trigger, jsonvalue.dumps(state) if state is not None else None, now)
        await commands_topic.send(key=trigger["job"].encode(), value=commands_codec.encode(command))
        if token is not None:
            once_fired[trigger["handler_id"]] = token
        if trigger.get("cron_tick") is not None:
            tick = float(trigger["cron_tick"])
            if tick > float(cron_last.get(trigger["handler_id"]) or 0):
                cron_last[trigger["handler_id"]] = tick
        return True

    @app.agent(results_topic, name="settle")
    async def settle(stream: faust.StreamT) -> None:
        async for event in stream.events():
            message = event.message
            try:
                result = results_codec.decode(message.value)
            except (avro.AvroDecodeError, EOFError, ValueError) as exc:
                await dead_letter(message, f"undecodable run result: {exc}")
                continue
            try:
                settlement = records.settle(result, limits)
            except ValueError as exc:  # e.g. an external executor's final state is not a JSON object
                await dead_letter(message, f"run result {result['run_id']}: {exc}")
                continue
            if settlement.state_to_store is not None:
                states[result["job"]] = jsonvalue.loads(settlement.state_to_store)
            for internal in settlement.events:
                if internal["event_type"] == records.STATE_WARNING_EVENT_TYPE:
                    log.warning("job %s run %s: final state is %d bytes (stored: %s)", internal["job"],
                                internal["run_id"], internal["state_bytes"], internal["stored"])
                await events_topic.send(key=result["job"].encode(), value=jsonvalue.dumps(internal).encode(),
                                        headers=provenance.emitted_by(result["job"], result["run_id"]))

    sent_ticks: dict[str, float] = {}
    grace = max(2 * settings.cron_interval_seconds, 1.0)

    @app.timer(settings.cron_interval_seconds, name="cron")
    async def cron_timer() -> None:
        """Send the due ticks of the cron handlers whose job partition this worker owns.

        The schedule step records each scheduled tick in ``cron-last`` and drops a tick's
        run id when it sees it twice, so a tick sent by two workers during a rebalance
        still starts one run; ticks missed while nobody owned the job are found from
        ``cron-last`` by the next owner (run_once) or dropped (skip)."""
        if not feed.ready.is_set() or app.rebalancing:
            return
        owned = {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == topics.triggers}
        for applied in handlers.cron():
            try:
                await send_due_ticks(applied, owned, time.time())
            except Exception:  # one bad schedule must not stop the others, nor the worker
                log.exception("cron %s: ticks not sent", applied.handler.id)

    async def send_due_ticks(applied: Applied, owned: set[int], now: float) -> None:
        h = applied.handler
        assert h.cron is not None
        if job_partition(h.job, n) not in owned:
            sent_ticks.pop(h.id, None)
            return
        last = max(float(cron_last.get(h.id) or applied.timestamp_ms / 1000), sent_ticks.get(h.id, 0.0))
        for tick in cron.ticks_between(h.cron.schedule, h.cron.timezone, last, now):
            sent_ticks[h.id] = tick
            if h.cron.misfire == "skip" and tick < now - grace:
                log.info("cron %s: tick %s missed, skipped (misfire: skip)", h.id, tick)
                continue
            trigger = records.trigger_for_tick(h, tick)
            log.info("cron %s: tick %s sent", h.id, trigger["trigger_ref"])
            await send_triggers(job_partition(h.job, n), [trigger])

    return Engine(app=app, feed=feed, handlers=handlers)
