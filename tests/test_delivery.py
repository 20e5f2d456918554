"""Webhook deliveries: the address guard and the signature without a network, then real
deliveries to a real HTTP server on loopback through a real worker and broker."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import standardwebhooks
from aiohttp.abc import AbstractResolver, ResolveResult

from streams.delivery import email, guard, secrets, signing, webhook
from streams.model.handlers import InvalidHandler, parse_handler
from tests.conftest import Stack, WorkerProcess, result, unique
from tests.receiver import Receiver, SmtpSink, json_of

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"fedcba9876543210fedcba9876543210").decode()


# -- the guard, with no network at all ---------------------------------------------------


@pytest.mark.parametrize("address", ["10.0.0.1", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1",
                                     "127.0.0.1", "0.0.0.0", "::1", "fc00::1", "fe80::1", "::ffff:10.0.0.1",
                                     "::ffff:127.0.0.1", "::10.0.0.1", "2002:a00:1::1", "224.0.0.1"])
def test_the_guard_refuses_internal_addresses(address: str) -> None:
    assert guard.refusal(address, []) is not None


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8"])
def test_the_guard_lets_public_addresses_through(address: str) -> None:
    assert guard.refusal(address, []) is None


def test_the_allow_list_opens_exactly_its_networks() -> None:
    allow = guard.parse_allow("127.0.0.1, 10.1.0.0/16")
    assert guard.refusal("127.0.0.1", allow) is None
    assert guard.refusal("10.1.2.3", allow) is None
    assert guard.refusal("127.0.0.2", allow) is not None
    assert guard.refusal("10.2.0.1", allow) is not None


class FixedAnswers(AbstractResolver):
    """A name server stand-in: the test's own answers, no network."""

    def __init__(self, addresses: list[str]) -> None:
        self.addresses = addresses

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        return [ResolveResult(hostname=host, host=a, port=port, family=socket.AF_INET6 if ":" in a else socket.AF_INET,
                              proto=0, flags=0) for a in self.addresses]

    async def close(self) -> None:
        return None


def test_a_name_with_a_public_and_a_private_address_connects_only_to_the_public_one() -> None:
    resolver = guard.GuardedResolver([], FixedAnswers(["10.0.0.7", "93.184.216.34", "169.254.169.254"]))
    kept = asyncio.run(resolver.resolve("mixed.example", 443))
    assert [a["host"] for a in kept] == ["93.184.216.34"]


def test_a_name_with_only_internal_addresses_is_refused_naming_each() -> None:
    resolver = guard.GuardedResolver([], FixedAnswers(["10.0.0.7", "::1"]))
    with pytest.raises(guard.RefusedTarget) as refused:
        asyncio.run(resolver.resolve("internal.example", 80))
    assert "10.0.0.7 is a private address" in str(refused.value) and "::1 is a loopback" in str(refused.value)


# -- the signature, checked with the Standard Webhooks library --------------------------


def test_signatures_verify_with_the_standard_webhooks_library_for_every_secret() -> None:
    body = b'{"type":"run.finished","id":"r1","data":{}}'
    now = int(time.time())
    header = signing.signature([SECRET, OLD_SECRET], "r1", now, body)
    assert header.count("v1,") == 2
    headers = {"webhook-id": "r1", "webhook-timestamp": str(now), "webhook-signature": header}
    for secret in (SECRET, OLD_SECRET):
        assert standardwebhooks.Webhook(secret).verify(body, headers) == json.loads(body)
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(SECRET).verify(body + b" ", headers)


def test_the_dev_receiver_verifies_with_its_own_secret_only() -> None:
    from streams.cli.dev_sinks import new_secret, verified

    body, now = b'{"type":"run.finished"}', int(time.time())
    secret = new_secret()
    assert secret.startswith("whsec_") and secret != new_secret()
    headers = {"webhook-id": "r1", "webhook-timestamp": str(now),
               "webhook-signature": signing.signature([OLD_SECRET, secret], "r1", now, body)}
    assert verified(secret, headers, body)
    assert not verified(SECRET, headers, body)
    assert not verified(secret, headers, body + b" ")
    assert not verified(secret, {**headers, "webhook-id": "r2"}, body)
    assert not verified(secret, {k: v for k, v in headers.items() if k != "webhook-signature"}, body)


