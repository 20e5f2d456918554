"""docuteam feeder's event handlers on the real broker: exact AND rules, the parameter,
the creator constraint, events emitted by jobs, and the emitting-job constraint."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import Stack, command, unique

pytestmark = pytest.mark.broker


def fired(commands, handler_id: str) -> list[dict[str, Any]]:
    return [command(m) for m in commands.seen if command(m)["handler_id"] == handler_id]


def test_exact_rules_parameter_and_creator(stack: Stack, worker, commands):
    h = {"id": unique("feeder-typ"), "job": "count2", "params": {"sip": "PID"},
         "event": {"match": {"source": "bridge", "event_type": "Test Typ"}, "creator": "bridge-api"}}
    stack.apply_handler(h)
    trusted = [("creator", b"bridge-api")]
    stack.produce(stack.topics.events, json.dumps({"id": "x1", "source": "bridge", "event_type": "Test-Typ",
                                                  "PID": "p1"}).encode(), b"k", trusted)   # not exactly equal
    stack.produce(stack.topics.events, json.dumps({"id": "x2", "source": "bridge", "event_type": "Test Typ"}).encode(),
                  b"k", trusted)  # no PID: no run
    stack.produce(stack.topics.events, json.dumps({"id": "x3", "source": "bridge", "event_type": "Test Typ",
                                                  "PID": "p3"}).encode(), b"k")  # no creator header
    stack.produce(stack.topics.events, json.dumps({"id": "x4", "source": "bridge", "event_type": "Test Typ",
                                                  "PID": "p4"}).encode(), b"k", [("creator", b"someone-else")])
    sent = stack.cli("send", '{"id": "x5", "source": "bridge", "event_type": "Test Typ", "PID": "p5"}',
                     "--key", "k", "--creator", "bridge-api")
    assert sent.returncode == 0, sent.stderr
    commands.wait_for(lambda m: command(m)["trigger_ref"] == "id:x5")
    commands.poll_for(1.0)
    runs = fired(commands, h["id"])
    assert [json.loads(c["params_json"]) for c in runs] == [{"sip": "p5"}]


def test_job_emitted_events_and_emitting_job_constraint(stack: Stack, worker, commands):
    deposit = {"id": unique("deposition"), "job": "deposit", "params": {"format": "fmt", "deposition": "dep"},
               "event": {"match": {"event_type": "Deposit Requested"}}}
    mets = {"id": unique("mets"), "job": "count3", "params": {"deposition": "resource_value"},
            "event": {"match": {"event_type": "Deposition Creation", "package_format": "MatterhornMETSv1.0"},
                      "emitted_by": "deposit"}}
    cleanup = {"id": unique("cleanup"), "job": "count4", "params": {"run": "run_id"},
               "event": {"match": {"source": "internal", "event_type": "JobRun Status Change",
                                   "new_status": "finished"}, "emitted_by": "deposit"}}
    for h in (deposit, mets, cleanup):
        stack.apply_handler(h)
    events = stack.reader(stack.topics.events)
    stack.send_event({"id": unique("req"), "event_type": "Deposit Requested", "fmt": "MatterhornMETSv1.0",
                      "dep": 12})
    [dep_cmd] = commands.wait_for(lambda m: command(m)["handler_id"] == deposit["id"])
    run_id = command(dep_cmd)["run_id"]
    [emitted] = events.wait_for(lambda m: dict(m.headers() or []).get("emitted_by_run") == run_id.encode()
                                and b"Deposition Creation" in m.value())
    body = json.loads(emitted.value())
    assert body["id"] == f"{run_id}:emit:0" and body["resource_value"] == 12
    assert dict(emitted.headers())["emitted_by_job"] == b"deposit"
    [mets_cmd] = commands.wait_for(lambda m: command(m)["handler_id"] == mets["id"])
    assert json.loads(command(mets_cmd)["params_json"]) == {"deposition": 12}
    [clean_cmd] = commands.wait_for(lambda m: command(m)["handler_id"] == cleanup["id"])
    assert json.loads(command(clean_cmd)["params_json"]) == {"run": run_id}

    # the same body from an ordinary producer was not emitted by the deposit job
    stack.send_event({**{k: v for k, v in body.items() if k != "id"}, "id": unique("forged")})
    stack.send_event({"id": unique("sentinel"), "event_type": "Deposit Requested", "fmt": "other", "dep": 13})
    commands.wait_for(lambda m: command(m)["handler_id"] == deposit["id"], count=2)
    commands.poll_for(2.0)
    assert len(fired(commands, mets["id"])) == 1
    events.close()
