"""Property tests: the index against deliberately simple references, on generated handlers
and events, for both dialects, including handlers applied and deleted one at a time."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.filters.eventbridge import PatternError, compile_pattern, reference_match
from streams.filters.jsonb import contains
from streams.matching.index import Index, compile

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KEYS = st.sampled_from(["a", "b", "c", "a.b", "$or"])
STRINGS = st.sampled_from(["x", "y", "xy", "X", "", "ab", "aB", "10.0.0.1", "010.0.0.1", "straße", "STRASSE"])
NUMBERS = st.sampled_from(
    [0, 1, -1, 3, Decimal("1.0"), Decimal("1.5"), Decimal("-0"), Decimal("1e2"), 2**60, Decimal("1e400"),
     9007199254740993, Decimal("0.1")]
)  # fmt: skip
SCALARS = st.one_of(STRINGS, NUMBERS, st.booleans(), st.none())
EVENT_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=10,
)
EVENTS = st.dictionaries(KEYS, EVENT_VALUES, max_size=4)


# -- EventBridge --------------------------------------------------------------------------

WILDCARDS = st.sampled_from(["x*", "*y", "*", "x*y", "a\\*", "*b*", "10.*"])
LOW_HIGH = st.tuples(st.sampled_from([-1, 0, 1, Decimal("1.5")]), st.sampled_from([2, 3, Decimal("1e2")]))


def _numeric(draw: Any) -> dict[str, Any]:
    kind = draw(st.sampled_from(["<", "<=", ">", ">=", "=", "range"]))
    if kind == "range":
        low, high = draw(LOW_HIGH)
        return {"numeric": [draw(st.sampled_from([">", ">="])), low, draw(st.sampled_from(["<", "<="])), high]}
    return {"numeric": [kind, draw(st.sampled_from([0, 1, Decimal("1.5"), -1]))]}


@st.composite
def value_patterns(draw: Any) -> Any:
    kind = draw(st.integers(0, 13))
    if kind <= 2:
        return draw(SCALARS)
    if kind == 3:
        return {"prefix": draw(STRINGS)}
    if kind == 4:
        return {"suffix": draw(STRINGS)}
    if kind == 5:
        return {"equals-ignore-case": draw(STRINGS)}
    if kind == 6:
        return {draw(st.sampled_from(["prefix", "suffix"])): {"equals-ignore-case": draw(STRINGS)}}
    if kind == 7:
        return {"wildcard": draw(WILDCARDS)}
    if kind == 8:
        return _numeric(draw)
    if kind == 9:
        return {"exists": draw(st.booleans())}
    if kind == 10:
        return {"cidr": draw(st.sampled_from(["10.0.0.0/8", "10.0.0.1/31", "::/1"]))}
    if kind == 11:
        return {"exactly": draw(STRINGS)}
    choice = draw(st.integers(0, 5))
    if choice == 0:
        return {"anything-but": draw(STRINGS)}
    if choice == 1:
        return {"anything-but": draw(st.lists(st.sampled_from([0, 1, 3, Decimal("1.5")]), min_size=1, max_size=2))}
    if choice == 2:
        return {"anything-but": {"prefix": draw(st.sampled_from(["x", "a", "1"]))}}
    if choice == 3:
        return {"anything-but": {"suffix": draw(st.sampled_from(["y", "B"]))}}
    if choice == 4:
        return {"anything-but": {"equals-ignore-case": draw(st.lists(STRINGS, min_size=1, max_size=2))}}
    return {"anything-but": {"wildcard": draw(WILDCARDS)}}


@st.composite
def eb_objects(draw: Any, depth: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in draw(st.lists(st.sampled_from(["a", "b", "c", "a.b"]), min_size=1, max_size=3, unique=True)):
        if depth < 1 and draw(st.integers(0, 3)) == 0:
            out[key] = draw(eb_objects(depth + 1))
        else:
            out[key] = draw(st.lists(value_patterns(), min_size=1, max_size=3))
    if depth == 0 and draw(st.integers(0, 4)) == 0:
        out["$or"] = draw(st.lists(eb_objects(depth + 1), min_size=2, max_size=3))
    return out


def valid_patterns(patterns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    good = []
    for pattern in patterns:
        try:
            compile_pattern(pattern)
        except PatternError:
            continue
        good.append(pattern)
    return good


def ids(index: Index, event: dict[str, Any]) -> list[str]:
    return [m.handler.id for m in index.match(event)]


@SETTINGS
@given(st.lists(eb_objects(), min_size=1, max_size=6), st.lists(EVENTS, min_size=1, max_size=5))
def test_eventbridge_index_equals_reference(patterns: list[dict[str, Any]], events: list[dict[str, Any]]) -> None:
    patterns = valid_patterns(patterns)
    index = compile([{"id": f"h{i}", "job": "j", "event": {"pattern": p}} for i, p in enumerate(patterns)])
    for event in events:
        assert ids(index, event) == [f"h{i}" for i, p in enumerate(patterns) if reference_match(p, event)]


# -- jsonb --------------------------------------------------------------------------------


@st.composite
def contained_part(draw: Any, value: Any) -> Any:
    """A random piece of ``value`` (so that containment holds), sometimes perturbed."""
    if isinstance(value, dict):
        keys = draw(st.lists(st.sampled_from(sorted(value)), unique=True)) if value else []
        part = {k: draw(contained_part(value[k])) for k in keys}
    elif isinstance(value, list):
        part = [draw(contained_part(v)) for v in draw(st.lists(st.sampled_from(value), max_size=2))] if value else []
    else:
        part = value
    if draw(st.integers(0, 7)) == 0:
        return draw(SCALARS)
    return part


@SETTINGS
@given(st.lists(EVENTS, min_size=1, max_size=4), st.data())
def test_jsonb_index_equals_reference(events: list[dict[str, Any]], data: st.DataObject) -> None:
    handlers = []
    for i in range(data.draw(st.integers(1, 6))):
        source = data.draw(st.sampled_from(events))
        match = data.draw(contained_part(source))
        match = match if isinstance(match, dict) else {"a": match}
        trigger: dict[str, Any] = {"match": match}
        if data.draw(st.integers(0, 3)) == 0:
            exclude = data.draw(contained_part(data.draw(st.sampled_from(events))))
            trigger["exclude"] = exclude if isinstance(exclude, dict) else {"b": exclude}
        handlers.append({"id": f"h{i}", "job": "j", "event": trigger})
    index = compile(handlers)
    for event in events:
        expected = [
            h["id"]
            for h in handlers
            if contains(event, h["event"]["match"])
            and ("exclude" not in h["event"] or not contains(event, h["event"]["exclude"]))
        ]
        assert ids(index, event) == expected


# -- both, applied and deleted one at a time -----------------------------------------------


@st.composite
def operations(draw: Any) -> list[tuple[str, str, dict[str, Any] | None]]:
    ops: list[tuple[str, str, dict[str, Any] | None]] = []
    for _ in range(draw(st.integers(1, 12))):
        hid = f"h{draw(st.integers(0, 4))}"
        if draw(st.integers(0, 3)) == 0:
            ops.append(("remove", hid, None))
            continue
        trigger: dict[str, Any] = {}
        if draw(st.booleans()):
            trigger["pattern"] = draw(eb_objects())
        if draw(st.booleans()) or not trigger:
            trigger["match"] = draw(st.dictionaries(st.sampled_from(["a", "b"]), SCALARS, max_size=2))
        ops.append(("put", hid, {"id": hid, "job": "j", "enabled": draw(st.integers(0, 5)) > 0, "event": trigger}))
    return ops


@SETTINGS
@given(operations(), st.lists(EVENTS, min_size=1, max_size=4))
def test_incremental_updates_equal_the_reference(
    ops: list[tuple[str, str, dict[str, Any] | None]], events: list[dict[str, Any]]
) -> None:
    index = Index()
    live: dict[str, dict[str, Any]] = {}
    for op, hid, record in ops:
        if op == "remove":
            index.remove(hid)
            live.pop(hid, None)
            continue
        assert record is not None
        pattern = record["event"].get("pattern")
        if pattern is not None and not valid_patterns([pattern]):
            continue
        index.put(record)
        live[hid] = record  # a replaced handler keeps its place
        for event in events:  # match between updates: anchors may move as they learn
            index.match(event)
    for event in events:
        expected = []
        for hid, record in live.items():
            trigger = record["event"]
            if not record["enabled"]:
                continue
            if trigger.get("match") and not contains(event, trigger["match"]):
                continue
            if "pattern" in trigger and not reference_match(trigger["pattern"], event):
                continue
            expected.append(hid)
        assert ids(index, event) == expected
