"""Live subscriptions end to end: a real uvicorn on loopback, the real broker, the
``websockets`` client and httpx for SSE, a real local HTTP server for access checks."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from streams.contracts.records import STATUS_EVENT_TYPE
from streams.gateway import subscriptions
from streams.gateway.auth import Authenticator, make_token
from streams.gateway.config import GatewaySettings
from streams.kafka.broker import free_port
from streams.kafka.client import produce_all
from streams.kafka.connection import KafkaConnection
from streams.settings import Settings
from tests.conftest import ROOT, Stack

pytestmark = pytest.mark.broker

SECRET = "subscriptions-test-secret-0123456789abcdef"
WAIT = 30.0


class CheckServer:
    """brainlife's /event/checkaccess/:key: allows keys under run.ok, needs a bearer."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                auth = self.headers.get("Authorization")
                outer.seen.append((self.path, auth))
                allowed = self.path.startswith("/checkaccess/run.ok") and bool(auth and auth.startswith("Bearer "))
                self.send_response(200 if allowed else 403)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Gateway:
    """A small app with the subscriptions router, served by uvicorn in a thread."""

    def __init__(self, stack: Stack, gs: GatewaySettings) -> None:
        settings = Settings(bootstrap_servers=stack.broker.bootstrap, broker_kind=stack.broker.kind,
                            topic_prefix=stack.prefix, topics_file=ROOT / "topics.yaml")
        app = FastAPI()
        app.state.settings = settings
        app.state.gs = gs
        app.state.topics = stack.topics
        app.state.auth = Authenticator(gs)
        app.include_router(subscriptions.router)
        self.app = app
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, lifespan="off",
                                                   log_level="warning", ws_ping_interval=gs.ping_interval_seconds,
                                                   ws_max_size=gs.max_body_bytes + 1024))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + WAIT
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            assert self.thread.is_alive(), "uvicorn exited"
            time.sleep(0.05)
        self.ws = f"ws://127.0.0.1:{self.port}"
        self.http = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)


def token(**claims: Any) -> str:
    return make_token(SECRET, {"sub": "alice", "exp": int(time.time()) + 3600, **claims})


SUBSCRIBER = token(scope="subscribe", team="alpha")


@pytest.fixture(scope="module")
def checker() -> Iterator[CheckServer]:
    server = CheckServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def gateway_factory(stack: Stack, checker: CheckServer, tmp_path_factory: pytest.TempPathFactory
                    ) -> Iterator[Callable[..., Gateway]]:
    started: list[Gateway] = []

    def make(exchanges_yaml: str | None = None, **overrides: Any) -> Gateway:
        path: Path | None = None
        if exchanges_yaml is not None:
            path = tmp_path_factory.mktemp("exchanges") / "exchanges.yaml"
            path.write_text(exchanges_yaml.replace("CHECK_URL", checker.url))
        gs = GatewaySettings(auth="jwt", jwt_secret=SECRET, exchanges_file=path,
                             **{"max_bindings": 4, "ping_interval_seconds": 5.0, **overrides})
        gw = Gateway(stack, gs)
        started.append(gw)
        return gw

    yield make
    for gw in started:
        gw.stop()


EXCHANGES = """
exchanges:
  runs: {source: runs, key: "run.{job}.{run_id}.{status}"}
  events: {source: events, key: "event.{event_type}.{id}"}
  public-runs: {source: runs, key: "run.{job}.{run_id}.{status}", access: {policy: public}}
  team-runs:
    source: runs
    key: "run.{job}.{run_id}.{status}"
    access: {policy: claims, claim: team, prefix: "run.{value}"}
  checked-runs:
    source: runs
    key: "run.{job}.{run_id}.{status}"
    access: {policy: http, url: "CHECK_URL/checkaccess/{key}"}
"""


@pytest.fixture(scope="module")
def gateway(gateway_factory: Callable[..., Gateway]) -> Gateway:
    return gateway_factory(EXCHANGES)


