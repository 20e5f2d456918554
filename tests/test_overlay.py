"""The schedule step's table overlay keeps RocksDB a prefix of the changelog.

A write reaches the local database only once its changelog record is acknowledged, in
acknowledgement order, so a worker killed -9 and restarted on the same data directory
finds in RocksDB nothing its changelog lacks (its recovery then replays the rest). Before
this, the overlay wrote RocksDB at once: a restart mixed the lost writes of the last batch
with the older records its recovery replayed (a queue entry deleted locally while the
replayed job record still pointed at it), and a run was commanded twice with two states.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import pytest

from streams.engine.overlay import Overlay, processing
from streams.engine.runbook import write_order

TOPIC = "app-job-runs-changelog"


@dataclass
class Message:
    partition: int


@dataclass
class Event:
    message: Message


@dataclass
class Meta:
    topic: str
    partition: int
    offset: int


class Store:
    """The parts of Faust's RocksDB store the overlay uses: one database per partition."""

    def __init__(self) -> None:
        self.dbs: dict[int, dict[bytes, bytes]] = {}
        self.persisted: dict[Any, int] = {}

    def _encode_key(self, key: str) -> bytes:
        return json.dumps(key).encode()

    def _encode_value(self, value: Any) -> bytes:
        return json.dumps(value).encode()

    def _decode_value(self, raw: bytes) -> Any:
        return json.loads(raw)

    def _get(self, raw_key: bytes) -> bytes | None:
        for db in self.dbs.values():
            if raw_key in db:
                return db[raw_key]
        return None

    def _set(self, raw_key: bytes, raw_value: bytes) -> None:
        from faust.streams import current_event

        event = current_event()
        assert event is not None, "a RocksDB write needs the record it was made for"
        self.dbs.setdefault(event.message.partition, {})[raw_key] = raw_value

    def _del(self, raw_key: bytes) -> None:
        for db in self.dbs.values():
            db.pop(raw_key, None)

    def set_persisted_offset(self, tp: Any, offset: int) -> None:
        self.persisted[tp] = offset

    def plain(self) -> dict[str, Any]:
        return {json.loads(k): json.loads(v) for db in self.dbs.values() for k, v in db.items()}


class ChangelogTopic:
    def get_topic_name(self) -> str:
        return TOPIC


class Table:
    def __init__(self) -> None:
        self.data = Store()
        self.changelog_topic = ChangelogTopic()

    def on_key_get(self, key: str) -> None:
        pass


