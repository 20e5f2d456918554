"""The handler index: API, incremental updates, all parts of a filter, candidate counts."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from streams.filters.eventbridge import compile_pattern, reference_match
from streams.filters.jsonb import contains
from streams.matching.index import Index, compile, extract_params
from streams.matching.match import HandlerIndex, Match
from streams.model.handlers import InvalidHandler, parse_handler

VECTORS = Path(__file__).parent / "vectors"
QUIRKS = ("eb-eic_nonbmp_quirk-", "eb-cidr_slash0_quirk-")


def handler(hid: str, **event: Any) -> dict[str, Any]:
    params = event.pop("params", {})
    enabled = event.pop("enabled", True)
    return {"id": hid, "job": "j", "enabled": enabled, "event": event, "params": params}


def ids(index: Index, event: dict[str, Any]) -> list[str]:
    return [m.handler.id for m in index.match(event)]


def test_put_get_remove_replace_keep_insertion_order() -> None:
    index = compile([handler("a", match={"k": 1}), handler("b", pattern={"k": [1]}), handler("c", match={})])
    assert len(index) == 3 and "b" in index
    assert ids(index, {"k": 1}) == ["a", "b", "c"]
    index.put(handler("a", match={"k": 2}))  # replaced: keeps its place, new filter
    assert ids(index, {"k": 1}) == ["b", "c"]
    assert ids(index, {"k": 2}) == ["a", "c"]
    removed = index.remove("b")
    assert removed is not None and removed.id == "b"
    assert index.remove("b") is None
    assert ids(index, {"k": 1}) == ["c"]
    assert [h.id for h in index.handlers()] == ["a", "c"]
    got = index.get("a")
    assert got is not None and got.event is not None and got.event.match == {"k": 2}


def test_removing_everything_leaves_no_anchor_behind() -> None:
    handlers = [
        handler("m", match={"a": {"b": [1, {"c": "x"}]}}),
        handler("p", pattern={"a": {"b": [{"prefix": "x"}], "n": [{"numeric": [">", 1]}]}}),
        handler("o", pattern={"$or": [{"s": [{"wildcard": "*z"}]}, {"t": [{"anything-but": "q"}]}]}),
        handler("i", pattern={"ip": [{"cidr": "10.0.0.0/8"}, "::1"], "e": [{"equals-ignore-case": "Ab"}]}),
        handler("u", pattern={"x": [{"exists": False}]}),
    ]
    index = compile(handlers)
    for h in handlers:
        index.remove(h["id"])
    assert index.candidates({"a": {"b": [1, {"c": "x"}], "n": 5}, "s": "z", "t": "r", "ip": "10.1.1.1"}) == {}
    assert not index._fields and not index._jb_root.children and not index._eb_root.children


def test_disabled_and_non_event_handlers_never_match() -> None:
    index = compile(
        [
            handler("off", match={"a": 1}, enabled=False),
            {"id": "tick", "job": "j", "cron": {"schedule": "* * * * *"}},
            handler("on", match={"a": 1}),
        ]
    )
    assert ids(index, {"a": 1}) == ["on"]
    index.put(handler("on", match={"a": 1}, enabled=False))
    assert ids(index, {"a": 1}) == []


def test_every_given_part_must_hold() -> None:
    index = compile(
        [handler("h", match={"kind": "order"}, exclude={"test": True}, pattern={"total": [{"numeric": [">", 100]}]})]
    )
    assert ids(index, {"kind": "order", "total": 150}) == ["h"]
    assert ids(index, {"kind": "order", "total": 50}) == []
    assert ids(index, {"kind": "refund", "total": 150}) == []
    assert ids(index, {"kind": "order", "total": 150, "test": True}) == []
    assert ids(index, {"kind": "order", "total": 150, "test": False}) == ["h"]


def test_params_are_taken_by_path_and_a_missing_path_means_no_match() -> None:
    index = compile([handler("h", pattern={"a": ["x"]}, params={"first": "items.0.id", "dotted": ["k.l"]})])
    [m] = index.match({"a": "x", "items": [{"id": 7}], "k.l": Decimal("1.50")})
    assert m == Match(m.handler, {"first": 7, "dotted": Decimal("1.50")})
    assert index.match({"a": "x", "items": [], "k.l": 1}) == []
    assert extract_params(m.handler, {"items": [{"id": 1}], "k.l": None}) == {"first": 1, "dotted": None}


def test_handler_index_keeps_its_api() -> None:
    index = HandlerIndex()
    index.put(parse_handler(handler("h", match={"a": 1}, params={"x": "b"})))
    assert len(index) == 1 and index.get("h") is not None
    assert index.match({"a": 1, "b": 2}) == [Match(index.get("h"), {"x": 2})]  # type: ignore[arg-type]
    assert index.remove("h") is not None and len(index) == 0


def test_dicts_are_validated_like_handler_records() -> None:
    with pytest.raises(InvalidHandler, match=r"event.pattern: Value error, n\[0\]\.numeric: Bottom must be less"):
        compile([handler("h", pattern={"n": [{"numeric": [">", 2, "<", 1]}]})])


def test_unanchored_handlers_are_checked_on_every_event() -> None:
    index = compile(
        [
            handler("all", match={}),
            handler("absent", pattern={"x": [{"exists": False}]}),
            handler("weird", pattern={"": ["e"]}),
        ]
    )
    assert ids(index, {"y": 1}) == ["all", "absent"]
    assert ids(index, {"x": 1, "": "e"}) == ["all", "weird"]


def test_candidates_do_not_grow_with_the_number_of_handlers() -> None:
    index = Index()
    for i in range(2000):
        kind = i % 4
        if kind == 0:
            index.put(handler(f"h{i}", match={"source": "shop", "customer": {"id": f"c{i}"}}))
        elif kind == 1:
            index.put(handler(f"h{i}", pattern={"source": ["shop"], "customer": {"id": [f"c{i}"]}}))
        elif kind == 2:
            index.put(handler(f"h{i}", pattern={"source": ["shop"], "order": [{"prefix": f"o{i}-"}]}))
        else:
            index.put(handler(f"h{i}", pattern={"customer": {"id": [f"c{i}"]}, "n": [{"numeric": [">", 5]}]}))
    events = [{"source": "shop", "customer": {"id": f"c{i}"}, "order": f"o{i}-1", "n": 9} for i in range(2000)]
    for event in events:  # a first pass lets anchors that fire for nothing move elsewhere
        index.match(event)
    worst = max(len(index.candidates(e)) for e in events)
    assert worst <= 3, worst
    assert all(ids(index, e) == [f"h{i}"] for i, e in enumerate(events))


def test_a_small_index_agrees_with_the_plain_reference() -> None:
    patterns = [
        {"a": {"b": ["x", {"prefix": "y"}]}, "c": [{"exists": False}]},
        {"$or": [{"a.b": [{"suffix": "z"}]}, {"n": [{"numeric": [">", 1, "<=", 3]}]}]},
        {"a": {"b": [{"anything-but": ["x", "yz"]}], "d": [{"equals-ignore-case": "Q"}]}},
    ]
    index = compile([handler(f"p{i}", pattern=p) for i, p in enumerate(patterns)])
    events = [
        {"a": {"b": "x"}},
        {"a": [{"b": "yz", "d": "q"}, {"b": "x"}], "c": None},
        {"a.b": "zz", "n": Decimal("2.5")},
        {"a": {"b": ["w", "y1"], "d": ["Q", "r"]}, "n": 3},
    ]
    for event in events:
        assert ids(index, event) == [f"p{i}" for i, p in enumerate(patterns) if reference_match(p, event)]


def test_crowded_exact_anchors_are_spread_out() -> None:
    index = Index()
    for i in range(64):  # every handler shares "kind"; the first ones anchor on it
        index.put(handler(f"h{i}", match={"kind": "a", "n": i}))
    assert max(len(index.candidates({"kind": "a", "n": i})) for i in range(64)) <= 8


def test_index_agrees_with_the_references_on_every_vector_event() -> None:
    """All vector filters as handlers of one index, vector events against all of them, the
    answer compared with evaluating every handler on its own."""
    eb_cases = [json.loads(line, parse_float=Decimal) for line in (VECTORS / "eventbridge.sample.jsonl").open()]
    jb_cases = [json.loads(line, parse_float=Decimal) for line in (VECTORS / "jsonb.sample.jsonl").open()]
    eb_cases = [c for c in eb_cases if not c["id"].startswith(QUIRKS)]
    patterns = list({json.dumps(c["pattern"], sort_keys=True, default=str): c["pattern"] for c in eb_cases}.values())
    matches = list({json.dumps(c["pattern"], sort_keys=True, default=str): c["pattern"] for c in jb_cases}.values())
    index = compile(
        [handler(f"p{i}", pattern=p) for i, p in enumerate(patterns)]
        + [handler(f"m{i}", match=m) for i, m in enumerate(matches)]
    )
    compiled = [compile_pattern(p) for p in patterns]
    events = [c["event"] for c in eb_cases + jb_cases][::4]
    for event in events:
        expected = {f"p{i}" for i, p in enumerate(compiled) if p.matches(event)}
        expected |= {f"m{i}" for i, m in enumerate(matches) if contains(event, m)}
        assert set(ids(index, event)) == expected, event
