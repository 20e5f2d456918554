"""Exchanges: what a live subscription can bind to (docs/api.md, "Live subscriptions").

An exchange names a slice of the events topic (``source``), how each of its records gets a
routing key (``key``, a template over the record's fields, see :mod:`routing`) and who may
bind to it (``access``). Without an exchanges file (``SIGNALBOX_GATEWAY_EXCHANGES_FILE``)
there are two:

- ``runs``: run lifecycle, the internal status events, keyed
  ``run.{job}.{run_id}.{status}`` where ``status`` is started, retrying, succeeded, failed
  or timed_out (the status event's ``finished`` is called ``succeeded`` here, as in results);
- ``events``: every event that is not internal, keyed ``event.{event_type}.{id}``.

Both need a token with the ``subscribe`` scope. A file replaces the defaults entirely.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from streams.contracts.records import STATUS_EVENT_TYPE, is_status_event
from streams.gateway.routing import KeyTemplate, escape_word

# status events call a successful run "finished"; subscribers see the result's name
USER_STATUS = {"finished": "succeeded"}


class PublicAccess(BaseModel):
    """Anyone, with or without a token."""

    model_config = ConfigDict(extra="forbid")
    policy: Literal["public"]


class ScopeAccess(BaseModel):
    """Any caller whose token holds the ``subscribe`` scope (the default)."""

    model_config = ConfigDict(extra="forbid")
    policy: Literal["subscribe"]


class ClaimsAccess(BaseModel):
    """A token with the ``subscribe`` scope whose claim ``claim`` (dotted for nested
    claims) fills ``prefix``: the binding key's first words must be that prefix, literally.
    A claim holding a list grants each of its values."""

    model_config = ConfigDict(extra="forbid")
    policy: Literal["claims"]
    claim: str = Field(min_length=1)
    prefix: str = "{value}"

    @field_validator("prefix")
    @classmethod
    def _has_value(cls, prefix: str) -> str:
        if "{value}" not in prefix:
            raise ValueError("prefix must contain {value}")
        return prefix


class HttpAccess(BaseModel):
    """An HTTP check, brainlife's ``/event/checkaccess/:key``: GET ``url`` with ``{key}``
    replaced by the binding key (URL-quoted) and the caller's token as a bearer token;
    200 allows. No token, no check: denied."""

    model_config = ConfigDict(extra="forbid")
    policy: Literal["http"]
    url: str = Field(pattern=r"^https?://")
    timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    cache_seconds: float = Field(default=30.0, ge=0, le=3600)

    @field_validator("url")
    @classmethod
    def _has_key(cls, url: str) -> str:
        if "{key}" not in url:
            raise ValueError("url must contain {key}")
        return url


Access = Annotated[PublicAccess | ScopeAccess | ClaimsAccess | HttpAccess, Field(discriminator="policy")]


class Exchange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # "runs": the internal status events; "events": every event that is not internal;
    # "internal": every internal event (status events, state-size warnings, ...); "all"
    source: Literal["runs", "events", "internal", "all"]
    key: str = Field(min_length=1, max_length=255)
    access: Access = Field(default_factory=lambda: ScopeAccess(policy="subscribe"))
    description: str = ""
    _template_obj: KeyTemplate = PrivateAttr()

    @field_validator("key")
    @classmethod
    def _template(cls, key: str) -> str:
        KeyTemplate(key)  # raises ValueError
        return key

    @model_validator(mode="after")
    def _compile(self) -> Exchange:
        self._template_obj = KeyTemplate(self.key)
        return self

    def selects(self, record: dict[str, Any]) -> bool:
        internal = record.get("source") == "internal"
        if self.source == "runs":
            return is_status_event(record)
        if self.source == "events":
            return not internal
        if self.source == "internal":
            return internal
        return True

    def routing_key(self, record: dict[str, Any]) -> str:
        fields = dict(record)
        if is_status_event(record):
            status = record.get("new_status")
            fields["status"] = USER_STATUS.get(status, status) if isinstance(status, str) else None
        return self._template_obj.render(fields)

    @property
    def public(self) -> bool:
        return isinstance(self.access, PublicAccess)


class ExchangesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    exchanges: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")], Exchange] = Field(min_length=1)


class ExchangesError(RuntimeError):
    pass


DEFAULT_EXCHANGES: dict[str, Any] = {
    "runs": {
        "source": "runs",
        "key": "run.{job}.{run_id}.{status}",
        "description": f"run lifecycle: the {STATUS_EVENT_TYPE!r} events",
    },
    "events": {
        "source": "events",
        "key": "event.{event_type}.{id}",
        "description": "every event that is not internal",
    },
}


def load(path: Path | None) -> dict[str, Exchange]:
    """The exchanges of ``path`` (YAML, ``exchanges: {name: {...}}``), or the defaults."""
    if path is None:
        return ExchangesFile.model_validate({"exchanges": DEFAULT_EXCHANGES}).exchanges
    try:
        with path.open() as f:
            return ExchangesFile.model_validate(yaml.safe_load(f)).exchanges
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise ExchangesError(f"{path}: {exc}") from None


def claims_prefixes(access: ClaimsAccess, claim_value: Any) -> list[str]:
    """The key prefixes a claim's value grants (escaped like key words)."""
    values = claim_value if isinstance(claim_value, list) else [claim_value]
    return [access.prefix.replace("{value}", escape_word(v)) for v in values
            if isinstance(v, str | int) and not isinstance(v, bool) and escape_word(v)]