class Broker:
    """A changelog whose acknowledgements the test hands out: records get offsets as sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bytes | None, int, asyncio.Future[Any]]] = []
        self.offsets: dict[int, int] = {}

    async def send(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None,
                   headers: Any) -> asyncio.Future[Any]:
        assert topic == TOPIC and key is not None and partition is not None
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.sent.append((key, value, partition, fut))
        return fut

    def ack(self, n: int | None = None) -> None:
        """Acknowledge the first n records not yet acknowledged (all by default)."""
        pending = [s for s in self.sent if not s[3].done()]
        for _key, _value, partition, fut in pending[:n]:
            offset = self.offsets.get(partition, -1) + 1
            self.offsets[partition] = offset
            fut.set_result(Meta(TOPIC, partition, offset))

    def ack_at(self, i: int) -> None:
        """Acknowledge the i-th record sent, out of order (a request to another partition
        retried, or answered first)."""
        _key, _value, partition, fut = self.sent[i]
        offset = self.offsets.get(partition, -1) + 1
        self.offsets[partition] = offset
        fut.set_result(Meta(TOPIC, partition, offset))

    def refuse_next(self, exc: Exception) -> None:
        next(s for s in self.sent if not s[3].done())[3].set_exception(exc)


def write(view: Overlay, event: Event, writes: dict[str, Any]) -> None:
    with processing(event):
        for key, value in writes.items():
            if value is None:
                view.delete(key)
            else:
                view.set(key, value)


async def callbacks() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


def test_a_write_reaches_rocksdb_only_once_its_changelog_record_is_acknowledged() -> None:
    async def scenario() -> None:
        table, broker = Table(), Broker()
        view = Overlay(table)
        event = Event(Message(3))
        write(view, event, {"m:job": {"head": 0, "tail": 1}, "q:job:0": {"run_id": "r0"}})
        assert view.get("m:job") == {"head": 0, "tail": 1} and table.data.plain() == {}
        acks = await view.apply(broker.send, write_order)
        assert [json.loads(k) for k, *_ in broker.sent] == ["q:job:0", "m:job"]  # write_order: queue entry first
        assert table.data.plain() == {}, "written to RocksDB before the broker acknowledged it"
        assert view.get("q:job:0") == {"run_id": "r0"}  # readable meanwhile
        broker.ack(1)
        await callbacks()
        assert table.data.plain() == {"q:job:0": {"run_id": "r0"}}
        broker.ack()
        await asyncio.gather(*acks)
        await callbacks()
        assert table.data.plain() == {"m:job": {"head": 0, "tail": 1}, "q:job:0": {"run_id": "r0"}}
        assert table.data.dbs.keys() == {3}  # the database of the record's partition
        # the offset a restart resumes reading from is persisted with the next batch
        write(view, event, {"m:job": {"head": 1, "tail": 1}, "q:job:0": None})
        await view.apply(broker.send, write_order)
        assert list(table.data.persisted.values()) == [1]

    asyncio.run(scenario())


@pytest.mark.parametrize("kept", range(5))
def test_a_kill_leaves_rocksdb_a_prefix_of_the_changelog(kept: int) -> None:
    """Two batches of one job in flight; the process dies after ``kept`` acknowledgements:
    RocksDB holds exactly what the first ``kept`` changelog records say."""

    async def scenario() -> None:
        table, broker = Table(), Broker()
        view = Overlay(table)
        event = Event(Message(0))
        batches = [
            {"q:job:1": {"run_id": "r1"}, "m:job": {"running": ["r0"], "head": 1, "tail": 2}},
            {"m:job": {"running": ["r1"], "head": 2, "tail": 2}, "q:job:1": None},
        ]
        for batch in batches:
            write(view, event, batch)
            await view.apply(broker.send, write_order)
        broker.ack(kept)
        await callbacks()
        changelog: dict[str, Any] = {}
        for key, value, _, _ in broker.sent[:kept]:
            if value is None:
                changelog.pop(json.loads(key), None)
            else:
                changelog[json.loads(key)] = json.loads(value)
        assert table.data.plain() == changelog
        # and the overlay still reads the newest writes
        assert view.get("m:job") == {"running": ["r1"], "head": 2, "tail": 2}
        assert view.get("q:job:1") is None

    asyncio.run(scenario())


def test_an_earlier_acknowledgement_does_not_hide_a_later_write_of_the_same_key() -> None:
    async def scenario() -> None:
        table, broker = Table(), Broker()
        view = Overlay(table)
        event = Event(Message(0))
        write(view, event, {"m:job": {"v": 1}})
        await view.apply(broker.send)
        write(view, event, {"m:job": {"v": 2}})
        await view.apply(broker.send)
        broker.ack(1)
        await callbacks()
        assert table.data.plain() == {"m:job": {"v": 1}}
        assert view.get("m:job") == {"v": 2}
        broker.ack(1)
        await callbacks()
        assert table.data.plain() == {"m:job": {"v": 2}} and view.get("m:job") == {"v": 2}

    asyncio.run(scenario())


def test_a_refused_record_stops_the_worker_and_never_reaches_rocksdb() -> None:
    async def scenario() -> None:
        table, broker = Table(), Broker()
        refused: list[BaseException] = []
        view = Overlay(table, refused.append)
        write(view, Event(Message(1)), {"m:job": {"v": 1}})
        acks = await view.apply(broker.send)
        broker.refuse_next(RuntimeError("record too large"))
        await asyncio.gather(*acks, return_exceptions=True)
        await callbacks()
        assert [str(e) for e in refused] == ["record too large"]
        assert table.data.plain() == {}

    asyncio.run(scenario())


def test_settle_waits_for_the_records_on_their_way_then_reads_rocksdb() -> None:
    """Before partitions change hands: what is acknowledged is in RocksDB, and nothing is
    read from the overlay's memory any more (another worker may write those keys next)."""

    async def scenario() -> None:
        table, broker = Table(), Broker()
        view = Overlay(table)
        write(view, Event(Message(2)), {"m:a": {"v": 1}, "m:b": {"v": 1}})
        await view.apply(broker.send)
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, broker.ack, 1)  # m:b's record is never acknowledged
        await view.settle(timeout=0.3)
        assert table.data.plain() == {"m:a": {"v": 1}}
        assert view.get("m:a") == {"v": 1} and view.get("m:b") is None
        assert list(table.data.persisted.values()) == [0]

    asyncio.run(scenario())


