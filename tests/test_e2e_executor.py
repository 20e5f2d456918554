"""Workers with their own settings: a small job queue, no built-in runner (the test is the
external executor). One worker at a time in this module's stack."""

from __future__ import annotations

import json
import time

import pytest

from tests.conftest import Stack, command, result, unique
from tests.test_e2e_guarantees import internal_of, of_handler, results_of, send_all

pytestmark = pytest.mark.broker


def test_the_queue_is_bounded_and_overflow_is_dead_lettered(stack: Stack, commands, results):
    w = stack.start_worker(unique("small-queue"), env={"SIGNALBOX_JOB_QUEUE_MAX": "3"})
    w.wait_ready()
    dead = stack.reader(stack.topics.dead_letter)
    h = {"id": unique("overflow"), "job": "sleepy1", "event": {"match": {"type": "overflow"}},
         "params": {"seconds": "s"}}
    stack.apply_handler(h)
    send_all(stack, [{"id": unique("o"), "type": "overflow", "s": 0.5} for _ in range(8)])
    overflow = dead.wait_for(lambda m: dict(m.headers()).get("handler_id") == h["id"].encode(), count=4)
    assert all("queue is full" in dict(m.headers())["reason"].decode() for m in overflow)
    jobs = stack.cli("jobs", "--json", "sleepy1")
    [row] = [json.loads(line) for line in jobs.stdout.splitlines()]
    assert len(row["running"]) == 1 and row["waiting"] <= 3
    results.wait_for(results_of(h["id"]), count=4, timeout=60)
    dead.poll_for(1.0)
    assert len([m for m in dead.seen if dict(m.headers()).get("handler_id") == h["id"].encode()]) == 4
    w.stop()
    dead.close()


def test_an_external_executor_speaks_the_two_topics(stack: Stack, commands, events):
    """A worker without a runner: this test is the executor. Its result with a broken final
    state is dead-lettered and settles the run as failed; the job's next run starts."""
    from streams.contracts import avro

    w = stack.start_worker(unique("no-runner"), "--no-runner")
    w.wait_ready()
    dead = stack.reader(stack.topics.dead_letter)
    h = {"id": unique("external"), "job": "elsewhere", "event": {"match": {"type": "external"}}}
    stack.apply_handler(h)
    send_all(stack, [{"id": unique("x"), "type": "external", "i": i} for i in range(2)])
    [first] = commands.wait_for(of_handler(h["id"]))
    commands.poll_for(1.0)
    assert len([m for m in commands.seen if command(m)["handler_id"] == h["id"]]) == 1  # the second waits
    c = command(first)
    base = {"run_id": c["run_id"], "job": c["job"], "handler_id": c["handler_id"], "attempt": c["attempt"],
            "error": None, "started_at": int(time.time() * 1000), "finished_at": int(time.time() * 1000),
            "runner": "external-executor"}
    stack.produce(stack.topics.run_results, avro.results().encode(
        {**base, "status": "succeeded", "final_state_json": "[1, 2]"}), c["job"].encode())
    [msg] = dead.wait_for(lambda m: dict(m.headers()).get("run_id") == c["run_id"].encode())
    assert "JSON object" in dict(msg.headers())["reason"].decode()
    events.wait_for(internal_of(c["run_id"], "failed"))
    second = commands.wait_for(of_handler(h["id"]), count=2)[1]
    assert command(second)["run_id"] != c["run_id"]
    w.stop()
    dead.close()


def test_sync_jobs_get_a_thread_each_up_to_the_runner_concurrency(stack: Stack, results):
    """16 sync runs of 1 s at once (one job, handler concurrency 16, timeout 1.8 s: shorter
    than two runs back to back), on a runner with 16 slots: all 16 run at once, each on a
    thread of the runner's own pool, and none times out. On the loop's default executor
    (min(32, CPUs + 4) threads: 6 on a 2-core machine) the runs beyond its threads waited
    for one while their timeout ran."""
    w = stack.start_worker(unique("pool"), env={"SIGNALBOX_RUNNER_CONCURRENCY": "16"})
    w.wait_ready()
    kind = unique("nap")
    h = {"id": unique("naps"), "job": "nap", "event": {"match": {"type": kind}}, "params": {"seconds": "s"},
         "concurrency": 16, "timeout_seconds": 1.8}
    stack.apply_handler(h)
    send_all(stack, [{"id": unique("n"), "type": kind, "s": 1} for _ in range(16)])
    done = [result(m) for m in results.wait_for(results_of(h["id"]), count=16, timeout=60)]
    assert [r["status"] for r in done] == ["succeeded"] * 16, [r["error"] for r in done]
    spans = [json.loads(r["final_state_json"]) for r in done]
    assert max(s["began"] for s in spans) < min(s["ended"] for s in spans)  # all 16 at once
    assert len({r["runner"] for r in done}) == 1
    w.stop()


def test_sync_jobs_stuck_past_their_timeout_do_not_starve_the_next_ones(stack: Stack, results):
    """A runner with 2 slots; 2 sync runs that sleep 4 s with a 0.5 s timeout time out and
    keep their threads (Python cannot kill one). The next 2 runs (0.2 s, timeout 1.5 s) start
    at once on a fresh pool and succeed: they do not wait for the stuck threads while their
    own timeout runs."""
    w = stack.start_worker(unique("stuck"), env={"SIGNALBOX_RUNNER_CONCURRENCY": "2"})
    w.wait_ready()
    stuck_kind, next_kind = unique("stuck"), unique("next")
    stuck = {"id": unique("stucks"), "job": "nap1", "event": {"match": {"type": stuck_kind}},
             "params": {"seconds": "s"}, "concurrency": 2, "timeout_seconds": 0.5}
    after = {"id": unique("nexts"), "job": "nap2", "event": {"match": {"type": next_kind}},
             "params": {"seconds": "s"}, "concurrency": 2, "timeout_seconds": 1.5}
    for h in (stuck, after):
        stack.apply_handler(h)
    send_all(stack, [{"id": unique("s"), "type": stuck_kind, "s": 4} for _ in range(2)])
    timed_out = [result(m) for m in results.wait_for(results_of(stuck["id"]), count=2, timeout=60)]
    assert [r["status"] for r in timed_out] == ["timed_out"] * 2
    sent = time.time()
    send_all(stack, [{"id": unique("n"), "type": next_kind, "s": 0.2} for _ in range(2)])
    done = [result(m) for m in results.wait_for(results_of(after["id"]), count=2, timeout=60)]
    assert [r["status"] for r in done] == ["succeeded"] * 2, [r["error"] for r in done]
    assert all(json.loads(r["final_state_json"])["began"] < sent + 3 for r in done)  # not after the stuck ones
    w.stop()


def test_the_worker_sets_the_thread_switch_interval_its_settings_name(stack: Stack, results):
    """Jobs, Faust's consumer thread and the loop hand the GIL to each other at every record:
    the worker sets how often (1 ms by default; Python's own is 5 ms)."""
    w = stack.start_worker(unique("switch"), env={"SIGNALBOX_GIL_SWITCH_INTERVAL_MS": "2.5"})
    w.wait_ready()
    kind = unique("switch")
    h = {"id": unique("switch"), "job": "switchinterval", "event": {"match": {"type": kind}}}
    stack.apply_handler(h)
    send_all(stack, [{"id": unique("s"), "type": kind}])
    [done] = [result(m) for m in results.wait_for(results_of(h["id"]), timeout=60)]
    assert done["status"] == "succeeded", done["error"]
    assert json.loads(done["final_state_json"]) == {"seconds": 0.0025}
    w.stop()
