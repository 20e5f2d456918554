"""Amazon MSK IAM authentication: SASL OAUTHBEARER tokens signed with AWS credentials.

Use with ``security.protocol=SASL_SSL``, ``sasl.mechanism=OAUTHBEARER`` and
``signalbox.oauthbearer.token.provider=streams.kafka.msk_iam:token``. Needs
``pip install aws-msk-iam-sasl-signer-python`` (not a dependency of signalbox); the region
comes from ``AWS_REGION`` (or ``AWS_DEFAULT_REGION``), the credentials from AWS's default
chain (environment, profile, the instance's or task's role).
"""

from __future__ import annotations

import os

from streams.kafka.connection import ConnectionConfigError


def token() -> tuple[str, float]:
    """A fresh MSK IAM token and its expiry (epoch seconds)."""
    try:
        from aws_msk_iam_sasl_signer import MSKAuthTokenProvider
    except ImportError:
        raise ConnectionConfigError("MSK IAM needs the signer: pip install aws-msk-iam-sasl-signer-python") from None
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not region:
        raise ConnectionConfigError("MSK IAM needs the cluster's region in AWS_REGION")
    signed, expiry_ms = MSKAuthTokenProvider.generate_auth_token(region)
    return str(signed), float(expiry_ms) / 1000
