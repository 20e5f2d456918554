"""Kill -9 a worker that owns a job's partition: cursors stay exact, pending retries happen
once. Each test starts and stops its own workers (no module worker)."""

from __future__ import annotations

import json
import signal
import time
from typing import Any

import pytest

from tests.conftest import Stack, TopicReader, command, result, unique
from tests.test_e2e_guarantees import check_exact_cursor, internal_of, of_handler, send_all

pytestmark = [pytest.mark.broker, pytest.mark.slow]


@pytest.mark.parametrize("restart", ["same", "fresh"])
def test_cursor_stays_exact_across_a_kill_of_the_owning_worker(stack: Stack, restart: str):
    commands, results = stack.reader(stack.topics.job_commands), stack.reader(stack.topics.run_results)
    w = stack.start_worker(unique("victim"))
    w.wait_ready()
    job = "tick2" if restart == "same" else "tick3"
    h = {"id": unique("cursor-kill"), "job": job, "event": {"match": {"type": f"kill-{restart}"}}}
    stack.apply_handler(h)
    send_all(stack, [{"id": unique("k"), "type": f"kill-{restart}", "i": i} for i in range(100)])
    commands.wait_for(of_handler(h["id"]), count=30, timeout=120)
    w.stop(signal.SIGKILL)
    again = stack.start_worker(unique("heir"), datadir=w.datadir if restart == "same" else None)
    again.wait_ready()
    check_exact_cursor(commands, results, h["id"], 100)
    again.stop()
    commands.close()
    results.close()


def test_a_pending_retry_happens_once_across_a_failover(stack: Stack):
    commands, events = stack.reader(stack.topics.job_commands), stack.reader(stack.topics.events)
    w = stack.start_worker(unique("retry-victim"))
    w.wait_ready()
    h = {"id": unique("retry-failover"), "job": "flaky", "event": {"match": {"type": "retry-failover"}},
         "params": {"succeed_at": "succeed_at"},
         "retry": {"attempts": 3, "backoff": {"initial_seconds": 4, "factor": 1}}}
    stack.apply_handler(h)
    stack.send_event({"id": unique("rf"), "type": "retry-failover", "succeed_at": 2})
    [first] = commands.wait_for(of_handler(h["id"]))
    run_id = command(first)["run_id"]
    events.wait_for(internal_of(run_id, "retrying"))
    w.stop(signal.SIGKILL)  # the retry is due in 4 s: it is the next owner's to send
    heir = stack.start_worker(unique("retry-heir"))
    heir.wait_ready()
    events.wait_for(internal_of(run_id, "finished"), timeout=90)
    commands.poll_for(3.0)
    attempts = [command(m)["attempt"] for m in commands.seen if command(m)["run_id"] == run_id]
    assert attempts.count(2) == 1 and attempts[0] == 1
    heir.stop()
    commands.close()
    events.close()


@pytest.mark.parametrize(("restart", "unbatched"), [(True, False), (False, False), (False, True)],
                         ids=["restart", "no-restart", "no-linger-no-window"])