def test_a_secret_is_resolved_by_name_and_a_missing_one_is_named_not_shown(monkeypatch: pytest.MonkeyPatch,
                                                                           tmp_path: Any) -> None:
    monkeypatch.setenv(secrets.env_name("billing-hook"), SECRET)
    assert secrets.resolve("billing-hook") == SECRET
    path = tmp_path / "secrets.json"
    path.write_text(json.dumps({"other": OLD_SECRET}))
    monkeypatch.setenv("SIGNALBOX_SECRETS_FILE", str(path))
    assert secrets.resolve("other") == OLD_SECRET
    with pytest.raises(secrets.MissingSecret, match="'absent'"):
        secrets.resolve("absent")


@pytest.mark.parametrize("webhook, message", [
    ({"url": "file:///etc/passwd"}, "http:// or https://"),
    ({"url": "http://user:pw@example.com/"}, "credentials"),
    ({"url": "https://example.com/", "secret": "bad name!"}, "secret"),
    ({"url": "https://example.com/", "headers": {"Authorization": {"value": "inline"}}}, "secret"),
])
def test_bad_webhook_targets_are_refused_with_the_path(webhook: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidHandler, match=message):
        parse_handler({"id": "w", "event": {"match": {"type": "x"}}, "webhook": webhook})


def test_email_templates_substitute_fields_and_a_missing_one_is_an_error() -> None:
    assert email.render("Task {{ task_id }} {{ event.status }}", {"task_id": 7, "status": "ok"}) == "Task 7 ok"
    with pytest.raises(email.TemplateError, match="task_name"):
        email.render("{{ task_name }}", {"task_id": 7})
    with pytest.raises(email.TemplateError):  # the sandbox: no way into Python internals
        email.render("{{ event.__class__.__mro__ }}", {})


@pytest.mark.parametrize("target, message", [
    ({"to": "not-an-address", "subject": "s", "message": "m"}, "not an e-mail address"),
    ({"to": "a@b.c", "subject": "{{ unclosed", "message": "m"}, "template"),
])
def test_bad_email_targets_are_refused(target: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidHandler, match=message):
        parse_handler({"id": "e", "event": {"match": {"type": "x"}}, "email": target})


def test_tail_shows_each_delivery_status_time_and_attempt() -> None:
    from datetime import UTC, datetime

    from streams.cli.formatting import format_result

    when = datetime.now(UTC)
    r = {"job": "webhook.h", "handler_id": "h", "run_id": "r1", "status": "succeeded", "started_at": when,
         "finished_at": when, "error": None, "final_state_json": json.dumps(
             {"delivery": {"transport": "webhook", "host": "hooks.example.com", "status": 200, "ms": 12,
                           "attempt": 2}})}
    assert "delivery=webhook:hooks.example.com status=200 12ms attempt=2" in format_result(r)


def test_a_runners_client_reuses_connections_keeps_no_cookies_and_its_guard_still_refuses() -> None:
    """The runner's one HTTP session: keep-alive to the same receiver, no cookie carried from
    one delivery to the next, and a client without the allow-list reaches nothing internal,
    by IP literal or by name."""
    receiver = Receiver(answers=[(200, {"Set-Cookie": "session=abc; Path=/"}, 0.0)])

    def hook(url: str) -> Any:
        return parse_handler({"id": "w", "event": {"match": {"type": "x"}}, "webhook": {"url": url}})

    def cmd(n: int) -> dict[str, Any]:
        return {"run_id": f"r{n}", "event_json": json.dumps({"type": "x", "n": n})}

    async def deliveries() -> list[webhook.Outcome]:
        async with webhook.Client(guard.parse_allow("127.0.0.1")) as client:
            # by name: an IP address's cookies would be refused by aiohttp's own jar anyway
            out = [await webhook.deliver(hook(f"http://localhost:{receiver.port}/a"), cmd(1), client),
                   await webhook.deliver(hook(f"http://localhost:{receiver.port}/a"), cmd(2), client),
                   await webhook.deliver(hook(f"{receiver.url}/a"), cmd(3), client)]
        async with webhook.Client([]) as guarded:
            out += [await webhook.deliver(hook(f"{receiver.url}/a"), cmd(4), guarded),
                    await webhook.deliver(hook(f"http://localhost:{receiver.port}/a"), cmd(5), guarded)]
        return out

    try:
        outcomes = asyncio.run(deliveries())
        assert [o.delivered for o in outcomes] == [True, True, True, False, False], outcomes
        assert all(not o.retry and "loopback" in (o.error or "") for o in outcomes[3:]), outcomes
        got = receiver.received
        assert [r.headers["webhook-id"] for r in got] == ["r1", "r2", "r3"]
        assert got[0].peer_port == got[1].peer_port, "the second delivery reused the first's connection"
        assert "Cookie" not in got[1].headers and "Cookie" not in got[2].headers
    finally:
        receiver.close()