# -- helpers -------------------------------------------------------------------------------


def status_event(job: str, run_id: str, new_status: str, attempt: int = 1) -> dict[str, Any]:
    return {"id": f"{run_id}:status:{new_status}:{attempt}", "source": "internal", "event_type": STATUS_EVENT_TYPE,
            "new_status": new_status, "job": job, "run_id": run_id, "handler_id": f"h-{job}", "attempt": attempt}


def send(stack: Stack, *records: dict[str, Any]) -> None:
    """Status events keyed by run id (so a run's events keep their order), one produce."""
    produce_all(KafkaConnection(stack.broker.bootstrap),
                [(stack.topics.events, str(r.get("run_id") or r["id"]).encode(), json.dumps(r).encode())
                 for r in records])


async def recv(ws: ClientConnection, timeout: float = WAIT) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def bind(ws: ClientConnection, ex: str, key: str, since: str | None = None) -> dict[str, Any]:
    await ws.send(json.dumps({"bind": {"ex": ex, "key": key, **({"since": since} if since else {})}}))
    return await recv(ws)


async def quiet(ws: ClientConnection, seconds: float = 1.5) -> list[dict[str, Any]]:
    """Whatever else arrives within ``seconds`` (expected: nothing)."""
    extra = []
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        try:
            extra.append(json.loads(await asyncio.wait_for(ws.recv(), left)))
        except TimeoutError:
            break
    return extra


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:6]}"


# -- tests ---------------------------------------------------------------------------------


def test_bind_receives_started_then_succeeded_in_order(stack: Stack, gateway: Gateway) -> None:
    run_id, other = unique("r"), unique("r")

    async def scenario() -> None:
        async with connect(f"{gateway.ws}/subscribe?jwt={SUBSCRIBER}") as ws:
            bound = await bind(ws, "runs", "run.migrate-pid.#")
            assert bound["bound"]["ex"] == "runs" and bound["bound"]["key"] == "run.migrate-pid.#"
            send(stack, status_event("other-job", other, "started"),
                 status_event("migrate-pid", run_id, "started"),
                 {"id": unique("e"), "source": "feeder", "event_type": "PatientImport"},
                 status_event("other-job", other, "finished"),
                 status_event("migrate-pid", run_id, "finished"))
            first, second = await recv(ws), await recv(ws)
            assert [first["key"], second["key"]] == [f"run.migrate-pid.{run_id}.started",
                                                     f"run.migrate-pid.{run_id}.succeeded"]
            assert first["ex"] == "runs" and first["msg"]["new_status"] == "started"
            assert second["msg"]["new_status"] == "finished" and second["msg"]["run_id"] == run_id
            assert first["offset"] != second["offset"]
            assert await quiet(ws) == []  # the other job's events and the plain event did not come

    asyncio.run(scenario())


def test_dotted_job_names_are_escaped_and_wildcards_route(stack: Stack, gateway: Gateway) -> None:
    run_id = unique("r")

    async def scenario() -> None:
        async with connect(f"{gateway.ws}/subscribe", additional_headers={"Authorization": f"Bearer {SUBSCRIBER}"}
                           ) as ws:
            assert "bound" in await bind(ws, "runs", "run.webhook_hook1.*.failed")
            assert "bound" in await bind(ws, "runs", "#.retrying")
            send(stack, status_event("webhook.hook1", run_id, "started"),
                 status_event("webhook.hook1", run_id, "retrying"),
                 status_event("webhook.hook1", run_id, "failed", attempt=2))
            got = [await recv(ws), await recv(ws)]
            assert [m["key"] for m in got] == [f"run.webhook_hook1.{run_id}.retrying",
                                               f"run.webhook_hook1.{run_id}.failed"]
            assert await quiet(ws, 1.0) == []

    asyncio.run(scenario())


