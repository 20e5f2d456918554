"""Hostile event values, without a broker: ``jsonvalue.load_event`` rejects each with a
short reason or returns a document that every later step can match, extract from, write
back and encode. The corpus is ``tests/poison.py``."""

from __future__ import annotations

import io
import json
import sys
from decimal import Decimal
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.contracts import avro
from streams.filters import eventbridge as eb
from streams.filters.jsonb import contains
from streams.matching.index import extract_params, filter_passes
from streams.matching.match import HandlerIndex
from streams.model import jsonvalue
from streams.model.handlers import parse_handler
from streams.model.identity import event_identity
from streams.model.jsonvalue import DEFAULT_LIMITS, Limits, NotAJsonObject, load_event
from tests.poison import BIG_INT, DEPTH, LIMIT, POISON, nested_arrays, nested_objects

ACCEPTED = [(name, raw) for name, raw, reason in POISON if reason is None]
REJECTED = [(name, raw, reason) for name, raw, reason in POISON if reason is not None]


def _id(entry: tuple[Any, ...]) -> str:
    return entry[0]


# -- the corpus ---------------------------------------------------------------------------


@pytest.mark.parametrize("entry", REJECTED, ids=_id)
def test_poison_is_rejected_with_its_reason(entry):
    _, raw, reason = entry
    with pytest.raises(NotAJsonObject) as info:
        load_event(raw, DEFAULT_LIMITS)
    text = str(info.value)
    assert reason in text
    assert len(text) <= 200
    if raw:  # the reason does not echo the event back (at most a number's first digits)
        shown = raw.decode("utf-8", "replace")
        assert not any(text[i : i + 25] in shown for i in range(len(text) - 24)), text


@pytest.mark.parametrize("entry", ACCEPTED, ids=_id)
def test_accepted_documents_round_trip_and_encode(entry):
    _, raw = entry
    doc = load_event(raw, DEFAULT_LIMITS)
    assert type(doc) is dict
    text = jsonvalue.dumps(doc)
    encoded = text.encode("utf-8")  # never a lone surrogate
    assert load_event(encoded, DEFAULT_LIMITS) == doc
    assert _exact(load_event(encoded, DEFAULT_LIMITS)) == _exact(doc)
    assert jsonvalue.loads(raw) == doc
    assert jsonvalue.loads(text) == doc


def _exact(value: Any) -> Any:
    """Numbers by exact value and JSON kind (int and Decimal are both numbers)."""
    if isinstance(value, dict):
        return {k: _exact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_exact(v) for v in value]
    if isinstance(value, (int, Decimal)) and not isinstance(value, bool):
        number = Decimal(value)  # exact; normalize() and arithmetic would round to 28 digits
        if not number:
            return ("number", 0)
        sign, digits, _ = number.as_tuple()
        return ("number", sign, "".join(map(str, digits)).rstrip("0"), number.adjusted())
    return value


def test_the_corpus_covers_what_the_brief_lists():
    names = {name for name, _, _ in POISON}
    for needed in ["invalid UTF-8 in a string", "5 MB object", "100,000-deep arrays", "100,000-deep objects",
                   "5,000-digit integer", "1e400", "-1e400", "1e-400", "NaN", "Infinity", "-Infinity",
                   "duplicate keys (last wins)", "lone high surrogate escape", "lone low surrogate escape",
                   "valid surrogate pair", "\\u0000 escape", "empty bytes", "JSON null", "JSON array",
                   "JSON string", "trailing garbage", "BOM-prefixed JSON"]:  # fmt: skip
        assert needed in names


# -- what accepted documents hold ---------------------------------------------------------


def test_big_integer_is_an_exact_decimal_written_back_digit_for_digit():
    raw = b'{"n":' + BIG_INT + b',"m":-' + BIG_INT + b"}"
    doc = load_event(raw, DEFAULT_LIMITS)
    assert doc["n"] == Decimal(BIG_INT.decode()) and doc["n"] == doc["m"].copy_negate()  # (not -m: it rounds)
    assert doc["n"] != Decimal(BIG_INT.decode()) + 1
    assert jsonvalue.dumps(doc).encode() == raw
    assert str(doc["n"]) == BIG_INT.decode()  # no exponent form, no digit limit
    # integers int() can read stay ints
    assert load_event(b'{"n":' + b"7" * 4300 + b"}", DEFAULT_LIMITS)["n"] == int("7" * 4300)


