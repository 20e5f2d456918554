"""The dashboard: server-rendered pages (Jinja2 + htmx, shipped in the package, no CDN)
over the gateway's read model, live through the read model's own change feed.

Browsers cannot send a bearer header on navigation, so ``/ui/login`` takes a token and
keeps it in an HttpOnly, SameSite=Strict cookie; every page verifies that cookie with the
gateway's :class:`~streams.gateway.auth.Authenticator` (with ``auth=none`` there is no
sign-in). Actions are POSTs that need the cookie, the ``HX-Request`` header htmx sends (a
cross-site form cannot set it) and the ``handlers:write`` scope: without it the buttons
are not rendered and the POSTs answer 403.

Dead-letter replay (docs/dashboard.md): an event goes back onto the events topic, a
trigger back onto its partition of the triggers topic, a run that gave up is started
again through the handler's run-now; a truncated value, or a record of another topic,
cannot be replayed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import yaml
from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sse_starlette.sse import EventSourceResponse

from streams.contracts import records
from streams.contracts.problem_records import redact, shown_value
from streams.gateway import api
from streams.gateway.auth import ANONYMOUS, Authenticator, AuthError, Principal
from streams.gateway.config import HANDLERS_READ, HANDLERS_WRITE, RUNS_READ
from streams.gateway.readmodel import STATUSES, ReadModel
from streams.kafka.async_producer import ProduceError, Record
from streams.kafka.partitioning import job_partition
from streams.matching.dry_run import explain, firing_handlers
from streams.model import handlers, jsonvalue

HERE = Path(__file__).parent
COOKIE = "signalbox_session"
PAGE_SIZE = 50

router = APIRouter(prefix="/ui", include_in_schema=False)
templates = Jinja2Templates(directory=str(HERE / "templates"))  # autoescape on (Starlette)
static = StaticFiles(directory=str(HERE / "static"))


def mount(app: FastAPI) -> None:
    """The dashboard's routes, its static files under /ui/static, and / redirecting to /ui."""
    app.include_router(router)
    app.mount("/ui/static", static, name="ui-static")

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/ui/runs", status_code=303)


# -- template helpers ------------------------------------------------------------------


def _when(ms: int | None) -> str:
    if not ms:
        return "—"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _size(n: int | None) -> str:
    n = n or 0
    return f"{n} B" if n < 1024 else f"{n / 1024:.1f} KiB"


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)


templates.env.filters["when"] = _when
templates.env.filters["size"] = _size
templates.env.filters["pretty"] = _pretty
templates.env.globals["STATUSES"] = STATUSES


# -- who is looking ----------------------------------------------------------------------


def viewer(request: Request) -> Principal | None:
    """The signed-in caller (the cookie's token), ANONYMOUS with auth=none, or None."""
    auth: Authenticator = request.app.state.auth
    if auth.open:
        return ANONYMOUS
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    try:
        return auth.verify(token)
    except AuthError:
        return None


class _NotSignedIn(Exception):
    pass


LIVE_KINDS = {"command": "runs", "result": "runs", "status": "runs", "dead_letter": "runs", "event": "events",
              "handler": "handlers"}


def live_seen(rm: ReadModel) -> dict[str, int]:
    """How many changes of each live kind (runs, events, handlers) the read model has applied.
    A page carries the counts it was rendered at, and /ui/live's greeting the counts at the
    moment it starts listening: a page refetches what changed in between, which no message
    could have told it."""
    seen = dict.fromkeys(sorted(set(LIVE_KINDS.values())), 0)
    for kind, n in rm.applied.items():
        topic = LIVE_KINDS.get(kind)
        if topic is not None:
            seen[topic] += n
    return seen


