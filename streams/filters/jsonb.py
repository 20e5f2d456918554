"""PostgreSQL ``jsonb @>`` containment, exactly as PostgreSQL 15 answers it.

Values are parsed JSON with exact numbers (``int`` or ``decimal.Decimal``, see
``streams.jsonvalue``). The rules, measured against PostgreSQL:

* objects: every key of the pattern must be present and contain the pattern's value;
* arrays: order and repeats do not matter; every scalar of the pattern array must be a
  scalar element of the event array, and every container of the pattern array must be
  contained in ONE container element of the event array (of the same kind);
* a scalar pattern is contained in an array event only at the top level
  (``["a","b"] @> "a"``), never nested (``{"a":"foo"}`` is not in ``{"a":["foo"]}``);
* numbers compare by exact value (``1 = 1.0 = 1e0``, ``0 = -0``, but
  ``9007199254740993 != 9007199254740992``); ``true``, ``1`` and ``"1"`` all differ;
* ``null`` is a value: ``{"a": null}`` is not contained in ``{}``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any


def scalar_equal(a: Any, b: Any) -> bool:
    """JSON scalar equality: type-aware (``True != 1``), numbers by exact value."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    if isinstance(a, (int, Decimal)):
        return isinstance(b, (int, Decimal)) and a == b
    if a is None or b is None:
        return a is None and b is None
    return type(a) is type(b) and a == b


def _is_container(value: Any) -> bool:
    return isinstance(value, (dict, list))


def contains(event: Any, pattern: Any) -> bool:
    """``event::jsonb @> pattern::jsonb``."""
    if isinstance(event, list) and not _is_container(pattern):
        # Top-level only: an array contains a raw scalar that is one of its elements.
        return any(not _is_container(e) and scalar_equal(e, pattern) for e in event)
    return _contains(event, pattern)


def _contains(event: Any, pattern: Any) -> bool:
    if isinstance(pattern, dict):
        if not isinstance(event, dict):
            return False
        for key, sub in pattern.items():
            if key not in event or not _contains(event[key], sub):
                return False
        return True
    if isinstance(pattern, list):
        if not isinstance(event, list):
            return False
        scalars = [e for e in event if not _is_container(e)]
        containers = [e for e in event if _is_container(e)]
        for sub in pattern:
            if _is_container(sub):
                if not any(_contains(e, sub) for e in containers):
                    return False
            elif not any(scalar_equal(e, sub) for e in scalars):
                return False
        return True
    return not _is_container(event) and scalar_equal(event, pattern)
