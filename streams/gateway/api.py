"""The REST API: handlers, Mistral's listeners, brainlife's notifications, runs and jobs.

Writes go to the topics (the handlers topic, run requests on the events topic) and are
answered once the broker acknowledged them; reads come from the read model. A handler
read first catches the read model up with the handlers topic as it is now, so a client
reads its own writes on any gateway.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from streams.contracts import listeners, records
from streams.gateway.auth import HandlerReader, HandlerWriter, Principal, RunReader
from streams.gateway.readmodel import STATUSES, ReadModel
from streams.kafka.async_producer import ProduceError, Record
from streams.matching.handler_set import cycles_with
from streams.model import handlers, jsonvalue

router = APIRouter()


class FieldError(BaseModel):
    path: str
    message: str


class HandlerOut(BaseModel):
    id: str
    valid: bool
    error: str | None = None
    handler: dict[str, Any] | None = Field(default=None, description="The record as published.")
    offset: int | None = None
    updated_at: int | None = None


class Applied(BaseModel):
    id: str
    job: str
    applied: bool = True
    handler: dict[str, Any]


class RunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    params: dict[str, Any] = Field(default_factory=dict)
    allow_missing: bool = Field(default=False, description="Run although declared params have no value.")


class RunRequested(BaseModel):
    request_id: str
    handler_id: str
    params: dict[str, Any]


class ListenerIn(BaseModel):
    """Mistral's listener: a webhook on the lifecycle events of named jobs."""

    model_config = ConfigDict(extra="forbid")

    jobs: list[str] = Field(min_length=1)
    events: list[str] = Field(min_length=1, description=f"Any of {', '.join(listeners.LIFECYCLE)}.")
    url: str
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    headers: dict[str, str | dict[str, str]] = Field(default_factory=dict,
                                                     description="Values, or {secret: NAME}.")
    secret: str | None = Field(default=None, description="Name of the signing secret (never its value).")
    id: str | None = None


class NotificationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_id: str | None = None
    job: str | None = None
    subject: str = Field(max_length=1000)
    message: str = Field(max_length=100_000)


class NotificationIn(BaseModel):
    """brainlife's notification request; the recipient is the caller's own address."""

    model_config = ConfigDict(extra="forbid")

    event: str = Field(description="finished, succeeded, failed, timed_out or any (brainlife: wf.task.finished).")
    handler: Literal["email"] = "email"
    config: NotificationConfig
    once: bool = True


class RunsPage(BaseModel):
    runs: list[dict[str, Any]]
    next: str | None = Field(description="Pass as ?cursor= for the next (older) page.")


# -- helpers --------------------------------------------------------------------------


def _readmodel(request: Request) -> ReadModel:
    return request.app.state.readmodel  # type: ignore[no-any-return]


async def _handlers_now(request: Request) -> ReadModel:
    rm = _readmodel(request)
    await rm.sync([request.app.state.topics.handlers])
    return rm


def _current(rm: ReadModel) -> dict[str, bytes]:
    return {h["id"]: h["value"].encode() for h in rm.handlers()}


def _unprocessable(errors: list[FieldError]) -> HTTPException:
    return HTTPException(422, [e.model_dump() for e in errors])


def validate_handler(raw: Any) -> handlers.Handler:
    """The CLI's validation, each error with its path (422)."""
    if not isinstance(raw, dict):
        raise _unprocessable([FieldError(path="", message="a handler must be a JSON object")])
    try:
        return handlers.Handler.model_validate(raw)
    except ValidationError as exc:
        raise _unprocessable([FieldError(path=".".join(str(p) for p in err["loc"]) or "(handler)",
                                         message=err["msg"]) for err in exc.errors()]) from None


async def _publish(request: Request, key: str, value: bytes | None, topic: str | None = None) -> None:
    topic = topic or request.app.state.topics.handlers
    try:
        await request.app.state.producer.send_all([Record(topic, key.encode(), value)])
    except (ProduceError, TimeoutError) as exc:
        raise HTTPException(503, f"the broker did not acknowledge the write: {exc or 'timeout'}") from None


