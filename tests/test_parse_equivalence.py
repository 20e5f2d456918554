"""The fast parse (msgspec first, the standard library's scanner on anything it refuses)
against the standard library's scanner alone (``jsonvalue._load_event_text_stdlib`` and
``jsonvalue._loads_stdlib``, the parse before msgspec): the same values, types included
(int or Decimal, a Decimal's exact digits and exponent), the same key order, and the same
rejections with the same reason texts.

Inputs: the poison corpus (tests/poison.py), every event and pattern of tests/vectors/*.jsonl
as spelled there, hand-written edge cases, and generated JSON texts (numbers as raw literal
text, escapes, surrogates, control characters, duplicate keys, whitespace variants, and
near-misses: one character inserted or deleted).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from streams.model import jsonvalue
from streams.model.jsonvalue import Limits
from tests.poison import BIG_INT, POISON, nested_arrays, nested_objects

VECTORS = Path(__file__).resolve().parent / "vectors"
LIMITS = [jsonvalue.DEFAULT_LIMITS, Limits(max_bytes=1 << 20, max_depth=3), Limits(max_depth=jsonvalue.DEPTH_CEILING)]


# -- the strict comparison ------------------------------------------------------------------


def typed(value: Any) -> list[tuple[Any, ...]]:
    """A form that is equal only for exactly equal results: types exact (bool is not int,
    int is not Decimal), Decimals by ``as_tuple()`` (``1.0`` is not ``1.00``, ``-0`` is not
    ``0``), dicts as their item sequence (key order counts). Flat (the values in pre-order,
    each container with its length), so that 500 levels compare without recursion."""
    out: list[tuple[Any, ...]] = []
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            out.append(("dict", len(item)))
            for k, v in reversed(list(item.items())):
                stack.append(v)
                stack.append(k)
        elif kind is list or kind is tuple:  # a tuple: load_event_text's (doc, text)
            out.append((kind.__name__, len(item)))
            stack.extend(reversed(item))
        elif kind is Decimal:
            out.append(("Decimal", item.as_tuple()))
        else:
            assert kind in (str, int, bool, type(None)), kind
            out.append((kind.__name__, item))
    return out


def outcome(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, ...]:
    """("value", typed result) or ("raised", exception class, its text)."""
    try:
        result = fn(*args, **kwargs)
    except Exception as exc:
        return ("raised", type(exc), str(exc))
    return ("value", typed(result))


def assert_same_event(data: bytes | None) -> None:
    for limits in LIMITS:
        fast = outcome(jsonvalue.load_event_text, data, limits)
        slow = outcome(jsonvalue._load_event_text_stdlib, data, limits)
        assert fast == slow, (data if data is None else data[:200], limits)
        if fast[0] == "raised":
            assert fast[1] is jsonvalue.NotAJsonObject


def assert_same_loads(data: str | bytes) -> None:
    for max_depth in [None, 3, jsonvalue.DEFAULT_MAX_DEPTH]:
        fast = outcome(jsonvalue.loads, data, max_depth=max_depth)
        slow = outcome(jsonvalue._loads_stdlib, data, max_depth)
        assert fast == slow, (data[:200], max_depth)
        if fast[0] == "raised":
            assert issubclass(fast[1], ValueError), fast


def assert_msgspec_only_accepts_what_the_stdlib_accepts(data: bytes) -> None:
    """Whenever the fast decoder returns, the standard library parses the same text to the
    same value (the fallback never hides a difference)."""
    try:
        fast = jsonvalue._FAST_DECODER.decode(data)
    except Exception:
        return
    text = data.decode("utf-8")  # msgspec accepted it: it must be UTF-8
    assert outcome(jsonvalue._parse, text) == ("value", typed(fast)), data[:200]


def assert_same(data: bytes | None) -> None:
    assert_same_event(data)
    if data is None:
        return
    assert_same_loads(data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        assert_same_loads(text)
        assert_same_loads("\ufeff" + text)  # loads skips a byte order mark
    assert_msgspec_only_accepts_what_the_stdlib_accepts(data)


# -- the poison corpus ----------------------------------------------------------------------


@pytest.mark.parametrize("entry", POISON, ids=lambda entry: entry[0])
def test_poison_corpus(entry):
    _, raw, _ = entry
    assert_same(raw)


# -- the vectors, as spelled in the files ---------------------------------------------------


def _raw_members(line: str) -> Iterator[str]:
    """The raw text of each member value of the object on one line."""
    decoder, space = json.JSONDecoder(), json.decoder.WHITESPACE
    at = space.match(line, 1).end()
    while line[at] != "}":
        _, at = json.decoder.scanstring(line, at + 1)
        at = space.match(line, at).end() + 1  # the colon
        at = space.match(line, at).end()
        _, end = decoder.raw_decode(line, at)
        yield line[at:end]
        at = space.match(line, end).end()
        at = space.match(line, at + 1).end() if line[at] == "," else at


def _vector_texts() -> list[bytes]:
    texts = []
    for path in sorted(VECTORS.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                texts.append(line.encode())
                texts.extend(raw.encode() for raw in _raw_members(line) if raw[:1] in "{[")
    return texts


VECTOR_TEXTS = _vector_texts()


def test_vectors():
    assert len(VECTOR_TEXTS) > 2 * 2645  # each line, its pattern and (but the invalid ones) its event
    fast_path = 0
    for raw in VECTOR_TEXTS:
        assert_same(raw)
        try:
            jsonvalue._FAST_DECODER.decode(raw)
            fast_path += 1
        except Exception:
            pass
    assert fast_path > 0.99 * len(VECTOR_TEXTS)  # the comparison above is not fallback against itself


# -- hand-written edge cases ----------------------------------------------------------------

EDGES: list[bytes] = [
    # numbers
    b'{"n":-0}', b'{"n":-0.0}', b'{"n":0.0}', b'{"n":-0e0}', b'{"n":0E-0}', b'{"n":-0E+00}', b'{"n":1.50}',
    b'{"n":1e400}', b'{"n":1E400}', b'{"n":1e-400}', b'{"n":-1e-400}', b'{"n":1E+0000400}', b'{"n":1e131071}',
    b'{"n":1e131072}', b'{"n":1e-16383}', b'{"n":1e-16384}', b'{"n":0e999999}', b'{"n":0.0e-99999}',
    b'{"n":1e999999999999999999999}', b'{"n":1e-999999999999999999999}', b'{"n":12345678901234567890123456789012e-5}',
    b'{"n":0.' + b"0" * 16382 + b'1}', b'{"n":0.' + b"0" * 16383 + b'1}', b'{"n":1' + b"0" * 131071 + b'.5}',
    b'{"n":9223372036854775807}', b'{"n":9223372036854775808}', b'{"n":-9223372036854775808}',
    b'{"n":-9223372036854775809}', b'{"n":18446744073709551615}', b'{"n":18446744073709551616}',
    b'{"n":-18446744073709551615}', b'{"n":-18446744073709551616}', b'{"n":19999999999999999999}',
    b'{"n":10000000000000000000}', b'{"n":99999999999999999999}', b'{"n":100000000000000000000}',
    b'{"n":12345678901234567890123}', b'{"n":-12345678901234567890123}', b'{"n":9007199254740993}',
    b'{"n":9007199254740993.0}', b'{"n":1' + b"0" * 4299 + b"}", b'{"n":1' + b"0" * 4300 + b"}",
    b'{"n":-1' + b"0" * 4299 + b"}", b'{"n":-1' + b"0" * 4300 + b"}", b'{"n":' + BIG_INT + b"}",
    b'{"n":-' + BIG_INT + b"}", b'{"n":' + b"1" * 131_072 + b"}", b'{"n":' + b"1" * 131_073 + b"}",
    b'{"n":01}', b'{"n":-01}', b'{"n":00}', b'{"n":1.}', b'{"n":.5}', b'{"n":-.5}', b'{"n":+1}', b'{"n":-}',
    b'{"n":1e}', b'{"n":1e+}', b'{"n":1.e5}', b'{"n":0x10}', b'{"n":1_000}', b'{"n":NaN}', b'{"n":-NaN}',
    b'{"n":Infinity}', b'{"n":-Infinity}', b'{"n":+Infinity}', b'{"n":inf}', b'{"n":nan}', b"-0", b"1e400",
    b"1.5", b"12345678901234567890", b"NaN",
    # strings: control characters, escapes, surrogates
    *[b'{"s":"a' + bytes([c]) + b'b"}' for c in range(0x20)], b'{"s":"\x7f"}', b'{"s":"\xc2\x80\xc2\x9f"}',
    b'{"s":"\\u0000"}', b'{"s":"\\u001f\\u007f\\u0080"}', b'{"s":"\\"\\\\\\/\\b\\f\\n\\r\\t"}', b'{"s":"\\a"}',
    b'{"s":"\\x41"}', b'{"s":"\\U0041"}', b'{"s":"\\u004"}', b'{"s":"\\u00g0"}', b'{"s":"\\u00E9\\u00e9"}',
    b'{"s":"\\"}', b'{"s":"\\\\"}', b'{"s":"\\\\\\"}', b'{"s":"\\ud800"}', b'{"s":"\\uDBFF"}', b'{"s":"\\udc00"}',
    b'{"s":"\\uDFFF"}', b'{"s":"\\ud83d\\ude00"}', b'{"s":"\\uD83D\\uDE00"}', b'{"s":"\\udbff\\udfff"}',
    b'{"s":"\\ud800\\ud800"}', b'{"s":"\\ud800\\udc00\\udc00"}', b'{"s":"\\udc00\\ud800"}', b'{"s":"\\ud800x"}',
    b'{"s":"\\ud800\\n"}', b'{"s":"\\ud800\\u0041"}', b'{"s":"\\ud800\\\\udc00"}', b'{"s":"\\\\ud800"}',
    b'{"\\ud800":1}', b'{"\\ud83d\\ude00":1}', b'{"s":"\\ud800', b'{"s":"\\ud800\\u', b'{"s":"\\ud800\\udc0"}',
    '{"s":"straße ☃ 😀 \u2028\u2029\ufeff"}'.encode(), b'{"s":"\xff"}', b'{"s":"\xed\xa0\x80"}',
    b'{"s":"\xed\xb0\x80"}', b'{"s":"\xf4\x90\x80\x80"}', b'{"s":"\xc0\xaf"}', b'{"s":"\xe2\x82"}',
    b'{"s":"unterminated', b'{"s":\'single\'}', b'{"s":"a"\x00}',
    # keys: duplicates (also spelled differently), order
    b'{"a":1,"b":2,"a":3}', b'{"a":1,"\\u0061":2}', b'{"a":{"x":1},"a":{"y":2}}', b'{"b":1,"a":2,"b":3,"c":4,"a":5}',
    b'{"":1,"":2}', b'{"a":1,"a":1.0}', b'{"a":true,"a":1}', b'{"a":1,"b":[{"c":1,"c":2}],"a":null}',
    b'{1:2}', b'{"a"}', b'{"a":}', b'{"a" 1}', b'{,}', b'{"a":1,}', b'{"a":1,,"b":2}', b"{", b"}",
    # whitespace: JSON's four, and characters that are not JSON whitespace
    b' \t\n\r{ \t\n\r"a" \t\n\r: \t\n\r[ \t\n\r1 \t\n\r, \t\n\r2 \t\n\r] \t\n\r} \t\n\r',
    *[ws + b'{"a":1}' for ws in [b"\x0b", b"\x0c", b"\x00", b"\x1c", b"\x85", b"\xc2\x85", b"\xc2\xa0",
                                 "\u2028".encode(), "\u3000".encode(), b"\xef\xbb\xbf"]],
    *[b'{"a":1}' + ws for ws in [b"\x0b", b"\x0c", b"\x00", b"\xc2\xa0", "\u2028".encode(), b" x", b"{}", b"\n\n"]],
    *[b'{"a":' + ws + b"1}" for ws in [b"\x0b", b"\x0c", b"\xc2\xa0", b"\x00"]],
    b"", b" ", b"\n", b"null", b"true", b"false", b"[]", b'""', b'"x"', b"nul", b"True", b"tru", b'{"a":nulll}',
    b'{"a":truefalse}', b'{"a":[1 2]}', b'{"a":[1,]}', b"[1,2", b"[]]", b"{}}", b"{}{}", b"[][]",
    # nesting around the limits (brackets inside strings too)
    nested_objects(3), nested_objects(4), nested_arrays(3), nested_arrays(4), b'{"a":' + nested_arrays(99) + b"}",
    b'{"a":' + nested_arrays(100) + b"}", nested_objects(jsonvalue.DEPTH_CEILING),
    nested_objects(jsonvalue.DEPTH_CEILING + 1), b'{"a":' + nested_arrays(2000) + b"}",
    b'{"a":"[[[[[[[[","b":[[["]]]]"]]]}', b'{"a":"\\"[[[[","b":[[["\\\\"]]]}',
]  # fmt: skip


@pytest.mark.parametrize("data", EDGES, ids=lambda data: repr(data[:40]))
def test_edge_cases(data):
    assert_same(data)


def test_loads_of_str_that_is_not_unicode():
    for text in ['{"a":"\ud800"}', '"\udfff"', "\ud83d\ude00"]:
        assert_same_loads(text)


def test_the_interpreter_digit_limit_is_followed_by_both():
    old = sys.get_int_max_str_digits()
    try:
        for limit in [0, 640, 1000, 4300, 6000]:
            sys.set_int_max_str_digits(limit)
            for digits in [19, 20, 639, 640, 641, 999, 1000, 1001, 4299, 4300, 4301, 5000, 5999, 6000, 6001]:
                for sign in [b"", b"-"]:
                    assert_same(b'{"n":' + sign + b"7" * digits + b"}")
    finally:
        sys.set_int_max_str_digits(old)


# -- generated texts ------------------------------------------------------------------------
# Two vocabularies: JSON syntax (most texts, so that most reach msgspec's values; numbers out
# of numeric's range and lone surrogate escapes included: the parse or the check after it
# rejects those), and the same plus what JSON's syntax does not allow. Each text draws which
# one, then maybe one mutation.

GOOD_WS = ["", "", "", " ", "\t", "\n", "\r", " \r\n\t "]
BAD_WS = ["\x0b", "\x0c", "\x00", "\x1c", "\x85", "\xa0", "\u2028", "\u3000", "\ufeff"]
GOOD_NUMBERS = [
    *[st.from_regex(r"-?(0|[1-9][0-9]{0,25})(\.[0-9]{1,25})?([eE][+-]?[0-9]{1,4})?", fullmatch=True)] * 3,
    st.from_regex(r"-?(0|[1-9][0-9]{0,3})(\.[0-9]{1,3})?[eE][+-]?(1[0-9]{4}|13107[0-3]|[0-9]{5,7})", fullmatch=True),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.integers(min_value=0, max_value=64).map(lambda k: str(2**k + (-1, 0, 1)[k % 3])),
    st.integers(min_value=0, max_value=64).map(lambda k: str(-(2**k) + (-1, 0, 1)[k % 3])),
    st.builds(lambda sign, d, n: sign + d * n, st.sampled_from(["", "-"]), st.sampled_from("19"),
              st.sampled_from([4299, 4300, 4301, 4400])),
    st.sampled_from(["-0", "-0.0", "0.0", "-0e0", "0E-0", "1e400", "-1e-400", "1E+0000400", "1.0E+2",
                     "123.456e-789", "9007199254740993", "1e131071", "1e131072", "1e-16383", "1e-16384",
                     "0e999999", "1e999999999999999999999"]),
]  # fmt: skip
BAD_NUMBERS = [
    st.sampled_from(["01", "-01", "1.", ".5", "+1", "-", "1e", "1e+", "NaN", "Infinity", "-Infinity", "0x1", "1_0"]),
]
HEX = "0123456789abcdefABCDEF"
GOOD_PIECES = [
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters='"\\'), max_size=5),
    st.text(alphabet=st.characters(min_codepoint=0x20, exclude_categories=["Cs"], exclude_characters='"\\'),
            max_size=3),
    st.sampled_from(["\x7f", "\x80", "\u2028", "\ufeff", "😀", "é"]),
    st.sampled_from(['\\"', "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t", "\\u0000", "\\u0041",
                     "\\u00e9", "\\uD83D\\uDE00", "\\ud83d\\ude00", "\\udbff\\udfff", "\\\\ud800"]),
    st.builds(lambda a, b, c, d: f"\\u{a}{b}{c}{d}", st.sampled_from("0123456789abcefABCEF"), st.sampled_from(HEX),
              st.sampled_from(HEX), st.sampled_from(HEX)),  # never a surrogate (d800-dfff)
    st.sampled_from(["\\ud800", "\\uDFFF", "\\udc00\\ud800", "\\ud800\\u0041", *"abcdefghijklmnopqrstuvwxyz"]),
    # (lone surrogates, rejected after the parse, kept rare)
    st.builds(lambda hi, lo, x, y: f"\\ud{hi}{x}{y}\\uD{lo}{y}{x}", st.sampled_from("89abAB"),
              st.sampled_from("cdefCDEF"), st.sampled_from(HEX), st.sampled_from(HEX)),  # a high+low pair
]  # fmt: skip
BAD_PIECES = [
    st.sampled_from([chr(c) for c in range(0x20)]),
    st.sampled_from(["\\x41", "\\U0041", "\\u12", "\\u00zz", "\\", "\\q"]),
]


def _array(items: list[tuple[str, str]], trailing: bool) -> str:
    return "[" + ",".join(ws + item for ws, item in items) + ("," if trailing and items else "") + "]"


def _object(members: list[tuple[str, str, str, str]], trailing: bool) -> str:
    body = ",".join(ws + key + ws2 + ":" + value for ws, key, ws2, value in members)
    return "{" + body + ("," if trailing and members else "") + "}"


def _vocabulary(clean: bool) -> tuple[st.SearchStrategy[str], st.SearchStrategy[str]]:
    """(whitespace, top-level texts)."""
    ws = st.sampled_from(GOOD_WS) if clean else st.sampled_from(GOOD_WS + BAD_WS)
    numbers = st.one_of(GOOD_NUMBERS) if clean else st.one_of(GOOD_NUMBERS + BAD_NUMBERS)
    pieces = st.one_of(GOOD_PIECES) if clean else st.one_of(GOOD_PIECES + BAD_PIECES)
    strings = st.lists(pieces, max_size=4).map(lambda p: '"' + "".join(p) + '"')
    keys = st.one_of(st.sampled_from(['"a"', '"b"', '"\\u0061"', '""', '"é"', '"\\ud83d\\ude00"']), strings)
    literals = ["true", "false", "null"] if clean else ["true", "false", "null", "nul", "True", "nulll"]
    scalars = st.one_of(numbers, strings, st.sampled_from(literals))
    trailing = st.just(False) if clean else st.booleans()
    values = st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.builds(_array, st.lists(st.tuples(ws, inner), max_size=4), trailing),
            st.builds(_object, st.lists(st.tuples(ws, keys, ws, inner), max_size=4), trailing),
        ),
        max_leaves=12,
    )
    objects = st.builds(_object, st.lists(st.tuples(ws, keys, ws, values), max_size=5), trailing)
    return ws, st.one_of(objects, objects, objects, values)


CLEAN, HOSTILE = _vocabulary(True), _vocabulary(False)


@st.composite
def json_texts(draw: Any) -> bytes:
    ws, top = CLEAN if draw(st.integers(0, 9)) < 7 else HOSTILE
    data = (draw(ws) + draw(top) + draw(ws)).encode("utf-8")
    mutation = draw(st.sampled_from(["none"] * 7 + ["delete", "insert", "bytes"]))
    if data and mutation != "none":
        at = draw(st.integers(min_value=0, max_value=len(data)))
        if mutation == "delete":
            data = data[:at] + data[at + 1 :]
        elif mutation == "insert":
            data = data[:at] + bytes([draw(st.sampled_from(list(b'{}[]",:\\ 0e.-\x00\nx')))]) + data[at:]
        else:
            data = data[:at] + draw(st.sampled_from([b"\xff", b"\xed\xa0\x80", b"\xc2", b"\xef\xbb\xbf"])) + data[at:]
    return data


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_texts())
@example(b'{"a":1,"b":-0,"a":-0.0}')
@example(b'{"s":"\\ud83d\\ude00\\u0000","n":123456789012345678901234567890e-3}')
def test_generated_texts(data):
    assert_same(data)


# -- the comparison can fail ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "decoder"),
    [
        ("floats", msgspec.json.Decoder()),
        ("Decimal without range checks", msgspec.json.Decoder(float_hook=Decimal)),
        ("normalized Decimal", msgspec.json.Decoder(float_hook=lambda s: jsonvalue._parse_float(s).normalize())),
        ("-0.0 as 0.0", msgspec.json.Decoder(float_hook=lambda s: abs(jsonvalue._parse_float(s)))),
    ],
)
def test_a_broken_fast_decoder_is_caught(monkeypatch, name, decoder):
    monkeypatch.setattr(jsonvalue, "_FAST_DECODER", decoder)
    caught = 0
    for data in EDGES:
        try:
            assert_same(data)
        except AssertionError:
            caught += 1
    assert caught, name
