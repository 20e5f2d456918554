"""The worker's Faust transport refuses acknowledgements of records the stream skipped, and
only those."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from confluent_kafka import Consumer, TopicPartition
from faust.types.tuples import ConsumerMessage

from streams.kafka import faust_driver
from tests.conftest import Stack, TopicReader, WorkerProcess, result, unique


def message(topic: str) -> ConsumerMessage:
    return ConsumerMessage(topic, 0, 7, 0.0, 0, None, b"k", b"v", None)


def test_acknowledgements_count_only_for_records_handed_to_the_agent() -> None:
    """``faust_driver``: Faust's stream acknowledges a record it skips during a rebalance
    without handing it over (and without marking it ``tracked``); on the schedule step's
    topics that acknowledgement must not count (the record is read again). A record the
    stream handed over counts, and so do the other topics' records."""
    faust_driver.acknowledge_only_delivered(["app.triggers"])
    skipped, delivered, other = message("app.triggers"), message("app.triggers"), message("app.events")
    assert not skipped.tracked and not delivered.tracked  # as fetched: Faust tracks them on delivery
    delivered.tracked = True  # what faust/streams.py does when it hands the record to the agent
    assert faust_driver.refuses_ack(skipped)
    assert not faust_driver.refuses_ack(delivered)
    assert not faust_driver.refuses_ack(other)


@pytest.mark.broker
def test_the_schedule_step_commits_what_it_processed(stack: Stack, worker: WorkerProcess, results: TopicReader) -> None:
    """The other side of the refusal: records the agent did process are committed. 40 events
    over 8 jobs run; the worker's group then commits the triggers and run-results topics up
    to their ends (read from outside with a plain consumer), or a restart would read them
    all again."""
    hid, n = unique("commits"), 40
    stack.apply_handler({"id": hid, "job": "count", "event": {"match": {"type": hid}}, "params": {"i": "i"}})
    for i in range(n):
        stack.send_event({"type": hid, "i": i}, key=str(i))
    assert len(results.wait_for(lambda m: result(m)["handler_id"] == hid, count=n)) == n
    topics = [stack.topics.triggers, stack.topics.run_results]
    consumer = Consumer(stack.broker.client_config(**{"group.id": stack.app_id, "enable.auto.commit": False}))
    try:
        end, behind = time.monotonic() + 60, {}
        while time.monotonic() < end:
            parts = [TopicPartition(t, p) for t in topics
                     for p in consumer.list_topics(t, timeout=10).topics[t].partitions]
            committed = {(tp.topic, tp.partition): tp.offset for tp in consumer.committed(parts, timeout=10)}
            ends = {(tp.topic, tp.partition): consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in parts}
            behind = {tp: (committed[tp], end_) for tp, end_ in ends.items() if end_ > 0 and committed[tp] < end_}
            if not behind:
                break
            time.sleep(0.5)
    finally:
        consumer.close()
    assert not behind, f"(committed, end) of partitions not committed to their end: {behind}"


def test_refusals_are_logged_once_per_partition_and_generation(caplog: pytest.LogCaptureFixture) -> None:
    """A rebalance can skip hundreds of records of a partition: one log line says so."""
    faust_driver.acknowledge_only_delivered(["app.triggers"])
    consumer = faust_driver.KafkaConsumer.__new__(faust_driver.KafkaConsumer)  # ack() needs no running consumer
    consumer._unacked_messages = set()

    def skipped(partition: int, offset: int, generation: int) -> ConsumerMessage:
        m = ConsumerMessage("app.triggers", partition, offset, 0.0, 0, None, b"k", b"v", None, generation_id=generation)
        consumer._unacked_messages.add(m)
        return m

    with caplog.at_level(logging.INFO, logger=faust_driver.__name__):
        refused = [consumer.ack(skipped(p, o, g)) for g, p, o in
                   [(7, 0, 10), (7, 0, 11), (7, 0, 12), (7, 1, 4), (8, 0, 13), (8, 0, 14)]]
    assert refused == [False] * 6 and not consumer._unacked_messages
    lines = [r.getMessage() for r in caplog.records if "skipped by the stream" in r.getMessage()]
    assert lines == [
        "app.triggers/0: records from offset 10 were skipped by the stream during a rebalance; they are read again",
        "app.triggers/1: records from offset 4 were skipped by the stream during a rebalance; they are read again",
        "app.triggers/0: records from offset 13 were skipped by the stream during a rebalance; they are read again",
    ]
    assert faust_driver.KafkaConsumer._skips_logged[1] == set()  # the class default stays empty


def test_resuming_the_flow_keeps_what_the_streams_buffers_hold() -> None:
    """Faust's recovery resumes its flow control once more after the stream partitions were
    resumed and sought; Faust's flow control empties every stream buffer when it resumes,
    so records already handed over (their read offsets recorded) were lost. The worker's
    app resumes without emptying; the explicit emptying of a revocation stays."""
    from mode.utils.queues import FlowControlEvent, FlowControlQueue

    async def main(flow: FlowControlEvent) -> tuple[int, int]:
        buffer: FlowControlQueue[int] = FlowControlQueue(flow_control=flow, clear_on_resume=True)  # as Faust's channels
        flow.resume()
        for record in range(5):
            buffer.put_nowait(record)
        flow.resume()  # _resume_streams: after resume_partitions and the seek
        kept = buffer.qsize()
        flow.suspend()
        flow.clear()  # a revocation
        return kept, buffer.qsize()

    assert asyncio.run(main(faust_driver.KeepingFlowControl())) == (5, 0)
    assert asyncio.run(main(FlowControlEvent())) == (0, 0)  # Faust's: the five records are gone
    assert isinstance(faust_driver.App("flow-test", broker="kafka://127.0.0.1:1").flow_control,
                      faust_driver.KeepingFlowControl)
