"""The Standard Webhooks signature (https://www.standardwebhooks.com/).

``webhook-signature: v1,<base64 HMAC-SHA256 of "<webhook-id>.<webhook-timestamp>.<body>">``,
one ``v1,`` entry per secret (space-separated) so a receiver can rotate its secret. A
secret is ``whsec_`` + base64 key bytes, as the spec's libraries generate them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

PREFIX = "whsec_"


def key_of(secret: str) -> bytes:
    """The HMAC key of a ``whsec_…`` secret; ValueError (without the secret) otherwise."""
    if not secret.startswith(PREFIX):
        raise ValueError("a webhook secret must start with 'whsec_' (base64 after it)")
    try:
        return base64.b64decode(secret[len(PREFIX):], validate=True)
    except ValueError:
        raise ValueError("a webhook secret must be 'whsec_' followed by base64") from None


def signature(secrets: list[str], msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.new(key_of(s), signed, hashlib.sha256).digest()).decode() for s in secrets)