def test_huge_exponents_are_exact_decimals():
    doc = load_event(b'{"a":1e400,"b":-1e400,"c":1e-400,"d":1.50}', DEFAULT_LIMITS)
    assert doc == {"a": Decimal("1e400"), "b": Decimal("-1e400"), "c": Decimal("1e-400"), "d": Decimal("1.50")}
    assert doc["a"] == 10**400  # by exact value, as jsonb compares
    assert jsonvalue.dumps(doc) == '{"a":1E+400,"b":-1E+400,"c":1E-400,"d":1.50}'


def test_duplicate_keys_keep_the_last_value_like_jsonb():
    doc = load_event(b'{"a":1,"b":{"c":1,"c":[2]},"a":"last"}', DEFAULT_LIMITS)
    assert doc == {"a": "last", "b": {"c": [2]}}
    assert list(doc) == ["a", "b"]  # the key keeps its first position, the value is the last


def test_escapes_decode_to_the_characters_they_name():
    assert load_event(b'{"a":"\\ud83d\\ude00"}', DEFAULT_LIMITS) == {"a": "😀"}
    assert load_event(b'{"a":"\\\\ud800"}', DEFAULT_LIMITS) == {"a": "\\ud800"}
    assert load_event(b'{"a":"x\\u0000y"}', DEFAULT_LIMITS) == {"a": "x\x00y"}
    assert jsonvalue.dumps({"a": "x\x00y"}) == '{"a":"x\\u0000y"}'  # written back escaped


def test_record_value_within_limits_encodes_into_a_job_command():
    """What a matched event produces (params, the event text) fits the Avro command."""
    doc = load_event(b'{"n":' + BIG_INT + b',"s":"\\ud83d\\ude00\\u0000","d":' + nested_arrays(DEPTH - 1) + b"}",
                     DEFAULT_LIMITS)
    command = {
        "run_id": "r", "job": "j", "handler_id": "h", "trigger_kind": "event", "trigger_ref": "offset:t/0/1",
        "params_json": jsonvalue.dumps({"n": doc["n"], "s": doc["s"], "d": doc["d"]}),
        "event_json": jsonvalue.dumps(doc), "initial_state_json": None, "attempt": 1, "timeout_seconds": 1.0,
        "event_time": None, "created_at": 0,
    }  # fmt: skip
    codec = avro.commands()
    back = fastavro.schemaless_reader(io.BytesIO(codec.encode(command)[10:]), codec.schema)
    assert jsonvalue.loads(back["params_json"]) == {"n": doc["n"], "s": doc["s"], "d": doc["d"]}


# -- limits -------------------------------------------------------------------------------


def test_limits_are_configurable_and_checked():
    event = b'{"a":[[1]]}'  # 11 bytes, 3 levels
    assert load_event(event, Limits(max_bytes=11, max_depth=3)) == {"a": [[1]]}
    with pytest.raises(NotAJsonObject, match="event too large: 11 bytes, the limit is 10"):
        load_event(event, Limits(max_bytes=10))
    with pytest.raises(NotAJsonObject, match="more than 2 levels"):
        load_event(event, Limits(max_depth=2))
    assert Limits() == DEFAULT_LIMITS == Limits(256 << 10, 100)
    for bad in [{"max_bytes": 1}, {"max_depth": 0}, {"max_depth": jsonvalue.DEPTH_CEILING + 1}]:
        with pytest.raises(ValueError):
            Limits(**bad)
    with pytest.raises(AttributeError):
        DEFAULT_LIMITS.max_bytes = 5  # type: ignore[misc]


def test_size_is_checked_before_decoding():
    with pytest.raises(NotAJsonObject, match="too large"):
        load_event(b"\xff" * 101, Limits(max_bytes=100))  # not "not UTF-8"


def test_deepest_allowed_parses_at_the_ceiling_too():
    ceiling = jsonvalue.DEPTH_CEILING
    limits = Limits(max_depth=ceiling)
    doc = load_event(nested_objects(ceiling), limits)
    jsonvalue.dumps(doc).encode()
    with pytest.raises(NotAJsonObject, match="nested too deeply"):
        load_event(nested_objects(ceiling + 1), limits)


def test_load_object_is_load_event_with_the_default_limits():
    assert jsonvalue.load_object(b'{"n": 1.50}') == {"n": Decimal("1.50")}
    with pytest.raises(NotAJsonObject, match="nested too deeply: more than 100 levels"):
        jsonvalue.load_object(nested_objects(101))
    with pytest.raises(NotAJsonObject, match="event too large"):
        jsonvalue.load_object(b" " * (LIMIT + 1))


# -- the depth scan against the real depth --------------------------------------------------

