"""Which handlers fire for an event, and with which parameters. Pure: no Kafka import.

``HandlerIndex`` is updated one handler at a time (put/remove) and answers
``match(event)``. The algorithm behind it is an implementation detail; callers only see
:class:`Match`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .filters.jsonb import contains
from .handlers import Handler, ParamPath

_MISSING = object()


@dataclass(frozen=True, slots=True)
class Match:
    handler: Handler
    params: dict[str, Any]


def split_path(path: ParamPath) -> list[str | int]:
    if isinstance(path, list):
        return list(path)
    return [int(p) if p.isdigit() else p for p in path.split(".")]


def extract(event: Any, path: ParamPath) -> Any:
    """The value at ``path`` in ``event``, or ``_MISSING``."""
    value = event
    for step in split_path(path):
        if isinstance(value, dict) and isinstance(step, str) and step in value:
            value = value[step]
        elif isinstance(value, list) and isinstance(step, int) and 0 <= step < len(value):
            value = value[step]
        elif isinstance(value, dict) and isinstance(step, int) and str(step) in value:
            value = value[str(step)]
        else:
            return _MISSING
    return value


def extract_params(handler: Handler, event: dict[str, Any]) -> dict[str, Any] | None:
    """All of the handler's parameters, or None when one path is missing."""
    params: dict[str, Any] = {}
    for name, path in handler.params.items():
        value = extract(event, path)
        if value is _MISSING:
            return None
        params[name] = value
    return params


def filter_passes(handler: Handler, event: dict[str, Any]) -> bool:
    trigger = handler.event
    if not contains(event, trigger.match):
        return False
    return trigger.exclude is None or not contains(event, trigger.exclude)


class HandlerIndex:
    """The live handler set of one worker."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def put(self, handler: Handler) -> None:
        self._handlers[handler.id] = handler

    def remove(self, handler_id: str) -> Handler | None:
        return self._handlers.pop(handler_id, None)

    def get(self, handler_id: str) -> Handler | None:
        return self._handlers.get(handler_id)

    def __len__(self) -> int:
        return len(self._handlers)

    def handlers(self) -> list[Handler]:
        return list(self._handlers.values())

    def match(self, event: dict[str, Any]) -> list[Match]:
        matches = []
        for handler in self._handlers.values():
            if not handler.enabled or not filter_passes(handler, event):
                continue
            params = extract_params(handler, event)
            if params is not None:
                matches.append(Match(handler, params))
        return matches
