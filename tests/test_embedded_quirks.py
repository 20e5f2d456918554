"""The embedded broker's ListOffsets quirk, and the driver's correction of it."""

from __future__ import annotations

import asyncio
import uuid

import aiokafka
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from faust.types import TP

from streams.kafka.faust_driver import fetched_highwaters, seek_to_committed_or_start
from tests.conftest import BrokerInfo

pytestmark = pytest.mark.broker


def test_fetched_highwater_counts_every_record_of_a_batch(broker: BrokerInfo):
    topic = f"quirk-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 200})
    for i in range(10):  # lingering: one batch of ten records
        producer.produce(topic, value=str(i).encode())
    assert producer.flush(30) == 0

    async def offsets() -> tuple[int, int]:
        consumer = aiokafka.AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None)
        await consumer.start()
        try:
            tp = aiokafka.TopicPartition(topic, 0)
            listed = (await consumer.end_offsets([tp]))[tp]
        finally:
            await consumer.stop()
        fetched = await fetched_highwaters(broker.bootstrap, {TP(topic, 0): listed})
        return listed, fetched[TP(topic, 0)]

    listed, fetched = asyncio.run(offsets())
    assert fetched == 10
    if broker.kind == "tansu":
        assert listed < 10, "tansu's ListOffsets quirk is gone: the correction may be dropped"


def test_a_partition_without_a_committed_offset_is_read_again_from_its_start(broker: BrokerInfo):
    """Faust seeks back to the committed offsets to re-read records it dropped during a
    rebalance; aiokafka skips partitions with no committed offset (or offset 0), so the
    driver seeks those to their start."""
    topic, group = f"seek-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, 3, 1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    for p in range(3):
        for i in range(5):
            producer.produce(topic, value=str(i).encode(), partition=p)
    assert producer.flush(30) == 0

    async def positions() -> tuple[dict[int, int], dict[int, int | None]]:
        consumer = aiokafka.AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=group,
                                             enable_auto_commit=False, auto_offset_reset="earliest")
        await consumer.start()
        try:
            tps = [aiokafka.TopicPartition(topic, p) for p in range(3)]
            consumer.assign(tps)
            await consumer.commit({tps[1]: 3, tps[2]: 0})  # partition 0: nothing committed
            read = 0
            for _ in range(30):  # every record from the committed offsets on: every position at the end
                batch = await consumer.getmany(timeout_ms=1000)
                read += sum(len(records) for records in batch.values())
                if read == 12:
                    break
            assert read == 12  # 5 (nothing committed: the start) + 2 (from 3) + 5 (from 0)
            committed = await seek_to_committed_or_start(consumer, "earliest")
            return ({tp.partition: await consumer.position(tp) for tp in tps},
                    {tp.partition: offset for tp, offset in committed.items()})
        finally:
            await consumer.stop()

    position, committed = asyncio.run(positions())
    assert committed == {0: None, 1: 3, 2: 0}
    assert position == {0: 0, 1: 3, 2: 0}
