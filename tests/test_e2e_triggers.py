"""Every trigger kind end to end on the real broker: cron with failover, run now, flow and
catch, once-armed listeners."""

from __future__ import annotations

import json
import signal
import time
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

import pytest

from streams.kafka.partitioning import job_partition
from tests.conftest import Stack, TopicReader, WorkerProcess, command, result, unique

pytestmark = pytest.mark.broker


def of_handler(handler_id: str):
    return lambda m: command(m)["handler_id"] == handler_id


def tick_time(cmd: dict[str, Any]) -> float:
    return datetime.strptime(cmd["trigger_ref"], "cron:%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def owner(workers: list[WorkerProcess], handler_id: str) -> WorkerProcess:
    """The worker that has been sending the handler's ticks most recently."""
    def last_send(w: WorkerProcess) -> int:
        return w.log_text().rfind(f"cron {handler_id}: tick")
    return max(workers, key=last_send)


def test_cron_ticks_fire_once_across_a_sigkill_failover(stack: Stack):
    # Both jobs on one partition, so killing its owner interrupts both schedules.
    jobs = ("count0", "count3")
    part = job_partition(jobs[0], stack.topics.job_partitions)
    assert job_partition(jobs[1], stack.topics.job_partitions) == part, "pick two jobs on one partition"
    commands = stack.reader(stack.topics.job_commands)
    a, b = stack.start_worker("cron-a"), stack.start_worker("cron-b")
    a.wait_ready()
    b.wait_ready()
    once_each = {"id": unique("cron-run-once"), "job": jobs[0],
                 "cron": {"schedule": "*/2 * * * * *", "timezone": "Europe/Zurich"}}
    skipping = {"id": unique("cron-skip"), "job": jobs[1],
                "cron": {"schedule": "*/2 * * * * *", "timezone": "UTC", "misfire": "skip"}}
    stack.apply_handler(once_each)
    stack.apply_handler(skipping)
    commands.wait_for(of_handler(once_each["id"]), count=3)
    victim = owner([a, b], once_each["id"])
    survivor = b if victim is a else a
    killed_at = time.time()
    victim.stop(signal.SIGKILL)
    # ticks keep falling due while the partition has no owner; wait for the survivor
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        commands.poll_for(0.5)
        after = [command(m) for m in commands.seen if of_handler(once_each["id"])(m)]
        if sum(tick_time(c) > killed_at + 16 for c in after) >= 2:
            break
    survivor_log = survivor.log_text()
    assert f"cron {once_each['id']}: tick" in survivor_log

    def distinct_ticks(handler_id: str) -> list[float]:
        """Each tick's time once. A kill right after a tick's command was acknowledged and
        before the tables recording it reached their changelog (README, Guarantees, window
        2) lets the successor write that command again: the same run id and state, so one
        run; at most one such repeat per kill."""
        cmds = [command(m) for m in commands.seen if of_handler(handler_id)(m)]
        by_tick: dict[float, set[tuple[str, str | None]]] = {}
        for c in cmds:
            by_tick.setdefault(tick_time(c), set()).add((c["run_id"], c["initial_state_json"]))
        assert all(len(v) == 1 for v in by_tick.values()), f"a tick started two different runs: {by_tick}"
        assert len(cmds) - len(by_tick) <= 1, f"ticks repeated more than once: {sorted(map(tick_time, cmds))}"
        return sorted(by_tick)

    ticks = distinct_ticks(once_each["id"])
    gaps = [t2 - t1 for t1, t2 in pairwise(ticks)]
    assert gaps and all(g == 2.0 for g in gaps), f"a tick was lost (run_once): {ticks}"
    assert ticks[-1] > killed_at + 16

    skipped = distinct_ticks(skipping["id"])
    assert any(t2 - t1 > 2.0 for t1, t2 in pairwise(skipped)), \
        f"misfire: skip should drop the ticks missed during the failover: {skipped}"
    assert "misfire: skip" in survivor_log

    # a cron run starts with the job's cursor: the runs counter goes up by one each time
    runs = sorted({(tick_time(c), json.loads(c["initial_state_json"] or "{}").get("runs", 0))
                   for c in (command(m) for m in commands.seen if of_handler(once_each["id"])(m))})
    counts = [r for _, r in runs]
    assert counts[-1] >= 3 and counts == sorted(counts)
    survivor.stop()
    commands.close()


def settled(results: TopicReader, cmd: dict[str, Any]) -> dict[str, Any]:
    [r] = results.wait_for(lambda m: result(m)["run_id"] == cmd["run_id"])
    return result(r)


def test_run_now_and_cron_state_limits(stack: Stack, worker, commands, results):
    """Run now starts a cron handler's job at once with the same state rules; a cron run's
    oversized state is not stored, so every later run starts from the last small one."""
    h = {"id": unique("cron-grow"), "job": "grow2",
         "cron": {"schedule": "*/3 * * * * *", "params": {"size": 60_000}}}
    stack.apply_handler(h)
    # the first ticks produce 60 kB states: succeeded, not stored
    [first] = commands.wait_for(lambda m: command(m)["handler_id"] == h["id"] and command(m)["trigger_kind"] == "cron")
    assert settled(results, command(first))["status"] == "succeeded"
    ran = stack.cli("run", h["id"], "--params", '{"size": 100}')
    assert ran.returncode == 0, ran.stderr
    [manual] = commands.wait_for(
        lambda m: command(m)["trigger_kind"] == "manual" and command(m)["handler_id"] == h["id"])
    small = settled(results, command(manual))["final_state_json"]
    assert json.loads(command(manual)["params_json"]) == {"size": 100}
    assert json.loads(small)["pad"] == "x" * 100
    # every cron command after the manual run's settlement starts from that small state
    later = commands.wait_for(
        lambda m: command(m)["handler_id"] == h["id"] and command(m)["initial_state_json"] == small, count=2)
    big = settled(results, command(later[0]))
    assert len(big["final_state_json"]) > 50_000 and big["status"] == "succeeded"
    assert command(later[1])["initial_state_json"] == small
    stack.delete_handler(h["id"])
    unknown = stack.cli("run", "no-such-handler")
    assert unknown.returncode == 2 and "no handler" in unknown.stderr


def test_flow_chain_passes_state_and_catch_fires_on_failure(stack: Stack, worker, commands, results):
    a = {"id": unique("flow-a"), "job": "flowA", "event": {"match": {"type": "flow-start"}}}
    b = {"id": unique("flow-b"), "job": "flowB", "after": {"job": "flowA"}}
    c = {"id": unique("flow-c"), "job": "flowC", "after": {"job": "flowB", "status": "success"},
         "params": {"upstream_run": "run_id"}}
    catch = {"id": unique("catch"), "job": "flowD", "after": {"job": "explode", "status": "failure", "state": "own"},
             "params": {"error": "error"}}
    boom = {"id": unique("boom"), "job": "explode", "event": {"match": {"type": "flow-boom"}}}
    for h in (a, b, c, catch, boom):
        stack.apply_handler(h)

    stack.send_event({"id": unique("start"), "type": "flow-start"})
    [ca] = commands.wait_for(of_handler(a["id"]))
    ra = settled(results, command(ca))
    [cb] = commands.wait_for(of_handler(b["id"]))
    assert command(cb)["trigger_kind"] == "after"
    assert command(cb)["initial_state_json"] == ra["final_state_json"]  # OpenFn: upstream final state
    rb = settled(results, command(cb))
    [cc] = commands.wait_for(of_handler(c["id"]))
    assert json.loads(command(cc)["initial_state_json"]) == {"flowA": "event", "flowB": "after"}
    assert json.loads(command(cc)["params_json"]) == {"upstream_run": rb["run_id"]}
    assert json.loads(settled(results, command(cc))["final_state_json"]) == {
        "flowA": "event", "flowB": "after", "flowC": "after"}

    stack.send_event({"id": unique("boom"), "type": "flow-boom"})
    [cd] = commands.wait_for(of_handler(catch["id"]))
    assert "ValueError" in json.loads(command(cd)["params_json"])["error"]
    assert command(cd)["initial_state_json"] is None  # state: own, and flowD has none yet
    commands.poll_for(1.0)
    assert len([m for m in commands.seen if of_handler(b["id"])(m)]) == 1  # B ran once for A's one run


def test_flow_cycle_is_rejected(stack: Stack, worker):
    rejections = stack.reader(stack.topics.handler_rejections)
    stack.apply_handler({"id": unique("cyc-1"), "job": "count6", "after": {"job": "count7"}})
    bad = {"id": unique("cyc-2"), "job": "count7", "after": {"job": "count6"}}
    stack.apply_handler(bad, wait=False)
    [msg] = rejections.wait_for(lambda m: m.key() == bad["id"].encode())
    assert "cycle" in json.loads(msg.value())["reason"]
    rejections.close()


def test_once_armed_listener_fires_once_until_rearmed_and_survives_restart(stack: Stack, commands):
    w = stack.start_worker("once")
    w.wait_ready()
    # the seed's Aviso listener: {"event": "mars", "request": {"step": 0}}
    listener = {"id": unique("aviso-mars-step0"), "job": "count1", "once": True,
                "event": {"match": {"event": "mars", "request": {"step": 0}}}, "params": {"date": "request.date"}}
    stack.apply_handler(listener)
    notification = {"event": "mars", "request": {"class": "od", "step": 0, "date": "20261122"}}
    for i in range(3):
        stack.send_event({**notification, "id": unique(f"n{i}")})
    stack.send_event({"id": unique("sentinel"), "type": "order"})  # (no handler: just time passing)
    commands.wait_for(of_handler(listener["id"]))
    commands.poll_for(2.0)
    assert len([m for m in commands.seen if of_handler(listener["id"])(m)]) == 1
    assert "is disarmed" in w.log_text()

    # the disarmed flag is in RocksDB + changelog: a restarted worker keeps it
    assert w.stop() == 0
    w2 = stack.start_worker("once-2", datadir=w.datadir.parent / "fresh")
    w2.wait_ready()
    stack.send_event({**notification, "id": unique("n-after-restart")})
    commands.poll_for(3.0)
    assert len([m for m in commands.seen if of_handler(listener["id"])(m)]) == 1

    armed = stack.cli("handlers", "arm", listener["id"])
    assert armed.returncode == 0, armed.stderr
    stack.wait_logged(f"handler {listener['id']} applied")
    stack.send_event({**notification, "id": unique("n-rearmed")})
    stack.send_event({**notification, "id": unique("n-rearmed-2")})
    commands.wait_for(of_handler(listener["id"]), count=2)
    commands.poll_for(2.0)
    assert len([m for m in commands.seen if of_handler(listener["id"])(m)]) == 2
    w2.stop()


def test_flow_runs_follow_the_state_size_rules(stack: Stack, worker, commands, results):
    up = {"id": unique("grow-up"), "job": "grow3", "event": {"match": {"type": "grow-up"}},
          "params": {"size": "size"}}
    down = {"id": unique("grow-down"), "job": "grow4", "after": {"job": "grow3", "state": "own"},
            "params": {"size": "state_bytes"}}  # the downstream state is as large as the upstream one
    stack.apply_handler(up)
    stack.apply_handler(down)
    events = stack.reader(stack.topics.events)

    def downstream_run(ref: str, size: int) -> tuple[dict[str, Any], dict[str, Any]]:
        stack.send_event({"id": ref, "type": "grow-up", "size": size})
        [u] = commands.wait_for(lambda m: command(m)["trigger_ref"] == f"id:{ref}")
        upstream_run = command(u)["run_id"]
        [d] = commands.wait_for(lambda m: command(m)["trigger_ref"] == f"after:{upstream_run}")
        r = settled(results, command(d))
        events.wait_for(lambda m: b'"JobRun Status Change"' in m.value() and r["run_id"].encode() in m.value())
        return command(d), r

    _, small = downstream_run(unique("small"), 100)
    _, huge = downstream_run(unique("huge"), 60_000)
    assert huge["status"] == "succeeded" and len(huge["final_state_json"]) > 50_000
    [warning] = events.wait_for(
        lambda m: b"JobState Size Warning" in m.value() and huge["run_id"].encode() in m.value())
    assert json.loads(warning.value())["stored"] is False
    next_cmd, _ = downstream_run(unique("again"), 100)
    assert next_cmd["initial_state_json"] == small["final_state_json"]
    events.close()