async def apply_handler(request: Request, h: handlers.Handler) -> Applied:
    rm = await _handlers_now(request)
    cycles = cycles_with(_current(rm), [h])
    if cycles:
        raise _unprocessable([FieldError(path="after", message=c) for c in cycles])
    value = h.model_dump(mode="json", exclude_none=True)
    await _publish(request, h.id, json.dumps(value).encode())
    return Applied(id=h.id, job=h.job, handler=value)


def _out(row: dict[str, Any]) -> HandlerOut:
    try:
        value = json.loads(row["value"])
    except ValueError:
        value = None
    return HandlerOut(id=row["id"], valid=bool(row["valid"]), error=row["error"], handler=value,
                      offset=row["offset"], updated_at=row["updated_at"])


async def _json_body(request: Request) -> Any:
    from streams.gateway.ingest import read_body

    body = await read_body(request, request.app.state.gs.max_body_bytes)
    try:
        return jsonvalue.loads(body, max_depth=jsonvalue.DEPTH_CEILING)
    except ValueError as exc:
        raise HTTPException(400, f"the body is not JSON: {exc}") from None


# -- handlers -------------------------------------------------------------------------


@router.get("/handlers", response_model=list[HandlerOut], tags=["handlers"], summary="Every handler")
async def list_handlers(request: Request, _: HandlerReader) -> list[HandlerOut]:
    rm = await _handlers_now(request)
    return [_out(row) for row in rm.handlers()]


@router.get("/handlers/{handler_id}", response_model=HandlerOut, tags=["handlers"])
async def get_handler(request: Request, handler_id: str, _: HandlerReader) -> HandlerOut:
    row = (await _handlers_now(request)).handler(handler_id)
    if row is None:
        raise HTTPException(404, f"no handler {handler_id!r}")
    return _out(row)


@router.put("/handlers/{handler_id}", response_model=Applied, tags=["handlers"],
            summary="Create or replace a handler (the body is the handler, as in handlers.yaml)",
            openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "description": "A handler as in handlers.yaml (JSON Schema: "
                "schemas/handler.schema.json); its id is the path's."}}}}})
async def put_handler(request: Request, handler_id: str, _: HandlerWriter) -> Applied:
    raw = await _json_body(request)
    if isinstance(raw, dict):
        if "id" in raw and raw["id"] != handler_id:
            raise _unprocessable([FieldError(path="id", message=f"the body's id {raw['id']!r} differs from the "
                                                                f"path's {handler_id!r}")])
        raw = {"id": handler_id, **raw}
    return await apply_handler(request, validate_handler(raw))


@router.delete("/handlers/{handler_id}", status_code=204, tags=["handlers"])
async def delete_handler(request: Request, handler_id: str, _: HandlerWriter) -> Response:
    if (await _handlers_now(request)).handler(handler_id) is None:
        raise HTTPException(404, f"no handler {handler_id!r}")
    await _publish(request, handler_id, None)
    return Response(status_code=204)


def _valid_handler(rm: ReadModel, handler_id: str) -> handlers.Handler:
    row = rm.handler(handler_id)
    if row is None:
        raise HTTPException(404, f"no handler {handler_id!r}")
    try:
        return handlers.parse_handler(row["value"], key=handler_id)
    except handlers.InvalidHandler as exc:
        raise HTTPException(409, f"handler {handler_id!r} is invalid: {exc}") from None


@router.post("/handlers/{handler_id}/run", status_code=202, response_model=RunRequested, tags=["handlers"],
             summary="Run the handler's job now, with params")
async def run_handler(request: Request, handler_id: str, _: HandlerWriter,
                      body: RunRequest | None = None) -> RunRequested:
    body = body or RunRequest()
    handler = _valid_handler(await _handlers_now(request), handler_id)
    params, missing = handlers.run_params(handler, body.params)
    if missing and not body.allow_missing:
        raise _unprocessable([FieldError(path=f"params.{name}", message="declared by the handler, no value given "
                                                                        "(or set allow_missing)")
                              for name in missing])
    request_id = f"run-{uuid.uuid4()}"
    event = records.run_request(handler_id, params, request_id)
    await _publish(request, request_id, jsonvalue.dumps(event).encode(), request.app.state.topics.events)
    return RunRequested(request_id=request_id, handler_id=handler_id, params=params)


