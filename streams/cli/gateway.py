"""`signalbox gateway`: serve the HTTP gateway with uvicorn; `signalbox token`: mint a
development token signed with the gateway's HS256 secret."""

from __future__ import annotations

import sys
import time
from typing import Any

import uvicorn

from streams.gateway.auth import make_token
from streams.gateway.config import ALL_SCOPES, GatewaySettings
from streams.settings import Settings


def serve(settings: Settings, gs: GatewaySettings, log_level: str = "info") -> int:
    from streams.gateway.app import create_app

    try:
        app = create_app(settings, gs)
    except ValueError as exc:  # no key configured, unreadable key file
        print(f"signalbox gateway: {exc}", file=sys.stderr)
        return 2
    if gs.auth == "none":
        print("signalbox gateway: WARNING: authentication is off (SIGNALBOX_GATEWAY_AUTH=none): every caller "
              "may do everything; for local development only", file=sys.stderr, flush=True)
    print(f"signalbox gateway: http://{gs.host}:{gs.port} (OpenAPI at /docs)", file=sys.stderr, flush=True)
    uvicorn.run(app, host=gs.host, port=gs.port, log_level=log_level, ws_ping_interval=gs.ping_interval_seconds,
                ws_max_size=gs.max_body_bytes, timeout_graceful_shutdown=5)
    return 0


def token(gs: GatewaySettings, subject: str, scopes: list[str], ttl_seconds: int, extra: dict[str, Any]) -> str:
    if not gs.jwt_secret:
        raise ValueError("set SIGNALBOX_GATEWAY_JWT_SECRET (the gateway's HS256 secret) to mint a token")
    unknown = sorted(set(scopes) - ALL_SCOPES)
    if unknown:
        raise ValueError(f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(sorted(ALL_SCOPES))}")
    now = int(time.time())
    claims: dict[str, Any] = {gs.creator_claim: subject, "scope": " ".join(scopes), "iat": now,
                              "exp": now + ttl_seconds, **extra}
    if gs.jwt_issuer:
        claims["iss"] = gs.jwt_issuer
    if gs.jwt_audience:
        claims["aud"] = gs.jwt_audience
    return make_token(gs.jwt_secret, claims)
