"""Kill -9 a worker that owns a job's partition: cursors stay exact, pending retries happen
once. Each test starts and stops its own workers (no module worker)."""

from __future__ import annotations

import signal

import pytest

from tests.conftest import Stack, command, unique
from tests.test_e2e_guarantees import check_exact_cursor, internal_of, of_handler, send_all

pytestmark = pytest.mark.broker


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
