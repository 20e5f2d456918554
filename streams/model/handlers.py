"""The handler format: the pydantic model at the edge, and its validation.

A handler says *when* (a trigger) and *what* (a job, with parameters taken from the
event). Handlers are published as JSON to the compacted handlers topic, key = handler id;
a tombstone (null value) deletes one. ``schemas/handler.schema.json`` is generated from
:class:`Handler` (``signalbox schema``).
"""

from __future__ import annotations

import re
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jinja2 import TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from streams.model import jsonvalue

HANDLER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,199}$"
JOB_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$"
SECRET_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"

ParamPath = str | list[str | int]


class EventTrigger(BaseModel):
    """Fire on events of the events topic that pass the filter: every part given must hold."""

    model_config = ConfigDict(extra="forbid")

    match: dict[str, Any] = Field(
        default_factory=dict,
        description="Inclusion filter: the event must contain this JSON (PostgreSQL jsonb @>). "
        "{} matches every event.",
    )
    exclude: dict[str, Any] | None = Field(
        default=None,
        description="Exclusion filter: the event must NOT contain this JSON (jsonb @>).",
    )
    pattern: dict[str, Any] | None = Field(
        default=None,
        description="Amazon EventBridge event pattern (as aws/event-ruler answers it): the event must "
        "match it too. Checked when the handler is read; an invalid pattern names the offending path.",
    )
    creator: str | None = Field(
        default=None,
        description="Only events whose 'creator' Kafka header (set by trusted ingest) equals this.",
    )
    emitted_by: str | None = Field(
        default=None,
        pattern=JOB_NAME_PATTERN,
        description="Only events emitted by a run of this job (header 'emitted_by_job'): events a job "
        "emitted with run.emit(), and internal status events of its runs.",
    )

    @field_validator("pattern")
    @classmethod
    def _pattern_is_valid(cls, pattern: dict[str, Any] | None) -> dict[str, Any] | None:
        # Compiled once here; the result (a dict) carries the compiled form for the index.
        if pattern is None:
            return None
        from streams.filters.eventbridge import PatternError, validated_pattern

        try:
            return validated_pattern(pattern)
        except PatternError as exc:
            raise ValueError(str(exc)) from None


class CronTrigger(BaseModel):
    """Fire on a schedule (OpenFn cron triggers). Each tick starts exactly one run."""

    model_config = ConfigDict(extra="forbid")

    schedule: str = Field(
        description="Standard 5-field cron ('*/15 * * * *'), an alias (@hourly, @daily, @weekly, "
        "@monthly, @yearly, @annually, @midnight), or 6 fields with seconds first ('*/5 * * * * *')."
    )
    timezone: str = Field(default="UTC", description="IANA time zone the schedule is read in.")
    misfire: Literal["run_once", "skip"] = Field(
        default="run_once",
        description="Ticks missed while no worker owned the job (a failover): run_once fires each "
        "of them once when ownership settles; skip drops them.",
    )

    params: dict[str, Any] = Field(default_factory=dict, description="Constant parameters of every run.")

    @field_validator("schedule")
    @classmethod
    def _valid_schedule(cls, schedule: str) -> str:
        from streams.model.cron import parse_schedule

        parse_schedule(schedule)
        return schedule

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {name!r}") from None
        return name


class AfterTrigger(BaseModel):
    """Fire when a run of another job settles (OpenFn flow and catch triggers)."""

    model_config = ConfigDict(extra="forbid")

    job: str = Field(pattern=JOB_NAME_PATTERN, description="The upstream job.")
    # Not "on": YAML 1.1 reads a bare `on` key as the boolean true.
    status: Literal["success", "failure", "either"] = Field(
        default="success", description="success: flow trigger; failure (failed or timed out): catch trigger."
    )
    state: Literal["upstream", "own"] = Field(
        default="upstream",
        description="upstream: the run starts with the upstream run's final state (OpenFn); "
        "own: with this job's own stored state (its cursor).",
    )


class Backoff(BaseModel):
    """The wait before retry n+1: min(initial_seconds * factor**(n-1), max_seconds)."""

    model_config = ConfigDict(extra="forbid")

    initial_seconds: float = Field(default=1.0, gt=0, le=86400, description="Wait before the first retry.")
    factor: float = Field(default=2.0, ge=1, le=100, description="Each wait is the previous one times this.")
    max_seconds: float = Field(default=300.0, gt=0, le=7 * 86400, description="No wait is longer than this.")