def test_acknowledged_waits_for_every_record_sent_not_only_the_last_batch() -> None:
    """The schedule step writes a job's new state only once every job-runs record before it
    is acknowledged. Batch 1 dispatches the job's run (partition 0); batch 2 writes only to
    partition 1 and is acknowledged first: batch 1's record is still on its way, and
    waiting for the last batch's acknowledgements alone would let the state go first."""

    async def scenario() -> None:
        table, broker = Table(), Broker()
        view = Overlay(table)
        write(view, Event(Message(0)), {"m:a": {"running": {"r1": {"attempt": 1}}}})
        await view.apply(broker.send)
        write(view, Event(Message(1)), {"m:b": {"head": 1}})
        await view.apply(broker.send)
        broker.ack_at(1)  # batch 2's record, first
        waiter = asyncio.ensure_future(view.acknowledged())
        await callbacks()
        assert not waiter.done(), "returned while batch 1's job record was unacknowledged"
        broker.ack_at(0)
        await asyncio.wait_for(waiter, 1.0)
        assert table.data.plain() == {"m:a": {"running": {"r1": {"attempt": 1}}}, "m:b": {"head": 1}}
        await asyncio.wait_for(view.acknowledged(), 1.0)  # nothing on its way: at once

    asyncio.run(scenario())


def test_acknowledged_raises_when_a_record_was_refused() -> None:
    async def scenario() -> None:
        refused: list[BaseException] = []
        view, broker = Overlay(Table(), refused.append), Broker()
        write(view, Event(Message(0)), {"m:a": {"v": 1}})
        await view.apply(broker.send)
        broker.refuse_next(RuntimeError("not leader"))
        with pytest.raises(RuntimeError, match="not leader"):
            await view.acknowledged()

    asyncio.run(scenario())


def test_sealed_layers_are_read_newest_first_and_sent_only_when_applied() -> None:
    """The schedule step decides batch 2 while batch 1 waits for its commands' acknowledgements:
    batch 2 reads batch 1's writes, and nothing of batch 2 reaches the changelog before it
    is applied, after batch 1."""

    async def scenario() -> None:
        table, broker = Table(), Broker()
        view = Overlay(table)
        event = Event(Message(1))
        write(view, event, {"m:job": {"running": ["r0"]}, "q:job:0": {"run_id": "r0"}})
        first = view.seal()
        assert view.get("m:job") == {"running": ["r0"]}  # sealed, still read
        write(view, event, {"m:job": {"running": ["r1"]}, "q:job:0": None})
        second = view.seal()
        assert view.get("m:job") == {"running": ["r1"]} and view.get("q:job:0") is None  # newest layer wins
        assert broker.sent == [] and not view.holds_writes()
        with pytest.raises(RuntimeError):
            await view.apply(broker.send, write_order, layer=second)  # not before the older one
        assert broker.sent == []
        with processing(event):
            first.set("b:000000000000001:1", [1, ["r0"]])  # a write added after the seal (dedup entry)
        acks = await view.apply(broker.send, write_order, layer=first)
        assert sorted(json.loads(k) for k, *_ in broker.sent) == ["b:000000000000001:1", "m:job", "q:job:0"]
        assert view.get("m:job") == {"running": ["r1"]}, "the older layer's record in flight hid the newer layer"
        broker.ack()
        await asyncio.gather(*acks)
        await callbacks()
        assert table.data.plain() == {"m:job": {"running": ["r0"]}, "q:job:0": {"run_id": "r0"},
                                      "b:000000000000001:1": [1, ["r0"]]}
        assert view.get("m:job") == {"running": ["r1"]} and view.get("q:job:0") is None
        await view.apply(broker.send, write_order, layer=second)
        broker.ack()
        await callbacks()
        assert table.data.plain() == {"m:job": {"running": ["r1"]}, "b:000000000000001:1": [1, ["r0"]]}
        assert view.get("m:job") == {"running": ["r1"]}
        with pytest.raises(RuntimeError):
            await view.apply(broker.send, write_order, layer=second)  # each layer once

    asyncio.run(scenario())


