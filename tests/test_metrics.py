"""/metrics of a real worker and a real gateway: every counter there from the start at 0,
and moved by exactly the workload sent (README, "Metrics")."""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streams.engine.metrics import DEAD_LETTER_REASONS, DELIVERY_OUTCOMES, EVENT_RESULTS, TRIGGER_KINDS
from tests.conftest import GatewayProcess, Stack, WorkerProcess, result, unique
from tests.receiver import Receiver

pytestmark = pytest.mark.broker

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(url: str) -> Samples:
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    assert key in samples, f"{name}{labels} not exported"
    return samples[key]


def series(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def wait_until(url: str, check: Any, timeout: float = 45.0) -> Samples:
    """Scrape until ``check(samples)`` holds; the last samples, or AssertionError."""
    end = time.monotonic() + timeout
    while True:
        samples = scrape(url)
        try:
            check(samples)
            return samples
        except AssertionError:
            if time.monotonic() > end:
                raise
        time.sleep(0.25)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def metered(stack: Stack) -> Iterator[tuple[WorkerProcess, str]]:
    port = free_port()
    w = stack.start_worker("metered", env={"SIGNALBOX_METRICS_PORT": str(port),
                                           "SIGNALBOX_DELIVERY_ALLOW": "127.0.0.1/32"})
    w.wait_ready()
    yield w, f"http://127.0.0.1:{port}/metrics"
    w.stop()


def test_a_worker_counts_a_known_workload_exactly(stack: Stack, metered, receiver) -> None:
    worker, url = metered
    assert f"metrics at {url}" in worker.log_text()
    before = scrape(url)
    # every counter is there at 0 before anything happened
    for result_ in EVENT_RESULTS:
        assert value(before, "signalbox_events_consumed_total", result=result_) == 0
    for reason in DEAD_LETTER_REASONS:
        assert value(before, "signalbox_dead_letters_total", reason=reason) == 0
    for transport in ("webhook", "email"):
        for outcome in DELIVERY_OUTCOMES:
            assert value(before, "signalbox_deliveries_total", transport=transport, outcome=outcome) == 0
    assert value(before, "signalbox_handler_rejections_total") == 0
    assert value(before, "signalbox_handlers") == 0
    assert ("signalbox_faust_messages_received_total", ()) in before  # Faust's own sensor, same registry

    tag = uuid.uuid4().hex[:6]
    ok = {"id": unique("m-ok"), "job": "count7", "event": {"match": {"type": f"ok-{tag}"}}}
    fail = {"id": unique("m-fail"), "job": "explode", "event": {"match": {"type": f"fail-{tag}"}}}
    retry = {"id": unique("m-retry"), "job": "flaky", "event": {"match": {"type": f"retry-{tag}"}},
             "params": {"succeed_at": "n"}, "retry": {"attempts": 3, "backoff": {"initial_seconds": 0.1}}}
    hook = {"id": unique("m-hook"), "event": {"match": {"type": f"hook-{tag}"}},
            "webhook": {"url": f"{receiver.url}/metrics-test"}}
    for h in (ok, fail, retry, hook):
        stack.apply_handler(h)
    hook_job = f"webhook.{hook['id']}"
    # a job's series exist at 0 once one of its handlers is applied
    applied = scrape(url)
    for job in ("count7", "explode", "flaky", hook_job):
        for kind in TRIGGER_KINDS:
            assert value(applied, "signalbox_triggers_total", job=job, kind=kind) == 0
        for status in ("succeeded", "failed", "timed_out"):
            assert value(applied, "signalbox_runs_total", job=job, status=status) == 0
        assert value(applied, "signalbox_commands_written_total", job=job) == 0
        assert value(applied, "signalbox_dedup_dropped_triggers_total", job=job) == 0
        assert value(applied, "signalbox_run_retries_total", job=job) == 0
        assert value(applied, "signalbox_run_duration_seconds_count", job=job) == 0
    assert value(applied, "signalbox_handlers") == 4
    before = {stage: value(applied, "signalbox_schedule_seconds_count", stage=stage)
              for stage in ("fetched", "decided", "written")}  # exported from the start
    # an invalid handler is rejected
    bad_id = unique("m-bad")
    stack.produce(stack.topics.handlers, json.dumps({"id": bad_id, "job": "count7"}).encode(), bad_id.encode())
    stack.wait_logged(f"handler {bad_id} rejected")

    results = stack.reader(stack.topics.run_results)
    for n in range(5):
        stack.send_event({"id": f"ok-{tag}-{n}", "type": f"ok-{tag}"})
    stack.send_event({"id": f"ok-{tag}-0", "type": f"ok-{tag}"})  # the same event again: one run, one drop
    for n in range(3):
        stack.send_event({"id": f"none-{tag}-{n}", "type": f"nothing-{tag}"})
    stack.send_event({"id": f"fail-{tag}", "type": f"fail-{tag}"})
    stack.send_event({"id": f"retry-{tag}", "type": f"retry-{tag}", "n": 2})  # attempt 1 fails, 2 succeeds
    stack.send_event({"id": f"hook-{tag}", "type": f"hook-{tag}"})
    stack.send_event(b"{not json")  # dead-lettered
    handlers = {ok["id"]: 5, fail["id"]: 1, retry["id"]: 2, hook["id"]: 1}
    results.wait_for(lambda m: result(m)["handler_id"] in handlers, count=sum(handlers.values()))
    results.close()

    def settled(samples: Samples) -> None:
        assert value(samples, "signalbox_runs_total", job="count7", status="succeeded") == 5
        assert value(samples, "signalbox_runs_total", job="explode", status="failed") == 1
        assert value(samples, "signalbox_runs_total", job="flaky", status="succeeded") == 1
        assert value(samples, "signalbox_runs_total", job=hook_job, status="succeeded") == 1

    wait_until(url, settled)
    # every record of the events topic is read (the runs' status events too): the match step
    # counted each once, so the sum is the topic's record count
    on_topic = len(stack.reader(stack.topics.events).poll_for(3.0))

    def consumed(samples: Samples) -> None:
        assert sum(series(samples, "signalbox_events_consumed_total").values()) == on_topic

    after = wait_until(url, consumed)
    assert value(after, "signalbox_events_consumed_total", result="matched") == 9  # 5 + the repeat + 3
    assert value(after, "signalbox_events_consumed_total", result="dead_lettered") == 1
    assert value(after, "signalbox_events_consumed_total", result="not_matched") == on_topic - 10
    for job, n in (("count7", 6), ("explode", 1), ("flaky", 1), (hook_job, 1)):
        assert value(after, "signalbox_triggers_total", job=job, kind="event") == n, job
    for job, n in (("count7", 5), ("explode", 1), ("flaky", 2), (hook_job, 1)):
        assert value(after, "signalbox_commands_written_total", job=job) == n, job
        assert value(after, "signalbox_run_duration_seconds_count", job=job) == n, job
    assert value(after, "signalbox_dedup_dropped_triggers_total", job="count7") == 1
    assert value(after, "signalbox_dedup_dropped_triggers_total", job="explode") == 0
    assert value(after, "signalbox_run_retries_total", job="flaky") == 1
    assert value(after, "signalbox_run_retries_total", job="count7") == 0
    for status in ("failed", "timed_out"):
        assert value(after, "signalbox_runs_total", job="count7", status=status) == 0
    dead = series(after, "signalbox_dead_letters_total")
    assert dead == {(("reason", r),): (1.0 if r == "invalid_event" else 0.0) for r in DEAD_LETTER_REASONS}
    assert value(after, "signalbox_handler_rejections_total") == 1
    # every offset of the events topic came to the match step: no fetch skipped one
    assert series(after, "signalbox_match_offset_gaps_total") == {}
    assert value(after, "signalbox_deliveries_total", transport="webhook", outcome="delivered") == 1
    assert value(after, "signalbox_deliveries_total", transport="webhook", outcome="failed") == 0
    assert [r.path for r in receiver.received] == ["/metrics-test"]
    # the gauges, computed when scraped (one worker: it owns every job)
    assert value(after, "signalbox_job_queue_depth", job="count7") == 0
    assert value(after, "signalbox_job_runs_in_flight", job="count7") == 0
    state = {"runs": 5, "seen": [{}] * 5}
    assert value(after, "signalbox_job_state_bytes", job="count7") == len(json.dumps(state, separators=(",", ":")))
    assert value(after, "signalbox_handlers") == 4
    assert value(after, "signalbox_faust_messages_received_total") > 0
    # no run id, event id or free text in any label
    for (_, labels) in after:
        for _, label in labels:
            assert tag not in label and len(label) < 120

    def caught_up(samples: Samples) -> None:
        lag = series(samples, "signalbox_consumer_lag")
        consumers = {dict(labels)["consumer"] for labels in lag}
        assert consumers == {"match", "engine", "runner"}, lag
        assert {dict(labels)["topic"] for labels in lag} >= {stack.topics.events, stack.topics.job_commands}
        assert sum(lag.values()) == 0, lag

    wait_until(url, caught_up)

    # the schedule step's stages: every triggers record and run result fetched, every
    # decided batch written (9 results and at least one triggers record since `applied`)
    def written(samples: Samples) -> None:
        count = {stage: value(samples, "signalbox_schedule_seconds_count", stage=stage) - before[stage]
                 for stage in before}
        assert count["fetched"] >= 10 and count["decided"] >= 1, count
        assert count["written"] == count["decided"], count

    stages = wait_until(url, written)
    for stage in before:
        assert value(stages, "signalbox_schedule_seconds_sum", stage=stage) > 0
        assert value(stages, "signalbox_schedule_seconds_bucket", stage=stage, le="+Inf") == \
            value(stages, "signalbox_schedule_seconds_count", stage=stage)


def test_a_worker_without_a_metrics_port_serves_nothing(stack: Stack) -> None:
    port = free_port()
    w = stack.start_worker(unique("quiet"))
    try:
        w.wait_ready()
        assert "metrics at" not in w.log_text()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
    finally:
        w.stop()


SECRET = "metrics-" + uuid.uuid4().hex


def token() -> str:
    now = int(time.time())
    return jwt.encode({"sub": "metrics", "scope": "events:write handlers:read subscribe", "iat": now,
                       "exp": now + 600}, SECRET, algorithm="HS256")


def test_a_gateway_counts_requests_ingest_and_subscriptions(stack: Stack) -> None:
    gateway = GatewayProcess(stack, "metrics-gateway", {"SIGNALBOX_GATEWAY_JWT_SECRET": SECRET}).start()
    url = f"{gateway.url}/metrics"
    try:
        before = scrape(url)
        assert value(before, "signalbox_gateway_ingested_events_total") == 0
        for transport in ("websocket", "sse"):
            assert value(before, "signalbox_gateway_open_subscriptions", transport=transport) == 0
            assert value(before, "signalbox_gateway_subscription_messages_total", transport=transport) == 0
            assert value(before, "signalbox_gateway_replayed_messages_total", transport=transport) == 0
        # each route's usual answer is there at 0 (/health was asked while starting)
        assert value(before, "signalbox_gateway_requests_total", route="/events", method="POST", status="202") == 0
        assert value(before, "signalbox_gateway_requests_total", route="/handlers/{handler_id}", method="GET",
                     status="200") == 0
        requests = series(before, "signalbox_gateway_requests_total")

        auth = {"Authorization": f"Bearer {token()}"}
        kind = unique("gw-metrics")
        with httpx.Client(base_url=gateway.url, headers=auth, timeout=30) as http:
            assert http.post("/events", json=[{"id": f"{kind}-{n}", "type": kind} for n in range(3)]).status_code == 202
            assert http.post("/events", json={"id": f"{kind}-3", "type": kind}).status_code == 202
            assert http.post("/events", json={"id": 5, "type": kind}).status_code == 400  # nothing sent
            assert http.post("/events", json={"id": "x"}, headers={"Authorization": "Bearer nope"}).status_code == 401
            for _ in range(2):
                assert http.get(f"/handlers/{unique('missing')}").status_code == 404
            assert http.get("/no/such/path").status_code == 404
            # a replay of the 4 events through SSE, from the beginning of the topic
            with http.stream("GET", "/stream", params={"ex": "events", "key": "#", "since": "earliest"}) as stream:
                assert stream.status_code == 200
                opened = scrape(url)
                assert value(opened, "signalbox_gateway_open_subscriptions", transport="sse") == 1
                got = 0
                for line in stream.iter_lines():
                    if line.startswith("data:") and kind in line:
                        got += 1
                        if got == 4:
                            break
        after = wait_until(url, lambda s: value(s, "signalbox_gateway_open_subscriptions", transport="sse") == 0)
        assert value(after, "signalbox_gateway_ingested_events_total") == 4
        sent = value(after, "signalbox_gateway_subscription_messages_total", transport="sse")
        assert sent >= 4
        assert value(after, "signalbox_gateway_replayed_messages_total", transport="sse") == sent  # all were there
        assert value(after, "signalbox_gateway_subscription_messages_total", transport="websocket") == 0

        def delta(route: str, method: str, status: str) -> float:
            key = (("method", method), ("route", route), ("status", status))
            return series(after, "signalbox_gateway_requests_total").get(key, 0.0) - requests.get(key, 0.0)

        assert delta("/events", "POST", "202") == 2
        assert delta("/events", "POST", "400") == 1
        assert delta("/events", "POST", "401") == 1
        assert delta("/handlers/{handler_id}", "GET", "404") == 2
        assert delta("unmatched", "GET", "404") == 1
        assert delta("/stream", "GET", "200") == 1
        assert delta("/metrics", "GET", "200") >= 1
        for (_, labels) in after:
            for _, label in labels:
                assert "missing" not in label and "no/such" not in label
    finally:
        gateway.stop()