def test_denied_bindings_get_errors_and_the_connection_stays(stack: Stack, gateway: Gateway,
                                                              checker: CheckServer) -> None:
    run_id = unique("r")

    async def scenario() -> None:
        async with connect(f"{gateway.ws}/subscribe?jwt={SUBSCRIBER}") as ws:
            # claims rule: the token's team is alpha
            denied = await bind(ws, "team-runs", "run.beta.#")
            assert "run.alpha" in denied["error"] and denied["bind"] == {"ex": "team-runs", "key": "run.beta.#"}
            assert "error" in await bind(ws, "team-runs", "run.*.#")
            assert "error" in await bind(ws, "team-runs", "#")
            assert "bound" in await bind(ws, "team-runs", "run.alpha.#")
            # HTTP check against a real server, with the caller's token
            checker.seen.clear()
            denied = await bind(ws, "checked-runs", "run.secret.#")
            assert "access check" in denied["error"] and "403" in denied["error"]
            assert "bound" in await bind(ws, "checked-runs", "run.ok.#")
            assert checker.seen == [("/checkaccess/run.secret.%23", f"Bearer {SUBSCRIBER}"),
                                    ("/checkaccess/run.ok.%23", f"Bearer {SUBSCRIBER}")]
            # unknown exchange, bad JSON, bad shapes: errors, the socket stays open
            assert "unknown exchange" in (await bind(ws, "nope", "#"))["error"]
            await ws.send("{not json")
            assert "invalid JSON" in (await recv(ws))["error"]
            await ws.send(json.dumps({"bind": {"ex": "runs"}}))
            assert "invalid message" in (await recv(ws))["error"]
            await ws.send(json.dumps(["bind"]))
            assert "invalid message" in (await recv(ws))["error"]
            # max_bindings is 4: two are live, two more fit, the fifth does not
            assert "bound" in await bind(ws, "runs", "run.a.#")
            assert "bound" in await bind(ws, "runs", "run.b.#")
            assert "too many bindings" in (await bind(ws, "runs", "run.c.#"))["error"]
            unbound = json.dumps({"unbind": {"ex": "runs", "key": "run.b.#"}})
            await ws.send(unbound)
            assert (await recv(ws)) == {"unbound": {"ex": "runs", "key": "run.b.#"}}
            await ws.send(unbound)
            assert (await recv(ws))["error"] == "not bound"
            # still delivering: the allowed team binding sees its run
            send(stack, status_event("alpha", run_id, "started"), status_event("beta", run_id, "started"))
            got = await recv(ws)
            assert (got["ex"], got["key"]) == ("team-runs", f"run.alpha.{run_id}.started")
            assert await quiet(ws, 1.0) == []

    asyncio.run(scenario())


def test_tokens_public_exchanges_and_scopes(stack: Stack, gateway: Gateway,
                                            gateway_factory: Callable[..., Gateway]) -> None:
    run_id = unique("r")

    async def scenario() -> None:
        # a bad token is refused at the handshake
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"{gateway.ws}/subscribe?jwt=not-a-token"):
                pass
        assert refused.value.response.status_code == 401
        # no token: only the public exchange
        async with connect(f"{gateway.ws}/subscribe") as ws:
            assert "needs a token" in (await bind(ws, "runs", "#"))["error"]
            assert "needs a token" in (await bind(ws, "team-runs", "run.alpha.#"))["error"]
            assert "bound" in await bind(ws, "public-runs", f"run.open.{run_id}.*")
            send(stack, status_event("open", run_id, "started"))
            assert (await recv(ws))["key"] == f"run.open.{run_id}.started"
        # a token without the subscribe scope
        async with connect(f"{gateway.ws}/subscribe?jwt={token(scope='events:write')}") as ws:
            assert "subscribe" in (await bind(ws, "runs", "#"))["error"]
        # without any public exchange, no token means no connection
        private = gateway_factory(None)
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"{private.ws}/subscribe"):
                pass
        assert refused.value.response.status_code == 401
        async with connect(f"{private.ws}/subscribe?jwt={SUBSCRIBER}") as ws:
            assert "bound" in await bind(ws, "runs", "#")

    asyncio.run(scenario())


