"""Who is calling: bearer tokens (JWT, PyJWT) become a :class:`Principal` with scopes.

HS256 with a shared secret, or RS256/ES256 with a public key file or a JWKS file; issuer,
audience and expiry are checked when configured (``exp`` is always required). With
``SIGNALBOX_GATEWAY_AUTH=none`` every caller is the principal ``anonymous`` with every
scope: local development only.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Annotated, Any

import jwt
from fastapi import Depends, HTTPException, Request

from streams.gateway.config import (
    ALL_SCOPES,
    EVENTS_WRITE,
    HANDLERS_READ,
    HANDLERS_WRITE,
    RUNS_READ,
    GatewaySettings,
)


class AuthError(Exception):
    """A refused token: ``status`` is 401 (no or bad token) or 403 (missing scope)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Principal:
    subject: str
    claims: dict[str, Any] = field(default_factory=dict)
    scopes: frozenset[str] = frozenset()
    token: str | None = field(default=None, repr=False)  # forwarded to HTTP access checks

    def claim(self, name: str) -> Any:
        """A claim by name; dotted names reach into nested objects (``realm.team``)."""
        value: Any = self.claims
        for part in name.split("."):
            if not isinstance(value, dict) or part not in value:
                return None
            value = value[part]
        return value


ANONYMOUS = Principal("anonymous", {"sub": "anonymous"}, ALL_SCOPES)


class Authenticator:
    def __init__(self, gs: GatewaySettings) -> None:
        self.gs = gs
        self.open = gs.auth == "none"
        self._key: Any = None
        self._jwks: jwt.PyJWKSet | None = None
        self.algorithms: list[str] = []
        if self.open:
            return
        if gs.jwks_file is not None:
            self._jwks = jwt.PyJWKSet.from_json(gs.jwks_file.read_text())
            self.algorithms = ["RS256", "ES256", "PS256", "EdDSA"]
        elif gs.jwt_public_key_file is not None:
            self._key = gs.jwt_public_key_file.read_text()
            self.algorithms = ["RS256", "ES256", "PS256", "EdDSA"]
        elif gs.jwt_secret:
            self._key = gs.jwt_secret
            self.algorithms = ["HS256"]
        else:
            raise ValueError("gateway auth is 'jwt' but no key is configured: set SIGNALBOX_GATEWAY_JWT_SECRET, "
                             "SIGNALBOX_GATEWAY_JWT_PUBLIC_KEY_FILE or SIGNALBOX_GATEWAY_JWKS_FILE "
                             "(or SIGNALBOX_GATEWAY_AUTH=none for local development)")

    def _key_for(self, token: str) -> Any:
        if self._jwks is None:
            return self._key
        kid = jwt.get_unverified_header(token).get("kid")
        for key in self._jwks.keys:
            if kid is None or key.key_id == kid:
                return key.key
        raise AuthError(401, f"invalid token: no key with kid {kid!r} in the JWKS file")

    def verify(self, token: str | None) -> Principal:
        if self.open:
            return ANONYMOUS
        if not token:
            raise AuthError(401, "missing bearer token")
        try:
            claims = jwt.decode(
                token, self._key_for(token), algorithms=self.algorithms,
                audience=self.gs.jwt_audience or None, issuer=self.gs.jwt_issuer or None,
                leeway=self.gs.jwt_leeway_seconds,
                options={"require": ["exp"], "verify_aud": bool(self.gs.jwt_audience)},
            )
        except jwt.PyJWTError as exc:
            # PyJWT's messages name the check that failed and never echo the token
            raise AuthError(401, f"invalid token: {exc}") from None
        subject = claims.get(self.gs.creator_claim)
        if not isinstance(subject, str) or not subject:
            raise AuthError(401, f"invalid token: no {self.gs.creator_claim!r} claim naming the caller")
        return Principal(subject, claims, self._scopes(claims), token)

    def _scopes(self, claims: dict[str, Any]) -> frozenset[str]:
        scopes: set[str] = set()
        if isinstance(claims.get("scope"), str):
            scopes |= set(claims["scope"].split())
        if isinstance(claims.get("scp"), list):
            scopes |= {s for s in claims["scp"] if isinstance(s, str)}
        roles = claims.get(self.gs.roles_claim)
        for role in roles if isinstance(roles, list) else [roles] if isinstance(roles, str) else []:
            scopes |= set(self.gs.role_scopes.get(role, []))
        return frozenset(scopes & ALL_SCOPES)


def bearer(request_headers: Any) -> str | None:
    value = request_headers.get("authorization") or ""
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def require(scope: str) -> Callable[[Request], Coroutine[Any, Any, Principal]]:
    """A FastAPI dependency: the caller, who must hold ``scope``."""

    async def dependency(request: Request) -> Principal:
        auth: Authenticator = request.app.state.auth
        try:
            principal = auth.verify(bearer(request.headers))
        except AuthError as exc:
            raise HTTPException(exc.status, exc.message, headers={"WWW-Authenticate": "Bearer"}) from None
        if scope not in principal.scopes:
            raise HTTPException(403, f"the token lacks the {scope!r} scope")
        return principal

    return dependency


def make_token(secret: str, claims: dict[str, Any]) -> str:
    """An HS256 token (for `signalbox gateway token` and tests)."""
    return jwt.encode(claims, secret, algorithm="HS256")



# The callers each endpoint accepts, as FastAPI parameter types.
Ingester = Annotated[Principal, Depends(require(EVENTS_WRITE))]
HandlerReader = Annotated[Principal, Depends(require(HANDLERS_READ))]
HandlerWriter = Annotated[Principal, Depends(require(HANDLERS_WRITE))]
RunReader = Annotated[Principal, Depends(require(RUNS_READ))]
