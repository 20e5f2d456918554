"""The match step's gap check (streams/kafka/batch_consumer.py): offsets a fetch skipped."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace

import pytest
from aiokafka import TopicPartition

from streams.kafka.batch_consumer import BatchConsumer, gaps


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


@pytest.mark.parametrize("batches,expected", [
    ([[0, 1, 2], [3, 4]], []),
    ([[0, 1, 2], [4, 5]], [(3, 1)]),            # one record between two batches never returned
    ([[0, 2], [3], [7, 8]], [(1, 1), (4, 3)]),
])
def test_the_consumer_reports_each_skip_once_across_batches(batches: list[list[int]], expected: list[tuple[int, int]],
                                                            caplog: pytest.LogCaptureFixture) -> None:
    seen: list[tuple[int, int]] = []
    consumer = BatchConsumer.__new__(BatchConsumer)  # the check alone: no broker, no service
    consumer.group_id, consumer._next = "g", {}
    consumer.on_gap = lambda tp, first, count: seen.append((first, count))
    tp = TopicPartition("events", 1)
    with caplog.at_level(logging.WARNING, logger="streams.kafka.batch_consumer"):
        for offsets in batches:
            consumer._check_gaps(tp, [SimpleNamespace(offset=o) for o in offsets])
    assert seen == expected
    assert len([r for r in caplog.records if "skipped by the fetch" in r.getMessage()]) == len(expected)
    assert consumer._next[tp] == batches[-1][-1] + 1


def test_a_revoked_partition_starts_a_new_baseline() -> None:
    """After a rebalance the partition is read again from its committed offset (here or
    elsewhere): what was read before is no baseline for it."""
    consumer = BatchConsumer.__new__(BatchConsumer)
    consumer.group_id, consumer._next, consumer.on_gap = "g", {}, None
    consumer._seeded, consumer._failed = asyncio.Event(), True  # failed: on_revoked commits nothing
    tp, other = TopicPartition("events", 0), TopicPartition("events", 1)
    consumer._check_gaps(tp, [SimpleNamespace(offset=10)])
    consumer._check_gaps(other, [SimpleNamespace(offset=20)])
    asyncio.run(consumer.on_revoked({tp}))
    assert tp not in consumer._next and consumer._next[other] == 21
    seen: list[tuple[int, int]] = []
    consumer.on_gap = lambda tp, first, count: seen.append((first, count))
    consumer._check_gaps(tp, [SimpleNamespace(offset=5)])  # read again from an earlier commit: no gap
    assert seen == [] and consumer._next[tp] == 6