@router.post("/handlers/{handler_id}/arm", response_model=Applied, tags=["handlers"],
             summary="Arm a once-handler again")
async def arm_handler(request: Request, handler_id: str, _: HandlerWriter) -> Applied:
    rm = await _handlers_now(request)
    handler = _valid_handler(rm, handler_id)
    if not handler.once:
        raise HTTPException(409, f"handler {handler_id!r} is not a once-handler (it fires on every match): "
                                 "nothing to arm; add 'once: true' to make it a listener")
    row = rm.handler(handler_id)
    assert row is not None
    # a once-handler is armed by every new version of it: publish the same value again
    await _publish(request, handler_id, row["value"].encode())
    return Applied(id=handler_id, job=handler.job, handler=json.loads(row["value"]))


# -- Mistral's listeners, brainlife's notifications ----------------------------------------


@router.post("/listeners", status_code=201, response_model=Applied, tags=["listeners"],
             summary="A webhook on the run lifecycle events of jobs (Mistral)")
async def post_listener(request: Request, body: ListenerIn, _: HandlerWriter) -> Applied:
    try:
        h = listeners.webhook_listener(body.jobs, body.events, body.url, body.method, dict(body.headers),
                                       body.secret, body.id)
    except handlers.InvalidHandler as exc:
        raise _unprocessable([FieldError(path="", message=str(exc))]) from None
    return await apply_handler(request, h)


@router.get("/listeners", response_model=list[HandlerOut], tags=["listeners"])
async def list_listeners(request: Request, _: HandlerReader) -> list[HandlerOut]:
    rm = await _handlers_now(request)
    return [_out(row) for row in rm.handlers() if '"webhook"' in row["value"] and row["valid"]]


@router.delete("/listeners/{listener_id}", status_code=204, tags=["listeners"])
async def delete_listener(request: Request, listener_id: str, _: HandlerWriter) -> Response:
    row = (await _handlers_now(request)).handler(listener_id)
    if row is None or '"webhook"' not in row["value"]:
        raise HTTPException(404, f"no listener {listener_id!r}")
    await _publish(request, listener_id, None)
    return Response(status_code=204)


NOTIFY_AFTER = {"finished": "success", "succeeded": "success", "success": "success", "failed": "failure",
                "failure": "failure", "timed_out": "failure", "any": "either", "done": "either"}
NOTIFY_STATUSES = {"finished": ["finished"], "succeeded": ["finished"], "success": ["finished"],
                   "failed": ["failed", "timed_out"], "failure": ["failed", "timed_out"],
                   "timed_out": ["timed_out"], "any": ["finished", "failed", "timed_out"],
                   "done": ["finished", "failed", "timed_out"]}


def notification_handler(body: NotificationIn, principal: Principal, email_claim: str) -> handlers.Handler:
    to = principal.claim(email_claim)
    if not isinstance(to, str) or "@" not in to:
        raise HTTPException(403, f"your token has no {email_claim!r} claim with an e-mail address: "
                                 "a notification goes to the caller's own address")
    event = body.event.rsplit(".", 1)[-1].lower()  # brainlife's wf.task.finished
    if event not in NOTIFY_AFTER:
        raise _unprocessable([FieldError(path="event", message=f"unknown event {body.event!r}; known: "
                                                               f"{', '.join(NOTIFY_AFTER)}")])
    c = body.config
    if (c.run_id is None) == (c.job is None):
        raise _unprocessable([FieldError(path="config", message="give exactly one of run_id and job")])
    target = c.run_id or c.job or ""
    digest = hashlib.sha256(f"{principal.subject}\0{target}\0{event}\0{c.subject}\0{c.message}".encode())
    data: dict[str, Any] = {
        "id": f"notify.{digest.hexdigest()[:16]}", "once": body.once,
        "description": f"e-mail {principal.subject} when {'run' if c.run_id else 'job'} {target} {event}",
        "email": {"to": [to], "subject": c.subject, "message": c.message},
    }
    if c.job is not None:
        data["after"] = {"job": c.job, "status": NOTIFY_AFTER[event]}
    else:
        data["event"] = {"match": {"source": "internal", "event_type": records.STATUS_EVENT_TYPE},
                         "pattern": {"run_id": [c.run_id], "new_status": NOTIFY_STATUSES[event]}}
    return validate_handler(data)