class RetryPolicy(BaseModel):
    """Retry failed and timed-out runs (Argo's retryStrategy, EventBridge's RetryPolicy).

    A retry keeps the run id, adds one to ``attempt`` and holds the job's queue: no other
    run of the job starts until the run succeeds or gives up."""

    model_config = ConfigDict(extra="forbid")

    attempts: int = Field(
        ge=1, le=100,
        description="Attempts in all, the first run included: 3 = one run and up to two retries "
        "(Argo's limit: 2, EventBridge's MaximumRetryAttempts: 2). 1 = no retry.",
    )
    backoff: Backoff = Field(default_factory=Backoff)
    jitter: float = Field(
        default=0.0, ge=0, le=1,
        description="Spread each wait at random by up to this fraction (0.1: between 90% and 110%).",
    )
    max_age_seconds: float | None = Field(
        default=None, gt=0, le=30 * 86400,
        description="Give up when a retry would start more than this long after the first attempt started.",
    )


class SecretRef(BaseModel):
    """A header value taken from a named secret (resolved by the worker, never on a topic)."""

    model_config = ConfigDict(extra="forbid")

    secret: str = Field(pattern=SECRET_NAME_PATTERN, description="Name of the secret.")


class WebhookTarget(BaseModel):
    """Deliver the triggering event to an HTTP endpoint, signed per Standard Webhooks."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="http:// or https:// URL of the receiver.")
    method: Literal["POST", "PUT", "PATCH"] = Field(default="POST")
    headers: dict[str, str | SecretRef] = Field(
        default_factory=dict,
        description="Sent as given; a value {secret: NAME} is the named secret's value.",
    )
    secret: str | None = Field(
        default=None, pattern=SECRET_NAME_PATTERN,
        description="Name of the signing secret (whsec_...), resolved by the worker.",
    )
    secrets: list[str] = Field(
        default_factory=list, description="More signing secret names: every one signs (rotation).",
    )
    timeout_seconds: float = Field(default=10.0, gt=0, le=300, description="Per attempt.")

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("url must be an http:// or https:// URL with a host")
        if parts.username or parts.password:
            raise ValueError("url must not carry credentials: use headers with {secret: NAME}")
        return url

    @field_validator("secrets")
    @classmethod
    def _secret_names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not re.fullmatch(SECRET_NAME_PATTERN, name):
                raise ValueError(f"secret name {name!r} must match {SECRET_NAME_PATTERN}")
        return names

    @property
    def signing_secrets(self) -> list[str]:
        return ([self.secret] if self.secret else []) + self.secrets


_TEMPLATE_SYNTAX = SandboxedEnvironment()  # parses e-mail templates, renders nothing


class EmailTarget(BaseModel):
    """Send an e-mail; subject and message are Jinja2 templates over the event's fields."""

    model_config = ConfigDict(extra="forbid")

    to: list[str] = Field(min_length=1, description="Recipient addresses.")
    subject: str = Field(max_length=1000, description="Template, e.g. 'Task {{ task_id }} finished'.")
    message: str = Field(max_length=100_000, description="Template of the plain-text body.")

    @field_validator("to", mode="before")
    @classmethod
    def _one_or_more(cls, to: Any) -> Any:
        return [to] if isinstance(to, str) else to

    @field_validator("to")
    @classmethod
    def _addresses(cls, to: list[str]) -> list[str]:
        for address in to:
            if not re.fullmatch(r"[^@\s,<>]+@[^@\s,<>]+", address):
                raise ValueError(f"{address!r} is not an e-mail address")
        return to

    @field_validator("subject", "message")
    @classmethod
    def _template(cls, text: str) -> str:
        try:
            _TEMPLATE_SYNTAX.parse(text)
        except TemplateSyntaxError as exc:
            raise ValueError(f"template: {exc.message} (line {exc.lineno})") from None
        return text


# Deliveries retry in the spirit of Standard Webhooks/Svix: seconds, then minutes, then hours.
DELIVERY_RETRY = {"attempts": 8, "backoff": {"initial_seconds": 5, "factor": 6, "max_seconds": 36000},
                 "jitter": 0.2, "max_age_seconds": 3 * 86400}
DELIVERY_CONCURRENCY = 10