def _page(request: Request, name: str, who: Principal, status: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("live_seen", json.dumps(live_seen(_rm(request))))
    can = {"write": HANDLERS_WRITE in who.scopes, "handlers": HANDLERS_READ in who.scopes,
           "runs": RUNS_READ in who.scopes}
    return templates.TemplateResponse(request, name, {"who": who, "can": can, "open": request.app.state.auth.open,
                                                      **context}, status_code=status)


def _need(request: Request, scope: str) -> Principal | HTMLResponse | RedirectResponse:
    """The caller if they hold ``scope``; else the sign-in redirect or a 403 page."""
    who = viewer(request)
    if who is None:
        return RedirectResponse(f"/ui/login?{urlencode({'next': request.url.path})}", status_code=303)
    if scope not in who.scopes:
        return _page(request, "error.html", who, 403, title="Not allowed",
                     message=f"Your token lacks the {scope!r} scope this page needs.")
    return who


def _actor(request: Request) -> Principal:
    """The caller of an action: the cookie, the htmx header (CSRF), handlers:write."""
    if request.headers.get("hx-request") != "true":
        raise HTTPException(403, "actions are sent by the dashboard's own pages (HX-Request header missing)")
    who = viewer(request)
    if who is None:
        raise HTTPException(401, "not signed in (or the token expired): sign in again")
    if HANDLERS_WRITE not in who.scopes:
        raise HTTPException(403, f"your token lacks the {HANDLERS_WRITE!r} scope")
    return who


def _flash(request: Request, ok: bool, message: str, status: int = 200, link: tuple[str, str] | None = None
           ) -> HTMLResponse:
    return templates.TemplateResponse(request, "_flash.html", {"ok": ok, "message": message, "link": link},
                                      status_code=status)


def _failure(request: Request, exc: HTTPException) -> HTMLResponse:
    detail = exc.detail
    if isinstance(detail, list):  # 422: [{path, message}]
        detail = "; ".join(f"{d.get('path')}: {d.get('message')}" if isinstance(d, dict) else str(d) for d in detail)
    return _flash(request, False, str(detail), exc.status_code)


def _rm(request: Request) -> ReadModel:
    return request.app.state.readmodel  # type: ignore[no-any-return]


async def _form(request: Request) -> dict[str, str]:
    from streams.gateway.ingest import read_body

    body = await read_body(request, request.app.state.gs.max_body_bytes)
    return {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}


# -- sign in -----------------------------------------------------------------------------


@router.get("", response_class=RedirectResponse)
async def ui_root() -> RedirectResponse:
    return RedirectResponse("/ui/runs", status_code=303)


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, next: str = "/ui/runs") -> Response:
    if request.app.state.auth.open:
        return RedirectResponse("/ui/runs", status_code=303)
    return templates.TemplateResponse(request, "login.html", {"next": _safe_next(next), "error": None, "who": None,
                                                              "can": {}, "open": False})


def _safe_next(target: str) -> str:
    return target if target.startswith("/ui") and "//" not in target else "/ui/runs"


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    form = await _form(request)
    token, target = form.get("token", "").strip(), _safe_next(form.get("next", "/ui/runs"))
    try:
        request.app.state.auth.verify(token)
    except AuthError as exc:
        return templates.TemplateResponse(request, "login.html", {"next": target, "error": exc.message, "who": None,
                                                                  "can": {}, "open": False}, status_code=401)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=request.url.scheme == "https",
                        path="/ui")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(COOKIE, path="/ui")
    return response


# -- runs --------------------------------------------------------------------------------


def _runs_query(request: Request) -> dict[str, str]:
    keys = ("job", "handler", "status", "since", "until", "q", "cursor")
    return {k: v for k in keys if (v := request.query_params.get(k, "").strip())}


def _runs_page(request: Request, query: dict[str, str]) -> dict[str, Any]:
    error = None
    status = query.get("status")
    if status is not None and status not in STATUSES:
        error, status = f"unknown status {status!r}", None
    try:
        since = api._time_ms(_local_time(query.get("since")), "since")
        until = api._time_ms(_local_time(query.get("until")), "until")
    except HTTPException as exc:
        error, since, until = str(exc.detail), None, None
    cursor = query.get("cursor")
    if cursor is not None and (":" not in cursor or not cursor.split(":", 1)[0].lstrip("-").isdigit()):
        error, cursor = "bad page cursor", None
    started = time.perf_counter()
    page = _rm(request).runs(job=query.get("job"), handler_id=query.get("handler"), status=status, since_ms=since,
                             until_ms=until, text=query.get("q"), limit=PAGE_SIZE, cursor=cursor)
    base = {k: v for k, v in query.items() if k != "cursor"}
    return {"runs": page.runs, "query": query, "error": error, "live": cursor is None,
            "next_url": f"/ui/runs?{urlencode({**base, 'cursor': page.next})}" if page.next else None,
            "first_url": f"/ui/runs?{urlencode(base)}" if cursor else None,
            "table_url": f"/ui/runs/table?{urlencode(query)}", "query_ms": (time.perf_counter() - started) * 1000}


