"""Faust table writes held back until the commands they describe are acknowledged, and
kept out of the local RocksDB until their changelog records are.

The schedule step decides a whole batch first, sends the batch's commands, waits for the
broker's acknowledgements, and only then writes its tables. A table write would land in
the local RocksDB at once and survive a kill -9 there, whether or not its changelog
record reached Kafka: a worker restarted on the same data directory then reads a mix of
its own lost writes and the older records its recovery replays (a queue entry deleted
locally while the job record replayed still points at it, a state a replayed job record
does not know of). So :meth:`Overlay.apply` sends the changelog records and writes each
one into RocksDB only when the broker has acknowledged it, in acknowledgement order: the
local database is always a prefix of its changelog partition, as on a fresh disk. Until
then the write stays readable here (:meth:`Overlay.get`).

The schedule step decides its next batch while the previous one waits for its
acknowledgements: :meth:`Overlay.seal` closes a batch's writes into a :class:`Layer`, which
:meth:`Overlay.apply` sends later, oldest layer first. Reads see the writes being made,
then the sealed layers (newest first), then those on their way to the changelog, then
RocksDB.

Faust writes a table entry to the changelog partition of the record being processed (the
"current event"); :func:`processing` sets it for code outside a stream iteration.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

from faust.streams import _current_event, current_event
from faust.types import TP

# (topic, key, value, partition, headers) -> the acknowledgement to come
Send = Callable[[str, bytes | None, bytes | None, int | None, Any], Awaitable[asyncio.Future[Any]]]

_DELETED = object()
KEY_CACHE_MAX = 50_000  # encoded table keys kept (job record keys recur in every batch)


@contextmanager
def processing(event: Any) -> Iterator[None]:
    """Make ``event`` Faust's current event (table reads and writes use its partition)."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


class Layer:
    """One batch's writes, sealed: sent to the changelog by :meth:`Overlay.apply` once the
    batch's commands are acknowledged. Its values are held encoded (the bytes of their
    changelog records; None for a deletion), so nothing decided later can change them: a
    reader gets a copy decoded from them. ``set`` adds a write made after the seal (the
    batch's de-duplication entry), under the partition of Faust's current event."""

    __slots__ = ("encode", "writes")

    def __init__(self, writes: dict[str, tuple[Any, bytes | None]], encode: Callable[[Any], bytes]) -> None:
        self.writes = writes
        self.encode = encode

    def set(self, key: str, value: Any) -> None:
        self.writes[key] = (current_event(), self.encode(value))

    def __bool__(self) -> bool:
        return bool(self.writes)


