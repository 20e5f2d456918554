"""Live subscriptions: ``WS /subscribe`` and ``GET /stream`` (Server-Sent Events).

A client binds routing-key patterns on exchanges (:mod:`exchanges`, :mod:`routing`) and
receives every matching record of the events topic as ``{ex, key, offset, msg}``; ``offset``
is a token (:mod:`offsets`) from which any gateway resumes the stream, nothing lost and
nothing twice.

Design (docs/api.md, "Live subscriptions"):

- One aiokafka consumer per connection, every partition of the events topic assigned by
  hand: no consumer group (no rebalances, no commits, nothing stored on the gateway), so
  any gateway behind a load balancer serves any client, and each connection reads at its
  own pace from its own position. The cost, one fetch session per connection, is bounded
  by ``max_connections``.
- The connection has one cursor: per partition, the next offset to read. A binding
  delivers the records at or after its own start; a bind with an earlier ``since`` moves
  the cursor back and the bindings already live skip what they have delivered.
- A bounded send queue (``send_queue_max``). The reader waits for room, so a replay of a
  long backlog is paced by the client instead of buffered; a queue that stays full for a
  ping interval means the client cannot keep up: WebSocket close 1013 "too slow", or an
  ``error`` event that ends the SSE stream. The client resumes from its last offset.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
import anyio
from aiokafka import AIOKafkaConsumer, TopicPartition
from fastapi import APIRouter, FastAPI, HTTPException, Query, Request, WebSocket
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sse_starlette.sse import EventSourceResponse
from starlette.websockets import WebSocketDisconnect

from streams.contracts.topics import Topics
from streams.gateway import exchanges as exchanges_mod
from streams.gateway import offsets
from streams.gateway.auth import Authenticator, AuthError, Principal, bearer
from streams.gateway.config import SUBSCRIBE, GatewaySettings
from streams.gateway.metrics import GatewayMetrics, metrics_of
from streams.gateway.routing import PatternError, literal_prefix, matches, validate_pattern
from streams.kafka.connection import kafka_of
from streams.settings import Settings

log = logging.getLogger(__name__)

router = APIRouter()

CLOSE_POLICY = 1008  # the token is refused
CLOSE_TOO_BIG = 1009  # a client message over max_body_bytes
CLOSE_INTERNAL = 1011  # the broker failed under us
CLOSE_TRY_AGAIN = 1013  # too slow, or too many connections
METADATA_WAIT_SECONDS = 10.0
FETCH_TIMEOUT_MS = 500


class TooSlow(Exception):
    """The send queue stayed full: the client does not read fast enough."""


# -- client messages (pydantic at the edge) ---------------------------------------------


class BindSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ex: str = Field(min_length=1, max_length=64)
    key: str = Field(min_length=1, max_length=255)
    since: str | None = Field(default=None, max_length=offsets.MAX_TOKEN_CHARS)


class UnbindSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ex: str = Field(min_length=1, max_length=64)
    key: str = Field(min_length=1, max_length=255)


class ClientMessage(BaseModel):
    """``{"bind": {...} | [...]}`` or ``{"unbind": {...} | [...]}``."""

    model_config = ConfigDict(extra="forbid")
    bind: BindSpec | list[BindSpec] | None = None
    unbind: UnbindSpec | list[UnbindSpec] | None = None

    def binds(self) -> list[BindSpec]:
        return [] if self.bind is None else self.bind if isinstance(self.bind, list) else [self.bind]

    def unbinds(self) -> list[UnbindSpec]:
        return [] if self.unbind is None else self.unbind if isinstance(self.unbind, list) else [self.unbind]


def _pydantic_reason(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "message"
    return f"{where}: {first.get('msg', 'invalid')}"


# -- shared per-app state ----------------------------------------------------------------


class Hub:
    """What every connection of one app shares: the exchanges and the connection count."""

    def __init__(self, settings: Settings, gs: GatewaySettings, topics: Topics,
                 metrics: GatewayMetrics | None = None) -> None:
        self.settings = settings
        self.gs = gs
        self.topic = topics.events
        self.exchanges = exchanges_mod.load(gs.exchanges_file)
        self.active = 0
        self.metrics = metrics if metrics is not None else GatewayMetrics()

    @property
    def any_public(self) -> bool:
        return any(ex.public for ex in self.exchanges.values())

    def acquire(self, transport: str) -> bool:
        if self.active >= self.gs.max_connections:
            return False
        self.active += 1
        self.metrics.open.labels(transport).inc()
        return True

    def release(self, transport: str) -> None:
        self.active -= 1
        self.metrics.open.labels(transport).dec()


def hub_of(app: FastAPI) -> Hub:
    hub = getattr(app.state, "subscriptions", None)
    if hub is None:
        hub = Hub(app.state.settings, app.state.gs, app.state.topics, metrics_of(app))
        app.state.subscriptions = hub
    return hub


def authenticate(auth: Authenticator, hub: Hub, token: str | None) -> Principal | None:
    """The caller, or None for no token where a public exchange exists. Raises AuthError."""
    if token or auth.open:
        return auth.verify(token)
    if hub.any_public:
        return None
    raise AuthError(401, "missing token (?jwt= or Authorization: Bearer)")


# -- one connection ----------------------------------------------------------------------


@dataclass
class Binding:
    ex: str
    key: str
    words: list[str]
    start: list[int] = field(default_factory=list)  # per partition: first offset it delivers


class Subscriber:
    """One client's subscription: a consumer, a cursor, bindings and a send queue."""

    def __init__(self, hub: Hub, principal: Principal | None, transport: str) -> None:
        self.hub = hub
        self.principal = principal
        self.transport = transport
        self._sent = hub.metrics.messages.labels(transport)
        self._replayed = hub.metrics.replayed.labels(transport)
        # per partition: the end offset when the bindings were made; a message below it was
        # on the topic already (a replay, counted as such)
        self.replay_until: list[int] = []
        self.gs = hub.gs
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=self.gs.send_queue_max)
        self.bindings: list[Binding] = []
        self.cursor: list[int] = []
        self.tps: list[TopicPartition] = []
        self.generation = 0  # bumped by every seek, so a fetch from before it is dropped
        self._consumer: AIOKafkaConsumer | None = None
        self._assigned = False
        self._wake = asyncio.Event()
        self._http: aiohttp.ClientSession | None = None
        self._reader: asyncio.Task[None] | None = None
        self._access_cache: dict[tuple[str, str], tuple[float, str | None]] = {}

    # lifecycle

    async def start(self) -> None:
        s = self.hub.settings
        self._consumer = AIOKafkaConsumer(
            **kafka_of(s).aiokafka_kwargs(), group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest", fetch_max_wait_ms=s.fetch_max_wait_ms, fetch_max_bytes=8 * 1048576,
        )
        await self._consumer.start()
        # let aiokafka's no-group task take its first step: stopped before it, a consumer's
        # stop() raises CancelledError from that task and skips closing its connections
        await asyncio.sleep(0)
        deadline = time.monotonic() + METADATA_WAIT_SECONDS
        partitions = self._consumer.partitions_for_topic(self.hub.topic)
        while not partitions and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            await self._consumer._client.force_metadata_update()
            partitions = self._consumer.partitions_for_topic(self.hub.topic)
        if not partitions:
            raise RuntimeError(f"events topic {self.hub.topic} not found")
        self.tps = [TopicPartition(self.hub.topic, p) for p in sorted(partitions)]
        self.cursor = [0] * len(self.tps)
        self.replay_until = [0] * len(self.tps)

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
            self._reader = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
        if self._http is not None:
            await self._http.close()
            self._http = None

    # sending

    async def put(self, item: dict[str, Any]) -> None:
        """Queue an item for the client; waits up to a ping interval for room."""
        try:
            await asyncio.wait_for(self.queue.put(item), timeout=self.gs.ping_interval_seconds)
        except TimeoutError:
            raise TooSlow(f"too slow: {self.gs.send_queue_max} messages waiting for "
                          f"{self.gs.ping_interval_seconds:g}s") from None

    async def items(self) -> AsyncIterator[dict[str, Any]]:
        """Everything to send, in order, while the reader runs; raises TooSlow or the
        reader's error when it stops."""
        reader = self._reader = asyncio.create_task(self.read())
        try:
            while True:
                getter = asyncio.ensure_future(self.queue.get())
                done, _ = await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    yield getter.result()
                    continue
                getter.cancel()
                reader.result()  # raises
                return
        finally:
            reader.cancel()  # stop() waits for it

    # positions

    async def _ends(self) -> list[int]:
        assert self._consumer is not None
        listed = await self._consumer.end_offsets(self.tps)
        if self.hub.settings.embedded:
            # tansu's ListOffsets(LATEST) can be short of the last batch: ask a fetch
            from streams.kafka.faust_driver import fetched_highwaters

            kafka = kafka_of(self.hub.settings)
            listed = await fetched_highwaters(kafka.aiokafka_kwargs()["bootstrap_servers"], dict(listed),  # type: ignore[arg-type]
                                              **kafka.aiokafka_auth())
        ends = [int(listed[tp]) for tp in self.tps]
        self.replay_until = [max(a, b) for a, b in zip(self.replay_until, ends, strict=True)]
        return ends

    async def _resolve(self, since: offsets.Since) -> list[int]:
        assert self._consumer is not None
        if since.edge == "earliest":
            await self._ends()  # where the replay ends (metrics)
            begins = await self._consumer.beginning_offsets(self.tps)
            return [int(begins[tp]) for tp in self.tps]
        ends = await self._ends()
        if since.positions is not None:
            if len(since.positions) > len(self.tps):
                raise offsets.SinceError(f"the offset token names {len(since.positions)} partitions, "
                                         f"the events topic has {len(self.tps)}")
            # a partition added since the token was made is read from its beginning; an
            # offset past the end (a token from another cluster) is clamped to the end
            padded = since.positions + [0] * (len(self.tps) - len(since.positions))
            return [min(p, e) for p, e in zip(padded, ends, strict=True)]
        if since.timestamp_ms is not None:
            found = await self._consumer.offsets_for_times({tp: since.timestamp_ms for tp in self.tps})
            return [found[tp].offset if found.get(tp) is not None else ends[i]  # type: ignore[union-attr]
                    for i, tp in enumerate(self.tps)]
        return ends

    def _reposition(self) -> None:
        assert self._consumer is not None
        self.generation += 1
        for tp, position in zip(self.tps, self.cursor, strict=True):
            self._consumer.seek(tp, position)

    def _add(self, binding: Binding, start: list[int]) -> None:
        assert self._consumer is not None
        binding.start = list(start)
        if not self.bindings:
            self.cursor = list(start)  # nothing live: the cursor jumps
            if not self._assigned:
                self._consumer.assign(self.tps)
                self._assigned = True
            else:
                self._consumer.resume(*self.tps)
            self._reposition()
        else:
            moved = False
            for p, wanted in enumerate(start):
                if wanted < self.cursor[p]:
                    # earlier than where the live bindings are: read again from there; the
                    # live ones deliver nothing below where they were
                    for other in self.bindings:
                        other.start[p] = max(other.start[p], self.cursor[p])
                    self.cursor[p] = wanted
                    moved = True
            if moved:
                self._reposition()
        self.bindings.append(binding)
        self._wake.set()

    # bind / unbind

    async def bind(self, specs: list[BindSpec], default_since: str | None = None) -> list[dict[str, Any]]:
        """Add bindings; one reply each: ``{"bound": ...}`` or ``{"error": ..., "bind": ...}``."""
        replies = []
        for spec in specs:
            echo = spec.model_dump(exclude_none=True)
            reason = await self._refusal(spec)
            if reason is not None:
                replies.append({"error": reason, "bind": echo})
                continue
            try:
                start = await self._resolve(offsets.parse_since(spec.since or default_since))
            except offsets.SinceError as exc:
                replies.append({"error": f"since: {exc}", "bind": echo})
                continue
            self._add(Binding(spec.ex, spec.key, spec.key.split(".")), start)
            replies.append({"bound": {"ex": spec.ex, "key": spec.key, "offset": offsets.encode(start)}})
        return replies

    def unbind(self, specs: list[UnbindSpec]) -> list[dict[str, Any]]:
        replies = []
        for spec in specs:
            before = len(self.bindings)
            self.bindings = [b for b in self.bindings if (b.ex, b.key) != (spec.ex, spec.key)]
            if len(self.bindings) == before:
                replies.append({"error": "not bound", "unbind": spec.model_dump()})
                continue
            replies.append({"unbound": spec.model_dump()})
        if not self.bindings and self._assigned and self._consumer is not None:
            self._consumer.pause(*self.tps)
        return replies

    async def _refusal(self, spec: BindSpec) -> str | None:
        """Why this binding is refused, or None."""
        exchange = self.hub.exchanges.get(spec.ex)
        if exchange is None:
            return f"unknown exchange {spec.ex!r} (known: {', '.join(sorted(self.hub.exchanges))})"
        try:
            words = validate_pattern(spec.key)
        except PatternError as exc:
            return str(exc)
        if any((b.ex, b.key) == (spec.ex, spec.key) for b in self.bindings):
            return "already bound"
        if len(self.bindings) >= self.gs.max_bindings:
            return f"too many bindings: at most {self.gs.max_bindings} per connection"
        return await self._access(spec.ex, exchange, spec.key, words)

    async def _access(self, name: str, exchange: exchanges_mod.Exchange, key: str, words: list[str]) -> str | None:
        access = exchange.access
        if isinstance(access, exchanges_mod.PublicAccess):
            return None
        if self.principal is None:
            return f"access denied: exchange {name!r} needs a token"
        if SUBSCRIBE not in self.principal.scopes:
            return f"access denied: the token lacks the {SUBSCRIBE!r} scope"
        if isinstance(access, exchanges_mod.ScopeAccess):
            return None
        if isinstance(access, exchanges_mod.ClaimsAccess):
            prefixes = exchanges_mod.claims_prefixes(access, self.principal.claim(access.claim))
            if not prefixes:
                return f"access denied: the token has no usable {access.claim!r} claim"
            if any(literal_prefix(words, prefix) for prefix in prefixes):
                return None
            return f"access denied: the binding key must start with {' or '.join(repr(p) for p in prefixes)}"
        return await self._http_check(name, access, key)

    async def _http_check(self, name: str, access: exchanges_mod.HttpAccess, key: str) -> str | None:
        cached = self._access_cache.get((name, key))
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1]
        token = self.principal.token if self.principal is not None else None
        if not token:
            return "access denied: no token to forward to the access check"
        if self._http is None:
            self._http = aiohttp.ClientSession()
        url = access.url.replace("{key}", quote(key, safe=""))
        try:
            async with self._http.get(url, headers={"Authorization": f"Bearer {token}"}, allow_redirects=False,
                                      timeout=aiohttp.ClientTimeout(total=access.timeout_seconds)) as response:
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            # not cached: the next bind asks again
            log.warning("access check for exchange %s failed: %s", name, type(exc).__name__)
            return f"access denied: the access check failed ({type(exc).__name__})"
        reason = None if status == 200 else f"access denied by the access check (HTTP {status})"
        if len(self._access_cache) > 1000:
            self._access_cache.clear()
        self._access_cache[(name, key)] = (now + access.cache_seconds, reason)
        return reason

    # reading

    def _route(self, partition: int, offset: int, value: bytes | None) -> list[dict[str, Any]]:
        """The messages one record makes (one per exchange with a matching binding); moves
        the cursor past it."""
        self.cursor[partition] = offset + 1
        try:
            record = json.loads(value) if value is not None else None
        except ValueError:
            return []
        if not isinstance(record, dict):
            return []
        token: str | None = None
        out: list[dict[str, Any]] = []
        done: set[str] = set()
        for binding in self.bindings:
            if binding.ex in done or offset < binding.start[partition]:
                continue
            exchange = self.hub.exchanges[binding.ex]
            if not exchange.selects(record):
                done.add(binding.ex)
                continue
            key = exchange.routing_key(record)
            words = key.split(".")
            if any(b.ex == binding.ex and offset >= b.start[partition] and matches(b.words, words)
                   for b in self.bindings):
                token = token or offsets.encode(self.cursor)
                out.append({"ex": binding.ex, "key": key, "offset": token, "msg": record})
            done.add(binding.ex)
        return out

    async def read(self) -> None:
        """Read the topic from the cursor, forever; queue what the bindings match."""
        assert self._consumer is not None
        consumer = self._consumer
        while True:
            if not self.bindings:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self.gs.ping_interval_seconds)
                continue
            generation = self.generation
            batches = await consumer.getmany(timeout_ms=FETCH_TIMEOUT_MS, max_records=500)
            if generation != self.generation:
                self._reposition()  # fetched across a seek: read again from the cursor
                continue
            for tp, records in batches.items():
                for record in records:
                    if record.offset < self.cursor[tp.partition]:
                        continue
                    for message in self._route(tp.partition, record.offset, record.value):
                        await self.put(message)
                        self._sent.inc()
                        if record.offset < self.replay_until[tp.partition]:
                            self._replayed.inc()
                    if generation != self.generation:
                        break
                if generation != self.generation:
                    self._reposition()
                    break