def _local_time(value: str | None) -> str | None:
    """A datetime-local input (2026-11-23T15:58) is read as UTC; other forms go as they are."""
    if value and "T" in value and len(value) == 16:
        return value + ":00+00:00"
    return value


@router.get("/runs", response_class=HTMLResponse)
async def runs_page(request: Request) -> Response:
    who = _need(request, RUNS_READ)
    if not isinstance(who, Principal):
        return who
    rm = _rm(request)
    jobs = sorted({*[j["job"] for j in rm.jobs()], *rm.last_run_of_jobs()})
    return _page(request, "runs.html", who, jobs=jobs, handler_ids=sorted(rm.last_fired()),
                 **_runs_page(request, _runs_query(request)))


@router.get("/runs/table", response_class=HTMLResponse)
async def runs_table(request: Request) -> Response:
    who = _need(request, RUNS_READ)
    if not isinstance(who, Principal):
        return who
    return _page(request, "_runs_table.html", who, **_runs_page(request, _runs_query(request)))


@router.get("/runs/{run_id}", response_class=HTMLResponse)
async def run_page(request: Request, run_id: str) -> Response:
    who = _need(request, RUNS_READ)
    if not isinstance(who, Principal):
        return who
    run = _rm(request).run(run_id)
    if run is None:
        return _page(request, "error.html", who, 404, title="No such run",
                     message=f"No run {run_id!r} (yet: the read model follows the topics). This page reloads "
                             "when it arrives.", live_reload=True)
    settings = request.app.state.settings
    return _page(request, "run.html", who, run=run, limits=(settings.state_warn_bytes, settings.state_max_bytes),
                 trigger=_trigger_text(run))


def _trigger_text(run: dict[str, Any]) -> str:
    kind, ref = run.get("trigger_kind") or "", run.get("trigger_ref") or ""
    return {"event": f"event {ref}", "cron": f"cron tick {ref}", "after": f"after {ref}",
            "manual": f"run now ({ref.removeprefix('manual:')})"}.get(kind, f"{kind} {ref}".strip() or "unknown")


@router.post("/runs/{run_id}/rerun", response_class=HTMLResponse)
async def rerun(request: Request, run_id: str) -> Response:
    try:
        who = _actor(request)
        run = _rm(request).run(run_id)
        if run is None:
            raise HTTPException(404, f"no run {run_id!r}")
        return await _run_now(request, who, run["handler_id"], run.get("params") or {}, allow_missing=True)
    except HTTPException as exc:
        return _failure(request, exc)


async def _run_now(request: Request, who: Principal, handler_id: str, params: dict[str, Any],
                   allow_missing: bool = False) -> HTMLResponse:
    """The REST API's run-now (same checks); the answer links the new run."""
    out = await api.run_handler(request, handler_id, who, api.RunRequest(params=params, allow_missing=allow_missing))
    new_run = records.run_id(handler_id, f"manual:{out.request_id}")
    return _flash(request, True, f"Run of {handler_id} requested.", link=(f"/ui/runs/{new_run}", new_run))


# -- handlers ------------------------------------------------------------------------------


def _kind(value: dict[str, Any]) -> tuple[str, str]:
    trigger = next((k for k in ("event", "cron", "after") if value.get(k) is not None), "none")
    target = "webhook" if value.get("webhook") else "email" if value.get("email") else "job"
    return trigger, target