def test_reconnect_with_since_gets_what_was_missed_none_twice(stack: Stack, gateway: Gateway) -> None:
    job = unique("resume")
    runs = [unique("r") for _ in range(6)]  # keyed by run id: spread over partitions

    async def scenario() -> None:
        async with connect(f"{gateway.ws}/subscribe?jwt={SUBSCRIBER}") as ws:
            assert "bound" in await bind(ws, "runs", f"run.{job}.#")
            send(stack, *(status_event(job, r, "started") for r in runs[:3]))
            got = [await recv(ws) for _ in range(2)]  # the client goes away after two
        last = got[-1]["offset"]
        send(stack, *(status_event(job, r, "started") for r in runs[3:]))
        async with connect(f"{gateway.ws}/subscribe?jwt={SUBSCRIBER}") as ws:
            bound = await bind(ws, "runs", f"run.{job}.#", since=last)
            assert bound["bound"]["offset"] == last
            got += [await recv(ws) for _ in range(4)]
            assert await quiet(ws) == []
        keys = [m["key"] for m in got]
        assert sorted(keys) == sorted(f"run.{job}.{r}.started" for r in runs), keys  # all, none twice
        # a time works as since too: everything of this job, from before the first send
        async with connect(f"{gateway.ws}/subscribe?jwt={SUBSCRIBER}&ex=runs&key=run.{job}.%23&since=earliest"
                           ) as ws:
            assert "bound" in await recv(ws)
            replay = [await recv(ws) for _ in range(6)]
            assert sorted(m["key"] for m in replay) == sorted(keys)
            assert await quiet(ws, 1.0) == []

    asyncio.run(scenario())


def test_a_later_bind_with_since_replays_for_it_alone(stack: Stack, gateway: Gateway) -> None:
    job_a, job_b = unique("a"), unique("b")
    ra, rb = unique("r"), unique("r")

    async def scenario() -> None:
        async with connect(f"{gateway.ws}/subscribe?jwt={SUBSCRIBER}") as ws:
            first = await bind(ws, "runs", f"run.{job_a}.#")
            send(stack, status_event(job_a, ra, "started"), status_event(job_b, rb, "started"))
            assert (await recv(ws))["key"] == f"run.{job_a}.{ra}.started"
            # job b's binding asks for everything since job a's binding started: the
            # connection reads again from there; job a's run is not delivered twice
            replayed = await bind(ws, "runs", f"run.{job_b}.#", since=first["bound"]["offset"])
            assert "bound" in replayed
            assert (await recv(ws))["key"] == f"run.{job_b}.{rb}.started"
            send(stack, status_event(job_a, ra, "finished"))
            assert (await recv(ws))["key"] == f"run.{job_a}.{ra}.succeeded"
            assert await quiet(ws, 1.0) == []

    asyncio.run(scenario())