def test_kill_one_of_two_workers_under_load_loses_no_run(stack: Stack, restart: bool, unbatched: bool):
    """Events at 300/s over 30 jobs; one of two workers is killed -9 under load. Counted
    from outside: every event has its command, and every job's cursor counts exactly its
    events.

    - restart=True: 1,000 events, the victim killed at 40% and restarted on its datadir.
      It never committed an offset (its commit interval is longer than its life): Faust
      drops records fetched during the rebalance and seeks back to the committed offsets,
      so partitions without one must be read again from their start (``faust_driver``).
      Both workers run without standby tables (SIGNALBOX_STANDBY_REPLICAS=0): a worker
      that takes a partition over restores its tables from the changelog first.
    - restart=False: 1,500 events, the victim killed at 40% after it committed, not
      restarted; standby tables as by default.
    - unbatched: as restart=False, both workers with SIGNALBOX_PRODUCER_LINGER_MS=0 and
      SIGNALBOX_SCHEDULE_BATCH_WINDOW_MS=0 (the latency settings: smaller batches, more of
      them in flight)."""
    tag = unique("load")
    commands, results = stack.reader(stack.topics.job_commands), stack.reader(stack.topics.run_results)
    total = 1000 if restart else 1500
    # Faust reads its settings from unprefixed environment variables
    standbys = {"SIGNALBOX_STANDBY_REPLICAS": "0"} if restart else {}
    latency = {"SIGNALBOX_PRODUCER_LINGER_MS": "0", "SIGNALBOX_SCHEDULE_BATCH_WINDOW_MS": "0"} if unbatched else {}
    victim_env = {"BROKER_COMMIT_INTERVAL": "600", **standbys} if restart else latency
    a, b = stack.start_worker(f"{tag}-a", env=victim_env), stack.start_worker(f"{tag}-b", env={**standbys, **latency})
    a.wait_ready()
    b.wait_ready()
    first_job = 0 if restart else 110 if unbatched else 30  # each variant its own jobs: cursors start at 0
    handlers = [{"id": f"{tag}-{j}", "job": f"load{first_job + j}", "event": {"match": {"type": tag, "job": j}}}
                for j in range(30)]
    for h in handlers:
        stack.apply_handler(h, wait=False)
    stack.wait_logged(f"handler {handlers[-1]['id']} applied")
    p = stack.producer()
    sent: dict[str, int] = {}
    start = time.monotonic()
    wall_start = time.time()
    for i in range(total):
        while time.monotonic() < start + i / 300:
            time.sleep(0.001)
        event_id = f"{tag}-e{i}"
        sent[event_id] = i % 30
        p.produce(stack.topics.events, json.dumps({"id": event_id, "type": tag, "job": i % 30}).encode(), b"k")
        p.poll(0)
        if i == total * 2 // 5:
            kill_time = time.time()
            a.stop(signal.SIGKILL)
            if restart:
                a.start()
    assert p.flush(30) == 0
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        commands.poll_for(1.0)
        refs = {command(m)["trigger_ref"] for m in commands.seen if command(m)["handler_id"].startswith(tag)}
        if len(refs) == len(sent):
            break
    mine = [command(m) for m in commands.seen if command(m)["handler_id"].startswith(tag)]
    lost = {f"id:{e}" for e in sent} - {c["trigger_ref"] for c in mine}
    twice = len(mine) - len({c["run_id"] for c in mine})
    if lost:
        by_job: dict[int, list[int]] = {}
        for ref in lost:
            i = int(ref.rsplit("-e", 1)[1])
            by_job.setdefault(i % 30, []).append(i)
        jobs = {f"load{first_job + j}": f"{len(ix)} from e{min(ix)}" for j, ix in sorted(by_job.items())}
        raise AssertionError(f"{len(lost)} events without a command ({twice} commands repeated), "
                             f"kill at e{total * 2 // 5}: {jobs}\n" + where_lost(stack, tag, lost, mine, results))
    per_job = {j: sum(1 for v in sent.values() if v == j) for j in range(30)}
    deadline = time.monotonic() + 120
    final: dict[int, int] = {}
    while time.monotonic() < deadline and final != per_job:
        results.poll_for(1.0)
        for m in results.seen:
            r = result(m)
            if r["handler_id"].startswith(tag) and r["status"] == "succeeded":
                j = int(r["handler_id"].rsplit("-", 1)[1])
                final[j] = max(final.get(j, 0), json.loads(r["final_state_json"])["count"])
    if final != per_job:
        bad = [j for j in per_job if final.get(j) != per_job[j]][:2]
        detail = []
        for j in bad:
            for c in mine:
                if c["handler_id"] == f"{tag}-{j}":
                    detail.append(f"job {j} run {c['run_id'][:8]} state {c['initial_state_json']} "
                                  f"at {c['created_at'].timestamp() - wall_start:.3f} ref {c['trigger_ref'][-6:]}")
        killed = f"kill at {kill_time - wall_start:.3f}"
        raise AssertionError(f"cursor counts differ: {final} != {per_job}\n{killed}\n" + "\n".join(detail))
    for w in (a, b):
        w.stop()
    commands.close()
    results.close()


def where_lost(stack: Stack, tag: str, lost: set[str], mine: list[dict[str, Any]], results: TopicReader) -> str:
    """Which hop lost the events without a command, read from outside: were their triggers
    written (the match step), and did each affected job's last command get a result (a job
    whose running run never settles keeps its queue)?"""
    triggers = stack.reader(stack.topics.triggers)
    triggers.poll_for(5.0)
    written: dict[str, tuple[str, int, int]] = {}  # trigger_ref -> (handler, partition, offset)
    for m in triggers.seen:
        for t in json.loads(m.value()):
            if t["trigger_ref"] in lost:
                written[t["trigger_ref"]] = (t["handler_id"], m.partition(), m.offset())
    triggers.close()
    results.poll_for(2.0)
    settled = {result(m)["run_id"] for m in results.seen}
    lines = [f"{len(written)} of {len(lost)} events without a command have a trigger on the triggers topic"]
    for handler_id in sorted({h for h, _, _ in written.values()}):
        runs = [c for c in mine if c["handler_id"] == handler_id]
        first = min((p, o) for h, p, o in written.values() if h == handler_id)
        last = (f"its last command {runs[-1]['run_id'][:8]} "
                f"{'has a result' if runs[-1]['run_id'] in settled else 'has NO result'}") if runs else "no command"
        lines.append(f"{handler_id}: {len(runs)} commands, {last}; first trigger without a command at "
                     f"partition {first[0]} offset {first[1]}")
    return "\n".join(lines)
