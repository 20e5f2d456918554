"""The gateway's settings: environment variables ``SIGNALBOX_GATEWAY_*`` (docs/api.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# What a caller may do. A token carries them in its ``scope`` (space-separated) or ``scp``
# (list) claim, or gets them from its roles (``roles`` claim) through ``role_scopes``.
EVENTS_WRITE = "events:write"
HANDLERS_READ = "handlers:read"
HANDLERS_WRITE = "handlers:write"
RUNS_READ = "runs:read"
SUBSCRIBE = "subscribe"
ALL_SCOPES = frozenset({EVENTS_WRITE, HANDLERS_READ, HANDLERS_WRITE, RUNS_READ, SUBSCRIBE})

DEFAULT_ROLE_SCOPES: dict[str, list[str]] = {
    "admin": sorted(ALL_SCOPES),
    "operator": sorted(ALL_SCOPES),
    "producer": [EVENTS_WRITE],
    "reader": [HANDLERS_READ, RUNS_READ, SUBSCRIBE],
}


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SIGNALBOX_GATEWAY_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8080
    # "jwt": every request needs a valid bearer token. "none": no authentication at all,
    # every caller has every scope; for local development only (make dev uses it).
    auth: Literal["jwt", "none"] = "jwt"
    # one of these three verifies tokens: an HS256 shared secret (from the environment
    # only), an RS256/ES256 public key (PEM file), or a JWKS file (keys chosen by "kid")
    jwt_secret: str = Field(default="", repr=False)
    jwt_public_key_file: Path | None = None
    jwks_file: Path | None = None
    jwt_issuer: str = ""
    jwt_audience: str = ""
    jwt_leeway_seconds: float = 30.0
    # the claim naming the caller: the "creator" header of ingested events
    creator_claim: str = "sub"
    # the claim holding the caller's e-mail address (notifications go there)
    email_claim: str = "email"
    roles_claim: str = "roles"
    role_scopes: dict[str, list[str]] = Field(default_factory=lambda: dict(DEFAULT_ROLE_SCOPES))
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    max_batch_events: int = Field(default=1000, ge=1)
    # the read model (runs, jobs, handlers), rebuilt from Kafka when missing
    db_path: Path = Path(".signalbox/gateway.sqlite")
    # live subscriptions
    exchanges_file: Path | None = None
    max_connections: int = Field(default=200, ge=1)
    max_bindings: int = Field(default=20, ge=1)
    send_queue_max: int = Field(default=1000, ge=1)
    ping_interval_seconds: float = 20.0
