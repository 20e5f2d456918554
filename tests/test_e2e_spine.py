"""The spine end to end on a real broker: a worker process, plain clients outside it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from confluent_kafka import Message

from streams.model.identity import run_id
from tests.conftest import command, result, unique

pytestmark = pytest.mark.broker


def by_ref(ref: str):
    return lambda m: command(m)["trigger_ref"] == ref


def by_run(rid: str):
    return lambda m: result(m)["run_id"] == rid


def internal(run: str, event_type: str = "JobRun Status Change"):
    """The run's status events from the schedule step (not the runner's "started")."""
    def pred(m: Message) -> bool:
        try:
            e = json.loads(m.value())
        except ValueError:  # the dead-letter tests put non-JSON records on the events topic
            return False
        return (isinstance(e, dict) and e.get("source") == "internal" and e.get("run_id") == run
                and e.get("event_type") == event_type and e.get("new_status") != "started")
    return pred


def handler(job: str, match: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"id": unique(job), "job": job, "event": {"match": match, **extra.pop("event", {})}, **extra}


def test_event_to_command_to_result_and_state_carries_over(stack, worker, commands, results, events):
    h = handler("count1", {"kind": "order"}, params={"n": "order.n"})
    stack.apply_handler(h)
    stack.send_event({"id": "order-1", "kind": "order", "order": {"n": 1}})

    [msg] = commands.wait_for(by_ref("id:order-1"))
    first = command(msg)
    assert msg.key() == b"count1"
    assert first["run_id"] == run_id(h["id"], "id:order-1")
    assert first["job"] == "count1" and first["handler_id"] == h["id"]
    assert first["trigger_kind"] == "event"
    assert json.loads(first["params_json"]) == {"n": 1}
    assert json.loads(first["event_json"])["id"] == "order-1"
    assert first["initial_state_json"] is None
    assert first["attempt"] == 1 and first["created_at"] is not None

    [done] = results.wait_for(by_run(first["run_id"]))
    r = result(done)
    assert r["status"] == "succeeded" and r["error"] is None
    assert json.loads(r["final_state_json"]) == {"runs": 1, "seen": [{"n": 1}]}
    assert r["finished_at"] >= r["started_at"]

    [status] = events.wait_for(internal(first["run_id"]))
    assert json.loads(status.value())["new_status"] == "finished"

    stack.send_event({"id": "order-2", "kind": "order", "order": {"n": 2}})
    [msg2] = commands.wait_for(by_ref("id:order-2"))
    assert json.loads(command(msg2)["initial_state_json"]) == {"runs": 1, "seen": [{"n": 1}]}


def test_exclusion_and_missing_parameter_start_nothing(stack, worker, commands):
    h = handler("count2", {"type": "form"}, event={"exclude": {"allowedToShare": False}},
                params={"who": "person.name"})
    stack.apply_handler(h)
    stack.send_event({"id": "f-excluded", "type": "form", "allowedToShare": False, "person": {"name": "a"}})
    stack.send_event({"id": "f-no-param", "type": "form", "person": {}})
    stack.send_event({"id": "f-ok", "type": "form", "allowedToShare": True, "person": {"name": "b"}})
    [ok] = commands.wait_for(by_ref("id:f-ok"))
    assert json.loads(command(ok)["params_json"]) == {"who": "b"}
    commands.poll_for(1.0)
    refs = {command(m)["trigger_ref"] for m in commands.seen if m.key() == b"count2"}
    assert refs == {"id:f-ok"}


def test_tombstone_removes_handler(stack, worker, commands):
    h = handler("count3", {"type": "tomb"})
    stack.apply_handler(h)
    stack.send_event({"id": "t-1", "type": "tomb"})
    commands.wait_for(by_ref("id:t-1"))
    stack.delete_handler(h["id"])
    stack.apply_handler(handler("count4", {"type": "marker"}))
    stack.send_event({"id": "t-2", "type": "tomb"})
    stack.send_event({"id": "t-sentinel", "type": "marker"})
    commands.wait_for(by_ref("id:t-sentinel"))
    commands.poll_for(1.0)
    assert not [m for m in commands.seen if command(m)["trigger_ref"] == "id:t-2"]


def test_replayed_event_starts_nothing_new(stack, worker, commands, results):
    h = handler("count5", {"type": "replay"})
    stack.apply_handler(h)
    event = {"id": "r-1", "type": "replay"}
    stack.send_event(event)
    [first] = commands.wait_for(by_ref("id:r-1"))
    results.wait_for(by_run(command(first)["run_id"]))
    stack.send_event(event)  # the same event again, e.g. a producer retry or a replay
    stack.send_event({"id": "r-sentinel", "type": "replay"})
    commands.wait_for(by_ref("id:r-sentinel"))
    commands.poll_for(1.0)
    assert len([m for m in commands.seen if command(m)["trigger_ref"] == "id:r-1"]) == 1
    assert "already scheduled" in worker.log_text()


def test_invalid_handler_is_rejected_with_reason(stack, worker):
    rejections = stack.reader(stack.topics.handler_rejections)
    bad_id = unique("bad")
    stack.apply_handler({"id": bad_id, "job": "count6"}, wait=False)  # no trigger
    stack.produce(stack.topics.handlers, b"{not json", unique("garbled").encode())
    [msg] = rejections.wait_for(lambda m: m.key() == bad_id.encode())
    record = json.loads(msg.value())
    assert record["handler_id"] == bad_id
    assert "exactly one trigger of event, cron, after is required" in record["reason"]
    assert dict(msg.headers())["reason"].decode() == record["reason"]
    [garbled] = rejections.wait_for(lambda m: m.key().startswith(b"garbled-"))
    assert json.loads(garbled.value())["reason"].startswith("not JSON")
    rejections.close()
    assert f"handler {bad_id} rejected" in worker.log_text()


@pytest.mark.parametrize("value, reason", [
    (b"this is not json", "not JSON"),
    (b"[1, 2, 3]", "not an object"),
    (b"\xff\xfe", "not UTF-8"),
])
def test_non_object_event_is_dead_lettered(stack, worker, commands, value, reason):
    dead = stack.reader(stack.topics.dead_letter)
    key = unique("dlq").encode()
    stack.produce(stack.topics.events, value, key)
    [msg] = dead.wait_for(lambda m: m.key() == key)
    headers = dict(msg.headers())
    assert msg.value() == value
    assert reason in headers["reason"].decode()
    assert headers["source_topic"].decode() == stack.topics.events
    dead.close()
    # the worker keeps going
    h = handler("count7", {"type": "after-dlq"})
    stack.apply_handler(h)
    ref = unique("after")
    stack.send_event({"id": ref, "type": "after-dlq"}, key=key.decode())
    commands.wait_for(by_ref(f"id:{ref}"))


def test_state_size_limits(stack, worker, commands, results, events):
    h = handler("grow1", {"type": "grow"}, params={"size": "size"})
    stack.apply_handler(h)

    def run(ref: str, size: int) -> tuple[dict[str, Any], dict[str, Any]]:
        stack.send_event({"id": ref, "type": "grow", "size": size})
        [c] = commands.wait_for(by_ref(f"id:{ref}"))
        cmd = command(c)
        [r] = results.wait_for(by_run(cmd["run_id"]))
        events.wait_for(internal(cmd["run_id"]))
        return cmd, result(r)

    _, r1 = run("g-small", 100)
    _, r2 = run("g-huge", 60_000)
    assert r2["status"] == "succeeded" and len(r2["final_state_json"]) > 50_000
    [warning] = events.wait_for(internal(r2["run_id"], "JobState Size Warning"))
    assert json.loads(warning.value())["stored"] is False
    c3, r3 = run("g-big", 12_000)
    assert c3["initial_state_json"] == r1["final_state_json"]  # the huge state was not stored
    [warning3] = events.wait_for(internal(r3["run_id"], "JobState Size Warning"))
    assert json.loads(warning3.value())["stored"] is True
    c4, _ = run("g-next", 10)
    assert c4["initial_state_json"] == r3["final_state_json"]


def test_failed_and_timed_out_runs(stack, worker, commands, results, events):
    stack.apply_handler(handler("explode", {"type": "boom"}, params={"n": "n"}))
    stack.apply_handler(handler("sleepy", {"type": "nap"}, params={"seconds": "s"}, timeout_seconds=0.5))
    stack.send_event({"id": "boom-1", "type": "boom", "n": 7})
    stack.send_event({"id": "nap-1", "type": "nap", "s": 3})
    [boom] = commands.wait_for(by_ref("id:boom-1"))
    [nap] = commands.wait_for(by_ref("id:nap-1"))
    [rb] = results.wait_for(by_run(command(boom)["run_id"]))
    [rn] = results.wait_for(by_run(command(nap)["run_id"]))
    assert result(rb)["status"] == "failed" and "ValueError: bad input 7" in result(rb)["error"]
    assert result(rn)["status"] == "timed_out" and "0.5" in result(rn)["error"]
    [eb] = events.wait_for(internal(command(boom)["run_id"]))
    assert json.loads(eb.value())["new_status"] == "failed"
    [en] = events.wait_for(internal(command(nap)["run_id"]))
    assert json.loads(en.value())["new_status"] == "timed_out"


def test_a_slow_job_does_not_hold_up_the_others(stack, worker, commands, results):
    stack.apply_handler(handler("sleepy", {"type": "slow"}, params={"seconds": "s"}, timeout_seconds=20))
    fast = handler("count6", {"type": "fast"})
    stack.apply_handler(fast)
    stack.send_event({"id": "slow-1", "type": "slow", "s": 4})
    stack.send_event({"id": "fast-1", "type": "fast"})
    [slow_cmd] = commands.wait_for(by_ref("id:slow-1"))
    [fast_cmd] = commands.wait_for(by_ref("id:fast-1"))
    [fast_done] = results.wait_for(by_run(command(fast_cmd)["run_id"]))
    assert not [m for m in results.seen if result(m)["run_id"] == command(slow_cmd)["run_id"]]
    [slow_done] = results.wait_for(by_run(command(slow_cmd)["run_id"]))
    assert result(slow_done)["status"] == "succeeded"
    assert result(fast_done)["finished_at"] < result(slow_done)["finished_at"]


def test_results_of_runs_never_scheduled_are_dead_lettered(stack, worker, events):
    """A run result for a run id the engine never scheduled (a stray executor, a forged
    record) is kept with its reason and settles nothing; the worker goes on."""
    from streams.contracts import avro

    dead = stack.reader(stack.topics.dead_letter)
    base = {"job": "count7", "handler_id": "external", "error": None, "attempt": 1,
            "started_at": 1_700_000_000_000, "finished_at": 1_700_000_000_050, "runner": "external-executor"}
    stack.produce(stack.topics.run_results, avro.results().encode(
        {**base, "run_id": "ext-bad", "status": "succeeded", "final_state_json": "[1, 2]"}), b"count7")
    stack.produce(stack.topics.run_results, avro.results().encode(
        {**base, "run_id": "ext-good", "status": "succeeded", "final_state_json": '{"ok": true}'}), b"count7")
    for run in ("ext-bad", "ext-good"):
        [msg] = dead.wait_for(lambda m, run=run: dict(m.headers()).get("run_id") == run.encode())
        assert "never scheduled" in dict(msg.headers())["reason"].decode()
    events.poll_for(1.0)
    assert not [m for m in events.seen if b"ext-good" in m.value()]
    dead.close()
