"""Plain confluent-kafka clients for the CLI: produce, read a topic to its end, follow it.

Producers use the murmur2 partitioner (Java's and aiokafka's default), so a record keyed
by job lands on the same partition whichever client wrote it; librdkafka's own default
(CRC32) would break the co-partitioning of the job-keyed topics.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)


def producer(bootstrap: str, **extra: object) -> Producer:
    return Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random", "linger.ms": 5, **extra})


def produce_all(bootstrap: str, records: list[tuple[str, bytes | None, bytes | None]], timeout: float = 30.0,
                headers: list[tuple[str, bytes]] | None = None) -> None:
    """Produce (topic, key, value) records and wait until every one is acknowledged."""
    p = producer(bootstrap)
    errors: list[str] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(f"{msg.topic()}: {err}")

    for topic, key, value in records:
        p.produce(topic, key=key, value=value, headers=headers, on_delivery=on_delivery)
        p.poll(0)
    remaining = p.flush(timeout)
    if remaining or errors:
        raise KafkaException(f"{remaining} record(s) not delivered; {'; '.join(errors)}")


def _consumer(bootstrap: str, **extra: object) -> Consumer:
    return Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"signalbox-cli-{uuid.uuid4()}",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "fetch.wait.max.ms": 50,
        **extra,
    })


def _assign(consumer: Consumer, topic: str, offset: int, timeout: float) -> int:
    meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    if meta is None or meta.error is not None or not meta.partitions:
        raise KafkaException(f"topic {topic} does not exist")
    consumer.assign([TopicPartition(topic, p, offset) for p in meta.partitions])
    return len(meta.partitions)


def read_to_end(bootstrap: str, topic: str, timeout: float = 30.0) -> list[Message]:
    """Every record of ``topic`` up to the end seen by fetches (not ListOffsets)."""
    consumer = _consumer(bootstrap)
    try:
        pending = _assign(consumer, topic, OFFSET_BEGINNING, timeout)
        out: list[Message] = []
        at_end: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(at_end) < pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic}: no end reached within {timeout}s")
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    at_end.add(msg.partition())
                    continue
                raise KafkaException(msg.error())
            at_end.discard(msg.partition())
            out.append(msg)
        return out
    finally:
        consumer.close()


def latest_by_key(messages: list[Message]) -> dict[bytes, bytes | None]:
    """A compacted topic's view: the last value per key (None = tombstone)."""
    latest: dict[bytes, bytes | None] = {}
    for msg in messages:
        if msg.key() is not None:
            latest[msg.key()] = msg.value()
    return latest


def follow(
    bootstrap: str, topics: list[str], from_beginning: bool = False, timeout: float = 30.0
) -> Iterator[Message | None]:
    """Yield records of ``topics`` as they arrive, and None when idle for 0.2 s; forever."""
    consumer = _consumer(bootstrap, **{"enable.partition.eof": False})
    try:
        assignment = []
        for topic in topics:
            meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
            if meta is None or meta.error is not None:
                raise KafkaException(f"topic {topic} does not exist")
            start = OFFSET_BEGINNING if from_beginning else OFFSET_END
            assignment += [TopicPartition(topic, p, start) for p in meta.partitions]
        consumer.assign(assignment)
        while True:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error():
                raise KafkaException(msg.error())
            yield msg
    finally:
        consumer.close()