@router.get("/handlers", response_class=HTMLResponse)
async def handlers_page(request: Request) -> Response:
    who = _need(request, HANDLERS_READ)
    if not isinstance(who, Principal):
        return who
    rm = await api._handlers_now(request)
    fired = rm.last_fired()
    rows = []
    for row in rm.handlers():
        try:
            value = json.loads(row["value"])
        except ValueError:
            value = {}
        value = value if isinstance(value, dict) else {}
        trigger, target = _kind(value)
        last = fired.get(row["id"])
        once = bool(value.get("once"))
        rows.append({"id": row["id"], "valid": bool(row["valid"]), "error": row["error"], "job": value.get("job"),
                     "trigger": trigger, "target": target, "enabled": value.get("enabled", True), "once": once,
                     # a once-handler is armed by each version: fired since its latest version means spent
                     "armed": once and not (last and row["updated_at"] and last >= row["updated_at"]),
                     "last_fired": last, "updated_at": row["updated_at"]})
    return _page(request, "handlers.html", who, handlers=rows)


@router.get("/handlers/{handler_id}", response_class=HTMLResponse)
async def handler_page(request: Request, handler_id: str) -> Response:
    who = _need(request, HANDLERS_READ)
    if not isinstance(who, Principal):
        return who
    row = (await api._handlers_now(request)).handler(handler_id)
    if row is None:
        return _page(request, "error.html", who, 404, title="No such handler", message=f"No handler {handler_id!r}.")
    try:
        value = json.loads(row["value"])
        text = yaml.safe_dump(redact(value), sort_keys=False, allow_unicode=True)
    except ValueError:
        value, text = {}, "(not JSON)"
    declared = sorted((value.get("params") or {}) if isinstance(value, dict) else {})
    constants = (value.get("cron") or {}).get("params", {}) if isinstance(value, dict) else {}
    last = _rm(request).runs(handler_id=handler_id, limit=10).runs if RUNS_READ in who.scopes else []
    return _page(request, "handler.html", who, row=row, value=value, yaml_text=text, declared=declared,
                 constants=constants, last_runs=last)


async def _set_enabled(request: Request, handler_id: str, enabled: bool) -> Response:
    try:
        _actor(request)
        rm = await api._handlers_now(request)
        handler = api._valid_handler(rm, handler_id)
        await api.apply_handler(request, handler.model_copy(update={"enabled": enabled}))
        return _flash(request, True, f"{handler_id} {'enabled' if enabled else 'disabled'}.")
    except HTTPException as exc:
        return _failure(request, exc)


@router.post("/handlers/{handler_id}/enable", response_class=HTMLResponse)
async def enable(request: Request, handler_id: str) -> Response:
    return await _set_enabled(request, handler_id, True)


@router.post("/handlers/{handler_id}/disable", response_class=HTMLResponse)
async def disable(request: Request, handler_id: str) -> Response:
    return await _set_enabled(request, handler_id, False)


@router.post("/handlers/{handler_id}/arm", response_class=HTMLResponse)
async def arm(request: Request, handler_id: str) -> Response:
    try:
        who = _actor(request)
        await api.arm_handler(request, handler_id, who)
        return _flash(request, True, f"{handler_id} armed: it fires on its next match.")
    except HTTPException as exc:
        return _failure(request, exc)


@router.post("/handlers/{handler_id}/run", response_class=HTMLResponse)
async def run_now(request: Request, handler_id: str) -> Response:
    try:
        who = _actor(request)
        form = await _form(request)
        params: dict[str, Any] = {}
        raw = form.get("params_json", "").strip()
        if raw:
            try:
                parsed = jsonvalue.loads(raw)
            except ValueError as exc:
                raise HTTPException(422, f"params: not JSON: {exc}") from None
            if not isinstance(parsed, dict):
                raise HTTPException(422, "params: a JSON object, {\"name\": value}")
            params.update(parsed)
        for key, value in form.items():
            if key.startswith("param.") and value != "":
                params[key.removeprefix("param.")] = value
        return await _run_now(request, who, handler_id, params, allow_missing=form.get("allow_missing") == "on")
    except HTTPException as exc:
        return _failure(request, exc)


# -- events ------------------------------------------------------------------------------


