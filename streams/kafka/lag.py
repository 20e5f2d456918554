"""The lag of an aiokafka consumer's assigned partitions, for the ``signalbox_consumer_lag`` gauge."""

from __future__ import annotations

from collections.abc import Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition


def assigned_lag(consumer: AIOKafkaConsumer | None,
                 committed: Mapping[TopicPartition, int]) -> list[tuple[str, int, int]]:
    """(topic, partition, lag) of each partition assigned to ``consumer``: the end offset it
    last saw minus the offset it committed (``committed``; a partition it has committed
    nothing on yet is left out)."""
    if consumer is None:
        return []
    out = []
    for tp in sorted(consumer.assignment()):
        end, done = consumer.highwater(tp), committed.get(tp)
        if end is not None and done is not None:
            out.append((tp.topic, tp.partition, max(0, end - done)))
    return out
