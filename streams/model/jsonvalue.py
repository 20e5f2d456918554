"""Parsing and writing JSON with exact numbers, and decoding hostile event bytes safely.

Filters compare numbers as exact decimals (``9007199254740993`` is not
``9007199254740992``), so events and filters are parsed with ``Decimal`` for every number
that has a fraction or exponent, and written back without going through float.

:func:`load_event` is the one entry for event record values: it either returns a dict
that every later step can walk, match, write back with :func:`dumps` and encode as UTF-8,
or raises :class:`NotAJsonObject` whose text is the dead-letter reason. What it accepts
and rejects, and how that compares to PostgreSQL ``jsonb``: ``docs/input-limits.md``.

Two parsers give the same results: msgspec's decoder parses first (about twice as fast),
and whatever it refuses, for any reason, is parsed again by the standard library's C
scanner, whose outcome (value or rejection reason) is the answer. msgspec accepts only
text the standard library accepts too, with equal values (``tests/test_parse_equivalence.py``
compares them): its numbers without fraction or exponent are ``int(literal)`` (it refuses
integers of more than 4300 characters, or of more than ``sys.get_int_max_str_digits()``
digits), the others go through the same ``_parse_float`` with the same literal; it refuses
raw control characters in strings, NaN/Infinity, leading zeros, and every surrogate
escape that is not half of a high+low pair; it skips the same whitespace (space, tab, LF,
CR); duplicate keys keep the first position and the last value, as ``dict`` does.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import msgspec
import simplejson

DEFAULT_MAX_BYTES = 256 << 10
"""256 KiB, EventBridge's limit: an accepted event travels on inside a trigger and a job
command, with the job's state (up to 50,000 bytes), under Kafka's default 1 MB record limit."""
DEFAULT_MAX_DEPTH = 100
"""Nesting levels of arrays and objects; the top-level object is level 1."""
DEPTH_CEILING = 500
"""The highest ``max_depth`` allowed: the parser, the index walk and the encoders recurse
once per level, within Python's recursion limit (1000 frames, shared with the caller)."""

# PostgreSQL's numeric (which jsonb numbers are): up to 131072 digits before the decimal
# point and 16383 after it; beyond, "value overflows numeric format".
MAX_INTEGER_DIGITS = 131072
MAX_FRACTION_DIGITS = 16383


class NotAJsonObject(ValueError):
    """The bytes are not one acceptable JSON object; ``str()`` is the reason (short, and it
    echoes at most a few characters of the input)."""


@dataclass(frozen=True, slots=True)
class Limits:
    """What :func:`load_event` accepts: at most ``max_bytes`` bytes of record value, and
    arrays/objects nested at most ``max_depth`` levels (``{}`` is 1, ``{"a": []}`` is 2)."""

    max_bytes: int = DEFAULT_MAX_BYTES
    max_depth: int = DEFAULT_MAX_DEPTH

    def __post_init__(self) -> None:
        if self.max_bytes < 2:
            raise ValueError(f"max_bytes must be at least 2 (the size of {{}}), not {self.max_bytes}")
        if not 1 <= self.max_depth <= DEPTH_CEILING:
            raise ValueError(f"max_depth must be within 1..{DEPTH_CEILING}, not {self.max_depth}")


DEFAULT_LIMITS = Limits()


class _Rejected(ValueError):
    """Raised from inside the parser's hooks: a reason, not a syntax error."""


class _NotJson(_Rejected):
    """Raised from inside the parser's hooks: text that JSON does not allow."""


def _reason(exc: ValueError) -> str:
    if isinstance(exc, _Rejected) and not isinstance(exc, _NotJson):
        return str(exc)
    return f"not JSON: {str(exc)[:200]}"


# -- numbers ------------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise _NotJson(f"{name} is not a JSON number")


def _number_out_of_range(literal: str) -> _Rejected:
    shown = literal if len(literal) <= 24 else f"{literal[:10]}...({len(literal)} characters)"
    return _Rejected(
        f"number out of range: {shown} (at most {MAX_INTEGER_DIGITS} digits before the decimal point "
        f"and {MAX_FRACTION_DIGITS} after, as PostgreSQL numeric)"
    )


