"""Token verification without a broker: HS256, an RS256 public key file, a JWKS file;
issuer, audience and expiry; scopes and roles. Keys are made here with `cryptography`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from streams.gateway.auth import ANONYMOUS, Authenticator, AuthError
from streams.gateway.config import ALL_SCOPES, GatewaySettings

S = "s" * 32


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(key: rsa.RSAPrivateKey) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "ada", "exp": int(time.time()) + 60, "scope": "runs:read", **extra}


def refused(auth: Authenticator, token: str | None) -> str:
    with pytest.raises(AuthError) as caught:
        auth.verify(token)
    assert caught.value.status == 401
    return caught.value.message


def refused_lower(auth: Authenticator, token: str | None) -> str:
    return refused(auth, token).lower()


def test_hs256_with_issuer_audience_and_expiry() -> None:
    auth = Authenticator(GatewaySettings(jwt_secret="s" * 32, jwt_issuer="https://idp", jwt_audience="sb"))
    good = jwt.encode(claims(iss="https://idp", aud="sb"), "s" * 32, algorithm="HS256")
    p = auth.verify(good)
    assert p.subject == "ada" and p.scopes == {"runs:read"} and p.token == good
    assert "issuer" in refused_lower(auth, jwt.encode(claims(iss="https://evil", aud="sb"), S, algorithm="HS256"))
    assert "audience" in refused_lower(auth, jwt.encode(claims(iss="https://idp", aud="x"), S, algorithm="HS256"))
    assert "expired" in refused(auth, jwt.encode(claims(iss="https://idp", aud="sb", exp=int(time.time()) - 100),
                                                 S, algorithm="HS256"))
    assert "missing" in refused(auth, None)
    # a token signed with the right secret but another algorithm family is refused
    key = rsa_key()
    assert refused(auth, jwt.encode(claims(iss="https://idp", aud="sb"), key, algorithm="RS256"))


def test_rs256_public_key_file(tmp_path: Path) -> None:
    key, other = rsa_key(), rsa_key()
    (tmp_path / "pub.pem").write_text(pem(key))
    auth = Authenticator(GatewaySettings(jwt_public_key_file=tmp_path / "pub.pem"))
    assert auth.verify(jwt.encode(claims(), key, algorithm="RS256")).subject == "ada"
    assert "Signature" in refused(auth, jwt.encode(claims(), other, algorithm="RS256"))
    # the HS256-with-the-public-key confusion attack fails
    assert refused(auth, jwt.encode(claims(), "k" * 40, algorithm="HS256"))


def test_jwks_file_picks_the_key_by_kid(tmp_path: Path) -> None:
    k1, k2 = rsa_key(), rsa_key()
    jwks = {"keys": [{**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(k.public_key())), "kid": kid, "use": "sig",
                      "alg": "RS256"} for k, kid in ((k1, "one"), (k2, "two"))]}
    (tmp_path / "jwks.json").write_text(json.dumps(jwks))
    auth = Authenticator(GatewaySettings(jwks_file=tmp_path / "jwks.json"))
    assert auth.verify(jwt.encode(claims(), k2, algorithm="RS256", headers={"kid": "two"})).subject == "ada"
    assert "Signature" in refused(auth, jwt.encode(claims(), k1, algorithm="RS256", headers={"kid": "two"}))
    assert "kid" in refused(auth, jwt.encode(claims(), k1, algorithm="RS256", headers={"kid": "three"}))


def test_scopes_from_scope_scp_and_roles() -> None:
    auth = Authenticator(GatewaySettings(jwt_secret="s" * 32, role_scopes={"ops": ["handlers:write"]}))

    def scopes(**c: Any) -> frozenset[str]:
        return auth.verify(jwt.encode({"sub": "x", "exp": int(time.time()) + 60, **c}, "s" * 32,
                                      algorithm="HS256")).scopes

    assert scopes(scope="events:write bogus") == {"events:write"}
    assert scopes(scp=["runs:read", 5]) == {"runs:read"}
    assert scopes(roles=["ops", "unknown"]) == {"handlers:write"}
    assert scopes(roles="ops") == {"handlers:write"}
    assert scopes() == frozenset()
    # no subject: refused (it would be the events' creator)
    assert "'sub'" in refused(auth, jwt.encode({"exp": int(time.time()) + 60}, S, algorithm="HS256"))


def test_open_mode_and_missing_key() -> None:
    assert Authenticator(GatewaySettings(auth="none")).verify(None) is ANONYMOUS
    assert ANONYMOUS.scopes == ALL_SCOPES
    with pytest.raises(ValueError, match="SIGNALBOX_GATEWAY_JWT_SECRET"):
        Authenticator(GatewaySettings())


def test_nested_claims() -> None:
    auth = Authenticator(GatewaySettings(jwt_secret="s" * 32))
    p = auth.verify(jwt.encode(claims(realm={"team": "blue"}), S, algorithm="HS256"))
    assert p.claim("realm.team") == "blue" and p.claim("realm.nope") is None and p.claim("sub") == "ada"
