"""Plain confluent-kafka clients for the CLI: produce, read a topic to its end, follow it.

Every client keeps librdkafka's own log lines off unless ``set_verbose(True)`` (the CLI's
``-v``): a wrong address is reported once, by ``check_broker``, not by hundreds of retries.

Producers use the murmur2 partitioner (Java's and aiokafka's default), so a record keyed
by job lands on the same partition whichever client wrote it; librdkafka's own default
(CRC32) would break the co-partitioning of the job-keyed topics.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

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
from confluent_kafka.admin import AdminClient

DEFAULT_PORT = 9092
_verbose = False


def set_verbose(on: bool) -> None:
    """Let librdkafka print its own log lines (off by default)."""
    global _verbose
    _verbose = on


def config(bootstrap: str, **extra: object) -> dict[str, Any]:
    """The settings every CLI client starts from."""
    quiet: dict[str, Any] = {} if _verbose else {"log_level": 0, "log.connection.close": False}
    return {"bootstrap.servers": bootstrap, **quiet, **extra}


def admin(bootstrap: str) -> AdminClient:
    return AdminClient(config(bootstrap))


class BrokerUnreachable(Exception):
    """No bootstrap server answered; the message names each address and its cause."""


class BadAddress(BrokerUnreachable):
    """A bootstrap address that is not HOST:PORT."""


def _host_port(address: str) -> tuple[str, int]:
    address = address.strip().split("://", 1)[-1]
    host, sep, port = address.rpartition(":")
    if not sep or "]" in port:  # no port (or a bare IPv6 address)
        host, port = address, str(DEFAULT_PORT)
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        raise BadAddress(f"bootstrap server {address!r} is not HOST:PORT") from None


def _probe(host: str, port: int, timeout: float) -> str | None:
    """Why a TCP connection to host:port fails (None: it connects)."""
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return f"unresolvable ({exc.strerror})"
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except ConnectionRefusedError:
        return "connection refused"
    except TimeoutError:
        return f"timeout (no TCP answer within {timeout:g}s)"
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def check_broker(bootstrap: str, timeout: float = 5.0) -> None:
    """Return when a bootstrap server answers a Kafka metadata request within ``timeout``;
    else raise BrokerUnreachable with one line: each address and why (unresolvable,
    connection refused, timeout)."""
    addresses = [a.strip() for a in bootstrap.split(",") if a.strip()]
    if not addresses:
        raise BrokerUnreachable("no bootstrap servers given")
    causes = []
    for address in addresses:
        cause = _probe(*_host_port(address), timeout)
        if cause is None:
            break
        causes.append(f"{address}: {cause}")
    else:
        raise BrokerUnreachable(f"cannot reach Kafka at {'; '.join(causes)}")
    try:
        admin(bootstrap).list_topics(timeout=timeout)
    except KafkaException:
        raise BrokerUnreachable(f"cannot reach Kafka at {bootstrap}: timeout (no Kafka answer within {timeout:g}s)"
                                ) from None


def producer(bootstrap: str, **extra: object) -> Producer:
    return Producer(config(bootstrap, partitioner="murmur2_random", **{"linger.ms": 5, **extra}))


def produce_all(bootstrap: str, records: list[tuple[str, bytes | None, bytes | None]], timeout: float = 30.0,
                headers: list[tuple[str, bytes]] | None = None) -> None:
    """Produce (topic, key, value) records and wait until every one is acknowledged."""
    errors: list[str] = []
    client_errors: list[str] = []
    p = producer(bootstrap, error_cb=lambda err: client_errors.append(str(err.str())))

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(f"{msg.topic()}: {err}")

    for topic, key, value in records:
        p.produce(topic, key=key, value=value, headers=headers, on_delivery=on_delivery)
        p.poll(0)
    remaining = p.flush(timeout)
    if remaining or errors:
        reasons = errors or client_errors[-1:] or [f"no acknowledgement within {timeout:g}s"]
        raise KafkaException(f"{remaining or len(errors)} record(s) not delivered: {'; '.join(reasons)}")


def _consumer(bootstrap: str, **extra: object) -> Consumer:
    return Consumer(config(bootstrap, **{
        "group.id": f"signalbox-cli-{uuid.uuid4()}",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "fetch.wait.max.ms": 50,
        **extra,
    }))


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


def fetched_ends(bootstrap: str, partitions: list[TopicPartition], timeout: float = 10.0) -> list[TopicPartition]:
    """Each partition's end (the offset the next record gets) as a fetch reports it.

    The embedded broker's ListOffsets(LATEST) answers the newest batch's base offset + 1,
    ignoring the other records of a multi-record batch (faust_driver.fetched_highwaters
    corrects the same answer for the worker): fetch from just below the listed end and
    take the high watermark of that fetch's answer, never below the listed end."""
    probe = _consumer(bootstrap)
    try:
        listed: dict[tuple[str, int], tuple[int, int]] = {}
        for tp in partitions:
            listed[(tp.topic, tp.partition)] = probe.get_watermark_offsets(tp, timeout=timeout)
        probe.assign([TopicPartition(t, p, max(high - 1, low)) for (t, p), (low, high) in listed.items()])
        answered: set[tuple[str, int]] = set()
        deadline = time.monotonic() + timeout
        while len(answered) < len(listed):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no fetch answer for {sorted(set(listed) - answered)} within {timeout}s")
            msg = probe.poll(0.1)
            if msg is None:
                continue
            if msg.error() and msg.error().code() != KafkaError._PARTITION_EOF:
                raise KafkaException(msg.error())
            answered.add((msg.topic(), msg.partition()))  # a record or the end: a fetch answered
        ends = []
        for (topic, partition), (_, listed_high) in listed.items():
            _, fetched_high = probe.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
            ends.append(TopicPartition(topic, partition, max(listed_high, fetched_high)))
        return ends
    finally:
        probe.close()


def follow(
    bootstrap: str, topics: list[str], from_beginning: bool = False, timeout: float = 30.0,
    fetched_end: bool = False, on_assigned: Callable[[list[TopicPartition]], None] | None = None,
) -> Iterator[Message | None]:
    """Yield records of ``topics`` as they arrive, and None when idle for 0.2 s; forever.
    Without ``from_beginning``, from each partition's end; ``fetched_end`` takes that end
    from a fetch, not from ListOffsets (for the embedded broker: see fetched_ends)."""
    consumer = _consumer(bootstrap, **{"enable.partition.eof": False})
    try:
        assignment = []
        for topic in topics:
            meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
            if meta is None or meta.error is not None:
                raise KafkaException(f"topic {topic} does not exist")
            start = OFFSET_BEGINNING if from_beginning else OFFSET_END
            assignment += [TopicPartition(topic, p, start) for p in meta.partitions]
        if fetched_end and not from_beginning:
            assignment = fetched_ends(bootstrap, assignment, timeout)
        consumer.assign(assignment)
        if on_assigned is not None:
            on_assigned(assignment)
        while True:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error():
                raise KafkaException(msg.error())
            yield msg
    finally:
        consumer.close()
