"""The dry-run explain: why a handler fires, or which part of its filter fails, for one event."""

from __future__ import annotations

from streams.matching.dry_run import explain

BASE = {"id": "h1", "job": "count"}


def handler(**trigger: object) -> dict[str, object]:
    return {**BASE, "event": trigger}


def test_a_match_fires_with_params() -> None:
    h = {**handler(match={"type": "deposit"}), "params": {"pid": "PID"}}
    out = explain(h, {"type": "deposit", "PID": "CH-1"})
    assert out == {"fires": True, "params": {"pid": "CH-1"}, "reasons": []}


def test_a_match_key_names_its_path() -> None:
    h = handler(match={"type": "deposit", "meta": {"format": "sip"}})
    missing = explain(h, {"type": "deposit"})
    assert not missing["fires"]
    assert missing["reasons"] == ['match meta: the event has no such field (wanted {"format":"sip"})']
    differs = explain(h, {"type": "deposit", "meta": {"format": "aip"}})
    assert len(differs["reasons"]) == 1 and differs["reasons"][0].startswith("match meta.format: is \"aip\"")
    other = explain(h, {"type": "withdrawal", "meta": {"format": "sip"}})
    assert other["reasons"][0].startswith("match type: is \"withdrawal\"")


def test_exclude_is_named() -> None:
    h = handler(match={"type": "deposit"}, exclude={"test": True})
    out = explain(h, {"type": "deposit", "test": True})
    assert not out["fires"] and out["reasons"] == ['exclude: the event contains {"test":true}, which excludes it']
    assert explain(h, {"type": "deposit", "test": False})["fires"]


def test_the_failing_pattern_field_is_named() -> None:
    h = handler(pattern={"detail": {"size": [{"numeric": [">", 10]}], "kind": ["a", "b"]}, "source": ["x"]})
    ok = {"source": "x", "detail": {"size": 11, "kind": "a"}}
    assert explain(h, ok)["fires"]
    out = explain(h, {"source": "x", "detail": {"size": 3, "kind": "a"}})
    assert not out["fires"] and len(out["reasons"]) == 1
    assert out["reasons"][0].startswith("pattern field detail.size: the event's value is 3")
    two = explain(h, {"source": "y", "detail": {"size": 11}})
    assert [r.split(":")[0] for r in two["reasons"]] == ["pattern field detail.kind", "pattern field source"]
    assert "absent" in two["reasons"][0]


def test_creator_and_emitted_by_constraints() -> None:
    h = handler(match={"type": "deposit"}, creator="ada")
    assert explain(h, {"type": "deposit"}, {"creator": "ada"})["fires"]
    out = explain(h, {"type": "deposit"}, {"creator": "mallory"})
    assert out["reasons"] == ["creator: the event's creator header is 'mallory', the handler wants 'ada'"]
    e = handler(match={}, emitted_by="deposit")
    assert "emitted_by" in explain(e, {"x": 1})["reasons"][0]
    assert explain(e, {"x": 1}, {"emitted_by_job": "deposit"})["fires"]


def test_disabled_cron_and_once() -> None:
    disabled = {**handler(match={"type": "a"}), "enabled": False}
    out = explain(disabled, {"type": "b"})
    assert out["reasons"][0].startswith("disabled") and out["reasons"][1].startswith("match type")
    cron = {**BASE, "cron": {"schedule": "@hourly"}}
    assert explain(cron, {"type": "a"})["reasons"] == ["no event trigger: a cron handler does not match events"]
    once = {**handler(match={"type": "a"}), "once": True}
    out = explain(once, {"type": "a"})
    assert out["fires"] and out["reasons"][0].startswith("once")


def test_several_parts_fail_at_once() -> None:
    h = handler(match={"type": "a"}, exclude={"x": 1}, creator="ada")
    out = explain(h, {"type": "b", "x": 1}, {"creator": "bob"})
    assert [r.split(" ")[0].rstrip(":") for r in out["reasons"]] == ["match", "exclude", "creator"]
