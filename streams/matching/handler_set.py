"""The live handlers of one worker, sorted by trigger kind. Pure: no Kafka import.

Event handlers go to the filter index (``matching.HandlerIndex``); cron handlers are
listed for the cron timer; after-handlers are looked up by upstream job. Each handler
remembers where it was read (offset, timestamp): the offset is a once-handler's arm
token (re-applying a handler re-arms it), the timestamp a cron handler's start.
"""

from __future__ import annotations

from dataclasses import dataclass

from streams.matching.match import HandlerIndex
from streams.model.handlers import Handler, InvalidHandler, parse_handler


@dataclass(frozen=True, slots=True)
class Applied:
    handler: Handler
    offset: int
    timestamp_ms: int


class HandlerSet:
    def __init__(self) -> None:
        self.events = HandlerIndex()
        self._applied: dict[str, Applied] = {}
        self._after: dict[str, dict[str, Handler]] = {}
        self._by_job: dict[str, dict[str, int]] = {}  # job -> handler id -> its concurrency
        self._cron: dict[str, Applied] = {}  # the cron handlers (the timer lists them every second)

    def put(self, handler: Handler, offset: int = -1, timestamp_ms: int = 0) -> None:
        """Apply (or replace) a handler; raises InvalidHandler for a flow cycle."""
        if handler.after is not None:
            self._check_no_cycle(handler)
        self.remove(handler.id)
        self._applied[handler.id] = Applied(handler, offset, timestamp_ms)
        self._by_job.setdefault(handler.job, {})[handler.id] = handler.concurrency
        if handler.event is not None:
            self.events.put(handler)
        elif handler.after is not None:
            self._after.setdefault(handler.after.job, {})[handler.id] = handler
        elif handler.cron is not None:
            self._cron[handler.id] = self._applied[handler.id]

    def remove(self, handler_id: str) -> Handler | None:
        applied = self._applied.pop(handler_id, None)
        if applied is None:
            return None
        handler = applied.handler
        job_handlers = self._by_job.get(handler.job, {})
        job_handlers.pop(handler_id, None)
        if not job_handlers:
            self._by_job.pop(handler.job, None)
        if handler.event is not None:
            self.events.remove(handler_id)
        elif handler.after is not None:
            self._after.get(handler.after.job, {}).pop(handler_id, None)
        self._cron.pop(handler_id, None)
        return handler

    def get(self, handler_id: str) -> Handler | None:
        applied = self._applied.get(handler_id)
        return applied.handler if applied else None

    def applied(self, handler_id: str) -> Applied | None:
        return self._applied.get(handler_id)

    def __len__(self) -> int:
        return len(self._applied)

    def jobs(self) -> list[str]:
        """Every job with at least one handler."""
        return list(self._by_job)

    def job_concurrency(self, job: str) -> int:
        """Runs of ``job`` allowed in flight: the smallest ``concurrency`` of its handlers (1
        when it has none left)."""
        values = self._by_job.get(job)
        return min(values.values()) if values else 1

    def cron(self) -> list[Applied]:
        return [a for a in self._cron.values() if a.handler.enabled]

    def after(self, upstream_job: str) -> list[Handler]:
        return [h for h in self._after.get(upstream_job, {}).values() if h.enabled]

    def _check_no_cycle(self, handler: Handler) -> None:
        # Edges upstream job -> downstream job; the new one must not close a loop.
        assert handler.after is not None
        edges: dict[str, set[str]] = {}
        for upstream, handlers in self._after.items():
            for other in handlers.values():
                if other.id != handler.id:
                    edges.setdefault(upstream, set()).add(other.job)
        start, goal = handler.job, handler.after.job
        path = self._path(edges, start, goal)
        if path is not None:
            loop = " -> ".join([goal, *path])
            raise InvalidHandler(f"after: cycle of flow/catch handlers: {loop}")

    @staticmethod
    def _path(edges: dict[str, set[str]], start: str, goal: str) -> list[str] | None:
        """A path of jobs from start to goal (inclusive), or None."""
        stack: list[list[str]] = [[start]]
        seen = {start}
        while stack:
            path = stack.pop()
            if path[-1] == goal:
                return path
            for nxt in sorted(edges.get(path[-1], ())):
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append([*path, nxt])
        return None


def cycles_with(current: dict[str, bytes], new: list[Handler]) -> list[str]:
    """Flow/catch cycles the ``new`` handlers would close with the ``current`` ones (handler
    id -> record value, as on the handlers topic); one message per refused handler."""
    if not any(h.after is not None for h in new):
        return []
    live = HandlerSet()
    for handler_id, value in current.items():
        try:
            live.put(parse_handler(value, key=handler_id))
        except InvalidHandler:
            continue
    errors = []
    for h in new:
        try:
            live.put(h)
        except InvalidHandler as exc:
            errors.append(f"{h.id}: {exc}")
    return errors