@router.post("/notifications", status_code=201, response_model=Applied, tags=["listeners"],
             summary="E-mail me when a run or job finishes (brainlife)")
async def post_notification(request: Request, body: NotificationIn, principal: HandlerWriter) -> Applied:
    h = notification_handler(body, principal, request.app.state.gs.email_claim)
    return await apply_handler(request, h)


# -- runs, jobs, events ---------------------------------------------------------------------


def _time_ms(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    if value.isdigit():
        return int(value)
    try:
        return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        raise HTTPException(400, f"{name}: not epoch milliseconds or an ISO 8601 time: {value!r}") from None


@router.get("/runs", response_model=RunsPage, tags=["runs"], summary="Runs, newest first")
async def list_runs(
    request: Request, _: RunReader,
    job: str | None = None, handler: str | None = None,
    status: Annotated[str | None, Query(description=" | ".join(STATUSES))] = None,
    since: Annotated[str | None, Query(description="created at or after (ms or ISO 8601)")] = None,
    until: Annotated[str | None, Query(description="created before (ms or ISO 8601)")] = None,
    q: Annotated[str | None, Query(description="text in the triggering event")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> RunsPage:
    if status is not None and status not in STATUSES:
        raise HTTPException(400, f"status {status!r}: one of {', '.join(STATUSES)}")
    if cursor is not None and (":" not in cursor or not cursor.split(":", 1)[0].lstrip("-").isdigit()):
        raise HTTPException(400, "cursor: pass the 'next' value of the previous page")
    page = _readmodel(request).runs(job=job, handler_id=handler, status=status, since_ms=_time_ms(since, "since"),
                                    until_ms=_time_ms(until, "until"), text=q, limit=limit, cursor=cursor)
    return RunsPage(runs=page.runs, next=page.next)


@router.get("/runs/{run_id}", tags=["runs"], summary="A run: its command, every attempt, deliveries")
async def get_run(request: Request, run_id: str, _: RunReader) -> dict[str, Any]:
    run = _readmodel(request).run(run_id)
    if run is None:
        raise HTTPException(404, f"no run {run_id!r} (yet: the read model follows the topics)")
    return run


@router.get("/jobs", tags=["runs"], summary="Every job with stored state or runs")
async def list_jobs(request: Request, _: RunReader) -> list[dict[str, Any]]:
    return _readmodel(request).jobs()


@router.get("/jobs/{job}", tags=["runs"], summary="A job: stored state, queue, last runs")
async def get_job(request: Request, job: str, _: RunReader) -> dict[str, Any]:
    found = _readmodel(request).job(job)
    if found is None:
        raise HTTPException(404, f"no job {job!r}: no stored state and no runs")
    return found


@router.get("/events", tags=["events"], summary="The latest events (read model)")
async def list_events(request: Request, _: RunReader, limit: Annotated[int, Query(ge=1, le=500)] = 50,
                      id: str | None = None) -> list[dict[str, Any]]:
    return _readmodel(request).events(limit=limit, event_id=id)


@router.get("/health", tags=["gateway"], summary="Liveness and the read model's lag")
async def health(request: Request) -> dict[str, Any]:
    rm = _readmodel(request)
    return {"status": "ok", "read_model": {"lag": rm.lag(), "skipped": rm.skipped, "rebuilt": rm.rebuilt}}
