"""The worker's live handler set: the cron list follows puts, replacements and removals."""

from __future__ import annotations

from streams.matching.handler_set import HandlerSet
from streams.model.handlers import parse_handler


def cron_handler(hid: str, enabled: bool = True) -> dict:
    return {"id": hid, "job": "tick", "cron": {"schedule": "*/5 * * * *"}, "enabled": enabled}


def test_cron_lists_enabled_cron_handlers_as_they_change():
    hs = HandlerSet()
    hs.put(parse_handler(cron_handler("c1")), offset=1)
    hs.put(parse_handler(cron_handler("c2", enabled=False)), offset=2)
    hs.put(parse_handler({"id": "e1", "job": "tick", "event": {"match": {"type": "x"}}}), offset=3)
    assert [a.handler.id for a in hs.cron()] == ["c1"]
    hs.put(parse_handler(cron_handler("c2")), offset=4)  # re-applied, now enabled
    assert sorted((a.handler.id, a.offset) for a in hs.cron()) == [("c1", 1), ("c2", 4)]
    hs.put(parse_handler({"id": "c1", "job": "tick", "event": {"match": {"type": "y"}}}), offset=5)  # no longer cron
    assert [a.handler.id for a in hs.cron()] == ["c2"]
    hs.remove("c2")
    assert hs.cron() == []