# -- the endpoints -----------------------------------------------------------------------


def _query_bindings(ex: str | None, keys: list[str], binds: list[str], since: str | None) -> list[BindSpec]:
    """Bindings given in the URL: ``ex=E&key=K`` (key repeatable) and ``bind=E:K``."""
    specs: list[BindSpec] = []
    pairs = [(ex, k) for k in keys] if ex else []
    if keys and not ex:
        raise ValueError("key= needs ex=")
    for item in binds:
        name, sep, key = item.partition(":")
        if not sep:
            raise ValueError(f"bind={item[:80]!r} is not EXCHANGE:KEY")
        pairs.append((name, key))
    for name, key in pairs:
        try:
            specs.append(BindSpec(ex=name or "", key=key, since=since))
        except ValidationError as exc:
            raise ValueError(_pydantic_reason(exc)) from None
    return specs


def _token_of(headers: Any, jwt: str | None, access_token: str | None) -> str | None:
    return jwt or access_token or bearer(headers)


@router.websocket("/subscribe")
async def subscribe(
    websocket: WebSocket,
    jwt: str | None = None,
    access_token: str | None = None,
    ex: str | None = None,
    key: list[str] = Query(default=[]),  # noqa: B008
    bind: list[str] = Query(default=[]),  # noqa: B008
    since: str | None = None,
) -> None:
    hub = hub_of(websocket.app)
    try:
        principal = authenticate(websocket.app.state.auth, hub, _token_of(websocket.headers, jwt, access_token))
        initial = _query_bindings(ex, key, bind, since)
    except AuthError as exc:
        await websocket.send_denial_response(JSONResponse({"detail": exc.message}, exc.status,
                                                          headers={"WWW-Authenticate": "Bearer"}))
        return
    except ValueError as exc:
        await websocket.send_denial_response(JSONResponse({"detail": str(exc)}, 400))
        return
    if not hub.acquire("websocket"):
        await websocket.send_denial_response(JSONResponse(
            {"detail": f"too many connections (at most {hub.gs.max_connections})"}, 503, headers={"Retry-After": "5"}))
        return
    sub = Subscriber(hub, principal, "websocket")
    try:
        await websocket.accept()
        await sub.start()
        for reply in await sub.bind(initial):
            await sub.put(reply)
        sender = asyncio.create_task(_send_all(websocket, sub))
        receiver = asyncio.create_task(_receive_all(websocket, sub))
        done, _ = await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
        for task in (sender, receiver):
            task.cancel()
        await asyncio.wait({sender, receiver})  # both over; their errors are read below
        finished = done.pop()
        exc = finished.exception() if not finished.cancelled() else None
        await _close_for(websocket, exc)
    except TooSlow as exc:
        await _close_for(websocket, exc)
    except WebSocketDisconnect:
        pass
    finally:
        await sub.stop()
        hub.release("websocket")