def _parse_float(literal: str) -> Decimal:
    """``parse_float``: an exact Decimal within numeric's range (JSON text with a fraction
    or an exponent)."""
    if len(literal) <= 32:
        if "e" not in literal and "E" not in literal:
            return Decimal(literal)  # the usual case: a short plain fraction is always in range
        if len(literal.lower().partition("e")[2].lstrip("+-")) <= 4:
            return Decimal(literal)  # at most 32 digits shifted at most 9999 places: in range
    try:
        value = Decimal(literal)
    except ArithmeticError:  # an exponent beyond what Decimal can hold
        raise _number_out_of_range(literal) from None
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)  # finite: JSON has no NaN literal
    if exponent < -MAX_FRACTION_DIGITS or (value and value.adjusted() >= MAX_INTEGER_DIGITS):
        raise _number_out_of_range(literal)
    return value


def _parse_big_int(literal: str) -> int | Decimal:
    """``parse_int`` when some integer has more digits than ``int`` reads from text
    (``sys.get_int_max_str_digits()``, 4300): those become exact Decimals, so that ``str``,
    ``json.dumps`` and the filters never meet an int they cannot print."""
    try:
        return int(literal)
    except ValueError:
        pass
    if len(literal) - literal.startswith("-") > MAX_INTEGER_DIGITS:
        raise _number_out_of_range(literal) from None
    return Decimal(literal)


# -- nesting depth, before parsing ----------------------------------------------------------

# Everything but brackets and quotes is deleted; "{" becomes "[" and "}" becomes "]" (one
# bracket kind is enough for depth).
_ONE_KIND = bytes.maketrans(b"{}", b"[]")
_NOT_STRUCTURE = bytes(sorted(set(range(256)) - set(b'[]{}"')))
_RUNS = re.compile(rb"\[+|\]+")


def _too_deep(data: bytes, max_depth: int) -> bool:
    """Whether arrays/objects nest more than ``max_depth`` levels, brackets inside strings
    not counted; without recursion and without a loop over characters in Python.

    The usual event has fewer brackets than ``max_depth`` (two ``count`` calls). Otherwise,
    in C: escaped backslashes and escaped quotes are deleted (pairs from the left, as JSON
    reads them), so every remaining quote opens or closes a string; all but brackets and
    quotes is deleted, then strings (now only quotes around the brackets they held); the
    brackets left are reduced by deleting innermost pairs (each pass is one level), and
    what remains is summed over runs of equal brackets. Text that is not JSON gets an
    answer too, never lower than the depth the parser reaches before it fails.
    """
    if data.count(b"[") + data.count(b"{") <= max_depth:
        return False
    if 0x5C in data:  # a backslash
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    brackets = data.translate(_ONE_KIND, _NOT_STRUCTURE)
    if 0x22 in brackets:  # quotes: drop the strings, usually all empty by now
        brackets = brackets.replace(b'""', b"")  # two quotes with nothing between: parity kept
        if 0x22 in brackets:
            brackets = b"".join(brackets.split(b'"')[::2])
    passes = 0
    while passes < 3 and b"[]" in brackets:
        brackets = brackets.replace(b"[]", b"")
        passes += 1
    if passes > max_depth:
        return True
    budget = max_depth - passes
    if brackets.count(b"[") <= budget:
        return False
    level = 0
    for run in _RUNS.findall(brackets):
        if run[0] == 0x5B:  # "["
            level += len(run)
            if level > budget:
                return True
        else:
            level -= len(run)  # below zero: unbalanced, the parser rejects it
    return False


# -- surrogates -----------------------------------------------------------------------------

# Every escape that is fine: a high+low surrogate pair, a \u escape of a non-surrogate, a
# one-character escape (\\ included, so an escaped backslash never starts a \u). Deleting
# them leaves "\u" only where a lone surrogate was.
_GOOD_ESCAPES = re.compile(
    rb"\\(?:u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|u(?![dD][89a-fA-F])[0-9a-fA-F]{4}|[^u])"
)


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _lone_surrogate(data: bytes) -> str | None:
    """The first ``\\uD800``-``\\uDFFF`` escape that is not half of a high+low pair."""
    if 0x5C not in data or _SURROGATE_ESCAPE.search(data) is None:  # no backslash: one memchr
        return None
    rest = _GOOD_ESCAPES.sub(b"", data)
    at = rest.find(b"\\u")
    return None if at < 0 else rest[at : at + 6].decode("ascii", "replace")


# -- parsing --------------------------------------------------------------------------------

