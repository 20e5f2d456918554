"""The metrics without a broker: what the run book reports for them, the label classes,
the gateway's request counting (route templates, statuses), the worker's registry."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from streams.engine.metrics import DEAD_LETTER_REASONS, WorkerMetrics, render
from streams.engine.runbook import Outputs, RunBook
from streams.gateway import metrics as gateway_metrics
from streams.model.state_rules import StateLimits
from streams.runner.service import delivery_outcome


def samples(registry: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


class Store(dict):  # type: ignore[type-arg]
    def set(self, key: str, value: Any) -> None:
        self[key] = json.loads(json.dumps(value))

    def delete(self, key: str) -> None:
        self.pop(key, None)


def trigger(n: int, job: str = "j", retry: bool = False) -> dict[str, Any]:
    t = {"run_id": f"run-{n}", "job": job, "handler_id": "h", "trigger_kind": "event", "trigger_ref": f"id:e{n}",
         "params_json": "{}", "event_json": None, "timeout_seconds": 30.0, "event_time": None}
    if retry:
        t["retry"] = {"attempts": 2, "backoff": {"initial_seconds": 0}}
    return t


def result(n: int, status: str, attempt: int = 1, job: str = "j", state: str | None = None) -> dict[str, Any]:
    return {"run_id": f"run-{n}", "job": job, "handler_id": "h", "attempt": attempt, "status": status,
            "final_state_json": state, "error": None if status == "succeeded" else "no",
            "started_at": 1000, "finished_at": 1250}


def test_the_run_book_reports_drops_attempts_retries_settlements_and_states() -> None:
    runs, states = Store(), Store()
    book = RunBook(runs, states, StateLimits(), 1, lambda job: 1, lambda c: b"x")
    never: Any = lambda run_id: False  # noqa: E731
    out = Outputs()
    book.on_trigger(trigger(1, retry=True), 0, never, out)
    book.on_trigger(trigger(1, retry=True), 0, never, out)  # the same run: dropped
    book.on_trigger(trigger(2), 0, never, out)  # waits (one slot)
    book.on_trigger(trigger(3), 0, never, out)  # the queue holds 1: dead-lettered, queue_full
    assert out.duplicates == ["j"]
    assert [d.kind for d in out.dead] == ["queue_full"]
    out = Outputs()
    book.on_result(result(1, "failed"), b"r", 0, never, out)
    assert out.retries == ["j"] and out.attempts == [("j", 0.25)] and out.settled == []
    out = Outputs()
    key = runs["m:j"]["running"]["run-1"]["retry_key"]
    book.on_retry_due({"kind": "retry", "job": "j", "run_id": "run-1", "attempt": 2, "key": key}, 0, out)
    book.on_result(result(1, "succeeded", attempt=2, state='{"a":1}'), b"r", 0, never, out)
    assert out.settled == [("j", "succeeded")] and out.states == [("j", 7)] and out.retries == []
    out = Outputs()
    book.on_result(result(9, "succeeded"), b"r", 0, never, out)  # never scheduled
    assert [d.kind for d in out.dead] == ["unknown_run"] and out.settled == []


def test_every_dead_letter_kind_is_a_known_reason_class() -> None:
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "streams" / "engine"
    kinds = set()
    for path in (root / "agents.py", root / "runbook.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.keyword) and node.arg == "kind" and isinstance(node.value, ast.Constant):
                kinds.add(node.value.value)
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                    "DeadLetter", "_dead_trigger"):
                kinds |= {a.value for a in node.args[2:] if isinstance(a, ast.Constant) and isinstance(a.value, str)}
    assert kinds >= {"invalid_event", "queue_full", "gave_up", "unknown_run"}
    assert kinds <= set(DEAD_LETTER_REASONS), kinds - set(DEAD_LETTER_REASONS)


@pytest.mark.parametrize(("record", "outcome"), [
    ({"status": "succeeded", "final_state_json": '{"delivery": {"status": 200}}'}, "delivered"),
    ({"status": "failed", "final_state_json": '{"delivery": {"status": 503, "retry": true}}'}, "failed"),
    ({"status": "failed", "final_state_json": '{"delivery": {"status": 410, "retry": false, "gone": true}}'},
     "permanent_failure"),
    ({"status": "failed", "final_state_json": None}, "failed"),
    ({"status": "failed", "final_state_json": "not json"}, "failed"),
])
def test_a_delivery_outcome_is_one_of_three(record: dict[str, Any], outcome: str) -> None:
    assert delivery_outcome(record) == outcome


def test_worker_metrics_start_at_zero_and_count_unknown_reasons_as_other() -> None:
    m = WorkerMetrics()
    m.job_seen("a")
    m.job_seen("a")
    m.add(m.triggers, {("a", "event"): 2, ("b", "cron"): 0})
    m.dead_letter("no such class")
    got = samples(m.registry)
    assert got[("signalbox_triggers_total", (("job", "a"), ("kind", "event")))] == 2
    assert got[("signalbox_triggers_total", (("job", "a"), ("kind", "cron")))] == 0
    assert ("signalbox_triggers_total", (("job", "b"), ("kind", "cron"))) not in got  # a zero adds no series
    assert got[("signalbox_dead_letters_total", (("reason", "other"),))] == 1
    assert got[("signalbox_runs_total", (("job", "a"), ("status", "timed_out")))] == 0
    assert not [k for k in got if k[0].endswith("_created")]
    WorkerMetrics()  # a second app in the same process: its own registry, no collision


def test_the_gateway_counts_requests_by_route_template_and_status() -> None:
    app = FastAPI()

    @app.get("/things/{thing_id}", status_code=200)
    async def thing(thing_id: str) -> dict[str, str]:
        if thing_id == "missing":
            raise HTTPException(404, "no")
        if thing_id == "boom":
            raise RuntimeError("boom")
        return {"id": thing_id}

    m = gateway_metrics.install(app)
    with TestClient(app, raise_server_exceptions=False) as client:
        assert samples(m.registry)[("signalbox_gateway_requests_total",
                                    (("method", "GET"), ("route", "/things/{thing_id}"), ("status", "200")))] == 0
        for path in ("/things/1", "/things/2", "/things/missing", "/things/boom", "/elsewhere/3"):
            client.get(path)
        client.request("BREW", "/elsewhere/4")
        body = client.get("/metrics")
        assert body.status_code == 200 and body.headers["content-type"].startswith("text/plain")
    got = samples(m.registry)

    def n(route: str, status: str) -> float:
        return got[("signalbox_gateway_requests_total", (("method", "GET"), ("route", route), ("status", status)))]

    assert n("/things/{thing_id}", "200") == 2
    assert n("/things/{thing_id}", "404") == 1
    assert n("/things/{thing_id}", "500") == 1
    assert n("unmatched", "404") == 1
    assert n("/metrics", "200") == 1
    other = (("method", "other"), ("route", "unmatched"), ("status", "404"))
    assert got[("signalbox_gateway_requests_total", other)] == 1  # a method nobody serves: "other"
    assert not [labels for (_, labels) in got if ("route", "/things/1") in labels]


def test_a_scrape_computes_the_gauges_on_the_loop_and_renders_the_text_in_another_thread() -> None:
    """The gauges' sources are the loop's (tables, consumers): they are read on it. The text
    of every series is rendered in a thread, so the loop runs on meanwhile (it would stop
    for the whole rendering on the loop: 25 ms with 128 jobs, 240 ms with 1,024)."""
    metrics = WorkerMetrics()
    for j in range(1024):
        metrics.job_seen(f"job{j}")
    threads: dict[str, threading.Thread] = {}

    def jobs() -> list[tuple[str, int, int]]:
        threads["gauges"] = threading.current_thread()
        return [("job-a", 3, 1)]

    class Probe(Collector):
        def collect(self) -> Any:
            threads["rendered"] = threading.current_thread()
            return iter(())

    metrics.gauges.jobs = jobs
    metrics.registry.register(Probe())
    threads.clear()

    async def scrape() -> tuple[threading.Thread, bytes, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0)
                ticks += 1

        task = asyncio.ensure_future(ticker())
        await asyncio.sleep(0)
        before = ticks
        body = await render(metrics)
        ran = ticks - before
        task.cancel()
        return threading.current_thread(), body, ran

    loop_thread, body, ran = asyncio.run(scrape())
    assert threads["gauges"] is loop_thread
    assert threads["rendered"] is not loop_thread
    assert ran > 0  # the loop ran while the text was rendered
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(body.decode()) for s in family.samples}
    assert samples[("signalbox_job_queue_depth", (("job", "job-a"),))] == 3
    assert samples[("signalbox_runs_total", (("job", "job1023"), ("status", "succeeded")))] == 0
    # a scrape that does not go through render() (the runner process's own HTTP thread)
    # computes the gauges itself
    threads.clear()
    generate_latest(metrics.registry)
    assert threads["gauges"] is threading.current_thread()
