"""A poison corpus interleaved with valid events, through a real worker: every valid event
gets its command, every poison record is dead-lettered with its reason, no agent dies.
Forged records on the internal topics (triggers, run results) get the same treatment."""

from __future__ import annotations

import json

import pytest
from confluent_kafka import Producer

from tests.conftest import Stack, command, unique
from tests.poison import POISON

pytestmark = pytest.mark.broker


def test_poison_events_are_dead_lettered_and_their_neighbours_run(stack: Stack, worker, commands):
    tag = unique("poison")
    dead = stack.reader(stack.topics.dead_letter)
    h = {"id": tag, "job": "tick4", "event": {"match": {"type": tag}}, "concurrency": 8}
    stack.apply_handler(h)
    # 5 MB records need a producer (and broker) that takes them
    p = Producer({"bootstrap.servers": stack.broker.bootstrap, "message.max.bytes": 8_000_000,
                  "linger.ms": 5})
    valid: list[str] = []
    for i, (_, raw, _) in enumerate(POISON):
        p.produce(stack.topics.events, raw, f"{tag}-p{i}".encode())
        event_id = f"{tag}-v{i}"
        valid.append(event_id)
        p.produce(stack.topics.events, json.dumps({"id": event_id, "type": tag}).encode(), b"k")
    assert p.flush(60) == 0

    cmds = commands.wait_for(lambda m: command(m)["handler_id"] == tag, count=len(valid), timeout=120)
    assert {command(m)["trigger_ref"] for m in cmds} == {f"id:{v}" for v in valid}
    rejected = [(i, name, reason) for i, (name, _, reason) in enumerate(POISON) if reason is not None]
    letters = dead.wait_for(lambda m: (m.key() or b"").startswith(f"{tag}-p".encode()), count=len(rejected),
                            timeout=120)
    by_key = {m.key().decode(): dict(m.headers())["reason"].decode() for m in letters}
    for i, name, reason in rejected:
        assert reason in by_key.get(f"{tag}-p{i}", ""), (name, by_key.get(f"{tag}-p{i}"))
    dead.poll_for(2.0)
    accepted = {f"{tag}-p{i}" for i, (_, _, reason) in enumerate(POISON) if reason is None}
    wrongly = [m.key().decode() for m in dead.seen if (m.key() or b"").decode(errors="replace") in accepted]
    assert not wrongly, f"accepted events were dead-lettered: {wrongly}"
    log = worker.log_text()
    assert "Crashed" not in log and "RecursionError" not in log
    dead.close()


def test_forged_internal_records_are_dead_lettered_one_by_one(stack: Stack, worker, commands):
    """A triggers record mixing a valid trigger with broken ones: the broken ones are
    dead-lettered, each with its reason; the valid one starts its run."""
    from streams.contracts import avro
    from streams.kafka.partitioning import job_partition

    dead = stack.reader(stack.topics.dead_letter)
    tag = unique("forged")
    good = {"run_id": f"{tag}-good", "job": "tick5", "handler_id": tag, "trigger_kind": "event",
            "trigger_ref": f"id:{tag}", "params_json": "{}", "event_json": None, "timeout_seconds": 10}
    bogus_kind = {**good, "run_id": f"{tag}-kind", "trigger_kind": "bogus"}
    missing = {"job": "tick5", "handler_id": tag}
    part = job_partition("tick5", stack.topics.job_partitions)
    p = stack.producer()
    p.produce(stack.topics.triggers, json.dumps([bogus_kind, missing, 42, good]).encode(), partition=part)
    p.produce(stack.topics.triggers, b"{not a list", partition=part)
    p.produce(stack.topics.run_results, b"\xc3\x01garbage", b"tick5")
    p.produce(stack.topics.run_results, avro.commands().encode({  # a command on the results topic
        **good, "attempt": 1, "initial_state_json": None, "event_time": None, "created_at": 0}), b"tick5")
    assert p.flush(30) == 0
    commands.wait_for(lambda m: command(m)["run_id"] == f"{tag}-good")
    internal = {stack.topics.triggers.encode(), stack.topics.run_results.encode()}
    reasons = [dict(m.headers())["reason"].decode() for m in dead.wait_for(
        lambda m: dict(m.headers()).get("source_topic") in internal, count=6, timeout=60)]
    text = "\n".join(reasons)
    assert "cannot be encoded" in text  # the bogus trigger kind
    assert "cannot be processed: KeyError" in text  # the trigger without a run id
    assert "a trigger must be a JSON object" in text
    assert "undecodable triggers record" in text
    assert text.count("undecodable run result") == 2
    assert "Crashed" not in worker.log_text()
    dead.close()