class Handler(BaseModel):
    """One handler: a trigger, a job to start, and the job's parameters."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=HANDLER_ID_PATTERN, description="Unique id; also the record key.")
    job: str = Field(
        default="", pattern=f"{JOB_NAME_PATTERN}|^$",
        description="Name of the job to start (a webhook or email handler's is webhook.<id> or email.<id>).",
    )
    webhook: WebhookTarget | None = Field(
        default=None, description="Deliver to an HTTP endpoint instead of starting a Python job.",
    )
    email: EmailTarget | None = Field(default=None, description="Send an e-mail instead of starting a Python job.")
    enabled: bool = Field(default=True, description="A disabled handler never fires.")
    event: EventTrigger | None = Field(default=None, description="Fire on events that pass this filter.")
    cron: CronTrigger | None = Field(default=None, description="Fire on a schedule.")
    after: AfterTrigger | None = Field(default=None, description="Fire when another job's run settles.")
    once: bool = Field(
        default=False,
        description="A listener (ecFlow/Aviso): armed when applied or re-applied; while armed, the first "
        "matching event fires it and disarms it. Not with cron.",
    )
    params: dict[str, ParamPath] = Field(
        default_factory=dict,
        description="Job parameters taken from the triggering event: name -> path. A path is a dotted "
        "string ('data.form.id', list indexes as numbers) or a list of keys for keys that "
        "contain dots. A missing path means the handler does not fire. For after-handlers the event "
        "is the upstream run's status event.",
    )
    timeout_seconds: float = Field(
        default=300.0, gt=0, le=86400, description="The runner stops the job after this long."
    )
    concurrency: int = Field(
        default=1, ge=1, le=1000,
        description="Runs of this job that may be in flight at once. 1 (the default) keeps the job's "
        "cursor exact: each run starts from the state its predecessor left, further triggers wait in "
        "the job's queue. Above 1, runs start from the state stored when they start and the last run "
        "to settle wins: only for jobs that keep no cursor. A job's limit is the smallest value among "
        "its handlers.",
    )
    retry: RetryPolicy | None = Field(default=None, description="Retry failed and timed-out runs.")
    description: str | None = None

    @field_validator("params")
    @classmethod
    def _paths_not_empty(cls, params: dict[str, ParamPath]) -> dict[str, ParamPath]:
        for name, path in params.items():
            if path == "" or path == []:
                raise ValueError(f"params.{name}: empty path")
        return params

    @model_validator(mode="after")
    def _one_target(self) -> Handler:
        if self.webhook is not None and self.email is not None:
            raise ValueError("one target: webhook or email, not both")
        target = "webhook" if self.webhook is not None else "email" if self.email is not None else None
        if target is not None:
            if self.job and self.job != delivery_job(target, self.id):
                raise ValueError(f"a {target} handler starts no job: leave job out (its runs are job {target}.<id>)")
            self.job = delivery_job(target, self.id)
            if "retry" not in self.model_fields_set:
                self.retry = RetryPolicy.model_validate(DELIVERY_RETRY)
            if "concurrency" not in self.model_fields_set:
                self.concurrency = DELIVERY_CONCURRENCY
        elif not self.job:
            raise ValueError("job is required (or a webhook target)")
        elif self.job.startswith(("webhook.", "email.")):
            raise ValueError("job names starting with 'webhook.' or 'email.' are the deliveries of those handlers")
        return self

    @model_validator(mode="after")
    def _one_trigger(self) -> Handler:
        given = [k for k in ("event", "cron", "after") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"exactly one trigger of event, cron, after is required; got {given or 'none'}")
        if self.once and self.cron is not None:
            raise ValueError("once applies to event and after triggers, not to cron")
        if self.cron is not None and self.params:
            raise ValueError("a cron handler has no triggering event to take params from: use cron.params")
        return self

    @property
    def trigger_kind(self) -> str:
        return "event" if self.event is not None else "cron" if self.cron is not None else "after"


def delivery_job(transport: str, handler_id: str) -> str:
    """The job name of a delivery handler's runs: ``webhook.<id>``, ``email.<id>``."""
    return f"{transport}." + re.sub(r"[^A-Za-z0-9._:-]", "_", handler_id)[:190]


class InvalidHandler(ValueError):
    """A handler record that cannot be applied; ``str()`` is the reason."""


def parse_handler(data: bytes | str | dict[str, Any], key: str | None = None) -> Handler:
    """Validate one handler record; the record key, when given, must equal its id."""
    try:
        # a filter for events of the deepest accepted kind sits a few levels deeper in its handler
        raw = jsonvalue.loads(data, max_depth=jsonvalue.DEPTH_CEILING) if isinstance(data, (bytes, str)) else data
    except ValueError as exc:
        raise InvalidHandler(f"not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise InvalidHandler("a handler must be a JSON object")
    try:
        handler = Handler.model_validate(raw)
    except ValidationError as exc:
        raise InvalidHandler(_describe(exc)) from None
    if key is not None and key != handler.id:
        raise InvalidHandler(f"record key {key!r} differs from handler id {handler.id!r}")
    return handler


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(handler)"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def json_schema() -> dict[str, Any]:
    schema = Handler.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://signalbox.dev/schemas/handler.schema.json"
    return schema


def run_params(handler: Handler, given: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A run-now's params: ``given`` over the handler's constants (cron.params); and the
    params the handler declares that still have no value."""
    constants = handler.cron.params if handler.cron is not None else {}
    params = {**constants, **given}
    return params, sorted(name for name in handler.params if name not in params)
