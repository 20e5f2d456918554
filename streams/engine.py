"""The Faust app: the match, schedule and settle steps as agents, and their tables.

    events ──match──► triggers ──schedule──► job-commands      (runner: runner.py)
    run-results ──settle──► job state table + internal events ──► events

``match`` is stateless. ``schedule`` and ``settle`` consume topics keyed by job with the
same partition count, so Faust's assignor gives one worker a job's partition of both and
of the tables they share (state: job -> last accepted final state; dedup: run id -> when
seen). Both tables are RocksDB-backed with changelogs, so a worker that lost its disk
gets them back from Kafka.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import faust

from . import avro, jsonvalue, records
from .faust_driver import register as register_tansu_driver
from .handler_feed import HandlerFeed
from .identity import event_identity
from .matching import HandlerIndex
from .settings import Settings
from .topics import Topics

log = logging.getLogger(__name__)

DEDUP_SWEEP_INTERVAL_S = 60.0


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Engine:
    app: faust.App
    feed: HandlerFeed
    index: HandlerIndex


def build_app(settings: Settings, topics: Topics, index: HandlerIndex | None = None) -> Engine:
    index = index if index is not None else HandlerIndex()
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
        # tansu's ListOffsets is wrong for multi-record batches and Faust's table recovery
        # trusts it: write changelogs and outputs one record per batch there.
        producer_max_batch_size=1 if embedded else 16384,
        consumer_auto_offset_reset="earliest",
        topic_allow_declare=True,
        table_standby_replicas=1,
    )
    feed = HandlerFeed(settings, topics, index, loop=app.loop, beacon=app.beacon)
    app.add_dependency(feed)

    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    events_topic = app.topic(topics.events, **raw)
    dead_letter_topic = app.topic(topics.dead_letter, **raw)
    n = topics.job_partitions
    triggers_topic = app.topic(topics.triggers, partitions=n, **raw)
    commands_topic = app.topic(topics.job_commands, partitions=n, **raw)
    results_topic = app.topic(topics.run_results, partitions=n, **raw)

    # Changelogs are JSON: key = job name, value = the final state object.
    states = app.Table("job-state", partitions=n, key_type=str, default=None)
    # key = run id, value = [first seen (ms), trigger partition, trigger offset]
    dedup = app.Table("run-dedup", partitions=n, key_type=str, default=None)
    limits = settings.state_limits
    retention_ms = int(settings.dedup_retention_seconds * 1000)
    last_sweep: dict[int, float] = {}
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
        async for event in stream.events():
            message = event.message
            try:
                doc = jsonvalue.load_object(message.value)
            except jsonvalue.NotAJsonObject as exc:
                await dead_letter(message, str(exc))
                continue
            matches = index.match(doc)
            if not matches:
                continue
            ref = event_identity(doc, message.topic, message.partition, message.offset)
            text = message.value.decode("utf-8")
            timestamp = int(message.timestamp * 1000) if message.timestamp else None
            for m in matches:
                trigger = records.trigger_for_event(m, text, ref, timestamp)
                await triggers_topic.send(key=m.handler.job.encode(), value=jsonvalue.dumps(trigger).encode())

    def sweep_dedup(partition: int, now: int) -> None:
        # Table writes go to the changelog partition of the event being processed, so an
        # entry is only deleted while processing a record of its own partition.
        if time.monotonic() - last_sweep.get(partition, 0.0) < DEDUP_SWEEP_INTERVAL_S:
            return
        last_sweep[partition] = time.monotonic()
        expired = [k for k, v in dedup.items() if v and v[1] == partition and now - v[0] > retention_ms]
        for key in expired:
            del dedup[key]

    @app.agent(triggers_topic, name="schedule")
    async def schedule(stream: faust.StreamT) -> None:
        async for event in stream.events():
            message = event.message
            try:
                trigger = jsonvalue.loads(message.value)
            except ValueError as exc:
                await dead_letter(message, f"undecodable trigger: {exc}")
                continue
            now = now_ms()
            sweep_dedup(message.partition, now)
            seen = dedup.get(trigger["run_id"])
            here = [message.partition, message.offset]
            if seen is not None and now - seen[0] <= retention_ms and seen[1:] != here:
                log.info("run %s already scheduled; trigger %s ignored", trigger["run_id"], trigger["trigger_ref"])
                continue
            # The same trigger record seen again means a crash came between this write and
            # the offset commit: send the command again rather than risk having lost it.
            dedup[trigger["run_id"]] = [now, *here]
            state = states.get(trigger["job"])
            command = records.command_from_trigger(trigger, jsonvalue.dumps(state) if state is not None else None, now)
            await commands_topic.send(key=message.key, value=commands_codec.encode(command))

    @app.agent(results_topic, name="settle")
    async def settle(stream: faust.StreamT) -> None:
        async for event in stream.events():
            message = event.message
            try:
                result = results_codec.decode(message.value)
            except (avro.AvroDecodeError, EOFError, ValueError) as exc:
                await dead_letter(message, f"undecodable run result: {exc}")
                continue
            settlement = records.settle(result, limits)
            if settlement.state_to_store is not None:
                states[result["job"]] = jsonvalue.loads(settlement.state_to_store)
            for internal in settlement.events:
                if internal["event_type"] == records.STATE_WARNING_EVENT_TYPE:
                    log.warning("job %s run %s: final state is %d bytes (stored: %s)", internal["job"],
                                internal["run_id"], internal["state_bytes"], internal["stored"])
                await events_topic.send(key=result["job"].encode(), value=jsonvalue.dumps(internal).encode())

    return Engine(app=app, feed=feed, index=index)
