"""Faust table writes held back until the commands they describe are acknowledged.

The schedule step decides a whole batch first, sends the batch's commands, waits for the
broker's acknowledgements, and only then writes its tables: a table write lands in the
local RocksDB at once and survives a kill -9, so written earlier it could say a command
was sent that never reached Kafka. :class:`Overlay` reads through to the table and keeps
the writes (with the record each was made for) until :meth:`Overlay.apply`.

Faust writes a table entry to the changelog partition of the record being processed (the
"current event"); :func:`processing` sets it for code outside a stream iteration.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
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


class Overlay:
    def __init__(self, table: Any) -> None:
        self.table = table
        self._writes: dict[str, tuple[Any, Any]] = {}  # key -> (event, value or _DELETED)
        self._undo: list[tuple[str, tuple[Any, Any] | None]] = []
        self._acked: dict[TP, int] = {}
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
        held = self._writes.get(key)
        if held is not None:
            return None if held[1] is _DELETED else held[1]
        # What ``table.get(key)`` does (the table has no default: a missing key is None),
        # with one store read instead of two (Mapping.get tests ``key in data`` first) and
        # the key encoded once.
        table = self.table
        table.on_key_get(key)
        store = table.data
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

    async def apply(self, send: Send, order: Callable[[str, bool], int] | None = None) -> list[asyncio.Future[Any]]:
        """Write everything held: to the table's RocksDB, and to its changelog, each under the
        partition of the record it was made for.

        The changelog records go straight to the producer with ``send`` (they are
        acknowledged before Faust commits: it flushes the producer first), not through
        Faust's one-at-a-time table buffer and its per-record bookkeeping, which made
        table writes the schedule step's main cost. The changelog offsets the store
        persists (where a restart resumes reading) are set once per partition, as the
        acknowledgements arrive. Returns the acknowledgements to come, in write order."""
        store = self.table.data
        topic = self.table.changelog_topic.get_topic_name()
        acks: list[asyncio.Future[Any]] = []
        writes = list(self._writes.items())
        if order is not None:
            writes.sort(key=lambda kv: order(kv[0], kv[1][1] is _DELETED))
        for key, (event, value) in writes:
            partition = event.message.partition
            raw_key = self._raw_key(key)
            if value is _DELETED:
                store._del(raw_key)  # every database that may hold the key (no current event needed)
                raw_value = None
            else:
                raw_value = store._encode_value(value)
                token = _current_event.set(weakref.ref(event))  # processing(event), inlined: per write
                try:
                    store._set(raw_key, raw_value)  # into the database of the event's partition
                finally:
                    _current_event.reset(token)
            ack = await send(topic, raw_key, raw_value, partition, None)
            ack.add_done_callback(self._acknowledged)
            acks.append(ack)
        self._writes.clear()
        self._undo.clear()
        for tp, offset in self._acked.items():
            self.table.data.set_persisted_offset(tp, offset)
        self._acked.clear()
        return acks

    def _acknowledged(self, ack: asyncio.Future[Any]) -> None:
        if ack.cancelled() or ack.exception() is not None:
            return  # the producer's flush before the next commit raises it
        meta = ack.result()
        tp = TP(meta.topic, meta.partition)
        self._acked[tp] = max(self._acked.get(tp, -1), meta.offset)
