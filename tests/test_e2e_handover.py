"""Run results handed from the worker's own runner to its schedule step beside the topic
(``engine/handover.py``), under a burst over several jobs, with a forged record on the
results topic among them and a kill -9 of the worker in the middle. Counted from outside:
every run commanded once from the state its predecessor left, settled once."""

from __future__ import annotations

import json
import signal
import time

import pytest

from streams.contracts import avro
from tests.conftest import Stack, command, result, unique
from tests.test_e2e_guarantees import check_exact_cursor, send_all
from tests.test_metrics import Samples, free_port, value, wait_until

pytestmark = pytest.mark.broker

JOBS, EACH = 6, 40


def burst(stack: Stack, name: str, first_job: int) -> list[str]:
    """JOBS handlers of JOBS cursor jobs (load<first_job>...), EACH events of each at once
    (interleaved)."""
    kind = unique(name)
    ids = []
    for j in range(JOBS):
        h = {"id": unique(f"{name}{j}"), "job": f"load{first_job + j}", "event": {"match": {"type": kind, "j": j}}}
        stack.apply_handler(h)
        ids.append(h["id"])
    send_all(stack, [{"id": unique("e"), "type": kind, "j": j, "i": i} for i in range(EACH) for j in range(JOBS)])
    return ids


def test_each_result_is_settled_once_whichever_copy_comes_first(stack: Stack, commands, results):
    port = free_port()
    w = stack.start_worker(unique("handover"), env={"SIGNALBOX_METRICS_PORT": str(port)})
    w.wait_ready()
    url = f"http://127.0.0.1:{port}/metrics"
    dead = stack.reader(stack.topics.dead_letter)
    ids = burst(stack, "handover", 100)
    # hostile: a result no runner wrote, for a run never scheduled, among the real ones
    forged = unique("forged")
    stack.produce(stack.topics.run_results, avro.results().encode({
        "run_id": forged, "job": "load100", "handler_id": "nobody", "attempt": 1, "status": "succeeded",
        "started_at": 0, "finished_at": 0, "runner": "forger", "final_state_json": '{"count": 999}',
        "error": None}), b"load100")
    for handler_id in ids:
        check_exact_cursor(commands, results, handler_id, EACH)
    [bad] = dead.wait_for(lambda m: dict(m.headers()).get("run_id") == forged.encode())
    assert "never scheduled" in dict(bad.headers())["reason"].decode()
    # every result the runner handed over has had exactly one twin skipped (its own record, or
    # itself when the record came first): no result settled twice, none left unsettled; and
    # every command handed to the runner had its record skipped (no run started twice)
    def twins_skipped(s: Samples) -> None:
        for record in ("result", "command"):
            offered = value(s, "signalbox_handovers_total", record=record, outcome="offered")
            assert value(s, "signalbox_handovers_total", record=record, outcome="skipped") == offered, record

    samples = wait_until(url, twins_skipped)
    for record in ("result", "command"):
        assert value(samples, "signalbox_handovers_total", record=record, outcome="offered") >= JOBS * EACH * 0.5
    for j in range(JOBS):
        assert value(samples, "signalbox_runs_total", job=f"load{100 + j}", status="succeeded") == EACH
    assert "a repeat" not in w.log_text()
    w.stop()
    dead.close()


def test_a_kill_in_the_middle_of_a_burst_loses_and_repeats_no_run(stack: Stack, commands, results):
    """kill -9 while results are being handed over: what the dead worker settled but had not
    written is settled again from the topic by the restarted one, exactly once."""
    name = unique("handkill")
    w = stack.start_worker(name)
    w.wait_ready()
    ids = burst(stack, "handkill", 110)
    commands.wait_for(lambda m: command(m)["handler_id"] in ids, count=JOBS * 5)  # the burst is under way
    w.stop(signal.SIGKILL)
    w.start()
    w.wait_ready()
    for handler_id in ids:
        check_exact_cursor(commands, results, handler_id, EACH)
    jobs = stack.cli("jobs", "--json")
    rows = {r["job"]: r for r in map(json.loads, jobs.stdout.splitlines())}
    for j in range(JOBS):
        assert rows[f"load{110 + j}"]["running"] == [] and rows[f"load{110 + j}"]["waiting"] == 0
    w.stop()



def test_runners_rebalancing_in_the_middle_of_a_burst_keep_every_cursor_exact(stack: Stack, commands, results):
    """Two workers, each with its runner inside, under a steady load of 40 events/s over 6
    jobs for 15 s; a third worker joins after 3 s, while commands are being handed over (the
    command partitions move between the runners: a command handed to one runner may be read,
    and run again, by another, README "Guarantees" case 1), and one of the first two leaves
    (SIGTERM) after 9 s. Counted from outside: every run commanded from the state its
    predecessor left, none lost, every queue empty at the end."""
    name = unique("handmove")
    a, b = stack.start_worker(f"{name}-a"), stack.start_worker(f"{name}-b")
    a.wait_ready()
    b.wait_ready()
    kind, each = unique("handmove"), 100
    ids = []
    for j in range(JOBS):
        h = {"id": unique(f"handmove{j}"), "job": f"load{120 + j}", "event": {"match": {"type": kind, "j": j}}}
        stack.apply_handler(h)
        ids.append(h["id"])
    producer = stack.producer()
    start, c = time.monotonic(), None
    for i in range(JOBS * each):
        while time.monotonic() < start + i / 40:
            time.sleep(0.002)
        producer.produce(stack.topics.events, json.dumps({"id": unique("e"), "type": kind, "j": i % JOBS}).encode(),
                         b"k")
        producer.poll(0)
        if i == 120:
            c = stack.start_worker(f"{name}-c")
        elif i == 360:
            assert a.process is not None
            a.process.send_signal(signal.SIGTERM)
    assert producer.flush(30) == 0
    assert a.process is not None
    a.process.wait(60)  # left the group
    assert c is not None
    for handler_id in ids:
        check_exact_cursor(commands, results, handler_id, each)
    # the partitions moved: the runs of the burst were run by all three workers' runners
    runners = {result(m)["runner"].rsplit("/", 1)[1] for m in results.seen if result(m)["handler_id"] in ids}
    assert {str(w.process.pid) for w in (a, b, c) if w.process is not None} <= runners
    jobs = stack.cli("jobs", "--json")
    rows = {r["job"]: r for r in map(json.loads, jobs.stdout.splitlines())}
    for j in range(JOBS):
        assert rows[f"load{120 + j}"]["running"] == [] and rows[f"load{120 + j}"]["waiting"] == 0
    for w in (b, c):
        w.stop()
