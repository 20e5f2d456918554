"""Every worker's copy of the handlers topic, kept in a :class:`HandlerIndex`.

A plain consumer with no group: it is assigned every partition of the compacted handlers
topic, reads from the beginning, and keeps following it, so a handler applied anywhere
takes effect on every worker within a fetch or two, without a restart. A tombstone
removes the handler. An invalid handler is not applied: the reason is logged and written
to the rejections topic (every worker writes the same record, keyed by handler id).

``ready`` is set once the feed has read up to the high watermark it saw on its first
fetches, so a worker does not match events against a half-loaded handler set.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from mode import Service

from streams.contracts.topics import Topics
from streams.engine.metrics import WorkerMetrics
from streams.kafka.connection import kafka_of
from streams.matching.handler_set import HandlerSet
from streams.model.handlers import InvalidHandler, parse_handler
from streams.settings import Settings

log = logging.getLogger(__name__)


class HandlerFeed(Service):
    def __init__(self, settings: Settings, topics: Topics, handlers: HandlerSet,
                 metrics: WorkerMetrics | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.topics = topics
        self.handlers = handlers
        self.metrics = metrics if metrics is not None else WorkerMetrics()
        self.ready = asyncio.Event()
        self.changes = 0  # handlers applied or deleted so far (engine/heap.py refreezes after them)
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None

    async def on_start(self) -> None:
        s = self.settings
        self._consumer = AIOKafkaConsumer(
            **kafka_of(s).aiokafka_kwargs(),
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=s.fetch_max_wait_ms,
        )
        await self._consumer.start()
        partitions = self._consumer.partitions_for_topic(self.topics.handlers)
        for _ in range(50):
            if partitions:
                break
            await asyncio.sleep(0.1)
            await self._consumer._client.force_metadata_update()
            partitions = self._consumer.partitions_for_topic(self.topics.handlers)
        if not partitions:
            raise RuntimeError(f"handlers topic {self.topics.handlers} not found")
        tps = [TopicPartition(self.topics.handlers, p) for p in sorted(partitions)]
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)
        self._producer = AIOKafkaProducer(**kafka_of(s).aiokafka_kwargs(), linger_ms=5)
        await self._producer.start()

    async def on_stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()

    async def wait_ready(self) -> None:
        await self.ready.wait()

    @Service.task
    async def _follow(self) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        while not self.should_stop:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    await self._apply(record.key, record.value, record.offset, record.timestamp)
            if not self.ready.is_set() and await self._caught_up(consumer):
                self.ready.set()
                log.info("handler feed ready: %d handler(s)", len(self.handlers))

    @staticmethod
    async def _caught_up(consumer: AIOKafkaConsumer) -> bool:
        # The high watermark comes from fetch responses (right on tansu, unlike ListOffsets).
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None or await consumer.position(tp) < highwater:
                return False
        return True

    async def _apply(self, key: bytes | None, value: bytes | None, offset: int, timestamp_ms: int) -> None:
        handler_id = key.decode("utf-8", "replace") if key is not None else None
        self.changes += 1
        if value is None:
            if handler_id is not None and self.handlers.remove(handler_id) is not None:
                log.info("handler %s deleted", handler_id)
            return
        try:
            handler = parse_handler(value, key=handler_id)
            self.handlers.put(handler, offset, timestamp_ms)
        except InvalidHandler as exc:
            # Not applied: an earlier valid version of the same id, if any, stays active.
            self.metrics.rejections.inc()
            await self._reject(handler_id, value, offset, str(exc))
            return
        self.metrics.job_seen(handler.job)
        log.info("handler %s applied (job %s)", handler.id, handler.job)

    async def _reject(self, handler_id: str | None, value: bytes, offset: int, reason: str) -> None:
        log.warning("handler %s rejected (offset %d): %s", handler_id, offset, reason)
        assert self._producer is not None
        record = {
            "handler_id": handler_id,
            "reason": reason,
            "offset": offset,
            "value": value.decode("utf-8", "replace"),
        }
        await self._producer.send(
            self.topics.handler_rejections,
            key=(handler_id or "").encode(),
            value=json.dumps(record).encode(),
            headers=[("reason", reason.encode()), ("handler_offset", str(offset).encode())],
        )
