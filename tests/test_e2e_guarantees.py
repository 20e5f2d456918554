"""The guarantees under load, faults and bad input: exact cursors, the job queue, retries.

Everything is counted from outside with plain confluent-kafka clients; commands and
results are decoded from the .avsc files alone.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.conftest import Stack, TopicReader, command, result, unique

pytestmark = pytest.mark.broker


def of_handler(handler_id: str):
    return lambda m: command(m)["handler_id"] == handler_id


def results_of(handler_id: str):
    return lambda m: result(m)["handler_id"] == handler_id


def internal_of(run_id: str, status: str):
    def hit(m: Any) -> bool:
        if b'"source":"internal"' not in m.value() or run_id.encode() not in m.value():
            return False
        return json.loads(m.value()).get("new_status") == status
    return hit


def send_all(stack: Stack, events: list[dict[str, Any]]) -> None:
    """Produce every event before waiting for any acknowledgement: they arrive at once."""
    p = stack.producer()
    for e in events:
        p.produce(stack.topics.events, json.dumps(e).encode(), b"k")
    assert p.flush(30) == 0


def distinct_commands(reader: TopicReader, handler_id: str) -> dict[str, list[dict[str, Any]]]:
    """Run id -> every command written for it, in topic order."""
    out: dict[str, list[dict[str, Any]]] = {}
    for m in reader.seen:
        c = command(m)
        if c["handler_id"] == handler_id:
            out.setdefault(c["run_id"], []).append(c)
    return out


def check_exact_cursor(commands: TopicReader, results: TopicReader, handler_id: str, n: int) -> None:
    """n runs, each started from the state its predecessor left, and a final count of n."""
    end = time.monotonic() + 120
    while len(runs := distinct_commands(commands, handler_id)) < n and time.monotonic() < end:
        commands.poll_for(0.5)
    assert len(runs) == n
    starts = []
    for run_id, cmds in runs.items():
        states = {c["initial_state_json"] for c in cmds}
        assert len(states) == 1, f"run {run_id} was commanded with different states: {states}"
        starts.append(json.loads(cmds[0]["initial_state_json"] or "{}").get("count", 0))
    # in topic order (one job: one partition), each command carries the next count
    assert starts == list(range(n))
    results.wait_for(lambda m: result(m)["handler_id"] == handler_id and result(m)["status"] == "succeeded"
                     and json.loads(result(m)["final_state_json"])["count"] == n, timeout=120)
    counts = [json.loads(result(m)["final_state_json"])["count"] for m in results.seen
              if result(m)["handler_id"] == handler_id]
    assert max(counts) == n


def test_a_hundred_events_of_one_job_at_once_give_a_hundred_consecutive_states(stack: Stack, worker, commands,
                                                                                results):
    h = {"id": unique("cursor"), "job": "tick1", "event": {"match": {"type": h_type(1)}}}
    stack.apply_handler(h)
    send_all(stack, [{"id": unique("c"), "type": h_type(1), "i": i} for i in range(100)])
    check_exact_cursor(commands, results, h["id"], 100)
    jobs = stack.cli("jobs", "--json")
    assert jobs.returncode == 0, jobs.stderr
    [row] = [r for r in map(json.loads, jobs.stdout.splitlines()) if r["job"] == "tick1"]
    assert row["running"] == [] and row["waiting"] == 0


def h_type(n: int) -> str:
    return f"cursor-{n}"


def test_retries_fail_twice_then_succeed_flow_fires_once(stack: Stack, worker, commands, results, events):
    flaky = {"id": unique("flaky"), "job": "flaky", "event": {"match": {"type": "flaky"}},
             "params": {"succeed_at": "succeed_at"},
             "retry": {"attempts": 3, "backoff": {"initial_seconds": 0.5, "factor": 2, "max_seconds": 5}}}
    flow = {"id": unique("after-flaky"), "job": "count4", "after": {"job": "flaky", "status": "success"}}
    catch = {"id": unique("catch-flaky"), "job": "count5", "after": {"job": "flaky", "status": "failure"}}
    for h in (flaky, flow, catch):
        stack.apply_handler(h)
    stack.send_event({"id": unique("f"), "type": "flaky", "succeed_at": 3})
    done = results.wait_for(lambda m: result(m)["handler_id"] == flaky["id"] and result(m)["status"] == "succeeded")
    run_id = result(done[0])["run_id"]
    attempts = [result(m) for m in results.seen if result(m)["run_id"] == run_id]
    assert [(r["attempt"], r["status"]) for r in attempts] == [(1, "failed"), (2, "failed"), (3, "succeeded")]
    cmds = [command(m) for m in commands.wait_for(lambda m: command(m)["run_id"] == run_id, count=3)]
    assert [c["attempt"] for c in cmds] == [1, 2, 3]
    # backoff: 0.5 s after attempt 1 failed, 1 s after attempt 2 (the timer checks every 0.25 s here)
    for wait, failed, nxt in ((0.5, attempts[0], cmds[1]), (1.0, attempts[1], cmds[2])):
        gap = (nxt["created_at"] - failed["finished_at"]).total_seconds()
        assert wait - 0.05 <= gap <= wait + 3.0, gap
    results.wait_for(results_of(flow["id"]))
    events.wait_for(internal_of(run_id, "finished"))
    retrying = events.wait_for(internal_of(run_id, "retrying"), count=2)
    assert sorted(json.loads(m.value())["attempt"] for m in retrying) == [1, 2]
    results.poll_for(2.0)
    assert len([m for m in results.seen if result(m)["handler_id"] == flow["id"]]) == 1
    assert not [m for m in results.seen if result(m)["handler_id"] == catch["id"]]


def test_a_run_that_always_fails_gives_up_into_the_dead_letter_topic_and_catch_fires_once(
        stack: Stack, worker, commands, results, events):
    dead = stack.reader(stack.topics.dead_letter)
    h = {"id": unique("doomed"), "job": "explode1", "event": {"match": {"type": "doomed"}}, "params": {"n": "n"},
         "retry": {"attempts": 2, "backoff": {"initial_seconds": 0.2}}}
    catch = {"id": unique("catch-doomed"), "job": "count6", "after": {"job": "explode1", "status": "failure"}}
    for x in (h, catch):
        stack.apply_handler(x)
    stack.send_event({"id": unique("d"), "type": "doomed", "n": 7})
    [msg] = dead.wait_for(lambda m: dict(m.headers()).get("handler_id") == h["id"].encode())
    headers = {k: v.decode() for k, v in msg.headers()}
    assert headers["attempts"] == "2" and headers["limit"] == "attempts"
    assert "bad input 7" in headers["last_error"] and "gave up after 2 attempts" in headers["reason"]
    body = json.loads(msg.value())
    assert body["job"] == "explode1" and body["attempts"] == 2 and body["limit"] == "attempts"
    run_id = headers["run_id"]
    tried = results.wait_for(lambda m: result(m)["run_id"] == run_id, count=2)
    assert [result(m)["attempt"] for m in tried] == [1, 2]
    events.wait_for(internal_of(run_id, "failed"))
    results.wait_for(results_of(catch["id"]))
    results.poll_for(2.0)
    assert len([m for m in results.seen if result(m)["handler_id"] == catch["id"]]) == 1
    dead.close()


def test_max_age_stops_retries(stack: Stack, worker, results):
    dead = stack.reader(stack.topics.dead_letter)
    h = {"id": unique("aged"), "job": "explode2", "event": {"match": {"type": "aged"}},
         "retry": {"attempts": 10, "backoff": {"initial_seconds": 0.3, "factor": 1}, "max_age_seconds": 1.0}}
    stack.apply_handler(h)
    stack.send_event({"id": unique("a"), "type": "aged"})
    [msg] = dead.wait_for(lambda m: dict(m.headers()).get("handler_id") == h["id"].encode())
    headers = {k: v.decode() for k, v in msg.headers()}
    assert headers["limit"] == "max_age"
    results.poll_for(1.0)
    attempts = [result(m)["attempt"] for m in results.seen if result(m)["handler_id"] == h["id"]]
    assert 2 <= len(attempts) <= 4 and int(headers["attempts"]) == len(attempts)
    dead.close()


def test_a_job_may_opt_into_parallel_runs(stack: Stack, worker, commands, results):
    h = {"id": unique("parallel"), "job": "sleepy2", "event": {"match": {"type": "parallel"}},
         "params": {"seconds": "s"}, "concurrency": 4}
    stack.apply_handler(h)
    send_all(stack, [{"id": unique("p"), "type": "parallel", "s": 5} for _ in range(4)])
    cmds = commands.wait_for(of_handler(h["id"]), count=4, timeout=30)
    first_result = results.wait_for(results_of(h["id"]))[0]
    # all four started before any finished
    assert max(command(m)["created_at"] for m in cmds) < result(first_result)["finished_at"]


def test_retries_of_a_burst_hold_the_queue_and_keep_the_cursor_exact(stack: Stack, worker, commands, results,
                                                                     events):
    """20 events of one job at once, every first attempt fails: each retry starts from the
    same state as its first attempt (no other run slips in between), each run settles
    once, and the cursor counts 20."""
    h = {"id": unique("burst-retry"), "job": "flakycount", "event": {"match": {"type": "burst-retry"}},
         "retry": {"attempts": 2, "backoff": {"initial_seconds": 0.05}}}
    flow = {"id": unique("after-burst"), "job": "count7", "after": {"job": "flakycount", "status": "success"}}
    for x in (h, flow):
        stack.apply_handler(x)
    send_all(stack, [{"id": unique("br"), "type": "burst-retry"} for _ in range(20)])
    cmds = commands.wait_for(of_handler(h["id"]), count=40, timeout=120)
    starts = [(command(m)["run_id"], command(m)["attempt"],
               json.loads(command(m)["initial_state_json"] or "{}").get("count", 0)) for m in cmds]
    # in topic order: attempt 1 then attempt 2 of the same run, from the same state, then the next run
    assert [(a, c) for _, a, c in starts] == [(a, k) for k in range(20) for a in (1, 2)]
    assert all(starts[2 * k][0] == starts[2 * k + 1][0] for k in range(20))
    results.wait_for(lambda m: result(m)["handler_id"] == h["id"] and result(m)["status"] == "succeeded"
                     and json.loads(result(m)["final_state_json"])["count"] == 20, timeout=60)
    results.wait_for(results_of(flow["id"]), count=20, timeout=60)
    results.poll_for(2.0)
    assert len([m for m in results.seen if result(m)["handler_id"] == flow["id"]]) == 20
