"""Secret names, resolved in the worker: a handler names a secret, never holds it.

A name ``billing-hook`` is looked up in the environment as ``SIGNALBOX_SECRET_BILLING_HOOK``
(upper case, every other character than a letter or digit as ``_``), then in the JSON file
``SIGNALBOX_SECRETS_FILE`` (``{"billing-hook": "whsec_…"}``), read at each lookup so a
rotated file needs no restart. A missing name is an error that names it, never a value.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path


class MissingSecret(LookupError):
    pass


def env_name(name: str) -> str:
    return "SIGNALBOX_SECRET_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def resolve(name: str) -> str:
    value = os.environ.get(env_name(name))
    if value:
        return value
    path = os.environ.get("SIGNALBOX_SECRETS_FILE")
    if path:
        try:
            found = json.loads(Path(path).read_text()).get(name)
        except (OSError, ValueError, AttributeError) as exc:
            raise MissingSecret(f"secret {name!r}: the secrets file cannot be read ({type(exc).__name__})") from None
        if isinstance(found, str) and found:
            return found
    raise MissingSecret(f"secret {name!r} is not set (environment {env_name(name)} or SIGNALBOX_SECRETS_FILE)")
