"""A topic consumed in batches in a consumer group of its own, below Faust's per-record
stream machinery: the stateless match hop runs on it.

Faust hands an agent one record at a time through its conductor, stream and acking
machinery (about 170 µs per record on the benchmark machine, where aiokafka's own
``getmany`` reads the same records at about 8 µs each). A stateless hop needs none of
it: no table, no partition ownership shared with a table.

At least once, in order: each batch is handed to ``handle``, which issues its sends and
returns their acknowledgements without waiting for them; the next batch is read while
they are on their way (at most ``in_flight`` batches are unacknowledged). A partition's
offset is committed only up to the last batch whose acknowledgements all arrived, so a
worker killed at any moment leaves its successor to read again what it had not finished
(the run ids then de-duplicate). A send the broker refused (after the client's own
retries) stops the whole worker, gracefully: nothing past it is committed.

A fetch that skips offsets is read again (:func:`gaps`). Records of one partition come in
consecutive offsets unless the topic is compacted or written by transactional producers
(their commit markers take an offset each). On the embedded broker, under load,
``bench/bench_capacity.py`` met a few events on the topic that the match step never
read: a fetch can return records past one the broker has not made visible yet. So at a
gap met for the first time, the records after it are dropped from the batch and the
partition is read again from the first missing offset; a gap met again at the same place
is real, and is passed. Both are counted (``on_gap``: ``reread``, ``skipped``) and logged.

A partition this group has no committed offset for starts where ``seed`` says (the
worker passes the offset Faust's group committed there, so an upgrade from a worker
whose match step was a Faust agent does not read the events topic again from its
start), else at the earliest offset.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from mode import Service

from streams.kafka.connection import KafkaConnection
from streams.kafka.lag import assigned_lag

log = logging.getLogger(__name__)

COMMIT_INTERVAL_S = 0.1  # acknowledged offsets are committed at most this often
REVOKE_WAIT_S = 10.0  # a revoked partition's batches in flight are awaited this long, then committed

# the records of one batch -> the acknowledgements of what handling them sent
Handle = Callable[[list[Any]], Awaitable[Sequence[asyncio.Future[Any]]]]
# partitions without a committed offset in this group -> where each starts (or absent)
Seed = Callable[[list[TopicPartition]], Awaitable[dict[TopicPartition, int]]]
# (partition, first offset missing, offsets missing, "reread" or "skipped") -> None
OnGap = Callable[[TopicPartition, int, int, str], None]


def gaps(expected: int | None, offsets: Sequence[int]) -> list[tuple[int, int]]:
    """The offsets missing from ``offsets`` (one partition's records of a batch, in order),
    counting from ``expected`` (the offset after the previous batch's last; None when
    unknown): ``(first missing, how many)`` for each run of them."""
    out = []
    previous = offsets[0] - 1 if expected is None else expected - 1
    if offsets[-1] - previous == len(offsets):  # the usual case: no gap, one subtraction
        return out
    for offset in offsets:
        if offset > previous + 1:
            out.append((previous + 1, offset - previous - 1))
        previous = max(previous, offset)
    return out


class BatchConsumer(Service):
    def __init__(self, kafka: KafkaConnection, topic: str, group_id: str, handle: Handle, *,
                 ready: Callable[[], Awaitable[Any]] | None = None, seed: Seed | None = None,
                 max_records: int = 500, in_flight: int = 4, session_timeout_ms: int = 10_000,
                 heartbeat_interval_ms: int = 3_000, fetch_max_wait_ms: int = 100, on_gap: OnGap | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kafka, self.topic, self.group_id, self.handle = kafka, topic, group_id, handle
        self.ready, self.seed, self.on_gap = ready, seed, on_gap
        self._next: dict[TopicPartition, int] = {}  # the offset after the last record read, per partition
        self._reread: dict[TopicPartition, int] = {}  # partition -> the gap it is being read again from
        self.max_records, self.in_flight = max_records, in_flight
        self._consumer_kwargs = {"session_timeout_ms": session_timeout_ms,
                                 "heartbeat_interval_ms": heartbeat_interval_ms,
                                 "fetch_max_wait_ms": fetch_max_wait_ms}
        self._consumer: AIOKafkaConsumer | None = None
        # batches whose sends are on their way, oldest first: (next offsets, acknowledgements)
        self._pending: deque[tuple[dict[TopicPartition, int], asyncio.Future[Any]]] = deque()
        self._acked: dict[TopicPartition, int] = {}  # acknowledged, not yet committed
        self._committed: dict[TopicPartition, int] = {}
        self._failed = False
        # set once the partitions of the current assignment have their starting offsets;
        # records below a partition's seeded start were fetched before its seek: dropped
        self._seeded = asyncio.Event()
        self._skip_below: dict[TopicPartition, int] = {}

    async def on_start(self) -> None:
        # subscribed in the task: start() would otherwise wait for the group join
        self._consumer = AIOKafkaConsumer(
            **self.kafka.aiokafka_kwargs(), group_id=self.group_id, enable_auto_commit=False,
            auto_offset_reset="earliest", max_poll_interval_ms=3_600_000, **self._consumer_kwargs)
        await self._consumer.start()

    async def on_stop(self) -> None:
        if self._consumer is None:
            return
        if not self._failed:  # a graceful stop commits what was acknowledged
            try:
                await self._settle(wait=True, timeout=REVOKE_WAIT_S)
                await self._commit()
            except Exception as exc:
                log.warning("%s: final commit failed (%s); those records will be read again", self.group_id, exc)
        await self._consumer.stop()

    @Service.task
    async def _consume(self) -> None:
        assert self._consumer is not None
        if self.ready is not None:
            await self.ready()
        self._consumer.subscribe([self.topic], listener=_Listener(self))
        last_commit = time.monotonic()
        while not self.should_stop:
            batches = await self._consumer.getmany(timeout_ms=200, max_records=self.max_records)
            if batches and not self._seeded.is_set():
                await self._seeded.wait()  # a rebalance is under way: its seeks first
            if self._skip_below:  # only after a seeded start: no per-record work otherwise
                batches = {tp: [r for r in fetched if r.offset >= self._skip_below.get(tp, 0)]
                           for tp, fetched in batches.items()}
            for tp, fetched in batches.items():
                if fetched:
                    batches[tp] = self._check_gaps(tp, fetched)
            records = [record for fetched in batches.values() for record in fetched]
            if records:
                try:
                    acks = await self.handle(records)
                except Exception:  # a bug: handle dead-letters what it cannot process
                    self._fail("handling a batch failed")
                    return
                offsets = {tp: fetched[-1].offset + 1 for tp, fetched in batches.items() if fetched}
                self._pending.append((offsets, asyncio.gather(*acks) if acks else _done()))
            try:
                await self._settle(wait=len(self._pending) >= self.in_flight)
            except Exception:
                self._fail("the broker refused a send")
                return
            if self._acked and time.monotonic() - last_commit >= COMMIT_INTERVAL_S:
                await self._commit()
                last_commit = time.monotonic()

    def _check_gaps(self, tp: TopicPartition, fetched: list[Any]) -> list[Any]:
        """The records of ``fetched`` to handle now. At a gap met for the first time, the
        partition is read again from its first missing offset: the records after it are
        left for that read. A gap met again at the same place is passed."""
        expected, last = self._next.get(tp), fetched[-1].offset
        if last - (fetched[0].offset if expected is None else expected) + 1 == len(fetched):  # no gap: O(1)
            if tp in self._reread and self._reread[tp] <= last:
                del self._reread[tp]  # the records read again came through
            self._next[tp] = last + 1
            return fetched
        for first, count in gaps(expected, [record.offset for record in fetched]):
            if self._reread.get(tp) == first:  # read again, still missing: a marker, compaction
                del self._reread[tp]
                log.warning("%s: %s/%d: %d offset(s) from %d hold no record, read twice (expected on a compacted "
                            "topic or with transactional producers)", self.group_id, tp.topic, tp.partition,
                            count, first)
                if self.on_gap is not None:
                    self.on_gap(tp, first, count, "skipped")
                continue
            log.warning("%s: %s/%d: a fetch skipped %d offset(s) from %d; reading the partition again from there",
                        self.group_id, tp.topic, tp.partition, count, first)
            if self.on_gap is not None:
                self.on_gap(tp, first, count, "reread")
            self._reread[tp] = first
            self._next[tp] = first
            assert self._consumer is not None
            self._consumer.seek(tp, first)
            return [record for record in fetched if record.offset < first]
        self._reread.pop(tp, None)  # every gap here was read twice
        self._next[tp] = last + 1
        return fetched

    async def _settle(self, wait: bool, timeout: float | None = None) -> None:
        """Move the offsets of acknowledged batches (oldest first) to be committed; with
        ``wait``, wait for the oldest (all of them, when stopping or revoked)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._pending:
            offsets, acks = self._pending[0]
            if not acks.done():
                if not wait:
                    return
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                await asyncio.wait_for(asyncio.shield(acks), remaining)
                if timeout is None:
                    wait = False  # the oldest is in: the window has room again
            acks.result()  # raises the send's error
            self._pending.popleft()
            self._acked.update(offsets)

    async def _commit(self) -> None:
        assert self._consumer is not None
        assigned = self._consumer.assignment()
        offsets = {tp: offset for tp, offset in self._acked.items() if tp in assigned}
        self._acked.clear()
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
            self._committed.update(offsets)
        except (CommitFailedError, IllegalStateError, KafkaError) as exc:
            # the partitions moved to another member: it reads those records again
            log.warning("%s: commit failed (%s); records will be read again", self.group_id, exc)

    def _fail(self, what: str) -> None:
        """Stop the worker: its successor (or itself, restarted) reads the records whose
        offsets were not committed, and nothing past a failed send is committed."""
        self._failed = True
        log.critical("%s: %s; stopping this worker so its records are processed again", self.group_id, what,
                     exc_info=True)
        os.kill(os.getpid(), signal.SIGTERM)

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Before a rebalance takes partitions away: wait for the batches in flight and
        commit them, so the next member does not read them again."""
        self._seeded.clear()
        for tp in revoked:
            self._next.pop(tp, None)  # its next reader may start elsewhere
            self._reread.pop(tp, None)
        if self._failed:
            return
        try:
            await self._settle(wait=True, timeout=REVOKE_WAIT_S)
        except Exception as exc:  # a refused send (_consume fails on its next turn) or too slow
            log.warning("%s: batches in flight at a rebalance not acknowledged: %r", self.group_id, exc)
        await self._commit()  # what was acknowledged
        for tp in revoked:
            self._committed.pop(tp, None)

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        """Partitions with no offset committed in this group start where ``seed`` says."""
        try:
            await self._seed(assigned)
        finally:
            self._seeded.set()

    async def _seed(self, assigned: set[TopicPartition]) -> None:
        self._skip_below.clear()
        for tp in assigned:
            self._next.pop(tp, None)  # it starts at its committed (or seeded) offset
            self._reread.pop(tp, None)
        if self.seed is None or not assigned or self._consumer is None:
            return
        fresh = [tp for tp in sorted(assigned) if await self._consumer.committed(tp) is None]
        if not fresh:
            return
        try:
            starts = await self.seed(fresh)
        except Exception as exc:  # the seed is a courtesy: without it, the earliest offset
            log.warning("%s: no starting offsets for %d new partitions (%s); reading them from the start",
                        self.group_id, len(fresh), exc)
            return
        for tp, offset in starts.items():
            log.info("%s: %s/%d starts at offset %d", self.group_id, tp.topic, tp.partition, offset)
            self._consumer.seek(tp, offset)
            self._skip_below[tp] = offset

    def lag(self) -> list[tuple[str, int, int]]:
        """(topic, partition, lag) of each assigned partition (``kafka/lag.py``)."""
        return assigned_lag(self._consumer, self._committed)


class _Listener(ConsumerRebalanceListener):
    def __init__(self, owner: BatchConsumer) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.owner.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.owner.on_assigned(set(assigned))


def _done() -> asyncio.Future[Any]:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future


async def committed_offsets(kafka: KafkaConnection, group_id: str,
                            partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
    """The offsets another consumer group committed on ``partitions`` (those it has)."""
    consumer = AIOKafkaConsumer(**kafka.aiokafka_kwargs(), group_id=group_id, enable_auto_commit=False)
    await consumer.start()  # no subscription: it never joins the group
    try:
        out = {}
        for tp in partitions:
            offset = await consumer.committed(tp)
            if offset is not None and offset >= 0:
                out[tp] = offset
        return out
    finally:
        await consumer.stop()
