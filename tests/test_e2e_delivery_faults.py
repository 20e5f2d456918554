"""Deliveries under faults: a guard with an empty allow-list, a worker killed mid-delivery.
Each test starts and stops its own worker (the allow-list is a worker setting)."""

from __future__ import annotations

import json
import signal
import time

import pytest

from streams.delivery import secrets
from tests.conftest import Stack, result, unique
from tests.receiver import Receiver, json_of
from tests.test_delivery import FAST_RETRY, SECRET, dead_letter_headers

pytestmark = pytest.mark.broker


def test_a_loopback_target_is_refused_without_the_allow_list_and_sees_nothing(stack: Stack) -> None:
    w = stack.start_worker(unique("guarded"))  # SIGNALBOX_DELIVERY_ALLOW unset
    w.wait_ready()
    receiver = Receiver()
    try:
        kind = unique("ssrf")
        h = {"id": unique("ssrf"), "event": {"match": {"type": kind}}, "retry": FAST_RETRY,
             "webhook": {"url": f"{receiver.url}/internal"}}
        stack.apply_handler(h)
        stack.send_event({"id": unique("e"), "type": kind})
        results = stack.reader(stack.topics.run_results)
        [refused] = results.wait_for(lambda m: result(m)["handler_id"] == h["id"])
        assert result(refused)["status"] == "failed"
        assert "127.0.0.1 is a loopback address" in result(refused)["error"]
        dead_letter_headers(stack, h["id"])
        time.sleep(1.0)
        assert receiver.received == [], "the request left although the guard refused it"
        results.close()
    finally:
        receiver.close()
        w.stop()


def test_a_worker_killed_mid_delivery_delivers_again_with_the_same_webhook_id(stack: Stack) -> None:
    env = {"SIGNALBOX_DELIVERY_ALLOW": "127.0.0.1/32", secrets.env_name("hook"): SECRET}
    w = stack.start_worker(unique("mid"), env=env)
    w.wait_ready()
    receiver = Receiver(answers=[(200, {}, 30.0)])  # the first request hangs until the worker is gone
    try:
        kind = unique("kill")
        h = {"id": unique("killhook"), "event": {"match": {"type": kind}}, "retry": FAST_RETRY,
             "webhook": {"url": f"{receiver.url}/kill", "secret": "hook", "timeout_seconds": 60}}
        stack.apply_handler(h)
        stack.send_event({"id": unique("e"), "type": kind, "n": 1})
        receiver.wait_for("/kill")
        w.stop(signal.SIGKILL)
        again = stack.start_worker(unique("mid-again"), datadir=w.datadir, env=env)
        again.wait_ready()
        got = receiver.wait_for("/kill", count=2, timeout=90)
        assert got[0].headers["webhook-id"] == got[1].headers["webhook-id"]
        assert json_of(got[1])["data"]["type"] == kind
        results = stack.reader(stack.topics.run_results)
        [done] = results.wait_for(lambda m: result(m)["handler_id"] == h["id"] and result(m)["status"] == "succeeded")
        assert json.loads(result(done)["final_state_json"])["delivery"]["status"] == 200
        results.close()
        again.stop()
    finally:
        receiver.close()


def test_mail_to_a_server_that_is_down_is_retried_then_dead_lettered(stack: Stack) -> None:
    import socket

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    w = stack.start_worker(unique("nosmtp"), env={"SIGNALBOX_SMTP_HOST": "127.0.0.1",
                                                   "SIGNALBOX_SMTP_PORT": str(closed),
                                                   "SIGNALBOX_SMTP_TIMEOUT_SECONDS": "2"})
    w.wait_ready()
    try:
        kind = unique("down")
        h = {"id": unique("maildown"), "event": {"match": {"type": kind}},
             "retry": {"attempts": 3, "backoff": {"initial_seconds": 0.2, "factor": 1}},
             "email": {"to": "ops@example.org", "subject": "s", "message": "m"}}
        stack.apply_handler(h)
        stack.send_event({"id": unique("e"), "type": kind})
        results = stack.reader(stack.topics.run_results)
        tries = results.wait_for(lambda m: result(m)["handler_id"] == h["id"], count=3)
        assert [result(m)["attempt"] for m in tries] == [1, 2, 3]
        assert all(result(m)["status"] == "failed" and "email to 127.0.0.1" in result(m)["error"] for m in tries)
        headers = dead_letter_headers(stack, h["id"])
        assert headers["attempts"] == b"3" and headers["limit"] == b"attempts"
        results.close()
    finally:
        w.stop()