def test_server_sent_events_with_last_event_id(stack: Stack, gateway: Gateway) -> None:
    job = unique("sse")
    runs = [unique("r") for _ in range(4)]

    def events(response: httpx.Response, count: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        current: dict[str, str] = {}
        for line in response.iter_lines():
            if line.startswith(":"):
                continue  # keepalive comment
            if not line:
                if "data" in current:
                    out.append(current)
                    if len(out) == count:
                        return out
                current = {}
                continue
            name, _, value = line.partition(":")
            current[name] = value.lstrip(" ")
        return out

    url = f"{gateway.http}/stream"
    params = {"ex": "runs", "key": f"run.{job}.#"}
    headers = {"Authorization": f"Bearer {SUBSCRIBER}"}
    with httpx.Client(timeout=WAIT) as client:
        assert client.get(url, params=params).status_code == 401
        denied = client.get(url, params={"ex": "team-runs", "key": "run.beta.#"}, headers=headers)
        assert denied.status_code == 403 and "run.alpha" in denied.json()["detail"]
        assert client.get(url, params={"ex": "nope", "key": "#"}, headers=headers).status_code == 404
        assert client.get(url, headers=headers).status_code == 400
        first = events_from = None
        since = "earliest"  # the job is new: earliest means "all of this job's runs"
        with client.stream("GET", url, params={**params, "since": since}, headers=headers) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            send(stack, *(status_event(job, r, "started") for r in runs[:2]))
            first = events(response, 2)
        assert [e["event"] for e in first] == ["message", "message"]
        events_from = first[-1]["id"]
        assert json.loads(first[-1]["data"])["offset"] == events_from
        send(stack, *(status_event(job, r, "started") for r in runs[2:]))
        with client.stream("GET", url, params=params, headers={**headers, "Last-Event-ID": events_from}) as response:
            rest = events(response, 2)
        keys = [json.loads(e["data"])["key"] for e in first + rest]
        assert sorted(keys) == sorted(f"run.{job}.{r}.started" for r in runs)


def test_connection_limit(gateway_factory: Callable[..., Gateway]) -> None:
    limited = gateway_factory(None, max_connections=1)

    async def scenario() -> None:
        async with connect(f"{limited.ws}/subscribe?jwt={SUBSCRIBER}") as ws:
            assert "bound" in await bind(ws, "runs", "#")
            with pytest.raises(InvalidStatus) as refused:
                async with connect(f"{limited.ws}/subscribe?jwt={SUBSCRIBER}"):
                    pass
            assert refused.value.response.status_code == 503
        deadline = time.monotonic() + WAIT
        while True:  # the slot frees once the server has noticed the close
            try:
                async with connect(f"{limited.ws}/subscribe?jwt={SUBSCRIBER}") as ws:
                    assert "bound" in await bind(ws, "runs", "#")
                    return
            except InvalidStatus:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)

    asyncio.run(scenario())


def test_oversized_client_message_closes_with_1009(gateway: Gateway) -> None:
    async def scenario() -> None:
        async with connect(f"{gateway.ws}/subscribe?jwt={SUBSCRIBER}", max_size=None) as ws:
            await ws.send(json.dumps({"bind": {"ex": "runs", "key": "x" * (gateway.app.state.gs.max_body_bytes + 1)}}))
            with pytest.raises(ConnectionClosed) as closed:
                await recv(ws)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009

    asyncio.run(scenario())


def test_a_client_that_cannot_keep_up_is_closed_with_1013(stack: Stack,
                                                           gateway_factory: Callable[..., Gateway]) -> None:
    slow_gateway = gateway_factory(None, send_queue_max=2, ping_interval_seconds=1.0)
    job = unique("slow")
    pad = os.urandom(100_000).hex()  # 200 kB that permessage-deflate cannot shrink
    count = 40  # 8 MB: more than loopback's socket buffers hold (tcp_wmem max is 4 MB here)

    async def scenario() -> None:
        # a small receive buffer, and max_queue=1: the client library stops reading the
        # socket once a message waits; the gateway's socket buffer (at most tcp_wmem's
        # 4 MB) fills, then its send queue
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        sock.connect(("127.0.0.1", slow_gateway.port))
        async with connect(f"{slow_gateway.ws}/subscribe?jwt={SUBSCRIBER}", sock=sock, max_queue=1, max_size=None,
                           compression=None) as ws:
            assert "bound" in await bind(ws, "runs", f"run.{job}.#")
            for _batch in range(count // 10):
                send(stack, *({**status_event(job, unique("r"), "started"), "pad": pad} for _ in range(10)))
            await asyncio.sleep(4.0)  # not reading: the gateway's queue fills and stays full
            received = 0
            with pytest.raises(ConnectionClosed) as closed:
                for _ in range(count + 1):
                    await recv(ws)
                    received += 1
            assert closed.value.rcvd is not None, "closed without a close frame"
            assert closed.value.rcvd.code == 1013 and "too slow" in closed.value.rcvd.reason
            assert received < count

    asyncio.run(scenario())