@router.get("/events", response_class=HTMLResponse)
async def events_page(request: Request, id: str | None = None, handler: str | None = None) -> Response:
    who = _need(request, RUNS_READ)
    if not isinstance(who, Principal):
        return who
    rm = _rm(request)
    if id is None:
        return _page(request, "events.html", who, events=rm.events(limit=100))
    found = rm.events(limit=1, event_id=id)
    if not found:
        return _page(request, "error.html", who, 404, title="No such event",
                     message=f"No event {id!r} among the latest the read model keeps.")
    event = found[0]
    rows = rm.handlers()
    valid = [json.loads(r["value"]) for r in rows if r["valid"]]
    headers = {"creator": event["creator"]} if event["creator"] else {}
    firing, error = [], None
    try:
        firing = [f for f in firing_handlers(valid, event["event"]) if _constraints_hold(valid, f["id"], event,
                                                                                          headers)]
    except handlers.InvalidHandler as exc:
        error = str(exc)
    triggered = [r for r in rm.runs(limit=200, text=id).runs
                 if r["trigger_kind"] == "event" and r["trigger_ref"] == f"id:{id}"]
    why = None
    if handler:
        value = next((v for v in valid if v.get("id") == handler), None)
        if value is None:
            why = {"fires": False, "reasons": [f"no valid handler {handler!r}"], "params": None}
        else:
            why = explain(value, event["event"], headers)
            # the read model keeps the creator header of an event, not emitted_by_job
            why["reasons"] = [r if not r.startswith("emitted_by") else
                              "emitted_by: the read model does not keep the event's emitted_by_job header, so this "
                              "part cannot be judged here" for r in why["reasons"]]
    return _page(request, "event.html", who, event=event, firing=firing, triggered=triggered, error=error,
                 handler_ids=[v["id"] for v in valid], chosen=handler, why=why)


def _constraints_hold(valid: list[dict[str, Any]], handler_id: str, event: dict[str, Any],
                      headers: dict[str, str]) -> bool:
    value = next(v for v in valid if v.get("id") == handler_id)
    return bool(explain(value, event["event"], headers)["fires"])


# -- dead letters ----------------------------------------------------------------------



def replay_plan(request: Request, dead: dict[str, Any]) -> tuple[str, str]:
    """How a dead letter is replayed: ("event"|"trigger"|"rerun", description), or raises 409."""
    topics = request.app.state.topics
    if dead["truncated_from"]:
        raise HTTPException(409, f"the dead letter keeps only the first {dead['value_bytes']} of "
                                 f"{dead['truncated_from']} bytes: replay it from its source topic")
    if dead["headers"].get("limit") and dead["headers"].get("handler_id"):
        return "rerun", f"run handler {dead['headers']['handler_id']} again with the same params"
    if dead["source_topic"] == topics.events:
        return "event", "the event goes back onto the events topic"
    if dead["source_topic"] == topics.triggers:
        try:
            doc = json.loads(dead["value"] or b"")
        except ValueError:
            doc = None
        if (isinstance(doc, list) and dead["source_partition"] is not None) or (isinstance(doc, dict) and "job" in doc):
            return "trigger", "the trigger goes back onto its partition of the triggers topic"
        raise HTTPException(409, "the triggers record is not JSON (a list of triggers, or one): it cannot be replayed")
    raise HTTPException(409, f"a record of {dead['source_topic'] or 'an unknown topic'!r} cannot be replayed "
                             "from the dashboard")


@router.get("/dead-letters", response_class=HTMLResponse)
async def dead_letters_page(request: Request) -> Response:
    who = _need(request, RUNS_READ)
    if not isinstance(who, Principal):
        return who
    rows = []
    for dead in _rm(request).dead_letters(limit=200):
        try:
            plan: str | None = replay_plan(request, dead)[1]
        except HTTPException as exc:
            plan = None
            dead["not_replayable"] = str(exc.detail)
        dead["plan"] = plan
        dead["shown"] = shown_value(dead["value"])
        dead["headers"] = redact(dead["headers"])
        rows.append(dead)
    return _page(request, "dead_letters.html", who, dead_letters=rows)