# The standard library's C scanner, built once (json.loads would build a decoder per call,
# which costs as much as parsing a small event). Integers are ints, unless one has more
# digits than int() reads from text: then the second decoder parses the text again.
_DECODER = json.JSONDecoder(parse_float=_parse_float, parse_constant=_reject_constant)
_BIG_INT_DECODER = json.JSONDecoder(parse_float=_parse_float, parse_int=_parse_big_int,
                                    parse_constant=_reject_constant)

# msgspec's decoder (untyped: dict, list, str, int, bool, None, and _parse_float's
# Decimals): tried first; anything it raises sends the text to the scanners above.
_FAST_DECODER = msgspec.json.Decoder(float_hook=_parse_float)
_REFUSED = object()


def _fast_parse(raw: bytes) -> Any:
    """msgspec's value, or _REFUSED for anything it raises (the caller then parses with
    the scanner outside this except clause, so the scanner's error is not chained to it)."""
    try:
        return _FAST_DECODER.decode(raw)
    except Exception:
        return _REFUSED


def _parse(text: str) -> Any:
    """Exact numbers; raises _Rejected (a reason) or ValueError (a syntax error)."""
    try:
        return _DECODER.decode(text)
    except (_Rejected, json.JSONDecodeError):
        raise
    except ValueError:  # "Exceeds the limit (4300 digits) for integer string conversion"
        return _BIG_INT_DECODER.decode(text)


def loads(data: str | bytes, *, max_depth: int | None = None) -> Any:
    """Parse JSON with exact numbers (handlers, run results, states, files).

    Raises ValueError, and nothing else, for what :func:`load_event` rejects too: not
    UTF-8, not JSON, NaN/Infinity, numbers beyond PostgreSQL numeric, lone surrogates,
    nesting deeper than ``max_depth`` (when given; else deeper than the parser can
    recurse). Unlike :func:`load_event` it takes any JSON value, of any size, and skips a
    leading byte order mark."""
    return _loads(data, max_depth, fast=True)


def _loads_stdlib(data: str | bytes, max_depth: int | None = None) -> Any:
    """:func:`loads` with the standard library's scanner alone (what it was before msgspec;
    the reference of tests/test_parse_equivalence.py)."""
    return _loads(data, max_depth, fast=False)


def _loads(data: str | bytes, max_depth: int | None, fast: bool) -> Any:
    if isinstance(data, str):
        text = data
        try:
            raw = data.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("not Unicode text (a lone surrogate character)") from None
    else:
        raw = data
        text = data.decode("utf-8")  # UnicodeDecodeError is a ValueError
    if max_depth is not None and _too_deep(raw, max_depth):
        raise ValueError(f"nested too deeply: more than {max_depth} levels of arrays/objects")
    bom = text[:1] == "\ufeff"
    value = _fast_parse(raw[3:] if bom else raw) if fast else _REFUSED  # the BOM is 3 bytes of UTF-8
    if value is _REFUSED:
        try:
            value = _parse(text[1:] if bom else text)
        except RecursionError:
            raise ValueError("nested too deeply to parse") from None
    surrogate = _lone_surrogate(raw)
    if surrogate is not None:
        raise ValueError(f"lone surrogate escape {surrogate} in a string (not Unicode text)")
    return value


