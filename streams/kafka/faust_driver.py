"""The worker's Faust transports: ``signalbox://`` for Apache Kafka, ``tansu://`` for the
embedded broker.

Both fix four Faust behaviours that lose records. First, Faust drops fetched records it
cannot hand to a stream at that moment (a rebalance began, the partition is not active
yet) and relies on "seek back to the committed offsets" to read them again. aiokafka's
``seek_to_committed`` does not seek a partition that has no committed offset (or
offset 0), so the records Faust dropped there are never read again: a worker killed before
its first commit (a few seconds after it started) left its partitions uncommitted, and
its successor skipped everything it had fetched during the rebalance. Here a partition
with no committed offset is sought to the start the reset policy names (``earliest``):
its records are read again, which the engine's de-duplication makes harmless.

Second, Faust's stream *acknowledges* a record it skips instead of handing it to the
agent: one taken from the agent's buffer while a
rebalance has suspended the flow, or fetched in an earlier generation. Between the
revocation (which forgets the committed offset) and the final seek, that acknowledgement
alone lets Faust commit past the record, and the seek then starts after it: it is never
processed, by this worker or another. Seen in the failover tests as triggers and run
results that vanished (a run never commanded; a job whose running run never settled, its
queue stuck). On the topics named with :func:`acknowledge_only_delivered`, the consumer
here refuses the acknowledgement of a record the stream never handed to its agent (Faust
marks a record ``tracked`` only on that path): a skipped record stays uncommitted and the
rebalance's seek reads it again.

Third, Faust hands over records aiokafka handed out before a seek of their partition (from
the position before it) when they reach its loop after the seek, and counts the records
between the seek's offset and theirs as processed (:func:`fresh_records`).

Fourth, Faust's flow control empties the streams' buffers each time it resumes, and Faust's
recovery resumes it once more after the stream partitions were resumed and sought: the
records fetched and handed to the streams in between (fetched after the seek, their read
offsets recorded) were thrown away, never processed, never read again. Seen in a trace of
the failover test as run results handed over and never reaching the schedule step (a job
whose queued runs then waited for ever), and as a read offset that jumped from the
committed 161 to 427 on a worker that had taken a triggers partition over. :class:`App`'s flow control resumes without
emptying them; the explicit emptying at a revocation stays (what it drops is read again
after the rebalance's seek).

Two of tansu's quirks, worked around here and only here (against Apache Kafka the
stock aiokafka consumer is used otherwise unchanged):

- it holds every fetch for the client's full max wait even when data is there, and
  Faust's aiokafka driver hard-codes ``fetch_max_wait_ms=1500``: a produce -> agent ->
  output round trip then takes ~750 ms. This driver's consumers wait 10 ms.
- its ListOffsets(LATEST) answers the newest batch's base offset + 1, ignoring the other
  records of a multi-record batch, and Faust's table recovery trusts it: a restarted
  worker would miss the last changelog records. This driver corrects the answer with the
  high watermark of a real fetch, so producers can keep batching.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

import aiokafka
import faust
from faust.transport import drivers
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from mode.utils.objects import cached_property
from mode.utils.queues import FlowControlEvent

EMBEDDED_FETCH_MAX_WAIT_MS = 10

log = logging.getLogger(__name__)

_guarded: set[str] = set()  # topics whose skipped records must not count as acknowledged


def acknowledge_only_delivered(topics: Iterable[str]) -> None:
    """An acknowledgement of a record of ``topics`` counts only if the record was handed
    to the agent (module docstring)."""
    _guarded.update(topics)


def refuses_ack(message: Any) -> bool:
    """Whether an acknowledgement of ``message`` must not count: a record of a guarded topic
    that Faust's stream skipped (it sets ``tracked`` only on records it hands over)."""
    return message.topic in _guarded and not message.tracked