class _Closed(Exception):
    """The receiver asks for a close: code and reason."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


async def _close_for(websocket: WebSocket, exc: BaseException | None) -> None:
    if exc is None or isinstance(exc, WebSocketDisconnect):
        code, reason = 1000, ""
        if exc is not None:
            return
    elif isinstance(exc, TooSlow):
        code, reason = CLOSE_TRY_AGAIN, str(exc)
    elif isinstance(exc, _Closed):
        code, reason = exc.code, exc.reason
    else:
        log.warning("subscription ended by %s: %s", type(exc).__name__, exc)
        code, reason = CLOSE_INTERNAL, f"internal error ({type(exc).__name__})"
    with contextlib.suppress(Exception):
        await asyncio.wait_for(websocket.close(code=code, reason=reason[:120]), timeout=5.0)


async def _send_all(websocket: WebSocket, sub: Subscriber) -> None:
    async with contextlib.aclosing(sub.items()) as items:
        async for item in items:
            await websocket.send_text(json.dumps(item, separators=(",", ":")))


async def _receive_all(websocket: WebSocket, sub: Subscriber) -> None:
    limit = sub.gs.max_body_bytes
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        raw = message.get("text")
        if raw is None:
            raw = (message.get("bytes") or b"").decode("utf-8", "replace")
        if len(raw) > limit:
            raise _Closed(CLOSE_TOO_BIG, f"message too big: at most {limit} bytes")
        for reply in await _handle(sub, raw):
            await sub.put(reply)


async def _handle(sub: Subscriber, raw: str) -> list[dict[str, Any]]:
    try:
        data = json.loads(raw)
    except ValueError as exc:
        return [{"error": f"invalid JSON: {exc}"}]
    try:
        message = ClientMessage.model_validate(data)
    except ValidationError as exc:
        return [{"error": f"invalid message: {_pydantic_reason(exc)}"}]
    binds, unbinds = message.binds(), message.unbinds()
    if not binds and not unbinds:
        return [{"error": 'expected {"bind": {"ex": ..., "key": ...}} or {"unbind": {...}}'}]
    if len(binds) > sub.gs.max_bindings:
        return [{"error": f"too many bindings: at most {sub.gs.max_bindings} per connection"}]
    return sub.unbind(unbinds) + await sub.bind(binds)


@router.get("/stream")
async def stream(
    request: Request,
    jwt: str | None = None,
    access_token: str | None = None,
    ex: str | None = None,
    key: list[str] = Query(default=[]),  # noqa: B008
    bind: list[str] = Query(default=[]),  # noqa: B008
    since: str | None = None,
) -> EventSourceResponse:
    """Server-Sent Events: the bindings of the URL; each event's id is its offset token,
    so a reconnecting EventSource resumes with ``Last-Event-ID``."""
    hub = hub_of(request.app)
    try:
        principal = authenticate(request.app.state.auth, hub, _token_of(request.headers, jwt, access_token))
    except AuthError as exc:
        raise HTTPException(exc.status, exc.message, headers={"WWW-Authenticate": "Bearer"}) from None
    try:
        specs = _query_bindings(ex, key, bind, request.headers.get("last-event-id") or since)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
    if not specs:
        raise HTTPException(400, "no binding: give ex=EXCHANGE&key=PATTERN or bind=EXCHANGE:PATTERN")
    if len(specs) > hub.gs.max_bindings:
        raise HTTPException(400, f"too many bindings: at most {hub.gs.max_bindings} per connection")
    if not hub.acquire("sse"):
        raise HTTPException(503, f"too many connections (at most {hub.gs.max_connections})",
                            headers={"Retry-After": "5"})
    sub = Subscriber(hub, principal, "sse")
    try:
        await sub.start()
        replies = await sub.bind(specs)
    except BaseException:
        await sub.stop()
        hub.release("sse")
        raise
    refused = [r for r in replies if "error" in r]
    if refused:
        await sub.stop()
        hub.release("sse")
        reason = refused[0]["error"]
        if principal is None and reason.endswith("needs a token"):
            raise HTTPException(401, reason, headers={"WWW-Authenticate": "Bearer"})
        status = 403 if reason.startswith("access denied") else 404 if reason.startswith("unknown") else 400
        raise HTTPException(status, reason)
    return EventSourceResponse(_events(sub), ping=hub.gs.ping_interval_seconds,
                               send_timeout=hub.gs.ping_interval_seconds)


async def _events(sub: Subscriber) -> AsyncIterator[dict[str, Any]]:
    items = sub.items()
    try:
        async for item in items:
            yield {"id": item["offset"], "event": "message", "data": json.dumps(item, separators=(",", ":"))}
    except TooSlow as exc:
        yield {"event": "error", "data": json.dumps({"error": str(exc)})}
    except Exception as exc:
        log.warning("subscription stream ended by %s: %s", type(exc).__name__, exc)
        yield {"event": "error", "data": json.dumps({"error": f"internal error ({type(exc).__name__})"})}
    finally:
        # sse-starlette cancels us when the client goes: clean up regardless
        with anyio.CancelScope(shield=True):
            await items.aclose()
            await sub.stop()
            sub.hub.release(sub.transport)