_TEXT = st.text(alphabet='[]{}"\\ax\n/u', max_size=6)
_DOCS = st.recursive(
    st.one_of(_TEXT, st.integers(), st.booleans(), st.none()),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=40,
)


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


@settings(max_examples=300, deadline=None)
@given(_DOCS, st.booleans(), st.integers(1, 12))
def test_depth_scan_equals_the_real_depth(doc, indent, limit):
    data = json.dumps(doc, indent=1 if indent else None, ensure_ascii=bool(limit % 2)).encode()
    assert jsonvalue._too_deep(data, limit) == (_depth(doc) > limit)


def test_depth_scan_of_long_chains():
    for depth in [99, 100, 101, 150]:
        behind_siblings = b"[" + b"[[]]," * 300 + nested_arrays(depth - 1) + b"]"
        for data in [nested_arrays(depth), nested_objects(depth), behind_siblings]:
            assert jsonvalue._too_deep(data, 100) == (depth > 100), (depth, data[:20])


# -- loads: handlers, run results and states are parsed with it -----------------------------


def test_loads_raises_only_value_errors():
    for bad in [nested_arrays(100_000), b'{"n":1e999999999999999999999}', b'{"a":"\\ud800"}', b'{"n":NaN}',
                b"\xff", "{\"a\":\"\ud800\"}"]:  # fmt: skip
        with pytest.raises(ValueError):
            jsonvalue.loads(bad)
    with pytest.raises(ValueError, match="more than 3 levels"):
        jsonvalue.loads(b"[[[[]]]]", max_depth=3)
    assert jsonvalue.loads(b"[" + BIG_INT + b"]") == [Decimal(BIG_INT.decode())]
    assert jsonvalue.loads("\ufeff[1]") == [1]  # a byte order mark is skipped, as before
    assert jsonvalue.loads("1.5") == Decimal("1.5")


def test_big_integers_follow_the_interpreter_digit_limit():
    """Integers ``int()`` reads are ints, longer ones Decimals: either way ``str`` works."""
    old = sys.get_int_max_str_digits()
    try:
        sys.set_int_max_str_digits(6000)
        assert type(load_event(b'{"n":' + BIG_INT + b"}", DEFAULT_LIMITS)["n"]) is int
        sys.set_int_max_str_digits(1000)
        doc = load_event(b'{"n":' + BIG_INT[:2000] + b"}", DEFAULT_LIMITS)
        assert type(doc["n"]) is Decimal and str(doc["n"]) == BIG_INT[:2000].decode()
    finally:
        sys.set_int_max_str_digits(old)


# -- the index on accepted but extreme documents ---------------------------------------------


def _handler(hid: str, **event: Any) -> dict[str, Any]:
    params = event.pop("params", {})
    return {"id": hid, "job": "j", "enabled": True, "event": event, "params": params}


def _index(*handlers: dict[str, Any]) -> HandlerIndex:
    """Handlers parsed from their JSON text, as they arrive (numbers exact)."""
    index = HandlerIndex()
    for h in handlers:
        index.put(parse_handler(jsonvalue.dumps(h)))
    return index


def _chain(depth: int, leaf: Any, kind: str = "object") -> Any:
    """``depth`` levels: objects under key "a", or arrays (the innermost holds ``leaf``)."""
    value = leaf
    for _ in range(depth):
        value = {"a": value} if kind == "object" else [value]
    return value


def test_index_walks_documents_at_the_maximum_depth():
    # 99 objects under "a", then {"k": "v", "n": 5}: 100 levels
    deep_objects = load_event(jsonvalue.dumps(_chain(DEPTH - 1, {"k": "v", "n": 5})).encode(), DEFAULT_LIMITS)
    path = ".".join(["a"] * (DEPTH - 1))
    index = _index(
        _handler("jsonb", match=_chain(DEPTH - 1, {"k": "v"}), params={"n": path + ".n", "all": path}),
        _handler("pattern", pattern=_chain(DEPTH - 1, {"n": [5], "k": [{"prefix": "v"}]}), params={"n": path + ".n"}),
        _handler("exclude", match={}, exclude=_chain(DEPTH - 1, {"k": "other"})),
        _handler("exists", pattern=_chain(DEPTH - 1, {"k": [{"exists": True}]})),
        _handler("miss", match=_chain(DEPTH - 1, {"k": "w"})),
    )
    matches = index.match(deep_objects)
    assert [m.handler.id for m in matches] == ["jsonb", "pattern", "exclude", "exists"]
    assert matches[0].params == {"n": 5, "all": {"k": "v", "n": 5}}
    for m in matches:
        jsonvalue.dumps(m.params).encode("utf-8")
        assert filter_passes(m.handler, deep_objects)
        assert extract_params(m.handler, deep_objects) == m.params