@router.post("/dead-letters/{seq}/replay", response_class=HTMLResponse)
async def replay(request: Request, seq: int) -> Response:
    try:
        who = _actor(request)
        rm = _rm(request)
        dead = rm.dead_letter(seq)
        if dead is None:
            raise HTTPException(404, f"no dead letter {seq}")
        kind, _ = replay_plan(request, dead)
        topics = request.app.state.topics
        if kind == "rerun":
            body = shown_value(dead["value"]) or {}
            params = json.loads(body.get("params_json") or "{}") if isinstance(body, dict) else {}
            handler_id = dead["headers"]["handler_id"]
            out = await api.run_handler(request, handler_id, who, api.RunRequest(params=params, allow_missing=True))
            new_run = records.run_id(handler_id, f"manual:{out.request_id}")
            rm.mark_replayed(seq, int(time.time() * 1000), new_run)
            return _flash(request, True, f"Replayed as a new run of {handler_id}.",
                          link=(f"/ui/runs/{new_run}", new_run))
        key = dead["key"].encode() if dead["key"] is not None else None
        if kind == "event":
            record = Record(topics.events, key, dead["value"])
        else:  # a triggers record is a JSON list of one job partition's triggers; one trigger is dead-lettered alone
            doc = json.loads(dead["value"])
            if isinstance(doc, dict) and isinstance(doc.get("job"), str):
                record = Record(topics.triggers, None, b"[" + dead["value"] + b"]",
                                partition=job_partition(doc["job"], topics.job_partitions))
            else:
                record = Record(topics.triggers, None, dead["value"], partition=dead["source_partition"])
        topic = record.topic
        try:
            await request.app.state.producer.send_all([record])
        except (ProduceError, TimeoutError) as exc:
            raise HTTPException(503, f"the broker did not acknowledge the replay: {exc or 'timeout'}") from None
        rm.mark_replayed(seq, int(time.time() * 1000), f"{topic}")
        return _flash(request, True, f"Replayed onto {topic}.")
    except HTTPException as exc:
        return _failure(request, exc)


# -- jobs --------------------------------------------------------------------------------


@router.get("/jobs", response_class=HTMLResponse)
async def jobs_page(request: Request) -> Response:
    who = _need(request, RUNS_READ)
    if not isinstance(who, Principal):
        return who
    rm = _rm(request)
    last = rm.last_run_of_jobs()
    stored = {j["job"]: j for j in rm.jobs()}
    rows = []
    for name in sorted({*stored, *last}):
        j = stored.get(name, {"job": name, "state_bytes": 0, "waiting": 0, "running": 0})
        rows.append({**j, "last": last.get(name)})
    settings = request.app.state.settings
    return _page(request, "jobs.html", who, jobs=rows, warn=settings.state_warn_bytes, limit=settings.state_max_bytes)


@router.get("/jobs/{job}", response_class=HTMLResponse)
async def job_page(request: Request, job: str) -> Response:
    who = _need(request, RUNS_READ)
    if not isinstance(who, Principal):
        return who
    found = _rm(request).job(job)
    if found is None:
        return _page(request, "error.html", who, 404, title="No such job", message=f"No job {job!r}.")
    settings = request.app.state.settings
    return _page(request, "job.html", who, job=found, warn=settings.state_warn_bytes, limit=settings.state_max_bytes)


# -- live ----------------------------------------------------------------------------------

@router.get("/live")
async def live(request: Request) -> Response:
    """Server-Sent Events naming what changed in the read model (runs, events, handlers),
    after it was applied: the page then fetches its fresh fragment."""
    if viewer(request) is None:
        raise HTTPException(401, "not signed in")
    rm = _rm(request)
    pending: set[str] = set()  # the kinds changed since the last message: a burst coalesces, nothing is dropped
    woken = asyncio.Event()

    def told(kind: str, _data: dict[str, Any]) -> None:
        topic = LIVE_KINDS.get(kind)
        if topic is not None:
            pending.add(topic)
            woken.set()

    async def changes() -> AsyncIterator[dict[str, str]]:
        rm.listeners.append(told)  # then, with no await between, the counts the greeting carries
        try:
            yield {"event": "hello", "data": json.dumps(live_seen(rm))}
            while True:
                await woken.wait()
                woken.clear()
                kinds = sorted(pending)
                pending.clear()
                seen = live_seen(rm)
                for kind in kinds:
                    yield {"event": kind, "data": str(seen[kind])}
        finally:
            rm.listeners.remove(told)

    return EventSourceResponse(changes(), ping=15)
