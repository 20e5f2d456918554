"""The match step's batch consumer (``streams/kafka/batch_consumer.py``) on the real broker:
offsets are committed only once what a batch sent is acknowledged, and a new group starts
where the Faust group of earlier versions committed."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import pytest
from aiokafka import TopicPartition as AioTP
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streams.kafka.batch_consumer import BatchConsumer, committed_offsets
from streams.kafka.connection import KafkaConnection
from tests.conftest import BrokerInfo, Stack, command, unique

pytestmark = pytest.mark.broker


def connection(broker: BrokerInfo) -> KafkaConnection:
    return KafkaConnection(broker.bootstrap)


def new_topic(broker: BrokerInfo, partitions: int = 1) -> str:
    name = f"bc-{uuid.uuid4().hex[:8]}"
    admin = AdminClient(broker.client_config())  # alive until its futures resolve
    for f in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        f.result(30)
    return name


def test_offsets_are_committed_only_after_the_batch_is_acknowledged(broker: BrokerInfo, stack: Stack) -> None:
    if broker.config:
        pytest.skip("plaintext broker only (the consumer here takes no TLS/SASL settings)")
    topic = new_topic(broker)
    stack.producer().produce(topic, b"x")
    for i in range(29):
        stack.producer().produce(topic, str(i).encode())
    assert stack.producer().flush(30) == 0
    group = f"bc-{uuid.uuid4().hex[:8]}"
    kafka = connection(broker)
    tp = AioTP(topic, 0)

    async def scenario() -> tuple[dict[AioTP, int], dict[AioTP, int], int]:
        seen: list[Any] = []
        gate: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        async def handle(records: list[Any]) -> list[asyncio.Future[Any]]:
            seen.extend(records)
            return [gate]  # the "send" of every batch is acknowledged when the gate opens

        hop = BatchConsumer(kafka, topic, group, handle, max_records=7, in_flight=100,
                            session_timeout_ms=6000, heartbeat_interval_ms=1000, fetch_max_wait_ms=20,
                            loop=asyncio.get_running_loop())
        await hop.start()
        try:
            end = time.monotonic() + 60
            while len(seen) < 30 and time.monotonic() < end:
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)  # several commit intervals
            before = await committed_offsets(kafka, group, [tp])
            gate.set_result(None)
            after: dict[AioTP, int] = {}
            end = time.monotonic() + 30
            while after.get(tp) != 30 and time.monotonic() < end:
                await asyncio.sleep(0.1)
                after = await committed_offsets(kafka, group, [tp])
            return before, after, len(seen)
        finally:
            await hop.stop()

    before, after, handled = asyncio.run(scenario())
    assert handled == 30
    assert before == {}, f"committed before the acknowledgement: {before}"
    assert after == {tp: 30}


def test_a_new_match_group_starts_where_the_faust_group_committed(stack: Stack) -> None:
    """An upgrade: the worker's earlier versions consumed events in the Faust group
    ``<app_id>``; the match group is new and must not read those events again."""
    handler = {"id": unique("upgrade"), "job": "count7", "event": {"match": {"type": "upgrade"}},
               "params": {"n": "n"}}
    stack.apply_handler(handler)
    for i in range(5):
        stack.send_event({"id": f"old-{uuid.uuid4()}", "type": "upgrade", "n": f"old{i}"})
    # what a worker of an earlier version leaves: the Faust group's offsets at the end
    old = Consumer(stack.broker.client_config(**{"group.id": stack.app_id, "enable.auto.commit": False}))
    meta = old.list_topics(stack.topics.events, timeout=10).topics[stack.topics.events]
    ends = []
    for p in meta.partitions:
        _, high = old.get_watermark_offsets(TopicPartition(stack.topics.events, p), timeout=10)
        ends.append(TopicPartition(stack.topics.events, p, high))
    old.commit(offsets=ends, asynchronous=False)
    old.close()
    for i in range(5):
        stack.send_event({"id": f"new-{uuid.uuid4()}", "type": "upgrade", "n": f"new{i}"})
    commands = stack.reader(stack.topics.job_commands)
    worker = stack.start_worker("upgrade")
    worker.wait_ready()
    ours = commands.wait_for(lambda m: command(m)["handler_id"] == handler["id"], count=5)
    commands.poll_for(2.0)  # an old event read again would have come before the new ones
    params = sorted(json.loads(command(m)["params_json"])["n"] for m in commands.seen
                    if command(m)["handler_id"] == handler["id"])
    assert params == [f"new{i}" for i in range(5)], params
    assert len(ours) >= 5
    assert "starts at offset" in worker.log_text()
    worker.stop()


def test_a_fetch_that_skips_offsets_is_read_again_and_nothing_is_lost(broker: BrokerInfo, stack: Stack) -> None:
    """2,000 records on 4 partitions at once. Once per partition the consumer's position is
    moved one offset past the next record while the batches flow: what a fetch that skips a
    record does. Every record is handled, the skips are read again (not passed), and the
    committed offsets reach each partition's end."""
    if broker.config:
        pytest.skip("plaintext broker only (the consumer here takes no TLS/SASL settings)")
    topic = new_topic(broker, partitions=4)
    for i in range(2000):
        stack.producer().produce(topic, str(i).encode(), key=str(i).encode())
    assert stack.producer().flush(30) == 0
    group = f"bc-{uuid.uuid4().hex[:8]}"
    kafka = connection(broker)
    parts = [AioTP(topic, p) for p in range(4)]

    async def scenario() -> tuple[set[tuple[int, int]], list[tuple[int, int, int, str]], dict[AioTP, int], int]:
        seen: set[tuple[int, int]] = set()
        gaps: list[tuple[int, int, int, str]] = []
        skipped: dict[int, int] = {}  # partition -> the offset made to be skipped
        hop: BatchConsumer

        async def handle(records: list[Any]) -> list[asyncio.Future[Any]]:
            for r in records:
                seen.add((r.partition, r.offset))
            last: dict[int, int] = {}
            for r in records:
                last[r.partition] = max(last.get(r.partition, -1), r.offset)
            for p, offset in last.items():
                if p not in skipped and offset >= 50:  # mid-stream, once per partition
                    skipped[p] = offset + 1
                    assert hop._consumer is not None
                    hop._consumer.seek(AioTP(topic, p), offset + 2)
            return []

        hop = BatchConsumer(kafka, topic, group, handle, max_records=37, session_timeout_ms=6000,
                            heartbeat_interval_ms=1000, fetch_max_wait_ms=20,
                            on_gap=lambda tp, first, count, outcome: gaps.append((tp.partition, first, count, outcome)),
                            loop=asyncio.get_running_loop())
        await hop.start()
        try:
            end = time.monotonic() + 60
            while len(seen) < 2000 and time.monotonic() < end:
                await asyncio.sleep(0.05)
            committed: dict[AioTP, int] = {}
            while sum(committed.values()) < 2000 and time.monotonic() < end:
                await asyncio.sleep(0.1)
                committed = await committed_offsets(kafka, group, parts)
            return seen, gaps, committed, len(skipped)
        finally:
            await hop.stop()

    seen, gaps, committed, injected = asyncio.run(scenario())
    assert injected == 4
    assert len(seen) == 2000, f"records never handled: {2000 - len(seen)}"
    assert sorted((p, count, outcome) for p, _, count, outcome in gaps) == [(p, 1, "reread") for p in range(4)]
    assert sum(committed.values()) == 2000