def test_a_sealed_layer_stays_readable_while_it_is_being_sent() -> None:
    """apply() awaits each send: a batch decided meanwhile must still read every write of the
    layer, sent or not."""

    async def scenario() -> None:
        table, broker = Table(), Broker()
        view = Overlay(table)
        event = Event(Message(0))
        write(view, event, {f"k{i}": i for i in range(5)})
        layer = view.seal()
        seen: list[list[Any]] = []

        async def slow_send(*args: Any) -> asyncio.Future[Any]:
            seen.append([view.get(f"k{i}") for i in range(5)])  # what a concurrent decision reads
            await asyncio.sleep(0)
            return await broker.send(*args)

        await view.apply(slow_send, None, layer=layer)
        assert seen == [[0, 1, 2, 3, 4]] * 5
        assert [view.get(f"k{i}") for i in range(5)] == [0, 1, 2, 3, 4]

    asyncio.run(scenario())


def test_a_later_batch_mutating_what_it_read_never_changes_an_earlier_batchs_record() -> None:
    """The run book updates a job record in place (``del meta["running"][run]``) and sets
    it again. Batch 2 reads the record batch 1 sealed and settles batch 1's run: batch 1's
    changelog record must still say what batch 1 decided. When the sealed layer handed
    out its own object, batch 1's record carried batch 2's decision, a kill -9 between
    the two batches' records left the job record without the dedup entry of the run it
    no longer held, and the run was commanded again with a later state (found with
    test_kill_one_of_two_workers_under_load_loses_no_run[True])."""

    async def scenario() -> None:
        table, broker = Table(), Broker()
        view = Overlay(table)
        event = Event(Message(3))
        write(view, event, {"m:job": {"running": {"r1": {"attempt": 1}}, "head": 1, "tail": 2}})
        first = view.seal()
        meta = view.get("m:job")  # batch 2 settles r1 and starts r2, in place
        del meta["running"]["r1"]
        meta["running"]["r2"] = {"attempt": 1}
        meta["head"] = 2
        with processing(event):
            view.set("m:job", meta)
        view.seal()
        await view.apply(broker.send, write_order, layer=first)
        assert [json.loads(v) for _, v, _, _ in broker.sent] == [
            {"running": {"r1": {"attempt": 1}}, "head": 1, "tail": 2}], "batch 1's record holds batch 2's decision"
        again = view.get("m:job")
        assert again == meta and again is not meta
        broker.ack()
        await callbacks()
        assert view.get("m:job") == meta  # the newest layer still wins over the record on its way

    asyncio.run(scenario())


def test_a_value_on_its_way_to_the_changelog_is_read_as_a_copy() -> None:
    async def scenario() -> None:
        table, broker = Table(), Broker()
        view = Overlay(table)
        write(view, Event(Message(0)), {"m:job": {"running": {"r1": {}}}})
        await view.apply(broker.send)
        got = view.get("m:job")
        got["running"].clear()  # a unit that mutates and is then rolled back
        assert view.get("m:job") == {"running": {"r1": {}}}

    asyncio.run(scenario())
