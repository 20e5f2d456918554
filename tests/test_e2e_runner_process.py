"""`signalbox runner`: the built-in runner as a process of its own, next to a worker started
with --no-runner; killed -9 mid-burst and started again, it loses no run and the cursor
stays exact."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict

import pytest

from streams.kafka.broker import free_port
from tests.conftest import Stack, WorkerProcess, command, result, unique

pytestmark = pytest.mark.broker


class RunnerProcess(WorkerProcess):
    def wait_ready(self, timeout: float = 60) -> None:
        """Until the runner reads commands (once its handler feed has caught up)."""
        end = time.monotonic() + timeout
        while "runner: reading job commands" not in (self.log_text() if self.log.exists() else ""):
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"runner {self.name} exited {self.process.returncode}:\n{self.tail()}")
            if time.monotonic() > end:
                raise AssertionError(f"runner {self.name} not reading after {timeout}s:\n{self.tail()}")
            time.sleep(0.1)

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streams", "runner", "--jobs", "tests.e2e_jobs", *self.extra],
                env={**self.stack.env, **self.env}, cwd=self.stack.workdir, stdout=log, stderr=subprocess.STDOUT,
            )


def start_runner(stack: Stack, name: str, *extra: str) -> RunnerProcess:
    runner = RunnerProcess(stack, name, stack.workdir / name, list(extra), {})
    runner.start()
    stack.workers.append(runner)  # stopped with the stack's workers
    return runner


def test_a_runner_process_runs_the_jobs_of_a_worker_without_one_and_survives_a_kill_9(stack: Stack) -> None:
    commands, results = stack.reader(stack.topics.job_commands), stack.reader(stack.topics.run_results)
    worker = stack.start_worker("engine-only", "--no-runner")
    first = start_runner(stack, "runner-a")
    worker.wait_ready()
    first.wait_ready()
    assert "jobs registered: " in first.log_text() and "count3" in first.log_text()
    handler = {"id": unique("remote"), "job": "count3", "event": {"match": {"type": "remote"}},
               "params": {"n": "n"}}
    stack.apply_handler(handler)
    n = 60
    for i in range(n):
        stack.send_event({"id": unique("remote-ev"), "type": "remote", "n": i})
    ours = lambda m: command(m)["handler_id"] == handler["id"]  # noqa: E731
    results.wait_for(lambda m: result(m)["handler_id"] == handler["id"], count=15)
    first.stop(signal.SIGKILL)
    second = start_runner(stack, "runner-b")
    second.wait_ready()
    by_run: dict[str, list[dict]] = defaultdict(list)
    end = time.monotonic() + 120
    while len(by_run) < n and time.monotonic() < end:  # distinct runs: a re-run after the kill counts once
        results.poll_for(0.5)
        by_run.clear()
        for m in results.seen:
            if result(m)["handler_id"] == handler["id"] and result(m)["status"] == "succeeded":
                by_run[result(m)["run_id"]].append(result(m))
    cmds = [command(m) for m in commands.wait_for(ours, count=n)]
    assert len({c["run_id"] for c in cmds}) == n, "a run id commanded twice or an event lost"
    assert set(by_run) == {c["run_id"] for c in cmds}, "a commanded run without a result"
    # the cursor: each command carried the state its predecessor left, 0..n-1 runs
    starts = sorted(json.loads(c["initial_state_json"] or "{}").get("runs", 0) for c in cmds)
    assert starts == list(range(n)), starts
    # only the runner processes ran jobs: the worker has none
    pids = {r["runner"].rsplit("/", 1)[1] for rs in by_run.values() for r in rs}
    assert str(worker.process.pid) not in pids and pids <= {str(first.process.pid), str(second.process.pid)}
    assert str(second.process.pid) in pids, "the restarted runner ran nothing"
    second.stop()
    worker.stop()


def test_a_runner_process_serves_its_metrics(stack: Stack) -> None:
    port = free_port()
    runner = start_runner(stack, "runner-metrics", "--metrics-port", str(port))
    runner.wait_ready()
    assert f"metrics at http://127.0.0.1:{port}/metrics" in runner.log_text()
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert "signalbox_deliveries_total" in body
    runner.stop()
