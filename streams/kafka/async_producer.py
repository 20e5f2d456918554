"""A confluent-kafka producer for asyncio code: ``await send_all(...)`` returns once the
broker acknowledged every record (acks=all), or raises with the broker's error.

One background thread polls the producer for delivery reports; each report resolves its
record's future on the event loop that sent it.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException, Message

from streams.kafka import client
from streams.kafka.connection import KafkaConnection


@dataclass(frozen=True)
class Record:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None = None
    partition: int | None = None  # None: the producer's partitioner (by key)


@dataclass(frozen=True)
class Ack:
    topic: str
    partition: int
    offset: int


class ProduceError(Exception):
    """The broker did not take a record; the message is the broker's error."""


class AsyncProducer:
    def __init__(self, kafka: KafkaConnection) -> None:
        # linger 1 ms, not the CLI's 5: a request waits for its own acknowledgement, and records
        # that arrive while a batch is in flight are batched anyway
        self._producer = client.producer(kafka, acks="all", **{"enable.idempotence": True, "linger.ms": 1})
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="gateway-producer", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(0.05)

    async def send_all(self, records: list[Record], timeout: float = 30.0) -> list[Ack]:
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Ack]] = []
        for record in records:
            future: asyncio.Future[Ack] = loop.create_future()
            futures.append(future)

            def report(err: KafkaError | None, msg: Message, future: asyncio.Future[Ack] = future) -> None:
                if err is not None:
                    result: Ack | BaseException = ProduceError(err.str())
                else:
                    result = Ack(msg.topic() or "", msg.partition() or 0, msg.offset() or 0)
                loop.call_soon_threadsafe(_resolve, future, result)

            while True:
                try:
                    where = {} if record.partition is None else {"partition": record.partition}
                    self._producer.produce(record.topic, key=record.key, value=record.value,
                                           headers=record.headers, on_delivery=report, **where)
                    break
                except BufferError:  # the local queue is full: let deliveries drain
                    await asyncio.sleep(0.01)
                except KafkaException as exc:
                    future.set_exception(ProduceError(str(exc.args[0].str() if exc.args else exc)))
                    break
        async with asyncio.timeout(timeout):
            return list(await asyncio.gather(*futures))

    def close(self, timeout: float = 10.0) -> None:
        self._producer.flush(timeout)
        self._closed.set()
        self._thread.join(timeout)


def _resolve(future: asyncio.Future[Ack], result: Ack | BaseException) -> None:
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