def load_event(data: bytes | None, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    """Decode a Kafka record value that must hold one JSON object (see
    :func:`load_event_text`)."""
    return load_event_text(data, limits)[0]


def load_event_text(data: bytes | None, limits: Limits = DEFAULT_LIMITS) -> tuple[dict[str, Any], str]:
    """Decode a Kafka record value that must hold one JSON object, with its text, or raise
    :class:`NotAJsonObject` with the reason.

    Checked in this order: null, size (``len(data)`` against ``limits.max_bytes``, before
    anything is decoded), empty, UTF-8, byte order mark, nesting depth (scanned without
    recursion, before parsing), JSON syntax, NaN/Infinity, number range, object, lone
    surrogate escapes.

    Accepted documents are safe downstream: nesting within ``limits.max_depth``, every
    string valid Unicode (``dumps(doc).encode("utf-8")`` works), every number exact
    (``int``, or ``Decimal`` for fractions, exponents and integers of more than 4300
    digits) and within PostgreSQL numeric's range. A duplicate key keeps its last value,
    as in jsonb.
    """
    return _load_event_text(data, limits, True)


def _load_event_text_stdlib(data: bytes | None, limits: Limits = DEFAULT_LIMITS) -> tuple[dict[str, Any], str]:
    """:func:`load_event_text` with the standard library's scanner alone (what it was
    before msgspec; the reference of tests/test_parse_equivalence.py)."""
    return _load_event_text(data, limits, False)


def _load_event_text(data: bytes | None, limits: Limits, fast: bool) -> tuple[dict[str, Any], str]:
    if data is None:
        raise NotAJsonObject("empty record value (null)")
    size = len(data)
    if size > limits.max_bytes:
        raise NotAJsonObject(f"event too large: {size} bytes, the limit is {limits.max_bytes}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NotAJsonObject(f"not UTF-8: {exc}") from None
    if not text:
        raise NotAJsonObject("not JSON: empty record value (0 bytes)")
    if text[0] == "\ufeff":
        raise NotAJsonObject("not JSON: starts with a byte order mark (U+FEFF)")
    if _too_deep(data, limits.max_depth):
        raise NotAJsonObject(f"nested too deeply: more than {limits.max_depth} levels of arrays/objects")
    value = _fast_parse(data) if fast else _REFUSED
    if value is _REFUSED:
        value = _stdlib_parse_event(text)
    if type(value) is not dict:
        raise NotAJsonObject(f"JSON {_json_kind(value)}, not an object")
    if 0x5C in data:  # a backslash: there may be \u escapes
        surrogate = _lone_surrogate(data)
        if surrogate is not None:
            raise NotAJsonObject(f"lone surrogate escape {surrogate} in a string (not Unicode text)")
    return value, text


def _stdlib_parse_event(text: str) -> Any:
    try:
        return _DECODER.decode(text)
    except (_Rejected, json.JSONDecodeError) as exc:
        raise NotAJsonObject(_reason(exc)) from None
    except ValueError:  # an integer of more than 4300 digits
        return _slow_parse(text)
    except RecursionError:  # not expected below DEPTH_CEILING; never let it out
        raise NotAJsonObject("nested too deeply to parse") from None


def _slow_parse(text: str) -> Any:
    try:
        return _BIG_INT_DECODER.decode(text)
    except ValueError as exc:
        raise NotAJsonObject(_reason(exc)) from None
    except RecursionError:
        raise NotAJsonObject("nested too deeply to parse") from None


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, Decimal)):
        return "number"
    return _KINDS.get(type(value), type(value).__name__)


_KINDS: dict[type, str] = {str: "string", list: "array", dict: "object"}


def load_object(data: bytes | None) -> dict[str, Any]:
    """:func:`load_event` with the default limits (256 KiB, 100 levels)."""
    return load_event(data, DEFAULT_LIMITS)


_BOUNDS = json.JSONDecoder()  # finds where each element ends; its values are thrown away
_SPACE = re.compile(r"[ \t\n\r]*")


def split_array(data: bytes, max_depth: int) -> list[bytes] | None:
    """The raw bytes of each element of a JSON array, for checking each one as an event
    (:func:`load_event_text`) without serializing it again; None when ``data`` is not a
    JSON array this can split (not an array, bad JSON, nested deeper than ``max_depth``
    counting the array, not UTF-8): parse it with :func:`loads` for the reason."""
    if _too_deep(data, max_depth):
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    at = _SPACE.match(text, 0).end()  # type: ignore[union-attr]
    if text[at:at + 1] != "[":
        return None
    at = _SPACE.match(text, at + 1).end()  # type: ignore[union-attr]
    out: list[bytes] = []
    if text[at:at + 1] == "]":
        at += 1
    else:
        while True:
            try:
                _, end = _BOUNDS.raw_decode(text, at)
            except (ValueError, RecursionError):
                return None
            out.append(text[at:end].encode("utf-8"))
            at = _SPACE.match(text, end).end()  # type: ignore[union-attr]
            if text[at:at + 1] == ",":
                at = _SPACE.match(text, at + 1).end()  # type: ignore[union-attr]
                continue
            if text[at:at + 1] == "]":
                at += 1
                break
            return None
    return out if _SPACE.match(text, at).end() == len(text) else None  # type: ignore[union-attr]


def dumps(value: Any) -> str:
    """Compact JSON that keeps Decimal values exact."""
    try:  # the standard library's C encoder is ~5x faster; it refuses Decimal
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    except TypeError:
        return simplejson.dumps(value, use_decimal=True, separators=(",", ":"), ensure_ascii=False)


__all__ = [
    "DEFAULT_LIMITS",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_DEPTH",
    "Limits",
    "NotAJsonObject",
    "dumps",
    "load_event",
    "load_object",
    "loads",
    "split_array",
]
