"""``POST /events``: events onto the events topic, with the caller as their ``creator``.

Accepted bodies (docs/api.md): a JSON object or an array of them (``application/json``);
a CloudEvent in binary mode (``ce-*`` headers, the body is its ``data``), in structured mode
(``application/cloudevents+json``) or a batch (``application/cloudevents-batch+json``).
A CloudEvent goes onto the topic as its structured JSON object, so a handler filters on
``type``, ``source`` or ``data.*``.

The ``creator`` Kafka header is always the authenticated caller (the ``creator_claim`` of
the token); a request that tries to set it (a ``creator`` or ``ce-creator`` header) is
refused with 400. Events that would pass for the engine's own (status events, run
requests) are refused too: run-now is ``POST /handlers/{id}/run``.

The answer, 202, comes once the broker has acknowledged every event (acks=all); a batch
is all or nothing as far as validation goes (nothing is sent when one event is refused).
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel

from streams.contracts import records
from streams.gateway.auth import Ingester
from streams.gateway.metrics import metrics_of
from streams.kafka.async_producer import ProduceError, Record
from streams.model import jsonvalue, provenance

router = APIRouter(tags=["events"])

CE_STRUCTURED = "application/cloudevents+json"
CE_BATCH = "application/cloudevents-batch+json"
CE_REQUIRED = ("id", "source", "specversion", "type")


class Accepted(BaseModel):
    ids: list[str]
    count: int
    topic: str
    creator: str


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 past ``limit`` bytes (before reading it all)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"the body is {declared} bytes; the limit is {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, f"the body is over the limit of {limit} bytes")
    return bytes(body)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "application/json").split(";")[0].strip().lower()


def _cloudevent_from_headers(request: Request, body: bytes, depth: int) -> dict[str, Any]:
    event: dict[str, Any] = {}
    for name, value in request.headers.items():
        if name.lower().startswith("ce-"):
            event[name[3:].lower()] = value
    content_type = request.headers.get("content-type")
    if content_type:
        event["datacontenttype"] = content_type
    media = _media_type(request)
    if body:
        if media == "application/json" or media.endswith("+json"):
            try:
                event["data"] = jsonvalue.loads(body, max_depth=depth)
            except ValueError as exc:
                raise HTTPException(400, f"the body is not JSON: {exc}") from None
        else:
            try:
                event["data"] = body.decode("utf-8")
            except UnicodeDecodeError:
                raise HTTPException(400, "binary-mode data must be UTF-8 text or JSON (use data_base64 in "
                                         "structured mode for bytes)") from None
    return event


def _check_cloudevent(event: Any, where: str) -> None:
    if not isinstance(event, dict):
        raise HTTPException(400, f"{where}: a CloudEvent must be a JSON object")
    missing = [a for a in CE_REQUIRED if not isinstance(event.get(a), str) or not event.get(a)]
    if missing:
        raise HTTPException(400, f"{where}: CloudEvent attribute(s) missing: {', '.join(missing)}")
    if event["specversion"] != "1.0":
        raise HTTPException(400, f"{where}: specversion {event['specversion']!r} is not supported (1.0 is)")


def _split(body: bytes, limits: jsonvalue.Limits, batch_of: str) -> list[bytes | Any]:
    """The elements of a JSON array body: raw bytes (checked later exactly as the worker
    reads them, and sent as they are), or parsed values when the fast split cannot read it
    (integers beyond 4300 digits); 400 with the parser's reason for what is not an array."""
    parts = jsonvalue.split_array(body, limits.max_depth + 1)
    if parts is not None:
        return list(parts)
    try:
        doc = jsonvalue.loads(body, max_depth=min(limits.max_depth + 1, jsonvalue.DEPTH_CEILING))
    except ValueError as exc:
        raise HTTPException(400, f"the body is not JSON: {exc}") from None
    if not isinstance(doc, list):
        raise HTTPException(400, f"{batch_of} must be a JSON array")
    return list(doc)


