"""The worker's Faust consumer does not hand over records fetched across a seek.

Faust's ``Consumer._drain_messages`` hands fetched records to the streams; the worker's
consumer (``streams/kafka/faust_driver.py``) feeds it through :func:`fresh_records`.
These tests run Faust's loop over the same fetched batches with a consumer that has only
what the loop uses (no broker), with ("ours") and without ("faust") that filter: the
records reach the callback in order and once, a record fetched again below the read
offset is dropped, a gap is registered, a rebalance that suspends the flow while a
callback waits ends the batch the same way in both. Ours drops the records of a
partition sought after they were fetched, also while a batch is handed over; Faust hands
them over and loses the records between the seek's offset and theirs.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict, deque
from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport import consumer as faust_consumer
from faust.types import TP
from mode import Service

from streams.kafka.connection import KafkaConnection
from streams.kafka.faust_driver import KafkaConsumer, fresh_records, stamp_seeks

TOPIC = "t"


def record(partition: int, offset: int) -> tuple[TP, Any]:
    return TP(TOPIC, partition), SimpleNamespace(topic=TOPIC, partition=partition, offset=offset, key=None, value=None)


class FetchedBatches(Service):
    """What the drain loop uses of Faust's consumer: ``getmany`` answers the given batches
    (through ``fresh_records`` for ours), then stops the fetcher; ``callback`` records
    what it is handed (and may block)."""

    consumer_stopped_errors: tuple[type[BaseException], ...] = ()

    def __init__(self, batches: list[list[tuple[TP, Any]]], fetcher: Any, ours: bool) -> None:
        super().__init__()
        self.ours = ours
        self.batches = deque(batches)
        self.fetcher = fetcher
        self.handed: list[tuple[int, int]] = []
        self.gaps: list[tuple[TP, int, int]] = []
        self.block_at: tuple[int, int] | None = None  # the callback waits on this record
        self.blocked = asyncio.Event()
        self._read_offset: defaultdict[TP, int | None] = defaultdict(lambda: None)
        self._commit_every = None
        self._n_acked = 0
        self.diag = SimpleNamespace(set_flag=lambda flag: None, unset_flag=lambda flag: None)
        self.app = SimpleNamespace(topics=SimpleNamespace(acks_enabled_for=lambda topic: True),
                                   consumer_generation_id=1)
        self.flow_active = True
        self.transport = SimpleNamespace(app=SimpleNamespace(should_stop=False))
        self.suspend_flow = asyncio.Event()
        self.seeks, self.sought_at, self.fetched_at = 0, {}, 0  # as KafkaConsumer's
        self.before_fetch: Any = None  # runs before aiokafka hands the next batch out
        self.after_fetch: Any = None  # runs after it did, before the loop sees the batch
        self.on_record: Any = None  # awaited with each record as it is handed over

    def getmany(self, timeout: float) -> Any:
        fetched = self.fetched(timeout)
        return fresh_records(self, fetched) if self.ours else fetched  # type: ignore[arg-type]

    async def fetched(self, timeout: float) -> Any:
        while not self.flow_active:  # as Faust's getmany: it waits for the flow to resume
            await asyncio.sleep(0.01)
        if not self.batches:
            self.fetcher._stopped.set()
            return
        if self.before_fetch is not None:
            self.before_fetch()
        self.fetched_at = self.seeks  # as _SeekingConsumerThread._fetch_records
        if self.after_fetch is not None:
            self.after_fetch()
        for item in self.batches.popleft():
            if not self.flow_active:  # as Faust's getmany, before each record
                return
            yield item

    async def callback(self, message: Any) -> None:
        if self.on_record is not None:  # a test's hook (Faust's loop takes ``callback`` once)
            await self.on_record(message)
        if (message.partition, message.offset) == self.block_at:
            self.blocked.set()
            await asyncio.Event().wait()  # Faust's flow control, closed by a rebalance
        self.handed.append((message.partition, message.offset))

    async def _add_gap(self, tp: TP, start: int, end: int) -> None:
        self.gaps.append((tp, start, end))

    async def commit(self) -> bool:
        return True


def drain(loop_of: Any, batches: list[list[tuple[TP, Any]]],
          during: Any = None) -> tuple[FetchedBatches, int]:
    """Run Faust's drain loop over ``batches`` as ``loop_of``'s consumer feeds it; returns
    the consumer and the tasks the loop started. ``during(consumer)`` runs beside it."""

    async def main() -> tuple[FetchedBatches, int]:
        fetcher = SimpleNamespace(_stopped=asyncio.Event())
        consumer = FetchedBatches(batches, fetcher, ours=loop_of is KafkaConsumer)
        loop = asyncio.get_running_loop()
        started = 0
        factory = loop.get_task_factory()

        def counting(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
            nonlocal started
            started += 1
            return asyncio.Task(coro, loop=loop, **kwargs) if factory is None else factory(loop, coro, **kwargs)

        loop.set_task_factory(counting)
        try:
            work = [loop_of._drain_messages(consumer, fetcher)]
            if during is not None:
                work.append(during(consumer))
            await asyncio.wait_for(asyncio.gather(*work), 10)
        finally:
            loop.set_task_factory(factory)
        return consumer, started

    return asyncio.run(main())


BATCHES = [
    [record(0, 0), record(1, 0), record(0, 1), record(1, 1)],
    [record(0, 0), record(0, 2), record(1, 5)],  # 0/0 fetched again (a seek back); 1/2-4 missing
]


@pytest.mark.parametrize("loop_of", [KafkaConsumer, faust_consumer.Consumer], ids=["ours", "faust"])
def test_records_are_handed_over_in_order_once_and_gaps_noted(loop_of: Any) -> None:
    consumer, _ = drain(loop_of, BATCHES)
    assert consumer.handed == [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2), (1, 5)]
    assert consumer.gaps == [(TP(TOPIC, 1), 2, 5)]
    assert dict(consumer._read_offset) == {TP(TOPIC, 0): 2, TP(TOPIC, 1): 5}


@pytest.mark.parametrize("loop_of", [KafkaConsumer, faust_consumer.Consumer], ids=["ours", "faust"])
def test_a_rebalance_while_a_callback_waits_ends_the_batch_as_in_faust(loop_of: Any) -> None:
    """The flow is suspended while record 0/1 waits on Faust's flow control: it and the
    rest of the batch are not handed over (read again after the rebalance's seek); once the
    flow is back, the next fetched batch is. Both loops leave the same read offsets."""
    batches = [[record(0, 0), record(0, 1), record(0, 2)], [record(1, 0)]]

    async def rebalance(consumer: FetchedBatches) -> None:
        consumer.block_at = (0, 1)
        await consumer.blocked.wait()
        consumer.flow_active = False
        consumer.suspend_flow.set()
        await asyncio.sleep(0.05)
        consumer.flow_active = True
        consumer.suspend_flow.clear()

    consumer, _ = drain(loop_of, batches, during=rebalance)
    assert consumer.handed == [(0, 0), (1, 0)]
    assert dict(consumer._read_offset) == {TP(TOPIC, 0): 1, TP(TOPIC, 1): 0}


def test_a_callback_that_waits_is_finished_before_the_next_record() -> None:
    """A record whose callback suspends (its stream's buffer is full) is handed over once
    the wait ends, before the next record."""
    batches = [[record(0, 0), record(0, 1), record(0, 2)]]

    async def slow_buffer(consumer: FetchedBatches) -> None:
        release = asyncio.Event()

        async def full_buffer(message: Any) -> None:
            if message.offset == 1:
                await release.wait()

        consumer.on_record = full_buffer
        await asyncio.sleep(0.05)
        assert consumer.handed == [(0, 0)]
        release.set()

    consumer, tasks = drain(KafkaConsumer, batches, during=slow_buffer)
    assert consumer.handed == [(0, 0), (0, 1), (0, 2)]
    assert tasks >= 3  # the wait_first race of the record that waited


def seek(consumer: FetchedBatches, partition: int, offset: int) -> None:
    """What a seek does that the loop sees: the partition marked as sought (as
    ``stamp_seeks`` does in the consumer's thread) and its read offset set back."""
    KafkaConsumer.mark_sought(consumer, [TP(TOPIC, partition)])  # type: ignore[arg-type]
    consumer._read_offset[TP(TOPIC, partition)] = offset


def once(consumer: FetchedBatches, hook: str, partition: int, offset: int) -> Any:
    async def arm(c: FetchedBatches) -> None:
        setattr(c, hook, lambda: (seek(c, partition, offset), setattr(c, hook, None)))

    return arm


def test_records_fetched_before_a_seek_of_their_partition_are_not_handed_over() -> None:
    """aiokafka handed out 0/8-9 (and 1/0); then partition 0 is sought back to offset 3,
    before the loop hands them over. Faust hands them over: the jump from 3 to 8 counts as
    a gap (4-7 treated as processed) and 4-7, fetched again, are dropped as already read.
    Ours skips them; the refetch from the seek's offset follows. Partition 1's record in
    the same fetch is handed over."""
    batches = [[record(0, 8), record(1, 0), record(0, 9)], [record(0, o) for o in range(4, 10)]]
    ours, _ = drain(KafkaConsumer, batches, during=once(None, "after_fetch", 0, 3))  # type: ignore[arg-type]
    assert ours.handed == [(1, 0)] + [(0, o) for o in range(4, 10)]
    assert ours.gaps == []
    faust, _ = drain(faust_consumer.Consumer, batches, during=once(None, "after_fetch", 0, 3))  # type: ignore[arg-type]
    assert faust.handed[:3] == [(0, 8), (1, 0), (0, 9)]
    assert not {(0, o) for o in range(4, 8)} & set(faust.handed)  # never handed over...
    assert faust.gaps == [(TP(TOPIC, 0), 4, 8)]  # ...and counted as processed


def test_records_fetched_after_a_seek_are_handed_over() -> None:
    """The seek came first, then aiokafka handed out records from the new position: they
    are the ones to process (skipping them would lose them: aiokafka's position has moved
    past them)."""
    batches = [[record(0, 3), record(0, 4), record(1, 0)]]
    consumer, _ = drain(KafkaConsumer, batches, during=once(None, "before_fetch", 0, 3))  # type: ignore[arg-type]
    assert consumer.handed == [(0, 3), (0, 4), (1, 0)]


def test_a_seek_while_a_batch_is_handed_over_stops_its_partition_only() -> None:
    """Partition 0 is sought while record 1/0 is being handed over: 0/5 of the same batch
    is skipped, 1/1 is handed over, and the next fetch (from the seek's offset) is."""
    batches = [[record(1, 0), record(0, 5), record(1, 1)], [record(0, 2), record(0, 3)]]

    async def seek_during(consumer: FetchedBatches) -> None:
        async def seek_at_1_0(message: Any) -> None:
            if (message.partition, message.offset) == (1, 0):
                seek(consumer, 0, 1)

        consumer.on_record = seek_at_1_0

    consumer, _ = drain(KafkaConsumer, batches, during=seek_during)
    assert consumer.handed == [(1, 0), (1, 1), (0, 2), (0, 3)]
    assert consumer.gaps == []


@pytest.mark.broker
def test_every_seek_of_aiokafkas_consumer_is_stamped(broker: Any) -> None:
    """``stamp_seeks`` hooks aiokafka's fetcher; the loop's check is only as good as the
    claim that every position change goes through the two hooked methods. A real aiokafka
    consumer on the broker: seek, seek_to_beginning, seek_to_end and seek_to_committed each
    mark the partitions they moved."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"stamp-{uuid.uuid4().hex[:8]}"
    admin = AdminClient(broker.client_config())
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(30)
    producer = Producer(broker.client_config())
    for partition in (0, 1):
        for _ in range(3):
            producer.produce(topic, b"v", partition=partition)
    assert producer.flush(30) == 0
    marks: list[set[int]] = []

    async def main() -> None:
        consumer = AIOKafkaConsumer(group_id=f"g-{topic}", enable_auto_commit=False,
                                    **KafkaConnection(broker.bootstrap, broker.config).aiokafka_kwargs())
        await consumer.start()
        try:
            tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
            consumer.assign(tps)
            await consumer.commit({tps[0]: 2})
            stamp_seeks(consumer._fetcher, lambda moved: marks.append({tp.partition for tp in moved}))
            consumer.seek(tps[0], 0)
            await consumer.seek_to_beginning(tps[1])
            await consumer.seek_to_end(*tps)
            assert await consumer.seek_to_committed(*tps) == {tps[0]: 2, tps[1]: None}
            assert await consumer.position(tps[0]) == 2  # the hooks leave aiokafka's seeks working
        finally:
            await consumer.stop()

    asyncio.run(main())
    assert marks == [{0}, {1}, {0, 1}, {0}]  # seek_to_committed moves only partitions with a commit
