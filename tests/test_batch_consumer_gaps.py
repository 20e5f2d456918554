"""The match step's gap check (streams/kafka/batch_consumer.py): offsets a fetch skipped
are read again once, then passed if still missing."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition

from streams.kafka.batch_consumer import BatchConsumer, gaps

TP = TopicPartition("events", 1)


def test_consecutive_offsets_have_no_gap() -> None:
    assert gaps(None, [5, 6, 7]) == []
    assert gaps(5, [5, 6, 7]) == []
    assert gaps(None, [0]) == []


def test_a_gap_inside_a_batch_and_one_before_it_are_both_found() -> None:
    assert gaps(None, [3, 4, 6, 7, 10]) == [(5, 1), (8, 2)]
    assert gaps(1165, [1168, 1169]) == [(1165, 3)]  # the previous batch ended at 1164


def test_an_unknown_start_counts_nothing_before_the_first_record() -> None:
    """After an assignment or a seek the first record read is the baseline."""
    assert gaps(None, [1000, 1001]) == []


class Seeks:
    def __init__(self) -> None:
        self.seeks: list[tuple[TopicPartition, int]] = []

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))


def consumer() -> tuple[BatchConsumer, list[tuple[int, int, str]], Seeks]:
    """The check alone: no broker, no service."""
    c = BatchConsumer.__new__(BatchConsumer)
    reported: list[tuple[int, int, str]] = []
    c.group_id, c._next, c._reread = "g", {}, {}
    c.on_gap = lambda tp, first, count, outcome: reported.append((first, count, outcome))
    c._consumer = Seeks()  # type: ignore[assignment]
    return c, reported, c._consumer  # type: ignore[return-value]


def check(c: BatchConsumer, offsets: list[int]) -> list[int]:
    return [r.offset for r in c._check_gaps(TP, [SimpleNamespace(offset=o) for o in offsets])]


def test_a_skipped_record_is_read_again_and_nothing_after_it_is_handled_before_it(
        caplog: pytest.LogCaptureFixture) -> None:
    c, reported, seeks = consumer()
    assert check(c, [10, 11, 12]) == [10, 11, 12]
    with caplog.at_level(logging.WARNING, logger="streams.kafka.batch_consumer"):
        assert check(c, [13, 15, 16]) == [13]  # 14 skipped: 15 and 16 wait for the read again
    assert seeks.seeks == [(TP, 14)] and reported == [(14, 1, "reread")]
    assert any("reading the partition again from there" in r.getMessage() for r in caplog.records)
    assert check(c, [14, 15, 16, 17]) == [14, 15, 16, 17]  # it came this time
    assert reported == [(14, 1, "reread")] and c._reread == {} and c._next[TP] == 18


def test_a_gap_still_there_when_read_again_is_passed() -> None:
    """Transaction markers and compaction leave offsets without a record: one more read,
    then on."""
    c, reported, seeks = consumer()
    check(c, [0, 1])
    assert check(c, [2, 5, 6]) == [2]
    assert check(c, [5, 6, 7]) == [5, 6, 7]  # read again from 3: still nothing at 3 and 4
    assert reported == [(3, 2, "reread"), (3, 2, "skipped")] and seeks.seeks == [(TP, 3)]
    assert c._reread == {} and c._next[TP] == 8
    assert check(c, [8, 10]) == [8]  # a new gap is read again too
    assert reported[-1] == (9, 1, "reread")


def test_a_revoked_partition_starts_a_new_baseline() -> None:
    """After a rebalance the partition is read again from its committed offset (here or
    elsewhere): what was read before is no baseline for it, nor a read-again pending."""
    c, reported, _ = consumer()
    c._seeded, c._failed = asyncio.Event(), True  # failed: on_revoked commits nothing
    other = TopicPartition("events", 2)
    check(c, [10, 12])  # a read again from 11 pending
    c._check_gaps(other, [SimpleNamespace(offset=20)])
    asyncio.run(c.on_revoked({TP}))
    assert TP not in c._next and TP not in c._reread and c._next[other] == 21
    assert check(c, [5, 6]) == [5, 6]  # read again from an earlier commit: no gap
    assert reported == [(11, 1, "reread")]


def test_the_consumer_never_commits_past_a_record_it_is_reading_again() -> None:
    """The batch handed on (and so the offset committed once acknowledged) stops below the
    gap: a worker killed before the read again leaves the skipped record to its successor."""
    c, _, _ = consumer()
    check(c, [0, 1, 2])
    handed: Any = check(c, [3, 4, 7, 8])
    assert handed == [3, 4] and max(handed) + 1 == 5  # the offset committed for this batch
