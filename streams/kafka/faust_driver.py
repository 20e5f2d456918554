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
between the seek's offset and theirs as processed (``KafkaConsumer._drain_messages``).

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
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import aiokafka
import faust
from faust.transport import consumer as faust_consumer
from faust.transport import drivers
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from mode.utils.objects import cached_property
from mode.utils.queues import FlowControlEvent

EMBEDDED_FETCH_MAX_WAIT_MS = 10
DRAIN_YIELD_EVERY = 100  # records handed to the streams between two turns of the event loop (as Faust)

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

    async def _drain_messages(self, fetcher: Any) -> None:
        """Faust's loop that hands fetched records to the streams, with one change: a
        record of a partition sought since aiokafka handed it out is not handed over.

        Faust fetches in the consumer's thread and seeks from the event loop; records
        fetched before a seek (Faust seeks back to the committed offsets when a rebalance
        ends) can reach this loop after it. Faust handed them over after the
        seek had set the partition's read offset back to the committed one: the jump from
        there to the stale record counted as a gap, which Faust treats as processed, and
        the same records, fetched again from the committed offset, were then dropped as
        already read. Here the seek's position reads them again. (In a trace of nine
        failover-test iterations this skipped 1,324 triggers and 933 run-results records.)

        The rest is Faust's: each record's callback raced against a suspended flow, read
        offsets, gaps, ``commit_every``, a turn of the event loop every
        ``DRAIN_YIELD_EVERY`` records, and ``getmany``'s own checks as it yields each record
        (the flow is on, the consumer generation unchanged)."""
        read_offset, sought_at = self._read_offset, self.sought_at
        acks_enabled_for = self.app.topics.acks_enabled_for
        since_yield = 0
        try:
            while not (self._stopped.is_set() or fetcher._stopped.is_set()):
                self.diag.set_flag(faust_consumer.CONSUMER_FETCHING)
                fetched = self.getmany(timeout=1.0)
                await self.sleep(0)  # as Faust: getmany may return at once, again and again
                if not self.should_stop:
                    async for tp, message in fetched:
                        since_yield += 1
                        if since_yield > DRAIN_YIELD_EVERY:
                            await asyncio.sleep(0)
                            since_yield = 0
                        if sought_at.get(tp, 0) > self.fetched_at:
                            continue  # read before a seek of its partition: the seek's position reads it again
                        offset, last = message.offset, read_offset[tp]
                        if last is not None and offset < last:
                            continue  # read before a seek back: Faust drops it too
                        if last and offset - last > 1 and acks_enabled_for(message.topic):
                            await self._add_gap(tp, last + 1, offset)
                        if self._commit_every is not None and self._n_acked >= self._commit_every:
                            self._n_acked = 0
                            await self.commit()
                        await self.wait_first(self.callback(message), self.suspend_flow.wait())
                        read_offset[tp] = offset
                    self.diag.unset_flag(faust_consumer.CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise
        except Exception:
            log.exception("handing fetched records to the streams failed")
            raise
        finally:
            self.diag.unset_flag(faust_consumer.CONSUMER_FETCHING)

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