class Overlay:
    def __init__(self, table: Any, on_failure: Callable[[BaseException], None] | None = None) -> None:
        self.table = table
        self.on_failure = on_failure  # a changelog record the broker refused (the worker must stop)
        self._writes: dict[str, tuple[Any, Any]] = {}  # key -> (event, value or _DELETED)
        self._undo: list[tuple[str, tuple[Any, Any] | None]] = []
        self._held: deque[Layer] = deque()  # sealed, not sent yet: oldest first
        # applied, changelog acknowledgement pending: key -> (write number, record value; None: deleted)
        self._sent: dict[str, tuple[int, bytes | None]] = {}
        self._unacked: set[asyncio.Future[Any]] = set()
        self._written = 0  # writes applied so far (numbers the entries of _sent)
        self._acked: dict[TP, int] = {}  # changelog offsets whose writes are in RocksDB
        self._raw_keys: dict[str, bytes] = {}  # key -> the store's encoding of it

    def _raw_key(self, key: str) -> bytes:
        """The store's own encoding of ``key`` (Faust's key serializer), remembered."""
        raw = self._raw_keys.get(key)
        if raw is None:
            if len(self._raw_keys) >= KEY_CACHE_MAX:
                self._raw_keys.clear()
            raw = self._raw_keys[key] = self.table.data._encode_key(key)
        return raw

    def get(self, key: str) -> Any:
        """The value of ``key``: this batch's own write (the object it set), else a copy
        decoded from the newest sealed layer, the record on its way, or RocksDB. A value
        an earlier batch wrote is never handed out itself: the caller mutates what it
        gets (the run book updates job records in place), and the earlier batch's record
        must keep what that batch decided."""
        held = self._writes.get(key)
        if held is not None:
            return None if held[1] is _DELETED else held[1]
        store = self.table.data
        for layer in reversed(self._held):  # usually none or one
            entry = layer.writes.get(key)
            if entry is not None:
                return None if entry[1] is None else store._decode_value(entry[1])
        sent = self._sent.get(key)
        if sent is not None:
            return None if sent[1] is None else store._decode_value(sent[1])
        # What ``table.get(key)`` does (the table has no default: a missing key is None),
        # with one store read instead of two (Mapping.get tests ``key in data`` first) and
        # the key encoded once.
        self.table.on_key_get(key)
        raw = store._get(self._raw_key(key))
        return None if raw is None else store._decode_value(raw)

    def set(self, key: str, value: Any) -> None:
        self._undo.append((key, self._writes.get(key)))
        self._writes[key] = (current_event(), value)

    def delete(self, key: str) -> None:
        self._undo.append((key, self._writes.get(key)))
        self._writes[key] = (current_event(), _DELETED)

    def savepoint(self) -> int:
        return len(self._undo)

    def rollback(self, savepoint: int) -> None:
        """Forget the writes made since ``savepoint``."""
        while len(self._undo) > savepoint:
            key, before = self._undo.pop()
            if before is None:
                self._writes.pop(key, None)
            else:
                self._writes[key] = before

    def holds_writes(self) -> bool:
        return bool(self._writes)

    def seal(self) -> Layer:
        """Close the writes made so far into a layer (still read here) to :meth:`apply`
        later; later writes start a new one. Layers are applied in the order sealed."""
        encode = self.table.data._encode_value
        layer = Layer({key: (event, None if value is _DELETED else encode(value))
                       for key, (event, value) in self._writes.items()}, encode)
        self._writes = {}
        self._undo.clear()
        self._held.append(layer)
        return layer

    async def apply(self, send: Send, order: Callable[[str, bool], int] | None = None,
                    layer: Layer | None = None) -> list[asyncio.Future[Any]]:
        """Send everything held (or the oldest sealed ``layer``) to the table's changelog,
        each under the partition of the record it was made for; each write reaches the
        table's RocksDB once its record is acknowledged (module docstring).

        The changelog records go straight to the producer with ``send`` (they are
        acknowledged before Faust commits: it flushes the producer first), not through
        Faust's one-at-a-time table buffer and its per-record bookkeeping, which made
        table writes the schedule step's main cost. The changelog offsets the store
        persists (where a restart resumes reading) are set once per partition and batch,
        up to the last write already in RocksDB. Returns the acknowledgements to come, in
        write order."""
        topic = self.table.changelog_topic.get_topic_name()
        acks: list[asyncio.Future[Any]] = []
        if layer is None:
            if self._held:
                raise RuntimeError("sealed layers are applied oldest first, each once")
            layer = self.seal()
        elif not self._held or self._held[0] is not layer:
            raise RuntimeError("sealed layers are applied oldest first, each once")
        writes = list(layer.writes.items())
        if order is not None:
            writes.sort(key=lambda kv: order(kv[0], kv[1][1] is None))
        self._persist_offsets()
        for key, (event, raw_value) in writes:
            raw_key = self._raw_key(key)
            self._written += 1
            self._sent[key] = (self._written, raw_value)
            ack = await send(topic, raw_key, raw_value, event.message.partition, None)
            self._unacked.add(ack)
            ack.add_done_callback(partial(self._landed, key, self._written, event, raw_key, raw_value))
            acks.append(ack)
        self._held.popleft()  # read from _sent from now on (readable above until every write was there)
        return acks

    def _landed(self, key: str, number: int, event: Any, raw_key: bytes, raw_value: bytes | None,
                ack: asyncio.Future[Any]) -> None:
        """A changelog record acknowledged (callbacks run in acknowledgement order, which is
        a partition's offset order): its write goes into RocksDB. A later write of the
        same key lands after it, so the database holds each partition's prefix."""
        self._unacked.discard(ack)
        if ack.cancelled() or ack.exception() is not None:
            if self.on_failure is not None:
                self.on_failure(ack.exception() if not ack.cancelled() else asyncio.CancelledError())
            return
        store = self.table.data
        if raw_value is None:
            store._del(raw_key)  # every database that may hold the key (no current event needed)
        else:
            token = _current_event.set(weakref.ref(event))  # processing(event), inlined: per write
            try:
                store._set(raw_key, raw_value)  # into the database of the event's partition
            finally:
                _current_event.reset(token)
        sent = self._sent.get(key)
        if sent is not None and sent[0] == number:
            del self._sent[key]
        meta = ack.result()
        tp = TP(meta.topic, meta.partition)
        self._acked[tp] = max(self._acked.get(tp, -1), meta.offset)

    async def acknowledged(self) -> None:
        """Wait until every changelog record sent so far is acknowledged (raises the error
        of one the broker refused). Not only the last batch's: acknowledgements of two
        partitions may come in either order (a request retried), and a batch that wrote
        nothing to a partition says nothing of an earlier batch's record there."""
        if self._unacked:
            await asyncio.gather(*list(self._unacked))

    def _persist_offsets(self) -> None:
        for tp, offset in self._acked.items():
            self.table.data.set_persisted_offset(tp, offset)
        self._acked.clear()

    async def settle(self, timeout: float = 10.0) -> None:
        """Wait for the changelog records on their way (their writes reach RocksDB), then
        read only from RocksDB: before the worker's partitions change hands (another
        worker may write them next). A record not acknowledged by then is dropped from
        this view; if the broker took it, the next recovery replays it."""
        if self._unacked:
            await asyncio.wait(list(self._unacked), timeout=timeout)
            await asyncio.sleep(0)  # the acknowledgements' callbacks
        self._sent.clear()
        self._persist_offsets()