def test_index_walks_arrays_at_the_maximum_depth():
    # {"a": [[[ ... [{"k": "v"}, 7] ... ]]]}: 1 object + 98 arrays + 1 object = 100 levels
    doc = load_event(b'{"a":' + b"[" * (DEPTH - 2) + b'{"k":"v"},7' + b"]" * (DEPTH - 2) + b"}", DEFAULT_LIMITS)
    index = _index(
        _handler("eb-flat", pattern={"a": {"k": ["v"]}}),  # EventBridge flattens arrays
        _handler("eb-num", pattern={"a": [7]}),
        _handler("eb-range", pattern={"a": [{"numeric": [">", 6]}]}),
        _handler("jsonb-deep", match={"a": _chain(DEPTH - 2, {"k": "v"}, "array")}),
        _handler("jsonb-shallow", match={"a": [{"k": "v"}]}),  # containment needs the same array levels
        _handler("params", match={}, params={"first": "a.0.0"}),
    )
    ids = [m.handler.id for m in index.match(doc)]
    assert ids == ["eb-flat", "eb-num", "eb-range", "jsonb-deep", "params"]
    assert contains(doc, {"a": _chain(DEPTH - 2, 7, "array")})
    assert eb.compile_pattern({"a": {"k": ["v"]}}).matches(doc)
    assert eb.reference_match({"a": [7]}, doc)


@pytest.mark.parametrize("big", [BIG_INT, b"-" + BIG_INT, b"1e400", b"1e-400", b"1" * 131_072])
def test_huge_numbers_never_match_small_filters_and_never_crash(big):
    doc = load_event(b'{"id":' + big + b',"n":' + big + b',"l":[' + big + b"]}", Limits(max_bytes=1 << 20))
    index = _index(
        _handler("jsonb-5", match={"n": 5}),
        _handler("jsonb-l5", match={"l": [5]}),
        _handler("eb-5", pattern={"n": [5]}),
        _handler("eb-numeric", pattern={"n": [{"numeric": [">", 0]}]}),
        _handler("eb-anything-but", pattern={"n": [{"anything-but": [5]}]}),
        _handler("eb-exists", pattern={"n": [{"exists": True}]}),
        _handler("eb-prefix", pattern={"n": [{"prefix": "9"}]}),  # strings only
        _handler("params", match={}, params={"n": "n", "l": "l"}),
    )
    ids = [m.handler.id for m in index.match(doc)]
    assert "jsonb-5" not in ids and "jsonb-l5" not in ids and "eb-5" not in ids
    assert "eb-numeric" not in ids  # event-ruler: only numbers that survive a double compare
    assert "eb-prefix" not in ids
    assert "eb-exists" in ids and "params" in ids
    [params] = [m.params for m in index.match(doc) if m.handler.id == "params"]
    assert jsonvalue.dumps(params).encode() == b'{"n":' + _spelled(big) + b',"l":[' + _spelled(big) + b"]}"
    # identity: these ids are Decimals, not ints, so the record's coordinates are used (like
    # for any id that is neither a string nor an integer); an id int() reads is used as is
    assert event_identity(doc, "t", 0, 7) == "offset:t/0/7"
    assert event_identity({"id": int("7" * 4300)}, "t", 0, 7) == "id:" + "7" * 4300


def _spelled(big: bytes) -> bytes:
    return {b"1e400": b"1E+400", b"1e-400": b"1E-400"}.get(big, big)


@pytest.mark.parametrize(
    ("big", "other"), [(BIG_INT, BIG_INT[:-1] + b"8"), (b"1e400", b"1.0000000000000000000000000000001e400")]
)
def test_huge_numbers_match_filters_of_the_same_exact_value(big, other):
    value = jsonvalue.loads(big)
    index = _index(_handler("jsonb", match={"n": value}), _handler("eb", pattern={"n": [value]}))
    same = load_event(b'{"n":' + big + b"}", DEFAULT_LIMITS)
    assert [m.handler.id for m in index.match(same)] == ["jsonb", "eb"]  # eb: by spelling
    if big == b"1e400":  # jsonb compares by exact value: 1e400 = 1000...0 = 10.0e399
        assert [m.handler.id for m in index.match({"n": 10**400})] == ["jsonb"]
        assert [m.handler.id for m in index.match(load_event(b'{"n":10.0e399}', DEFAULT_LIMITS))] == ["jsonb"]
    assert index.match(load_event(b'{"n":' + other + b"}", DEFAULT_LIMITS)) == []
