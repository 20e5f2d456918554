"""PostgreSQL ``jsonb @>`` containment, exactly as PostgreSQL 15 answers it.

Values are parsed JSON with exact numbers (``int`` or ``decimal.Decimal``, see
``streams.model.jsonvalue``). The rules, measured against PostgreSQL:

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

from collections.abc import Callable
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


# -- what the index needs -----------------------------------------------------------------

ARRAY_STEP = 0
"""Marks "an element of an array" in a leaf signature (keys are always strings)."""

_TRUE, _FALSE, _NULL = ("jsonb", True), ("jsonb", False), ("jsonb", None)


def scalar_key(value: Any) -> Any:
    """A dict key under which equal JSON scalars meet: ``1``, ``1.0`` and ``1e0`` share one
    (Python hashes equal numbers alike), ``true`` and ``1`` do not, ``"1"`` and ``1`` do not."""
    if value is True:
        return _TRUE
    if value is False:
        return _FALSE
    if value is None:
        return _NULL
    return value


def required_leaves(pattern: Any) -> list[tuple[tuple[str | int, ...], Any]]:
    """Every ``(signature, scalar_key)`` an event must have a leaf at for ``event @> pattern``.

    A signature is the key path with :data:`ARRAY_STEP` for each array crossed. Each
    scalar of the pattern is a necessary condition: at its signature the event must hold
    an equal scalar (nested scalar-in-array does not count, so signatures match exactly).
    """
    out: list[tuple[tuple[str | int, ...], Any]] = []

    def walk(value: Any, signature: tuple[str | int, ...]) -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                walk(sub, (*signature, key))
        elif isinstance(value, list):
            for element in value:
                walk(element, (*signature, ARRAY_STEP))
        else:
            out.append((signature, scalar_key(value)))

    if isinstance(pattern, (dict, list)):
        walk(pattern, ())
    return out


def compile_contains(pattern: dict[str, Any]) -> Callable[[Any], bool]:
    """A checker equal to ``lambda event: contains(event, pattern)`` for an object pattern.

    Patterns made of objects and scalars only (the usual case) become a list of key paths
    read directly; patterns with arrays fall back to :func:`contains`.
    """
    checks: list[tuple[tuple[str, ...], Any]] = []

    def walk(value: dict[str, Any], path: tuple[str, ...]) -> bool:
        if not value:
            checks.append((path, _AN_OBJECT))
        for key, sub in value.items():
            if isinstance(sub, list):
                return False
            if isinstance(sub, dict):
                if not walk(sub, (*path, key)):
                    return False
            else:
                checks.append(((*path, key), sub))
        return True

    if not walk(pattern, ()):
        return lambda event: contains(event, pattern)

    def check(event: Any) -> bool:
        for path, expected in checks:
            value = event
            for key in path:
                if not isinstance(value, dict):
                    return False
                value = value.get(key, _ABSENT)
                if value is _ABSENT:
                    return False
            if expected is _AN_OBJECT:
                if not isinstance(value, dict):
                    return False
            elif isinstance(value, (dict, list)) or not scalar_equal(value, expected):
                return False
        return True

    return check


_AN_OBJECT = object()
_ABSENT = object()
