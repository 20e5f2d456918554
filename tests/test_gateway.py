"""The HTTP gateway end to end: a real `signalbox gateway` process (uvicorn) and a real
worker on the embedded broker; every effect counted from outside with plain Kafka clients.

Tokens are made here with PyJWT directly, not with the project's helper."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import jwt
import pytest
from websockets.asyncio.client import connect

from tests.conftest import GatewayProcess, Stack, TopicReader, WorkerProcess, command, unique

SECRET = "test-gateway-secret-" + uuid.uuid4().hex
AUDIENCE = "signalbox-tests"
ALL = "events:write handlers:read handlers:write runs:read subscribe"


def token(sub: str = "alice", scope: str = ALL, secret: str = SECRET, ttl: int = 600, **claims: Any) -> str:
    now = int(time.time())
    return jwt.encode({"sub": sub, "scope": scope, "aud": AUDIENCE, "iat": now, "exp": now + ttl, **claims},
                      secret, algorithm="HS256")


def auth(sub: str = "alice", scope: str = ALL, **claims: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(sub, scope, **claims)}"}


GATEWAY_ENV = {"SIGNALBOX_GATEWAY_JWT_SECRET": SECRET, "SIGNALBOX_GATEWAY_JWT_AUDIENCE": AUDIENCE,
               "SIGNALBOX_GATEWAY_MAX_BODY_BYTES": "65536", "SIGNALBOX_GATEWAY_MAX_BATCH_EVENTS": "200"}


@pytest.fixture(scope="module")
def gateway(stack: Stack, worker: WorkerProcess) -> Iterator[GatewayProcess]:
    g = GatewayProcess(stack, "gateway", GATEWAY_ENV).start()
    yield g
    g.stop()


@pytest.fixture
def http(gateway: GatewayProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        yield client


def on_topic(reader: TopicReader, ids: set[str], timeout: float = 30) -> dict[str, Any]:
    """The records of ``ids`` on the events topic: id -> (value, headers)."""
    found = reader.wait_for(lambda m: json.loads(m.value()).get("id") in ids, count=len(ids), timeout=timeout)
    return {json.loads(m.value())["id"]: (json.loads(m.value()), dict(m.headers() or [])) for m in found}


# -- authentication ---------------------------------------------------------------------


def test_tokens_are_checked(http: httpx.Client, events: TopicReader) -> None:
    body = {"id": unique("auth"), "type": "x"}
    now = int(time.time())
    cases = {
        "no token": ({}, 401),
        "not a bearer": ({"Authorization": "Basic YTpi"}, 401),
        "garbage": ({"Authorization": "Bearer not.a.jwt"}, 401),
        "wrong secret": ({"Authorization": f"Bearer {token(secret='other-secret-' + 'x' * 20)}"}, 401),
        "expired": ({"Authorization": f"Bearer {token(ttl=-120)}"}, 401),
        "wrong audience": ({"Authorization": "Bearer " + jwt.encode(
            {"sub": "alice", "scope": ALL, "aud": "someone-else", "exp": now + 60}, SECRET, algorithm="HS256")}, 401),
        "no exp": ({"Authorization": "Bearer " + jwt.encode({"sub": "alice", "scope": ALL, "aud": AUDIENCE}, SECRET,
                                                             algorithm="HS256")}, 401),
        "alg none": ({"Authorization": "Bearer " + jwt.encode({"sub": "alice", "scope": ALL, "aud": AUDIENCE,
                                                               "exp": now + 60}, None, algorithm="none")}, 401),
        "missing scope": (auth(scope="runs:read"), 403),
    }
    for name, (headers, status) in cases.items():
        r = http.post("/events", json=body, headers=headers)
        assert r.status_code == status, (name, r.text)
        assert SECRET not in r.text
    # a role grants scopes too
    assert http.post("/events", json={**body, "id": unique("role")}, headers=auth(scope="", roles=["producer"])
                     ).status_code == 202
    assert http.get("/runs", headers=auth(scope="", roles=["producer"])).status_code == 403
    # nothing refused reached the topic
    assert not [m for m in events.poll_for(1.0) if json.loads(m.value()).get("id") == body["id"]]


# -- ingest -----------------------------------------------------------------------------


def test_ingest_sets_creator_from_the_token_and_refuses_a_forged_one(http: httpx.Client, events: TopicReader) -> None:
    one = {"id": unique("one"), "type": "deposit", "creator": "mallory"}  # a body field is only data
    r = http.post("/events", json=one, headers=auth("alice"))
    assert r.status_code == 202, r.text
    assert r.json()["ids"] == [one["id"]] and r.json()["creator"] == "alice"
    batch = [{"id": unique("b"), "n": i} for i in range(5)] + [{"n": "no id"}]
    r = http.post("/events", json=batch, headers=auth("bob"))
    assert r.status_code == 202, r.text
    ids = r.json()["ids"]
    assert len(ids) == 6 and ids[:5] == [e["id"] for e in batch[:5]] and ids[5]  # an id was given to the last
    seen = on_topic(events, {one["id"], *ids})
    assert seen[one["id"]][1]["creator"] == b"alice"
    assert all(seen[i][1]["creator"] == b"bob" for i in ids)
    # a client-supplied creator header is refused, and nothing is sent
    forged = {"id": unique("forged")}
    for header in ("creator", "ce-creator"):
        r = http.post("/events", json=forged, headers={**auth("alice"), header: "root"})
        assert r.status_code == 400 and "creator" in r.json()["detail"]
    assert not [m for m in events.poll_for(1.0) if json.loads(m.value()).get("id") == forged["id"]]


def test_ingest_refuses_bad_input_with_the_right_status(http: httpx.Client, events: TopicReader) -> None:
    marker = unique("bad")
    deep = "[" * 5000 + "]" * 5000
    cases: list[tuple[str, bytes, dict[str, str], int]] = [
        ("array of a number", b"[1]", {}, 400),
        ("a string", b'"x"', {}, 400),
        ("not JSON", b"{nope", {}, 400),
        ("empty body", b"", {}, 400),
        ("empty array", b"[]", {}, 400),
        ("deep", f'{{"id": "{marker}", "d": {deep}}}'.encode(), {}, 400),
        ("lone surrogate", f'{{"id": "{marker}", "n": "\\ud800"}}'.encode(), {}, 400),
        ("NaN", f'{{"id": "{marker}", "n": NaN}}'.encode(), {}, 400),
        ("internal", f'{{"id": "{marker}", "source": "internal"}}'.encode(), {}, 400),
        ("run request", f'{{"id": "{marker}", "event_type": "JobRun Requested", "handler_id": "h"}}'.encode(), {},
         400),
        ("over the body limit", f'{{"id": "{marker}", "pad": "{"x" * 70000}"}}'.encode(), {}, 413),
        ("over the batch limit", json.dumps([{"id": marker}] * 201).encode(), {}, 413),
        ("a batch with one bad", json.dumps([{"id": marker}, 7]).encode(), {}, 400),
        ("xml", b"<a/>", {"content-type": "application/xml"}, 415),
        ("CloudEvent without source", json.dumps({"id": marker, "specversion": "1.0", "type": "t"}).encode(),
         {"content-type": "application/cloudevents+json"}, 400),
        ("binary CloudEvent without type", b"{}", {"ce-specversion": "1.0", "ce-id": marker, "ce-source": "s"}, 400),
    ]
    for name, body, headers, status in cases:
        r = http.post("/events", content=body, headers={"content-type": "application/json", **auth(), **headers})
        assert r.status_code == status, (name, r.status_code, r.text[:300])
        assert r.json()["detail"], name
    # none of it reached the topic, and the gateway still serves
    assert not [m for m in events.poll_for(1.5) if marker in m.value().decode(errors="replace")]
    assert http.post("/events", json={"id": unique("after")}, headers=auth()).status_code == 202


def test_cloudevents_binary_structured_and_batch(http: httpx.Client, events: TopicReader) -> None:
    ids = [unique("ce") for _ in range(4)]
    r = http.post("/events", content=json.dumps({"pid": "CH-1"}).encode(), headers={
        **auth("carol"), "content-type": "application/json", "ce-specversion": "1.0", "ce-id": ids[0],
        "ce-source": "/feeder", "ce-type": "org.example.deposit", "ce-subject": "CH-1"})
    assert r.status_code == 202, r.text
    structured = {"specversion": "1.0", "id": ids[1], "source": "/feeder", "type": "org.example.deposit",
                  "data": {"pid": "CH-2"}}
    r = http.post("/events", content=json.dumps(structured).encode(),
                  headers={**auth("carol"), "content-type": "application/cloudevents+json"})
    assert r.status_code == 202, r.text
    batch = [{**structured, "id": i, "data": {"pid": i}} for i in ids[2:]]
    r = http.post("/events", content=json.dumps(batch).encode(),
                  headers={**auth("carol"), "content-type": "application/cloudevents-batch+json"})
    assert r.status_code == 202 and r.json()["ids"] == ids[2:], r.text
    seen = on_topic(events, set(ids))
    binary = seen[ids[0]][0]
    assert binary == {"specversion": "1.0", "id": ids[0], "source": "/feeder", "type": "org.example.deposit",
                      "subject": "CH-1", "datacontenttype": "application/json", "data": {"pid": "CH-1"}}
    assert seen[ids[1]][0] == structured
    assert all(seen[i][1]["creator"] == b"carol" for i in ids)


def test_concurrent_ingest_loses_nothing(http: httpx.Client, gateway: GatewayProcess, events: TopicReader) -> None:
    tag = unique("burst")

    def post(n: int) -> list[str]:
        with httpx.Client(base_url=gateway.url, timeout=60) as c:
            r = c.post("/events", json=[{"id": f"{tag}-{n}-{i}", "n": i} for i in range(50)], headers=auth(f"u{n}"))
            assert r.status_code == 202, r.text
            return list(r.json()["ids"])

    with ThreadPoolExecutor(8) as pool:
        acked = [i for ids in pool.map(post, range(16)) for i in ids]
    assert len(acked) == len(set(acked)) == 800
    found = events.wait_for(lambda m: m.value().startswith(b'{"id":"' + tag.encode()), count=800, timeout=60)
    by_id = {json.loads(m.value())["id"]: dict(m.headers() or [])["creator"] for m in found}
    assert set(by_id) == set(acked) and len(found) == 800  # each once
    assert all(by_id[i] == f"u{i.split('-')[-2]}".encode() for i in acked)


# -- handlers, the feeder's creator constraint --------------------------------------------


def test_creator_constraint_end_to_end(http: httpx.Client, commands: TopicReader) -> None:
    job, hid = "count0", unique("only-alice")
    r = http.put(f"/handlers/{hid}", json={"job": job, "event": {"match": {"type": hid}, "creator": "alice"}},
                 headers=auth())
    assert r.status_code == 200, r.text
    time.sleep(2)  # handlers reach workers within a fetch or two
    ids = {"alice": unique("a"), "bob": unique("b")}
    for who, event_id in ids.items():
        assert http.post("/events", json={"id": event_id, "type": hid}, headers=auth(who)).status_code == 202
    # a forged creator in the body does not make bob alice
    forged = unique("f")
    assert http.post("/events", json={"id": forged, "type": hid, "creator": "alice"},
                     headers=auth("bob")).status_code == 202
    fired = commands.wait_for(lambda m: command(m)["handler_id"] == hid, count=1)
    commands.poll_for(3.0)
    fired = [command(m) for m in commands.seen if command(m)["handler_id"] == hid]
    assert [c["trigger_ref"] for c in fired] == [f"id:{ids['alice']}"]


def test_handlers_crud_reaches_the_worker(http: httpx.Client, commands: TopicReader, stack: Stack) -> None:
    hid = unique("crud")
    bad = http.put(f"/handlers/{hid}", json={"job": "", "event": {"match": 5}, "bogus": 1}, headers=auth())
    assert bad.status_code == 422
    paths = {e["path"] for e in bad.json()["detail"]}
    assert {"bogus", "event.match"} <= paths, bad.json()
    assert http.put(f"/handlers/{hid}", json={"id": "other", "job": "count1"}, headers=auth()).status_code == 422
    assert http.put(f"/handlers/{hid}", json={"job": "count1", "event": {"match": {"type": hid}}},
                    headers=auth("alice", "handlers:read")).status_code == 403
    r = http.put(f"/handlers/{hid}", json={"job": "count1", "event": {"match": {"type": hid}}}, headers=auth())
    assert r.status_code == 200, r.text
    got = http.get(f"/handlers/{hid}", headers=auth())  # read your write, at once
    assert got.status_code == 200 and got.json()["handler"]["job"] == "count1" and got.json()["valid"]
    assert hid in {h["id"] for h in http.get("/handlers", headers=auth()).json()}
    stack.wait_logged(f"handler {hid} applied")
    first = unique("e")
    http.post("/events", json={"id": first, "type": hid}, headers=auth())
    commands.wait_for(lambda m: command(m)["trigger_ref"] == f"id:{first}")
    # run now, with params; a declared param without a value is refused
    r = http.post(f"/handlers/{hid}/run", json={"params": {"x": 1}}, headers=auth())
    assert r.status_code == 202, r.text
    request_id = r.json()["request_id"]
    manual = commands.wait_for(lambda m: command(m)["trigger_ref"] == f"manual:{request_id}")
    assert json.loads(command(manual[0])["params_json"]) == {"x": 1}
    assert http.post(f"/handlers/{hid}/arm", headers=auth()).status_code == 409  # not a once-handler
    assert http.post("/handlers/nope/run", json={}, headers=auth()).status_code == 404
    # delete: 204, then 404, and the worker stops firing
    assert http.delete(f"/handlers/{hid}", headers=auth()).status_code == 204
    assert http.get(f"/handlers/{hid}", headers=auth()).status_code == 404
    assert http.delete(f"/handlers/{hid}", headers=auth()).status_code == 404
    stack.wait_logged(f"handler {hid} deleted")
    after = unique("e")
    http.post("/events", json={"id": after, "type": hid}, headers=auth())
    commands.poll_for(3.0)
    assert not [m for m in commands.seen if command(m)["trigger_ref"] == f"id:{after}"]


def test_listeners_and_notifications_become_handlers(http: httpx.Client) -> None:
    r = http.post("/listeners", json={"jobs": ["migrate-pid"], "events": ["launched", "succeeded", "failed"],
                                      "url": "https://hooks.example.org/x", "headers": {"X-Token": {"secret": "tok"}},
                                      "secret": "hook-secret", "id": unique("listener")}, headers=auth())
    assert r.status_code == 201, r.text
    h = r.json()["handler"]
    assert h["job"] == f"webhook.{h['id']}" and h["webhook"]["headers"] == {"X-Token": {"secret": "tok"}}
    assert h["event"]["pattern"] == {"job": ["migrate-pid"], "new_status": ["failed", "finished", "started"]}
    assert h["id"] in {x["id"] for x in http.get("/listeners", headers=auth()).json()}
    bad = http.post("/listeners", json={"jobs": ["j"], "events": ["exploded"], "url": "https://x.org"},
                    headers=auth())
    assert bad.status_code == 422 and "exploded" in bad.text
    assert http.delete(f"/listeners/{h['id']}", headers=auth()).status_code == 204
    # brainlife: the recipient is the caller's e-mail claim, never the body's
    note = {"event": "wf.task.finished", "handler": "email",
            "config": {"job": "count2", "subject": "{{ job }} done", "message": "run {{ run_id }}"}}
    r = http.post("/notifications", json=note, headers=auth("ada", email="ada@example.org"))
    assert r.status_code == 201, r.text
    h = r.json()["handler"]
    assert h["email"]["to"] == ["ada@example.org"] and h["once"] is True
    assert h["after"] == {"job": "count2", "status": "success", "state": "upstream"} or h["after"]["job"] == "count2"
    assert http.post("/notifications", json={**note, "config": {**note["config"], "to": "eve@example.org"}},
                     headers=auth("ada", email="ada@example.org")).status_code == 422
    assert http.post("/notifications", json=note, headers=auth("noemail")).status_code == 403
    run_note = {**note, "config": {"run_id": "r-1", "subject": "s", "message": "m"}}
    r = http.post("/notifications", json=run_note, headers=auth("ada", email="ada@example.org"))
    assert r.status_code == 201 and r.json()["handler"]["event"]["pattern"]["run_id"] == ["r-1"]


# -- runs and jobs from the read model ------------------------------------------------------


def _wait_runs(http: httpx.Client, job: str, count: int, status: str = "succeeded", timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        runs = http.get("/runs", params={"job": job, "status": status, "limit": 500}, headers=auth()).json()["runs"]
        if len(runs) >= count:
            return
        time.sleep(0.2)
    raise AssertionError(f"{job}: fewer than {count} {status} runs in the read model")


def test_runs_are_listed_filtered_and_paginated(http: httpx.Client, gateway: GatewayProcess, stack: Stack) -> None:
    job, hid, failing = "count3", unique("runs"), unique("fails")
    http.put(f"/handlers/{hid}", json={"job": job, "event": {"match": {"type": hid}}}, headers=auth())
    http.put(f"/handlers/{failing}", json={"job": "explode", "event": {"match": {"type": failing}}}, headers=auth())
    stack.wait_logged(f"handler {failing} applied")
    http.post("/events", json=[{"id": unique("r"), "type": hid, "text": f"needle-{i}"} for i in range(12)],
              headers=auth())
    http.post("/events", json={"id": unique("x"), "type": failing}, headers=auth())
    _wait_runs(http, job, 12)
    _wait_runs(http, "explode", 1, "failed")
    # pages of 5, newest first, none twice, none missed
    pages, cursor = [], None
    for _ in range(10):
        params: dict[str, Any] = {"job": job, "limit": 5, **({"cursor": cursor} if cursor else {})}
        page = http.get("/runs", params=params, headers=auth()).json()
        pages.append(page["runs"])
        cursor = page["next"]
        if cursor is None:
            break
    runs = [r for p in pages for r in p]
    assert [len(p) for p in pages] == [5, 5, 2]
    assert len({r["run_id"] for r in runs}) == 12
    assert [r["created_at"] for r in runs] == sorted((r["created_at"] for r in runs), reverse=True)
    # filters
    assert {r["status"] for r in http.get("/runs", params={"handler": failing}, headers=auth()).json()["runs"]} \
        == {"failed"}
    text = http.get("/runs", params={"job": job, "q": "needle-7"}, headers=auth()).json()["runs"]
    assert len(text) == 1
    assert http.get("/runs", params={"since": str(int(time.time() * 1000) + 60_000)}, headers=auth()
                    ).json()["runs"] == []
    assert http.get("/runs", params={"status": "bogus"}, headers=auth()).status_code == 400
    assert http.get("/runs", params={"since": "yesterday"}, headers=auth()).status_code == 400
    # one run in full; the job's state is the cursor of 12 runs
    detail = http.get(f"/runs/{text[0]['run_id']}", headers=auth()).json()
    assert detail["event"]["text"] == "needle-7" and detail["attempts"][0]["status"] == "succeeded"
    assert http.get("/runs/nope", headers=auth()).status_code == 404
    end = time.monotonic() + 30
    while time.monotonic() < end:
        j = http.get(f"/jobs/{job}", headers=auth()).json()
        if j["state"] and j["state"]["runs"] == 12:
            break
        time.sleep(0.2)
    assert j["state"]["runs"] == 12 and j["waiting"] == 0 and len(j["last_runs"]) == 10
    # the read model rebuilds from Kafka: stop, delete the database, start again
    before = http.get("/runs", params={"job": job, "limit": 500}, headers=auth()).json()["runs"]
    gateway.stop()
    gateway.db.unlink()
    for extra in ("-wal", "-shm"):
        gateway.db.with_name(gateway.db.name + extra).unlink(missing_ok=True)
    gateway.start()
    _wait_runs(http, job, 12)
    after = http.get("/runs", params={"job": job, "limit": 500}, headers=auth()).json()["runs"]
    assert [(r["run_id"], r["status"]) for r in after] == [(r["run_id"], r["status"]) for r in before]
    assert http.get("/health").json()["read_model"]["rebuilt"] is True


def _runs_of(g: GatewayProcess, handler: str, count: int, timeout: float = 120) -> list[dict[str, Any]]:
    """The handler's runs in ``g``'s read model once ``count`` of them succeeded and their
    commands were read too (the model reads job-commands and run-results at their own paces:
    a result read before its command leaves the trigger fields empty until the command)."""
    end = time.monotonic() + timeout
    with httpx.Client(base_url=g.url, timeout=30) as client:
        while True:
            runs = client.get("/runs", params={"handler": handler, "limit": 500}, headers=auth()).json()["runs"]
            done = sum(r["status"] == "succeeded" and r["trigger_kind"] is not None for r in runs)
            if done >= count or time.monotonic() > end:
                return runs
            time.sleep(0.2)


def test_read_model_survives_a_kill_9_mid_ingest(http: httpx.Client, stack: Stack) -> None:
    """200 runs stream into a gateway's read model; it is killed -9 halfway and restarted on
    the same database. It then lists every run once, exactly as a gateway that built its
    model from scratch: a batch and its offsets are one transaction."""
    hid, n = unique("rm-kill"), 200
    victim = GatewayProcess(stack, unique("victim-gw"), GATEWAY_ENV).start()
    try:
        http.put(f"/handlers/{hid}", json={"job": "count8", "event": {"match": {"type": hid}}, "params": {"i": "i"}},
                 headers=auth())
        stack.wait_logged(f"handler {hid} applied")
        p = stack.producer()
        for i in range(n):
            p.produce(stack.topics.events, json.dumps({"id": f"{hid}-{i}", "type": hid, "i": i}).encode())
        assert p.flush(30) == 0
        partial = _runs_of(victim, hid, n // 3)
        assert n // 3 <= sum(r["status"] == "succeeded" for r in partial) < n, "killed too late to mean anything"
        victim.stop(signal.SIGKILL)
        victim.start()
        after_kill = _runs_of(victim, hid, n)
        fresh = GatewayProcess(stack, unique("fresh-gw"), GATEWAY_ENV).start()
        try:
            rebuilt = _runs_of(fresh, hid, n)
        finally:
            fresh.stop()
    finally:
        victim.stop()
    assert len(after_kill) == n and len({r["run_id"] for r in after_kill}) == n
    assert {r["status"] for r in after_kill} == {"succeeded"}
    assert after_kill == rebuilt
    for run in after_kill[:: n // 10]:  # a sample in full: one attempt each, not two
        detail = http.get(f"/runs/{run['run_id']}", headers=auth()).json()
        assert [a["status"] for a in detail["attempts"]] == ["succeeded"]


def test_openapi_lists_every_endpoint(http: httpx.Client) -> None:
    spec = http.get("/openapi.json").json()
    for path in ("/events", "/handlers", "/handlers/{handler_id}", "/handlers/{handler_id}/run",
                 "/handlers/{handler_id}/arm", "/listeners", "/notifications", "/runs", "/runs/{run_id}",
                 "/jobs/{job}"):
        assert path in spec["paths"], path
    assert http.get("/docs").status_code == 200


def test_gateway_without_a_key_refuses_to_start(stack: Stack) -> None:
    r = stack.cli("gateway", "--port", "1")
    assert r.returncode == 2 and "SIGNALBOX_GATEWAY_JWT_SECRET" in r.stderr


def test_websocket_streams_a_real_runs_lifecycle_in_order(http: httpx.Client, gateway: GatewayProcess,
                                                         stack: Stack) -> None:
    """A real worker's runs, live: bind run.<job>.#, start runs over HTTP, receive each run's
    started then succeeded (or failed), in order, and no other job's."""
    hid, failing = unique("live"), unique("live-fail")
    http.put(f"/handlers/{hid}", json={"job": "count4", "event": {"match": {"type": hid}}}, headers=auth())
    http.put(f"/handlers/{failing}", json={"job": "explode", "event": {"match": {"type": failing}}}, headers=auth())
    stack.wait_logged(f"handler {failing} applied")
    ws_url = gateway.url.replace("http://", "ws://") + f"/subscribe?jwt={token(scope='subscribe')}"

    async def scenario() -> dict[str, list[str]]:
        async with connect(ws_url) as ws:
            await ws.send(json.dumps({"bind": [{"ex": "runs", "key": "run.count4.#"},
                                               {"ex": "runs", "key": "run.explode.*.failed"}]}))
            for _ in range(2):
                assert "bound" in json.loads(await asyncio.wait_for(ws.recv(), 10))
            await asyncio.to_thread(http.post, "/events", json=[{"id": unique("l"), "type": hid} for _ in range(3)]
                                    + [{"id": unique("l"), "type": failing}], headers=auth())
            seen: dict[str, list[str]] = {}
            async with asyncio.timeout(60):
                while sum(len(v) for v in seen.values()) < 7:
                    msg = json.loads(await ws.recv())
                    assert "error" not in msg, msg
                    seen.setdefault(msg["msg"]["run_id"], []).append(msg["key"].rsplit(".", 1)[1])
            return seen

    seen = asyncio.run(scenario())
    assert sorted(seen.values()) == [["failed"], ["started", "succeeded"], ["started", "succeeded"],
                                     ["started", "succeeded"]], seen