def test_a_failed_answer_with_an_endless_body_is_cut_short_not_read_to_the_timeout() -> None:
    """A hostile receiver answers 500 and streams its body forever: the delivery reads the
    start of it for the error and gives up on the rest at once (no memory filled, no wait)."""
    from aiohttp import web

    async def scenario() -> tuple[webhook.Outcome, int]:
        sent = 0

        async def endless(request: web.Request) -> web.StreamResponse:
            nonlocal sent
            answer = web.StreamResponse(status=500)
            await answer.prepare(request)
            for _ in range(20_000):  # bounded: 20 MB at most, if nobody stops reading
                await answer.write(b"x" * 1000)
                sent += 1000
            return answer

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", endless)
        runner = web.AppRunner(app, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        hook = parse_handler({"id": "w", "event": {"match": {"type": "x"}},
                              "webhook": {"url": f"http://127.0.0.1:{port}/h", "timeout_seconds": 20}})
        try:
            async with webhook.Client(guard.parse_allow("127.0.0.1")) as client:
                outcome = await webhook.deliver(hook, {"run_id": "r1", "event_json": "{}"}, client)
            return outcome, sent
        finally:
            await runner.cleanup()

    outcome, sent = asyncio.run(scenario())
    assert outcome.status == 500 and outcome.retry and outcome.error == "HTTP 500: " + "x" * 300, outcome
    assert outcome.ms < 5000, outcome
    assert sent < 20_000_000, "the whole body was read"


# -- real deliveries ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    yield sink
    sink.close()


@pytest.fixture(scope="module")
def hook_worker(stack: Stack, smtp: SmtpSink) -> Iterator[WorkerProcess]:
    w = stack.start_worker("delivery", env={"SIGNALBOX_DELIVERY_ALLOW": "127.0.0.1/32",
                                            secrets.env_name("hook"): SECRET,
                                            secrets.env_name("api-token"): "token-123",
                                            "SIGNALBOX_SMTP_HOST": "127.0.0.1", "SIGNALBOX_SMTP_PORT": str(smtp.port),
                                            "SIGNALBOX_SMTP_FROM": "jobs@signalbox.test",
                                            # fewer job slots than the slow listener's burst below
                                            "SIGNALBOX_RUNNER_CONCURRENCY": "8"})
    w.wait_ready()
    yield w
    w.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


FAST_RETRY = {"attempts": 4, "backoff": {"initial_seconds": 0.2, "factor": 1, "max_seconds": 5}}


def dead_letter_headers(stack: Stack, handler_id: str) -> dict[str, bytes]:
    """The headers of the one dead letter of a handler (waits for it)."""
    dead = stack.reader(stack.topics.dead_letter)
    try:
        [letter] = dead.wait_for(lambda m: dict(m.headers() or []).get("handler_id") == handler_id.encode())
        return dict(letter.headers() or [])
    finally:
        dead.close()


def test_a_webhook_is_retried_on_503_with_one_id_and_retry_after_then_delivered_signed(
        stack: Stack, hook_worker: WorkerProcess, receiver: Receiver) -> None:
    receiver.answers = [(503, {"Retry-After": "1"}, 0.0), (503, {}, 0.0)]
    kind = unique("order")
    h = {"id": unique("hook"), "event": {"match": {"type": kind}}, "retry": FAST_RETRY,
         "webhook": {"url": f"{receiver.url}/orders", "secret": "hook",
                     "headers": {"X-Team": "billing", "Authorization": {"secret": "api-token"}}}}
    stack.apply_handler(h)
    event = {"id": unique("e"), "type": kind, "order": {"id": 7}}
    stack.send_event(event)
    got = receiver.wait_for("/orders", count=3)
    time.sleep(1.0)
    assert len(receiver.received) == 3, "delivered once it succeeded, never again"
    assert len({r.headers["webhook-id"] for r in got}) == 1
    assert got[1].at - got[0].at >= 0.95, "Retry-After: 1 was honoured"
    for r in got:
        assert r.method == "POST" and r.headers["X-Team"] == "billing" and r.headers["Authorization"] == "token-123"
        assert standardwebhooks.Webhook(SECRET).verify(r.body, r.headers) == json_of(r)
    body = json_of(got[-1])
    assert body["type"] == kind and body["data"] == event and body["id"] == got[-1].headers["webhook-id"]
    results = stack.reader(stack.topics.run_results)
    done = results.wait_for(lambda m: result(m)["handler_id"] == h["id"], count=3)
    assert [result(m)["status"] for m in done] == ["failed", "failed", "succeeded"]
    delivery = json.loads(result(done[-1])["final_state_json"])["delivery"]
    assert delivery["status"] == 200 and delivery["attempt"] == 3 and delivery["host"] == "127.0.0.1"
    assert "token-123" not in hook_worker.log_text() and SECRET not in hook_worker.log_text()
    results.close()


def test_a_burst_of_deliveries_with_failures_and_hostile_fields_arrives_once_each(
        stack: Stack, hook_worker: WorkerProcess, receiver: Receiver) -> None:
    """40 events at once, one listener, up to 10 deliveries in flight, the first 8 answers
    503; some events carry deep nesting or HTML (delivered as data), four a lone surrogate
    escape (not Unicode text: dead-lettered by the match step, docs/input-limits.md).
    Counted from outside: every other event arrives signed, once delivered, under its own
    webhook-id, however many attempts it took; its neighbours are not affected."""
    receiver.answers = [(503, {}, 0.0)] * 8
    kind = unique("burst")
    h = {"id": unique("hookburst"), "event": {"match": {"type": kind}}, "retry": FAST_RETRY,
         "webhook": {"url": f"{receiver.url}/burst", "secret": "hook"}}
    stack.apply_handler(h)
    deep: Any = "x"
    for _ in range(60):
        deep = {"d": deep}
    hostile = ['"\\ud800"', json.dumps(deep), json.dumps("<script>alert(1)</script>")]
    p = stack.producer()
    surrogate = set()
    for i in range(40):
        extra = hostile[i % 3] if i % 4 == 0 else json.dumps(i)
        if extra == hostile[0]:
            surrogate.add(f"{kind}-{i}")
        p.produce(stack.topics.events, f'{{"id": "{kind}-{i}", "type": "{kind}", "n": {extra}}}'.encode(), b"k")
    assert p.flush(30) == 0
    wanted = {f"{kind}-{i}" for i in range(40)} - surrogate
    assert len(wanted) == 36
    end = time.monotonic() + 90
    while time.monotonic() < end and len(receiver.received) < len(wanted) + 8:
        time.sleep(0.2)
    time.sleep(1.0)
    got = [r for r in receiver.received if r.path == "/burst"]
    assert len(got) == len(wanted) + 8, f"{len(got)} requests: 36 deliveries + 8 retried 503s"
    assert len({r.headers["webhook-id"] for r in got}) == len(wanted)
    assert {json_of(r)["data"]["id"] for r in got} == wanted
    for r in got:
        assert standardwebhooks.Webhook(SECRET).verify(r.body, r.headers) == json_of(r)
    dead = stack.reader(stack.topics.dead_letter)
    letters = dead.wait_for(lambda m: kind.encode() in (m.value() or b""), count=4)
    assert all(b"lone surrogate" in dict(m.headers() or [])["reason"] for m in letters)
    dead.close()


def test_a_400_is_permanent_one_attempt_and_a_dead_letter_with_the_response(
        stack: Stack, hook_worker: WorkerProcess, receiver: Receiver) -> None:
    receiver.answers = [(400, {}, 0.0)]
    kind = unique("bad")
    h = {"id": unique("hook400"), "event": {"match": {"type": kind}}, "retry": FAST_RETRY,
         "webhook": {"url": f"{receiver.url}/bad", "secret": "hook"}}
    stack.apply_handler(h)
    stack.send_event({"id": unique("e"), "type": kind})
    receiver.wait_for("/bad")
    reason = dead_letter_headers(stack, h["id"])["reason"].decode()
    assert "a permanent failure" in reason and "HTTP 400" in reason and "answer 400" in reason
    time.sleep(1.5)
    assert len(receiver.received) == 1


def test_a_redirect_is_not_followed_and_fails(stack: Stack, hook_worker: WorkerProcess, receiver: Receiver) -> None:
    receiver.answers = [(302, {"Location": f"{receiver.url}/elsewhere"}, 0.0)]
    kind = unique("moved")
    h = {"id": unique("hookmoved"), "event": {"match": {"type": kind}}, "retry": FAST_RETRY,
         "webhook": {"url": f"{receiver.url}/moved"}}
    stack.apply_handler(h)
    stack.send_event({"id": unique("e"), "type": kind})
    results = stack.reader(stack.topics.run_results)
    [moved] = results.wait_for(lambda m: result(m)["handler_id"] == h["id"])
    assert result(moved)["status"] == "failed" and "HTTP 302" in result(moved)["error"]
    time.sleep(1.0)
    assert [r.path for r in receiver.received] == ["/moved"], "the redirect was not followed"
    results.close()


def test_410_gone_dead_letters_and_disables_the_listener_until_applied_again(
        stack: Stack, hook_worker: WorkerProcess, receiver: Receiver) -> None:
    receiver.answers = [(410, {}, 0.0)]
    kind = unique("gone")
    h = {"id": unique("hookgone"), "event": {"match": {"type": kind}}, "retry": FAST_RETRY,
         "webhook": {"url": f"{receiver.url}/gone"}}
    stack.apply_handler(h)
    stack.send_event({"id": unique("e"), "type": kind})
    assert "the listener is disabled" in dead_letter_headers(stack, h["id"])["reason"].decode()
    handlers = stack.reader(stack.topics.handlers)
    handlers.wait_for(lambda m: m.key() == h["id"].encode() and m.value() is not None
                      and json.loads(m.value()).get("enabled") is False)
    time.sleep(1.0)
    stack.send_event({"id": unique("e"), "type": kind})
    time.sleep(2.0)
    assert len(receiver.received) == 1, "a disabled listener delivers nothing"
    stack.apply_handler(h)  # applied again: enabled
    time.sleep(1.0)
    stack.send_event({"id": unique("e"), "type": kind})
    receiver.wait_for("/gone", count=2)
    handlers.close()


def test_a_target_slower_than_its_timeout_is_retried(stack: Stack, hook_worker: WorkerProcess,
                                                     receiver: Receiver) -> None:
    receiver.answers = [(200, {}, 3.0)]
    kind = unique("slow")
    h = {"id": unique("hookslow"), "event": {"match": {"type": kind}}, "retry": FAST_RETRY,
         "webhook": {"url": f"{receiver.url}/slow", "timeout_seconds": 1}}
    stack.apply_handler(h)
    stack.send_event({"id": unique("e"), "type": kind})
    got = receiver.wait_for("/slow", count=2)
    assert got[0].headers["webhook-id"] == got[1].headers["webhook-id"]
    results = stack.reader(stack.topics.run_results)
    [first, second] = results.wait_for(lambda m: result(m)["handler_id"] == h["id"], count=2)
    assert "timed out after 1s" in result(first)["error"] and result(second)["status"] == "succeeded"
    results.close()


def test_a_slow_listener_holds_up_neither_another_listener_nor_a_job(stack: Stack, hook_worker: WorkerProcess,
                                                                      receiver: Receiver) -> None:
    """One target answers after 12 s (its timeout is 30 s) and gets a burst of 10 deliveries,
    more than a runner has job slots (8); meanwhile another listener's 5 deliveries and a
    plain job's 5 runs all finish. Counted from outside, on run-results: every fast result
    is there while no slow delivery has a result yet."""
    slow_delay, fast_count, burst = 12.0, 5, 10
    slow_receiver = Receiver(answers=[(200, {}, slow_delay)] * burst)
    results = stack.reader(stack.topics.run_results)
    try:
        slow_kind, fast_kind, job_kind = unique("slowpoke"), unique("quick"), unique("plain")
        slow = {"id": unique("hookslowpoke"), "event": {"match": {"type": slow_kind}},
                "webhook": {"url": f"{slow_receiver.url}/slowpoke", "timeout_seconds": 30}}
        fast = {"id": unique("hookquick"), "event": {"match": {"type": fast_kind}},
                "webhook": {"url": f"{receiver.url}/quick", "secret": "hook"}}
        plain = {"id": job_kind, "job": "tick7", "event": {"match": {"type": job_kind}}}
        for h in (slow, fast, plain):
            stack.apply_handler(h)
        for _ in range(burst):
            stack.send_event({"id": unique("e"), "type": slow_kind})
        arrived = min(slow_receiver.wait_for("/slowpoke", count=burst), key=lambda r: r.at)
        p = stack.producer()
        for i in range(fast_count):
            p.produce(stack.topics.events, json.dumps({"id": unique("e"), "type": fast_kind, "n": i}).encode(), b"f")
            p.produce(stack.topics.events, json.dumps({"id": unique("e"), "type": job_kind, "n": i}).encode(), b"j")
        assert p.flush(30) == 0

        def mine(m: Any) -> bool:
            return result(m)["handler_id"] in (slow["id"], fast["id"], plain["id"])

        # by the time the slow answer can come, everything else must have finished
        window = slow_delay - (time.time() - arrived.at) - 0.5
        assert window > 3, f"the slow request arrived too long ago ({time.time() - arrived.at:.1f}s)"
        done = results.wait_for(lambda m: mine(m) and result(m)["handler_id"] != slow["id"],
                                count=2 * fast_count, timeout=window)
        assert not [m for m in results.seen if result(m)["handler_id"] == slow["id"]], "the slow one already finished"
        assert sorted(result(m)["handler_id"] for m in done) == sorted([fast["id"]] * fast_count
                                                                      + [plain["id"]] * fast_count)
        assert all(result(m)["status"] == "succeeded" for m in done), [result(m)["error"] for m in done]
        assert len(receiver.wait_for("/quick", count=fast_count)) == fast_count
        # and the slow ones finish too, each once, delivered
        slowest = results.wait_for(lambda m: result(m)["handler_id"] == slow["id"], count=burst, timeout=60)
        assert all(result(m)["status"] == "succeeded" for m in slowest)
        assert all(json.loads(result(m)["final_state_json"])["delivery"]["ms"] >= slow_delay * 1000 - 500
                   for m in slowest)
        assert len(slow_receiver.received) == burst
    finally:
        results.close()
        slow_receiver.close()


def test_mistral_listener_gets_started_then_finished_and_failed(stack: Stack, hook_worker: WorkerProcess,
                                                                receiver: Receiver) -> None:
    """A listener on two jobs' lifecycle: a job that succeeds, one that raises."""
    ok, bad = unique("ok"), unique("bad")
    jobs = {"tick4": ok, "explode2": bad}
    for job, kind in jobs.items():
        stack.apply_handler({"id": kind, "job": job, "event": {"match": {"type": kind}}})
    listener = {"id": unique("mistral"), "retry": FAST_RETRY,
                "event": {"match": {"source": "internal"},  # any of: an EventBridge pattern
                          "pattern": {"job": list(jobs), "new_status": ["started", "finished", "failed"]}},
                "webhook": {"url": f"{receiver.url}/lifecycle", "secret": "hook"}}
    stack.apply_handler(listener)
    for kind in jobs.values():
        stack.send_event({"id": unique("e"), "type": kind, "n": 1})
    got = receiver.wait_for("/lifecycle", count=4)
    seen = [(json_of(r)["data"]["job"], json_of(r)["type"]) for r in got]
    assert sorted(seen) == sorted([("tick4", "run.started"), ("tick4", "run.finished"),
                                   ("explode2", "run.started"), ("explode2", "run.failed")])
    for job in jobs:
        order = [t for j, t in seen if j == job]
        assert order[0] == "run.started", f"{job}: {order}"
    time.sleep(1.0)
    assert len(receiver.received) == 4, "a delivery's own lifecycle starts no delivery"


def test_listeners_cli_adds_lists_and_deletes_a_mistral_listener(stack: Stack, hook_worker: WorkerProcess,
                                                                 receiver: Receiver) -> None:
    kind = unique("cli")
    stack.apply_handler({"id": kind, "job": "tick5", "event": {"match": {"type": kind}}})
    bad = stack.cli("listeners", "add", "--job", "tick5", "--on", "exploded", "--url", receiver.url)
    assert bad.returncode == 2 and "unknown event(s) exploded" in bad.stderr
    added = stack.cli("listeners", "add", "--job", "tick5", "--on", "launched,succeeded", "--url",
                      f"{receiver.url}/cli", "--secret", "hook", "--header", "Authorization=secret:api-token",
                      "--id", f"{kind}-listener")
    assert added.returncode == 0, added.stderr
    stack.wait_logged(f"handler {kind}-listener applied")
    listed = stack.cli("listeners", "list")
    assert f"{kind}-listener\tPOST {receiver.url}/cli" in listed.stdout
    stack.send_event({"id": unique("e"), "type": kind})
    got = receiver.wait_for("/cli", count=2)
    assert sorted(json_of(r)["type"] for r in got) == ["run.finished", "run.started"]
    assert all(r.headers["Authorization"] == "token-123" for r in got)
    assert all(standardwebhooks.Webhook(SECRET).verify(r.body, r.headers) for r in got)
    deleted = stack.cli("listeners", "delete", f"{kind}-listener")
    assert deleted.returncode == 0, deleted.stderr
    stack.wait_logged(f"handler {kind}-listener deleted")
    assert stack.cli("listeners", "delete", f"{kind}-listener").returncode == 2
    stack.send_event({"id": unique("e"), "type": kind})
    time.sleep(2.0)
    assert len(receiver.received) == 2, "a deleted listener delivers nothing"


def test_brainlife_mail_me_when_a_task_finishes_is_one_handler(stack: Stack, hook_worker: WorkerProcess,
                                                               smtp: SmtpSink) -> None:
    """after/status + once + email: the user is mailed once, with the run's fields."""
    kind = unique("task")
    stack.apply_handler({"id": kind, "job": "tick6", "event": {"match": {"type": kind}}})
    notify = {"id": unique("notify"), "once": True, "after": {"job": "tick6", "status": "success"},
              "email": {"to": ["ada@example.org"], "subject": "Task {{ job }} {{ new_status }}",
                        "message": "Run {{ run_id }} of {{ job }} finished; count {{ final_state.count }}."}}
    stack.apply_handler(notify)
    before = len(smtp.messages)
    stack.send_event({"id": unique("e"), "type": kind})
    stack.send_event({"id": unique("e"), "type": kind})
    [(rcpt, msg)] = smtp.wait_for(before + 1)[before:before + 1]
    assert rcpt == ["ada@example.org"] and msg["Subject"] == "Task tick6 finished"
    assert msg["From"] == "jobs@signalbox.test" and "of tick6 finished; count " in msg.get_content()
    time.sleep(2.0)
    assert len(smtp.messages) == before + 1, "once: the second run mails nobody"


def test_an_email_whose_template_names_a_missing_field_is_dead_lettered_not_crashed(
        stack: Stack, hook_worker: WorkerProcess, smtp: SmtpSink) -> None:
    kind = unique("nofield")
    h = {"id": unique("mailbad"), "event": {"match": {"type": kind}}, "retry": FAST_RETRY,
         "email": {"to": "ops@example.org", "subject": "{{ task_name }}", "message": "x"}}
    stack.apply_handler(h)
    before = len(smtp.messages)
    stack.send_event({"id": unique("e"), "type": kind})
    reason = dead_letter_headers(stack, h["id"])["reason"].decode()
    assert "'task_name' is undefined" in reason and "a permanent failure" in reason
    assert len(smtp.messages) == before


def test_webhook_secrets_never_reach_a_topic(stack: Stack, hook_worker: WorkerProcess) -> None:
    """Everything the module's deliveries wrote, read from outside: no secret value."""
    for topic in (stack.topics.handlers, stack.topics.job_commands, stack.topics.run_results,
                  stack.topics.dead_letter, stack.topics.events):
        reader = stack.reader(topic)
        reader.poll_for(2.0)
        for m in reader.seen:
            blob = (m.value() or b"") + b"".join(v or b"" for _, v in (m.headers() or []))
            assert SECRET.encode() not in blob and b"token-123" not in blob, topic
        reader.close()
    assert os.environ.get(secrets.env_name("hook")) is None  # the test process never had it