def parse_events(request: Request, body: bytes, limits: jsonvalue.Limits) -> tuple[list[bytes | Any], bool]:
    """The events of a request, each its raw bytes (or a parsed value when it had to be
    built or parsed here), not yet checked; and whether they are CloudEvents."""
    if any(name.lower() == "ce-specversion" for name in request.headers):
        event = _cloudevent_from_headers(request, body, max(1, limits.max_depth - 1))
        _check_cloudevent(event, "binary-mode CloudEvent")
        return [event], True
    media = _media_type(request)
    if media not in (CE_STRUCTURED, CE_BATCH, "application/json", "text/json") and not media.endswith("+json"):
        raise HTTPException(415, f"content type {media!r}: send application/json, {CE_STRUCTURED}, {CE_BATCH} "
                                 "or a binary-mode CloudEvent")
    if media == CE_BATCH:
        return _split(body, limits, "a CloudEvents batch"), True
    if media != CE_STRUCTURED and body.lstrip()[:1] == b"[":
        return _split(body, limits, "a batch"), False
    return [body.strip()], media == CE_STRUCTURED


def check_event(event: bytes | Any, where: str, limits: jsonvalue.Limits, cloud: bool) -> tuple[dict[str, Any], bytes]:
    """One event and its bytes as the worker will read them (given an id when it has none);
    raises HTTPException 400 or 413."""
    raw = event if isinstance(event, bytes) else jsonvalue.dumps(event).encode("utf-8", "backslashreplace")
    if len(raw) > limits.max_bytes:
        raise HTTPException(413, f"{where}: the event is {len(raw)} bytes; the limit is {limits.max_bytes}")
    try:
        doc, _ = jsonvalue.load_event_text(raw, limits)  # exactly the worker's check
    except jsonvalue.NotAJsonObject as exc:
        raise HTTPException(400, f"{where}: {exc}") from None
    if cloud:
        _check_cloudevent(doc, where)
    if records.is_status_event(doc) or doc.get("source") == "internal":
        raise HTTPException(400, f"{where}: source 'internal' is reserved for the engine's own events")
    if records.is_run_request(doc) or doc.get("event_type") == records.RUN_REQUESTED_EVENT_TYPE:
        raise HTTPException(400, f"{where}: event_type {records.RUN_REQUESTED_EVENT_TYPE!r} is reserved; "
                                 "use POST /handlers/{id}/run")
    if "id" not in doc:  # the id is how a run names its trigger
        doc = {"id": str(uuid.uuid4()), **doc}
        raw = jsonvalue.dumps(doc).encode("utf-8")
        if len(raw) > limits.max_bytes:
            raise HTTPException(413, f"{where}: with its id the event is {len(raw)} bytes; the limit is "
                                     f"{limits.max_bytes}")
    elif not isinstance(doc["id"], str) or not doc["id"]:
        raise HTTPException(400, f"{where}: id must be a non-empty string")
    return doc, raw


@router.post("/events", status_code=202, response_model=Accepted,
             summary="Send events (JSON objects or CloudEvents) to the events topic")
async def post_events(request: Request, principal: Ingester) -> Accepted:
    app = request.app
    gs, settings, topics = app.state.gs, app.state.settings, app.state.topics
    forged = [h for h in ("creator", "ce-creator") if h in request.headers]
    if forged:
        raise HTTPException(400, f"header {forged[0]!r} refused: the creator is set from your token "
                                 f"({gs.creator_claim!r} claim), never by the request")
    body = await read_body(request, gs.max_body_bytes)
    events, cloud = parse_events(request, body, settings.event_limits)
    if not events:
        raise HTTPException(400, "no events: the array is empty")
    if len(events) > gs.max_batch_events:
        raise HTTPException(413, f"{len(events)} events in one request; the limit is {gs.max_batch_events}")
    out: list[Record] = []
    ids: list[str] = []
    headers = [(provenance.CREATOR, principal.subject.encode())]
    for n, event in enumerate(events):
        where = f"event {n}" if len(events) > 1 else "event"
        doc, data = check_event(event, where, settings.event_limits, cloud)
        ids.append(doc["id"])
        out.append(Record(topics.events, None, data, headers))
    try:
        await app.state.producer.send_all(out)
    except (ProduceError, TimeoutError) as exc:
        raise HTTPException(503, f"the broker did not acknowledge the events: {exc or 'timeout'}") from None
    metrics_of(app).ingested.inc(len(out))
    return Accepted(ids=ids, count=len(ids), topic=topics.events, creator=principal.subject)

