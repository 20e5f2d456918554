"""Which run ids have settled: the de-duplication of runs after they leave their job's record.

While a run waits or runs, its job's record in ``job-runs`` says so (``runbook.py``); when
it settles, its run id is recorded here, in the same batch and before the job record that
releases it, so a trigger replayed later is recognised either way.

A Faust table write is a changelog record, so the entries are one per *batch* (key
``b:<ms>:<partition>``, a time later than the partition's previous key; value ``[first seen ms,
[run ids]]``), in the ``job-runs`` table: one changelog partition keeps them in order with
the job records.
Lookups use a per-run-id index (``r:<run id>`` -> ms) kept in the same RocksDB partition
database without a changelog; it is brought up to date from the batch entries whenever
the worker may have gained the partition (after every rebalance), so a worker that takes
over a partition, or lost its disk, knows every run id the changelog knows. The key also
names the partition (``b:<ms>:<partition>``): two partitions' batches of one millisecond
are two entries.

All writes must happen while the schedule agent processes a record of the same
partition: Faust writes a table entry to the changelog partition of the current record.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import faust

SWEEP_CHUNK = 100  # expired batches deleted per call, so a sweep never blocks the event loop
_BATCH = b'"b:'  # how Faust's JSON key serializer spells our batch keys
_INDEX = b"r:"
_INDEXED_UP_TO = b"i:indexed-up-to"


def batch_key(ms: int, partition: int) -> str:
    """Fixed width: RocksDB's key order is time order. The partition keeps the keys of two
    partitions written in one batch and millisecond apart: a table key names one entry,
    whatever the partition (the schedule step's overlay holds one write per key)."""
    return f"b:{ms:015d}:{partition}"


def batch_ms(key: str) -> int:
    return int(key[2:17])


class RunDedup:
    def __init__(self, app: faust.App, table: Any, retention_ms: int, sweep_interval_s: float) -> None:
        self.app = app
        self.table = table
        self.retention_ms = retention_ms
        self.sweep_interval_s = sweep_interval_s
        self._indexed_in: dict[int, int] = {}  # partition -> rebalance count when last caught up
        self._last_sweep: dict[int, float] = {}

    def _db(self, partition: int) -> Any:
        return self.table.data._db_for_partition(partition)  # Faust's RocksDB: one DB per partition

    def _indexed(self, partition: int) -> Any:
        db = self._db(partition)
        if self._indexed_in.get(partition) != self.app.rebalancing_count:
            self._catch_up(db)
            self._indexed_in[partition] = self.app.rebalancing_count
        return db

    def seen(self, partition: int, run_id: str, now: int) -> bool:
        """True when run_id was accepted within the retention."""
        first = self._indexed(partition).get(_INDEX + run_id.encode())
        return first is not None and now - int(first) <= self.retention_ms

    def record(self, partition: int, run_ids: list[str], now: int, put: Callable[[str, Any], None]) -> None:
        """Remember accepted run ids: one entry, written with ``put(key, value)`` (the
        schedule step's table overlay). Call it while processing a record of ``partition``:
        the entry goes to that changelog partition."""
        if not run_ids:
            return
        db = self._indexed(partition)
        # Keys are times in ms, each later than the last one this partition has seen, so
        # they sort in the order written even when two batches share a millisecond.
        upto = db.get(_INDEXED_UP_TO)
        key = batch_key(max(now, batch_ms(upto.decode()) + 1) if upto else now, partition)
        put(key, [now, run_ids])
        stamp = str(now).encode()
        for run_id in run_ids:
            db.put(_INDEX + run_id.encode(), stamp)
        db.put(_INDEXED_UP_TO, key.encode())

    def _catch_up(self, db: Any) -> None:
        """Index the batch entries the index does not know yet (written by another worker,
        or restored from the changelog)."""
        upto = db.get(_INDEXED_UP_TO)
        start = b'"' + upto + b"\x00" if upto else _BATCH
        last = None
        for raw_key, raw_value in db.items(from_key=start):
            if not raw_key.startswith(_BATCH):
                break
            first, run_ids = json.loads(raw_value)
            stamp = str(first).encode()
            for run_id in run_ids:
                db.put(_INDEX + run_id.encode(), stamp)
            last = raw_key
        if last is not None:
            db.put(_INDEXED_UP_TO, last[1:-1])

    def sweep(self, partition: int, now: int) -> None:
        """Delete expired batches, oldest first, at most SWEEP_CHUNK per call, a pass every
        sweep interval: the batch entry through the table (a tombstone on the changelog),
        its run ids from the local index. Batch keys sort in insertion order, which is time order,
        so a pass stops at the first batch still inside the retention."""
        if time.monotonic() - self._last_sweep.setdefault(partition, time.monotonic()) < self.sweep_interval_s:
            return
        db = self._db(partition)
        expired: list[tuple[str, list[str]]] = []
        for raw_key, raw_value in db.items(from_key=_BATCH):
            if not raw_key.startswith(_BATCH) or len(expired) == SWEEP_CHUNK:
                break
            first, run_ids = json.loads(raw_value)
            if now - first <= self.retention_ms:
                break
            expired.append((json.loads(raw_key), run_ids))
        for key, run_ids in expired:
            del self.table[key]
            for run_id in run_ids:
                db.delete(_INDEX + run_id.encode())
        if len(expired) < SWEEP_CHUNK:
            self._last_sweep[partition] = time.monotonic()  # done until the next interval
