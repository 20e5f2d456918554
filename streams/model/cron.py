"""Cron schedules: parsing and the ticks due in a time window. Pure."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from croniter import croniter

MAX_TICKS_PER_CALL = 1000  # a bound on catch-up work after a long outage


def parse_schedule(schedule: str) -> bool:
    """Validate; returns True when the schedule has a seconds field (6 fields)."""
    fields = schedule.split()
    with_seconds = len(fields) == 6
    if not (len(fields) == 5 or with_seconds or (len(fields) == 1 and schedule.startswith("@"))):
        raise ValueError(f"cron schedule {schedule!r}: want 5 fields, 6 with seconds first, or an @alias")
    if not croniter.is_valid(schedule, second_at_beginning=with_seconds):
        raise ValueError(f"cron schedule {schedule!r} is not valid")
    return with_seconds


def ticks_between(schedule: str, timezone: str, after: float, until: float) -> list[float]:
    """Tick times (epoch seconds) t with after < t <= until, oldest first, at most MAX_TICKS_PER_CALL."""
    with_seconds = parse_schedule(schedule)
    start = datetime.fromtimestamp(after, ZoneInfo(timezone))
    it = croniter(schedule, start, second_at_beginning=with_seconds)
    out: list[float] = []
    while len(out) < MAX_TICKS_PER_CALL:
        tick = it.get_next(float)
        if tick > until:
            break
        out.append(tick)
    return out