async def seek_to_committed_or_start(consumer: aiokafka.AIOKafkaConsumer, reset: str) -> Mapping[Any, int | None]:
    """Seek every assigned partition to its committed offset; one without (or with offset
    0, which aiokafka's ``seek_to_committed`` skips) to the start ``reset`` names
    (``earliest``; other policies leave its position). Returns the committed offsets."""
    committed = await consumer.seek_to_committed()
    for tp, offset in committed.items():
        if offset == 0:
            consumer.seek(tp, 0)
    fresh = [tp for tp, offset in committed.items() if offset is None or offset < 0]
    if fresh and reset == "earliest":
        await consumer.seek_to_beginning(*fresh)
    return committed


class _SeekingConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    consumer: KafkaConsumer

    async def seek_to_committed(self) -> Mapping[TP, int]:
        return await self.call_thread(seek_to_committed_or_start, self._ensure_consumer(),
                                      self.app.conf.consumer_auto_offset_reset)

    async def on_start(self) -> None:
        await super().on_start()
        stamp_seeks(self._ensure_consumer()._fetcher, self.consumer.mark_sought)

    async def _fetch_records(self, consumer: aiokafka.AIOKafkaConsumer, active_partitions: Any,
                             timeout: float | None = None, max_records: int | None = None) -> Any:
        records = await super()._fetch_records(consumer, active_partitions, timeout=timeout, max_records=max_records)
        self.consumer.fetched_at = self.consumer.seeks  # no await since aiokafka handed them out
        return records


def stamp_seeks(fetcher: Any, mark_sought: Callable[[Iterable[Any]], None]) -> None:
    """Call ``mark_sought(partitions)`` whenever aiokafka's ``fetcher`` moves partitions'
    positions (a seek, a reset to the beginning or end): every seek of aiokafka's consumer
    goes through these two methods, in the consumer's thread."""
    seek_to, request_offset_reset = fetcher.seek_to, fetcher.request_offset_reset

    def stamped_seek_to(tp: Any, offset: int) -> Any:
        result = seek_to(tp, offset)
        mark_sought((tp,))
        return result

    def stamped_reset(tps: Any, strategy: Any) -> Any:
        tps = list(tps)
        result = request_offset_reset(tps, strategy)
        mark_sought(tps)
        return result

    fetcher.seek_to, fetcher.request_offset_reset = stamped_seek_to, stamped_reset


class _ConsumerThread(_SeekingConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # Read by AIOKafkaConsumer.start() when it builds its fetcher.
        consumer._fetch_max_wait_ms = EMBEDDED_FETCH_MAX_WAIT_MS
        return consumer

    async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
        listed = await super()._highwaters(partitions)
        servers = faust_aiokafka.server_list(self.transport.url, self.transport.default_port)
        conf = self.app.conf  # the worker's TLS and SASL settings, as Faust's own consumers get them
        auth = faust_aiokafka.credentials_to_aiokafka_auth(conf.broker_credentials, conf.ssl_context)
        return await fetched_highwaters(servers, dict(listed), **auth)


async def fetched_highwaters(servers: Any, listed: dict[TP, int], timeout: float = 10.0,
                             **auth: Any) -> dict[TP, int]:
    """The high watermark of each partition as a fetch reports it (never below ``listed``);
    ``auth``: aiokafka's security_protocol, ssl_context, sasl_* arguments."""
    if not listed:
        return listed
    probe = aiokafka.AIOKafkaConsumer(bootstrap_servers=servers, group_id=None, enable_auto_commit=False,
                                      fetch_max_wait_ms=EMBEDDED_FETCH_MAX_WAIT_MS, **auth)
    await probe.start()
    try:
        tps = {tp: aiokafka.TopicPartition(tp.topic, tp.partition) for tp in listed}
        probe.assign(list(tps.values()))
        for tp, offset in listed.items():
            probe.seek(tps[tp], max(offset - 1, 0))
        deadline = asyncio.get_running_loop().time() + timeout
        while any(probe.highwater(t) is None for t in tps.values()):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"no fetch answer for {sorted(map(str, listed))} in {timeout}s")
            await probe.getmany(timeout_ms=100, max_records=1)
        return {tp: max(offset, probe.highwater(tps[tp]) or 0) for tp, offset in listed.items()}
    finally:
        await probe.stop()


