"""Hostile event record values and what ``jsonvalue.load_event`` (default limits: 256 KiB,
100 levels) must say about them.

Each entry is ``(name, raw value, reason)``: ``reason`` is a substring of the dead-letter
reason, or ``None`` when the event must be accepted. What PostgreSQL's jsonb does with the
same text is noted where signalbox differs or where it guided the choice.
"""

from __future__ import annotations

MIB = 1 << 20
LIMIT = 256 << 10  # jsonvalue.DEFAULT_MAX_BYTES
DEPTH = 100  # jsonvalue.DEFAULT_MAX_DEPTH

BIG_INT = b"9" + b"8" * 4998 + b"7"  # 5,000 digits: more than int() reads from text (4300)


def nested_arrays(depth: int, leaf: bytes = b"1") -> bytes:
    return b"[" * depth + leaf + b"]" * depth


def nested_objects(depth: int, leaf: bytes = b"1") -> bytes:
    return b'{"a":' * depth + leaf + b"}" * depth


Poison = tuple[str, bytes | None, str | None]

POISON: list[Poison] = [
    # -- not a record / not bytes of JSON ------------------------------------------------
    ("null record value", None, "empty record value (null)"),
    ("empty bytes", b"", "not JSON: empty record value (0 bytes)"),
    ("only whitespace", b" \n", "not JSON: Expecting value"),
    ("invalid UTF-8 in a string", b'{"a":"\xff\xfe"}', "not UTF-8"),
    ("UTF-8 sequence cut short", b'{"a":"\xe2\x82"}', "not UTF-8"),
    ("overlong UTF-8 (NUL as C0 80)", b'{"a":"\xc0\x80"}', "not UTF-8"),
    ("surrogate encoded in UTF-8 (CESU-8)", b'{"a":"\xed\xa0\x80"}', "not UTF-8"),
    ("BOM-prefixed JSON", b"\xef\xbb\xbf{}", "byte order mark"),  # jsonb: invalid input syntax
    ("trailing garbage", b'{"a":1} x', "not JSON: Extra data"),
    ("two objects", b"{}{}", "not JSON: Extra data"),
    ("truncated", b'{"a":', "not JSON: Expecting value"),
    ("unterminated string", b'{"a":"abc', "not JSON: Unterminated string"),
    ("single quotes", b"{'a':1}", "not JSON"),
    ("raw NUL byte in a string", b'{"a":"x\x00y"}', "not JSON: Invalid control character"),
    ("raw newline in a string", b'{"a":"x\ny"}', "not JSON: Invalid control character"),
    ("invalid escape", b'{"a":"\\q"}', "not JSON: Invalid \\escape"),
    ("short unicode escape", b'{"a":"\\u12"}', "not JSON: Invalid \\uXXXX escape"),
    ("leading zero", b'{"a":01}', "not JSON"),
    ("trailing comma", b'{"a":1,}', "not JSON"),
    # -- not an object -------------------------------------------------------------------
    ("JSON null", b"null", "JSON null, not an object"),
    ("JSON array", b'[{"a":1}]', "JSON array, not an object"),
    ("JSON string", b'"{}"', "JSON string, not an object"),
    ("JSON number", b"42", "JSON number, not an object"),
    ("JSON boolean", b"true", "JSON boolean, not an object"),
    # -- size ----------------------------------------------------------------------------
    ("5 MB object", b'{"a":"' + b"x" * 5_000_000 + b'"}', "event too large: 5000008 bytes, the limit is 262144"),
    ("1 MiB + 1 byte", b'{"a":"' + b"x" * (MIB - 7) + b'"}', "event too large: 1048577 bytes"),
    ("exactly 256 KiB", b'{"a":"' + b"x" * (LIMIT - 8) + b'"}', None),
    ("256 KiB + 1 byte", b'{"a":"' + b"x" * (LIMIT - 7) + b'"}', "event too large: 262145 bytes"),
    # -- nesting -------------------------------------------------------------------------
    ("100,000-deep arrays", b'{"a":' + nested_arrays(100_000) + b"}", "nested too deeply: more than 100 levels"),
    ("100,000-deep objects", nested_objects(100_000), "event too large: 600001 bytes"),  # size is checked first
    ("40,000-deep objects", nested_objects(40_000), "nested too deeply: more than 100 levels"),
    ("100,000 unclosed brackets", b'{"a":' + b"[" * 100_000, "nested too deeply"),
    ("depth 100 (objects)", nested_objects(DEPTH), None),
    ("depth 100 (object, then arrays)", b'{"a":' + nested_arrays(DEPTH - 1) + b"}", None),
    ("depth 101 (objects)", nested_objects(DEPTH + 1), "nested too deeply: more than 100 levels"),
    ("depth 101 (object, then arrays)", b'{"a":' + nested_arrays(DEPTH) + b"}", "nested too deeply"),
    ("depth 101 behind 500 shallow siblings",
     b'{"s":[' + b",".join([b"[[1]]"] * 500) + b'],"d":' + nested_arrays(DEPTH) + b"}", "nested too deeply"),
    ("brackets inside strings do not nest",
     b'{"a":"' + b"[{" * 5000 + b'","b":["\\"[[[[\\\\", "]]"]}', None),
    ("many shallow containers", b'{"a":[' + b",".join([b'{"b":[1,{"c":[]}]}'] * 5000) + b"]}", None),
    # -- numbers (jsonb numeric: 131072 digits before the point, 16383 after) -------------
    ("5,000-digit integer", b'{"n":' + BIG_INT + b"}", None),
    ("negative 5,000-digit integer", b'{"n":-' + BIG_INT + b"}", None),
    ("131,072-digit integer", b'{"n":' + b"1" * 131_072 + b"}", None),
    ("131,073-digit integer", b'{"n":' + b"1" * 131_073 + b"}",
     "number out of range: 1111111111...(131073 characters)"),
    ("1e400", b'{"n":1e400}', None),
    ("-1e400", b'{"n":-1e400}', None),
    ("1e-400", b'{"n":1e-400}', None),
    ("1E+0000400 (padded exponent)", b'{"n":1E+0000400}', None),
    ("1e131071 (131072 digits)", b'{"n":1e131071}', None),
    ("1e131072", b'{"n":1e131072}', "number out of range: 1e131072"),
    ("1e-16383", b'{"n":1e-16383}', None),
    ("1e-16384", b'{"n":1e-16384}', "number out of range: 1e-16384"),
    ("exponent beyond Decimal", b'{"n":1e999999999999999999999}', "number out of range"),
    ("negative zero", b'{"n":-0,"m":-0.0}', None),
    ("NaN", b'{"n":NaN}', "not JSON: NaN is not a JSON number"),
    ("Infinity", b'{"n":Infinity}', "not JSON: Infinity is not a JSON number"),
    ("-Infinity", b'{"n":-Infinity}', "not JSON: -Infinity is not a JSON number"),
    ("nan (lower case)", b'{"n":nan}', "not JSON: Expecting value"),
    # -- keys ----------------------------------------------------------------------------
    ("duplicate keys (last wins)", b'{"a":1,"b":{"c":1,"c":[2]},"a":"last"}', None),
    ("empty key", b'{"":1}', None),
    # -- strings and escapes -------------------------------------------------------------
    ("lone high surrogate escape", b'{"a":"x\\ud800y"}', "lone surrogate escape \\ud800"),
    ("lone low surrogate escape", b'{"a":"\\uDC00"}', "lone surrogate escape \\uDC00"),
    ("high surrogate at the end of a string", b'{"a":"\\ud83d"}', "lone surrogate escape \\ud83d"),
    ("high surrogate, then a non-surrogate escape", b'{"a":"\\ud800\\u0041"}', "lone surrogate escape \\ud800"),
    ("low before high", b'{"a":"\\udc00\\ud800"}', "lone surrogate escape \\udc00"),
    ("lone surrogate in a key", b'{"\\udfff":1}', "lone surrogate escape \\udfff"),
    ("valid surrogate pair", b'{"a":"\\ud83d\\ude00","b":"\\uD83D\\uDE00"}', None),
    ("escaped backslash before ud800", b'{"a":"\\\\ud800"}', None),
    ("\\u0000 escape", b'{"a":"x\\u0000y"}', None),  # jsonb rejects it; see docs/input-limits.md
    ("non-ASCII text", '{"a":"straße ☃ 😀"}'.encode(), None),
    ("U+FEFF inside a string", '{"a":"\ufeff"}'.encode(), None),
    ("whitespace around", b' \t\r\n{"a":1}\n', None),
]
