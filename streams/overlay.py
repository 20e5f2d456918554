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

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from faust.streams import _current_event, current_event

_DELETED = object()


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

    def get(self, key: str) -> Any:
        held = self._writes.get(key)
        if held is not None:
            return None if held[1] is _DELETED else held[1]
        return self.table.get(key)

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

    def apply(self) -> None:
        """Write everything held to the table, each under the record it was made for."""
        for key, (event, value) in self._writes.items():
            with processing(event):
                if value is _DELETED:
                    if key in self.table:
                        del self.table[key]
                else:
                    self.table[key] = value
        self._writes.clear()
        self._undo.clear()