async def fresh_records(consumer: KafkaConsumer,
                        records: AsyncIterator[tuple[TP, Any]]) -> AsyncIterator[tuple[TP, Any]]:
    """``records`` (Faust's ``getmany``) without those whose partition was sought after
    aiokafka handed them out.

    Faust fetches in the consumer's thread and seeks from the event loop; records fetched
    before a seek (Faust seeks back to the committed offsets when a rebalance ends) can
    reach its drain loop after it. Faust handed them over after the seek had set the
    partition's read offset back to the committed one: the jump from there to the stale
    record counted as a gap, which Faust treats as processed, and the same records,
    fetched again from the committed offset, were then dropped as already read. Skipped
    here, they are read again from the seek's position. (In a trace of nine failover-test
    iterations, 1,324 triggers and 933 run-results records were skipped.) The drain loop
    pulls each record just before it hands it over, so a seek during a batch stops the
    rest of that partition's records in it."""
    sought_at = consumer.sought_at
    async for tp, message in records:
        if sought_at.get(tp, 0) <= consumer.fetched_at:
            yield tp, message


class KafkaConsumer(faust_aiokafka.Consumer):
    # the generation whose refused acknowledgements were logged, and their partitions (the
    # default's generation matches none: the first refusal makes the instance its own set)
    _skips_logged: tuple[object, set[Any]] = (object(), set())

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Written in the consumer's thread (stamp_seeks, _fetch_records), read here.
        self.seeks = 0  # positions moved so far
        self.sought_at: dict[Any, int] = {}  # partition -> ``seeks`` when its position last moved
        self.fetched_at = 0  # ``seeks`` when aiokafka handed out the records being handed over

    def mark_sought(self, partitions: Iterable[Any]) -> None:
        self.seeks += 1
        for tp in partitions:
            self.sought_at[tp] = self.seeks

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _SeekingConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Any]]:
        # Faust's drain loop reads every fetched record from here (module docstring, third)
        return fresh_records(self, super().getmany(timeout))

    def ack(self, message: Any) -> bool:
        if refuses_ack(message):
            # skipped by Faust's stream during a rebalance: never processed, so never
            # committed; not waited for either (the rebalance's seek reads it again)
            self._unacked_messages.discard(message)
            generation, logged = self._skips_logged
            if generation != message.generation_id:
                self._skips_logged = generation, logged = message.generation_id, set()
            if message.tp not in logged:  # one line per partition and generation, not per record
                logged.add(message.tp)
                log.info("%s/%s: records from offset %s were skipped by the stream during a rebalance; "
                         "they are read again", message.topic, message.partition, message.offset)
            return False
        return super().ack(message)


class KafkaTransport(faust_aiokafka.Transport):
    Consumer = KafkaConsumer


class Consumer(KafkaConsumer):
    """The Kafka consumer, plus tansu's short fetch wait and corrected high watermarks."""

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(KafkaTransport):
    Consumer = Consumer


class KeepingFlowControl(FlowControlEvent):
    """Faust's flow control, except that resuming keeps what the streams' buffers hold
    (module docstring, fourth); :meth:`clear` still empties them."""

    def resume(self) -> None:
        self._suspend.clear()
        self._resume.set()


class App(faust.App):
    """``faust.App`` with :class:`KeepingFlowControl`."""

    @cached_property
    def flow_control(self) -> FlowControlEvent:
        return KeepingFlowControl(loop=self.loop)


def register() -> None:
    """Make ``signalbox://`` (Apache Kafka) and ``tansu://`` (embedded) known to Faust."""
    drivers.TRANSPORTS.aliases.setdefault("signalbox", f"{__name__}:KafkaTransport")
    drivers.TRANSPORTS.aliases.setdefault("tansu", f"{__name__}:Transport")
