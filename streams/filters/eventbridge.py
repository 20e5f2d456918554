"""Amazon EventBridge event patterns, answered the way aws/event-ruler 2.0.1 answers them.

Pure: no Kafka, no Faust. Values are parsed JSON with exact numbers (``int`` or
``decimal.Decimal``, see ``streams.model.jsonvalue``; ``float`` is accepted too).

The module has three layers, all working on plain data:

* :func:`compile_pattern` validates a pattern and turns it into a :class:`CompiledPattern`:
  a list of *sub-rules* (one per ``$or`` branch), each a sorted list of
  ``(field name, value patterns, exists-false?)``. Value patterns are tuples
  (``("str", "x")``, ``("prefix", "ab")``, ``("range", lo, lo_open, hi, hi_open)``, ...).
  Invalid patterns raise :class:`PatternError`, whose text starts with the path of the
  offending part of the pattern.
* :meth:`CompiledPattern.matches` answers one event (used by the index to confirm its
  candidates).
* :func:`reference_match` is a deliberately plain second implementation, kept apart from
  the compiled one so the two (and the index) can be checked against each other.

Semantics measured on event-ruler (see ``docs/filters.md`` for the full list):

* a field's values are an OR; fields are ANDed; event arrays are flattened and any element
  may match, but values taken for one sub-rule must agree on the element of every event
  array they share (array consistency), ``exists: false`` included;
* numbers compare by value when they survive a round trip through a double
  (``BigDecimal.valueOf(double)`` equals the number), otherwise by spelling; ``numeric``
  only ever matches numbers that survive, and rejects other numbers in the pattern;
* ``exists`` sees leaves only (``{}``, ``[]`` and ``[{}]`` have none; ``null`` is one);
* a dot in a key is the same as nesting; a path given twice is overwritten, not ANDed;
* ``$or`` is an operator only as an array of at least two objects that use no operator
  name as a field; otherwise the whole pattern is read again with ``$or`` as a field name
  (event-ruler's fallback to its older compiler);
* an exact IP-address string matches other spellings of the same address.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal, localcontext
from typing import Any

__all__ = [
    "CompiledPattern",
    "Leaf",
    "NameTrie",
    "PatternDict",
    "PatternError",
    "SubRule",
    "compile_pattern",
    "extract",
    "flatten",
    "format_path",
    "make_predicate",
    "number_info",
    "parse_ip",
    "reference_match",
    "shared_predicate",
    "validate_pattern",
    "validated_pattern",
]

Path = tuple[str | int, ...]
ValuePattern = tuple[Any, ...]

OR_KEYWORD = "$or"
# Field names event-ruler refuses inside a ``$or`` branch (Constants.java).
RESERVED_IN_OR = frozenset(
    {
        "exactly",
        "equals-ignore-case",
        "prefix",
        "suffix",
        "anything-but",
        "exists",
        "wildcard",
        "numeric",
        "cidr",
        "=",
        "<",
        "<=",
        ">",
        ">=",
        "regex",
        "not-wildcard",
        "not-equals-ignore-case",
        "date-after",
        "date-on-or-after",
        "date-before",
        "date-on-or-before",
        "in-date-range",
        "ip-address-in-range",
        "ip-address-not-in-range",
    }
)
# A safety limit that event-ruler does not have: $or branches multiply.
MAX_SUBRULES = 4096

# -- errors -----------------------------------------------------------------------------

_PLAIN_KEY = re.compile(r"[A-Za-z_$@][A-Za-z0-9_$@-]*")


def format_path(path: Iterable[str | int]) -> str:
    """``detail.state[0].numeric``; keys that are not plain identifiers are quoted."""
    out = ""
    for step in path:
        if isinstance(step, int):
            out += f"[{step}]"
        elif _PLAIN_KEY.fullmatch(step):
            out += ("." if out else "") + step
        else:
            out += "[" + json.dumps(step, ensure_ascii=False) + "]"
    return out or "(pattern)"


class PatternError(ValueError):
    """A pattern EventBridge (event-ruler) rejects. ``str()`` is ``"<path>: <reason>"``."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{format_path(path)}: {reason}")


# -- Java behaviour the matcher depends on ----------------------------------------------


def java_split(text: str, sep: str) -> list[str]:
    """``String.split`` with a literal separator: trailing empty strings are dropped."""
    if text == "":
        return [""]
    parts = text.split(sep)
    while parts and parts[-1] == "":
        parts.pop()
    return parts


def java_order(name: str) -> bytes:
    """Sort key equal to Java's ``String.compareTo`` (UTF-16 code units)."""
    return name.encode("utf-16-be", "surrogatepass")


def rule_name(steps: tuple[str, ...], key: str) -> str:
    """event-ruler's ``Path.extendedName``: a leading empty step vanishes."""
    base = ".".join(steps)
    return f"{base}.{key}" if base else key


def step_used(step: str, used: frozenset[str]) -> bool:
    """event-ruler's ``isFieldStepUsed``: event keys no rule names are not read at all."""
    if step in used:
        return True
    if "." in step:
        return all(part in used for part in java_split(step, "."))
    return False


# -- numbers ----------------------------------------------------------------------------

_TWO_53 = 2**53


def _java_double_value(f: float) -> Decimal:
    """The value of ``BigDecimal.valueOf(f)``, i.e. of Java's ``Double.toString(f)`` (JDK 19+).

    That is Python's shortest round-trip form, except that a one-digit result competes
    with two-digit ones and the closest to the double wins (``4.9E-324``, not ``5E-324``).
    """
    shortest = Decimal(repr(f))
    if f != 0.0 and len(shortest.normalize().as_tuple().digits) == 1:
        two = format(f, ".1e")
        if float(two) == f:
            with localcontext() as ctx:
                ctx.prec = 1200
                exact = Decimal(f)
                if abs(Decimal(two) - exact) < abs(shortest - exact):
                    return Decimal(two)
    return shortest


def number_info(value: int | Decimal | float) -> tuple[float | None, str]:
    """``(double, spelling)``; the double is None when the number does not survive.

    A number survives when it is finite as a double and the double reads back as the same
    decimal value (event-ruler's ``ComparableNumber``). Zero of either sign is ``0.0``.
    The spelling stands for the JSON text: ``str`` of the exact value.
    """
    if isinstance(value, int):
        spell = str(value)
        if -_TWO_53 <= value <= _TWO_53:
            return float(value), spell
        try:
            f = float(value)
        except OverflowError:
            return None, spell
        return (f if _java_double_value(f) == value else None), spell
    if isinstance(value, Decimal):
        spell = str(value)
        if not value.is_finite():
            return None, spell
        f = float(value)
        if math.isinf(f):
            return None, spell
        if f == 0.0:
            return (0.0 if value == 0 else None), spell
        return (f if _java_double_value(f) == value else None), spell
    f = float(value)
    if not math.isfinite(f):
        return None, repr(f)
    return f + 0.0, repr(f)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, Decimal, float)) and not isinstance(value, bool)


def _comparable(value: Any, path: Path) -> float:
    f, _ = number_info(value)
    if f is None:
        raise PatternError(path, f"Cannot compare number : {_spell(value)}")
    return f + 0.0


def _spell(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if _is_number(value):
        return number_info(value)[1]
    return json.dumps(value, ensure_ascii=False, default=str)


# -- IP addresses -----------------------------------------------------------------------

_IPV4 = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+")
_IPV6 = re.compile(r"[0-9a-fA-F:]*:[0-9a-fA-F:]*")


def _looks_like_ip(text: str) -> bool:
    return bool(_IPV4.fullmatch(text) or _IPV6.fullmatch(text))


def parse_ip(text: str) -> tuple[int, int] | None:
    """``(bits, value)`` for an IPv4 (32) or IPv6 (128) literal, else None.

    As Java's ``InetAddress.getByName`` after event-ruler's regex check: IPv4 octets are
    decimal (leading zeros allowed, 15 characters at most), IPv6 is hex with ``::``, and
    an IPv4-mapped IPv6 address is the IPv4 address.
    """
    if _IPV4.fullmatch(text):
        if len(text) > 15:
            return None
        octets = [int(p) for p in text.split(".")]
        if any(o > 255 for o in octets):
            return None
        return 32, (octets[0] << 24) | (octets[1] << 16) | (octets[2] << 8) | octets[3]
    if _IPV6.fullmatch(text):
        try:
            address = ipaddress.IPv6Address(text)
        except ValueError:
            return None
        mapped = address.ipv4_mapped
        if mapped is not None:
            return 32, int(mapped)
        return 128, int(address)
    return None


def parse_cidr(text: str, path: Path) -> ValuePattern:
    """``("ip", bits, low, high)``: the whole network of the block. Host bits set in the
    address are cleared, as event-ruler does (``10.0.0.5/24`` covers ``10.0.0.0/24``)."""
    parts = java_split(text, "/")
    if len(parts) != 2:
        raise PatternError(path, "Malformed CIDR, one '/' required")
    if not re.fullmatch(r"[+-]?[0-9]+", parts[1]) or not -(2**31) <= int(parts[1]) < 2**31:
        raise PatternError(path, "Malformed CIDR, mask bits must be an integer")
    mask = int(parts[1])
    if mask < 0:
        raise PatternError(path, "Malformed CIDR, mask bits must not be negative")
    if not _looks_like_ip(parts[0]):
        raise PatternError(path, f"Nonstandard IP address: {parts[0]}")
    ip = parse_ip(parts[0])
    if ip is None:
        raise PatternError(path, f"Invalid IP address: {parts[0]}")
    bits, value = ip
    if bits == 32 and mask > 31:
        raise PatternError(path, "IPv4 mask bits must be < 32")
    if bits == 128 and mask > 127:
        raise PatternError(path, "IPv6 mask bits must be < 128")
    host = (1 << (bits - mask)) - 1
    return ("ip", bits, value & ~host, value | host)


# -- strings ----------------------------------------------------------------------------


def case_alternatives(text: str) -> tuple[tuple[str, ...], ...]:
    """For each character, its lower- and upper-case forms (event-ruler's
    equals-ignore-case: the pattern is mapped, the event is not folded)."""
    return tuple(tuple(dict.fromkeys((c.lower(), c.upper()))) for c in text)


def _alt_ends(alternatives: tuple[tuple[str, ...], ...], text: str) -> set[int]:
    """Positions of ``text`` where a concatenation of one alternative per step can end."""
    current = {0}
    for options in alternatives:
        following = set()
        for pos in current:
            for option in options:
                if text.startswith(option, pos):
                    following.add(pos + len(option))
        if not following:
            return following
        current = following
    return current


def eic_equal(alternatives: tuple[tuple[str, ...], ...], text: str) -> bool:
    return len(text) in _alt_ends(alternatives, text)


def eic_prefix(alternatives: tuple[tuple[str, ...], ...], text: str) -> bool:
    return bool(_alt_ends(alternatives, text))


def reverse_alternatives(alternatives: tuple[tuple[str, ...], ...]) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(o[::-1] for o in options) for options in reversed(alternatives))


def parse_wildcard(text: str, path: Path) -> tuple[str, ...]:
    """The literal segments between ``*``; ``\\*`` and ``\\\\`` are escapes."""
    segments: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "*":
            if i + 1 < len(text) and text[i + 1] == "*":
                raise PatternError(path, f"Consecutive wildcard characters at pos {i + 1}")
            segments.append("".join(current))
            current = []
        elif c == "\\":
            if i + 1 < len(text) and text[i + 1] in "*\\":
                current.append(text[i + 1])
                i += 1
            else:
                raise PatternError(path, f"Invalid escape character at pos {i + 1}")
        else:
            current.append(c)
        i += 1
    segments.append("".join(current))
    return tuple(segments)


def wildcard_match(segments: tuple[str, ...], text: str) -> bool:
    if len(segments) == 1:
        return text == segments[0]
    first, last = segments[0], segments[-1]
    if len(text) < len(first) + len(last) or not text.startswith(first) or not text.endswith(last):
        return False
    pos, end = len(first), len(text) - len(last)
    for middle in segments[1:-1]:
        found = text.find(middle, pos, end)
        if found < 0:
            return False
        pos = found + len(middle)
    return True


# -- the compiled form ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SubRule:
    """One ``$or`` branch: ``(name, value patterns, exists-false?)`` in event-ruler's key order."""

    fields: tuple[tuple[str, tuple[ValuePattern, ...], bool], ...]


@dataclass(slots=True)
class CompiledPattern:
    source: dict[str, Any]
    subrules: tuple[SubRule, ...]
    used_steps: frozenset[str]
    _predicates: list[list[tuple[str, tuple[Callable[[Leaf], bool], ...], bool]]] | None = None
    _trie: NameTrie | bool | None = False

    def matches(self, event: Any) -> bool:
        """Does the event match (any sub-rule of) the pattern?"""
        if not isinstance(event, dict):
            return False
        if self._predicates is None:
            self._predicates = [
                [_shared((name, tuple(shared_predicate(vp) for vp in vps), absent)) for name, vps, absent in sr.fields]
                for sr in self.subrules
            ]
            self._trie = NameTrie.shared(name for sr in self.subrules for name, _, _ in sr.fields)
        # Names without an empty step see exactly their own leaves: walk only those paths.
        # Others depend on event-ruler's step pruning, reproduced by flatten().
        if isinstance(self._trie, NameTrie):
            fields, arrays = extract(event, self._trie)
            if not arrays:
                for specs in self._predicates:
                    if _all_fields(specs, fields):
                        return True
                return False
        else:
            fields = flatten(event, self.used_steps)
        return any(_search(specs, 0, _NO_ARRAYS, fields) for specs in self._predicates)


class NameTrie:
    """Flattened field names split into steps, to read only those leaves of an event."""

    __slots__ = ("children", "name")

    def __init__(self) -> None:
        self.children: dict[str, NameTrie] = {}
        self.name: str | None = None

    @classmethod
    def of(cls, names: Iterable[str]) -> NameTrie | None:
        """None when a name has an empty step (``a..b``, ``.a``, ``a.``, ``""``)."""
        root = cls()
        for name in names:
            parts = name.split(".")
            if "" in parts:
                return None
            insert_path(root, parts, cls).name = name
        return root

    @classmethod
    def shared(cls, names: Iterable[str]) -> NameTrie | None:
        """:meth:`of`, one instance per set of names (handlers often name the same fields)."""
        key = frozenset(names)
        if key not in _SHARED_TRIES:
            if len(_SHARED_TRIES) > 4096:
                _SHARED_TRIES.clear()
            _SHARED_TRIES[key] = cls.of(key)
        return _SHARED_TRIES[key]

    def follow(self, key: str) -> NameTrie | None:
        return follow_key(self, key)


def insert_path(root: Any, parts: Iterable[str], make: Callable[[], Any]) -> Any:
    """The node at ``parts`` below a trie root (anything with ``children``), made as needed."""
    node = root
    for part in parts:
        child = node.children.get(part)
        if child is None:
            child = node.children[part] = make()
        node = child
    return node


def follow_key(node: Any, key: str) -> Any:
    """The child of a trie node (anything with ``children``) an event key leads to; a dotted
    key takes one step per part, as EventBridge treats dots as nesting."""
    child = node.children.get(key)
    if child is None and "." in key:
        child = node
        for part in key.split("."):
            child = child.children.get(part)
            if child is None:
                return None
    return child


_SHARED_TRIES: dict[frozenset[str], NameTrie | None] = {}


def extract(event: dict[str, Any], trie: NameTrie) -> tuple[dict[str, list[Leaf]], bool]:
    """The leaves of ``event`` whose names are in ``trie`` (same result as :func:`flatten`
    for those names, without visiting the rest of the event), and whether an array was
    crossed on the way."""
    out: dict[str, list[Leaf]] = {}
    arrays = _extract_at(event, trie, _NO_ARRAYS, out, 0)
    return out, arrays > 0


def _extract_at(value: Any, node: NameTrie, membership: dict[int, int], out: dict[str, list[Leaf]],
                arrays: int) -> int:
    """:func:`extract` below ``node``; ``arrays`` numbers the arrays met so far (each array
    its own id, in visiting order). Returns the count after this subtree. (Module-level
    functions, not closures: the compiled matcher calls them natively.)"""
    if isinstance(value, dict):
        children = node.children
        if children:
            for key, sub in value.items():
                child = children.get(key)
                if child is None:
                    if "." not in key:
                        continue
                    child = node.follow(key)
                    if child is None:
                        continue
                if child.children or isinstance(sub, list):
                    arrays = _extract_at(sub, child, membership, out, arrays)
                elif child.name is not None and not isinstance(sub, dict):
                    _extract_add(out, child.name, sub, membership)
    elif isinstance(value, list):
        array_id = arrays
        arrays += 1
        for index, element in enumerate(value):
            if isinstance(element, (dict, list)):
                arrays = _extract_at(element, node, {**membership, array_id: index}, out, arrays)
            elif node.name is not None:
                _extract_add(out, node.name, element, membership)
    elif node.name is not None:
        _extract_add(out, node.name, value, membership)
    return arrays


def _extract_add(out: dict[str, list[Leaf]], name: str, value: Any, membership: dict[int, int]) -> None:
    bucket = out.get(name)
    if bucket is None:
        out[name] = [Leaf(value, membership)]
    else:
        bucket.append(Leaf(value, membership))


def _all_fields(
    specs: list[tuple[str, tuple[Callable[[Leaf], bool], ...], bool]], fields: dict[str, list[Leaf]]
) -> bool:
    """A sub-rule against leaves that sit in no array (no consistency to keep)."""
    for name, predicates, absent in specs:
        leaves = fields.get(name)
        if not leaves:
            if absent:
                continue
            return False
        if not _any_leaf_meets(leaves, predicates):
            return False
    return True


def _any_leaf_meets(leaves: list[Leaf], predicates: tuple[Callable[[Leaf], bool], ...]) -> bool:
    for leaf in leaves:
        for p in predicates:
            if p(leaf):
                return True
    return False


def _search(
    specs: list[tuple[str, tuple[Callable[[Leaf], bool], ...], bool]],
    i: int,
    membership: dict[int, int],
    fields: dict[str, list[Leaf]],
) -> bool:
    if i == len(specs):
        return True
    name, predicates, absent = specs[i]
    leaves = fields.get(name, ())
    if absent and not any(_consistent(membership, leaf.m) for leaf in leaves):
        if _search(specs, i + 1, membership, fields):
            return True
    for leaf in leaves:
        if _consistent(membership, leaf.m) and any(p(leaf) for p in predicates):
            merged = {**membership, **leaf.m} if leaf.m else membership
            if _search(specs, i + 1, merged, fields):
                return True
    return False


def _consistent(membership: dict[int, int], other: dict[int, int]) -> bool:
    for array, index in other.items():
        if membership.get(array, index) != index:
            return False
    return True


_NO_ARRAYS: dict[int, int] = {}

# -- events -----------------------------------------------------------------------------

KIND_STR, KIND_NUM, KIND_LIT = 0, 1, 2


class Leaf:
    """One leaf value of a flattened event and the array elements it sits in."""

    __slots__ = ("_ip", "f", "kind", "m", "s", "spell")

    def __init__(self, value: Any, membership: dict[int, int]) -> None:
        self.m = membership
        self._ip: tuple[int, int] | bool | None = False
        self.f: float | None = None
        self.spell = ""
        if isinstance(value, str):
            self.kind, self.s = KIND_STR, value
        elif value is None or isinstance(value, bool):
            self.kind, self.s = KIND_LIT, ("null" if value is None else "true" if value else "false")
        else:
            self.kind, self.s = KIND_NUM, ""
            self.f, self.spell = number_info(value)

    @property
    def ip(self) -> tuple[int, int] | None:
        if self._ip is False:
            self._ip = parse_ip(self.s) if self.kind == KIND_STR else None
        return self._ip  # type: ignore[return-value]


def flatten(event: dict[str, Any], used: frozenset[str] | None = None) -> dict[str, list[Leaf]]:
    """event-ruler's ``Event``: leaf name -> leaves. ``used`` (the steps the rule names)
    prunes keys exactly as ``isFieldStepUsed`` does; None keeps everything."""
    out: dict[str, list[Leaf]] = {}
    arrays = [0]

    def add(name: str, value: Any, membership: dict[int, int]) -> None:
        leaf = Leaf(value, membership)
        bucket = out.get(name)
        if bucket is None:
            out[name] = [leaf]
        else:
            bucket.append(leaf)

    def walk_object(obj: dict[str, Any], prefix: str | None, membership: dict[int, int]) -> None:
        for key, value in obj.items():
            if used is not None and not step_used(key, used):
                continue
            name = key if prefix is None else f"{prefix}.{key}"
            if isinstance(value, dict):
                walk_object(value, name, membership)
            elif isinstance(value, list):
                walk_array(value, name, membership)
            else:
                add(name, value, membership)

    def walk_array(arr: list[Any], name: str, membership: dict[int, int]) -> None:
        array_id = arrays[0]
        arrays[0] += 1
        for index, element in enumerate(arr):
            if isinstance(element, dict):
                walk_object(element, name, {**membership, array_id: index})
            elif isinstance(element, list):
                walk_array(element, name, {**membership, array_id: index})
            else:
                add(name, element, membership)

    walk_object(event, None, _NO_ARRAYS)
    return out


# -- value predicates (compiled) --------------------------------------------------------

# Handlers repeat the same value patterns; sharing their predicates keeps them cache-hot.
_PREDICATES: dict[ValuePattern, Callable[[Leaf], bool]] = {}
_SPECS: dict[Any, Any] = {}


def shared_predicate(vp: ValuePattern) -> Callable[[Leaf], bool]:
    """:func:`make_predicate`, one function per distinct value pattern."""
    predicate = _PREDICATES.get(vp)
    if predicate is None:
        if len(_PREDICATES) > 65536:
            _PREDICATES.clear()
        predicate = _PREDICATES[vp] = make_predicate(vp)
    return predicate


def _shared(spec: Any) -> Any:
    found = _SPECS.get(spec)
    if found is None:
        if len(_SPECS) > 65536:
            _SPECS.clear()
        found = _SPECS[spec] = spec
    return found


def make_predicate(vp: ValuePattern) -> Callable[[Leaf], bool]:
    """A function ``Leaf -> bool`` for one value pattern."""
    kind = vp[0]
    if kind == "str":
        s = vp[1]
        return lambda leaf: leaf.kind == KIND_STR and leaf.s == s
    if kind == "num":
        f, spell = vp[1], vp[2]
        if f is None:
            return lambda leaf: leaf.kind == KIND_NUM and leaf.f is None and leaf.spell == spell
        return lambda leaf: leaf.kind == KIND_NUM and (leaf.f == f or (leaf.f is None and leaf.spell == spell))
    if kind == "lit":
        s = vp[1]
        return lambda leaf: leaf.kind == KIND_LIT and leaf.s == s
    if kind == "ip":
        bits, low, high = vp[1], vp[2], vp[3]

        def ip_pred(leaf: Leaf) -> bool:
            ip = leaf.ip
            return ip is not None and ip[0] == bits and low <= ip[1] <= high

        return ip_pred
    if kind == "prefix":
        p = vp[1]
        return lambda leaf: leaf.kind == KIND_STR and (leaf.s + '"').startswith(p)
    if kind == "suffix":
        p = vp[1]
        return lambda leaf: leaf.kind == KIND_STR and ('"' + leaf.s).endswith(p)
    if kind == "eic":
        alts = case_alternatives(vp[1])
        return lambda leaf: leaf.kind == KIND_STR and eic_equal(alts, leaf.s)
    if kind == "prefix_eic":
        alts = case_alternatives(vp[1])
        return lambda leaf: leaf.kind == KIND_STR and eic_prefix(alts, leaf.s + '"')
    if kind == "suffix_eic":
        ralts = reverse_alternatives(case_alternatives(vp[1]))
        return lambda leaf: leaf.kind == KIND_STR and eic_prefix(ralts, ('"' + leaf.s)[::-1])
    if kind == "wildcard":
        segments = vp[2]
        return lambda leaf: leaf.kind == KIND_STR and wildcard_match(segments, leaf.s)
    if kind == "numeq":
        f = vp[1]
        return lambda leaf: leaf.kind == KIND_NUM and leaf.f == f
    if kind == "range":
        low, low_open, high, high_open = vp[1], vp[2], vp[3], vp[4]

        def range_pred(leaf: Leaf) -> bool:
            f = leaf.f
            if leaf.kind != KIND_NUM or f is None:
                return False
            if f < low or (low_open and f == low):
                return False
            return not (f > high or (high_open and f == high))

        return range_pred
    if kind == "exists":
        return lambda leaf: True
    if kind == "ab_str":
        values = vp[1]
        return lambda leaf: not (leaf.kind == KIND_STR and leaf.s in values)
    if kind == "ab_num":
        numbers = vp[1]
        return lambda leaf: not (leaf.kind == KIND_NUM and leaf.f is not None and leaf.f in numbers)
    if kind == "ab_prefix":
        prefixes = vp[1]
        return lambda leaf: not (leaf.kind == KIND_STR and (leaf.s + '"').startswith(prefixes))
    if kind == "ab_suffix":
        suffixes = vp[1]
        return lambda leaf: not (leaf.kind == KIND_STR and ('"' + leaf.s).endswith(suffixes))
    if kind == "ab_eic":
        all_alts = tuple(case_alternatives(v) for v in vp[1])
        return lambda leaf: not (leaf.kind == KIND_STR and any(eic_equal(a, leaf.s) for a in all_alts))
    if kind == "ab_wildcard":
        all_segments = tuple(segs for _, segs in vp[1])
        return lambda leaf: not (leaf.kind == KIND_STR and any(wildcard_match(s, leaf.s) for s in all_segments))
    raise AssertionError(f"unknown value pattern {kind}")


# -- compiling --------------------------------------------------------------------------

Rules = list[dict[str, list[ValuePattern]]]


def validate_pattern(pattern: Any) -> None:
    """Raise :class:`PatternError` when EventBridge (event-ruler) rejects the pattern."""
    compile_pattern(pattern)


class PatternDict(dict):  # type: ignore[type-arg]
    """A validated pattern: the same JSON object, with its compiled form attached."""

    compiled: CompiledPattern


def validated_pattern(pattern: dict[str, Any]) -> PatternDict:
    """Validate (raising :class:`PatternError`) and keep the compiled form with the pattern."""
    result = PatternDict(pattern)
    result.compiled = compile_pattern(result)
    return result


def compile_pattern(pattern: Any) -> CompiledPattern:
    """Validate and compile a pattern. Like event-ruler's ``addRule``: read it with ``$or``
    as an operator; if that fails, read it again with ``$or`` as a plain field name, and
    report that second reading's error if it fails too."""
    try:
        rules = _Compiler(with_or=True).compile(pattern)
    except PatternError:
        rules = _Compiler(with_or=False).compile(pattern)
    subrules = []
    used: set[str] = set()
    for rule in rules:
        names = sorted(rule, key=java_order)
        fields = []
        for name in names:
            vps = rule[name]
            absent = any(vp[0] == "absent" for vp in vps)
            fields.append((name, tuple(vp for vp in vps if vp[0] != "absent"), absent))
            used.update(java_split(name, "."))
        subrules.append(SubRule(tuple(fields)))
    return CompiledPattern(pattern, tuple(subrules), frozenset(used))


class _Compiler:
    """event-ruler's JsonRuleCompiler (``with_or``) or RuleCompiler, on parsed JSON."""

    def __init__(self, with_or: bool) -> None:
        self.with_or = with_or

    def compile(self, pattern: Any) -> Rules:
        if not isinstance(pattern, dict):
            raise PatternError((), "Filter is not an object")
        rules: Rules = []
        self._object(rules, (), pattern, (), in_or=False)
        return rules

    def _object(self, rules: Rules, steps: tuple[str, ...], obj: dict[str, Any], path: Path, in_or: bool) -> None:
        if not obj:
            raise PatternError(path, "Empty objects are not allowed")
        for key, value in obj.items():
            where = (*path, key)
            if self.with_or and key == OR_KEYWORD:
                self._or(rules, steps, value, where)
                continue
            if in_or and key in RESERVED_IN_OR:
                raise PatternError(where, f"{key} is Ruler reserved fieldName which cannot be used inside $or.")
            if isinstance(value, dict):
                self._object(rules, (*steps, key), value, where, in_or)
            elif isinstance(value, list):
                self._values(rules, rule_name(steps, key), value, where)
            else:
                raise PatternError(where, f'"{key}" must be an object or an array')

    def _or(self, rules: Rules, steps: tuple[str, ...], members: Any, path: Path) -> None:
        before = [dict(r) for r in rules]
        rules.clear()
        if not isinstance(members, list):
            raise PatternError(path, "It must be an Array followed with $or.")
        for index, member in enumerate(members):
            if not isinstance(member, dict):
                raise PatternError((*path, index), "Only JSON object is allowed in array of $or relationship.")
            branch = [dict(r) for r in before] or [{}]
            self._object(branch, steps, member, (*path, index), in_or=True)
            rules.extend(branch)
            if len(rules) > MAX_SUBRULES:
                raise PatternError(path, f"more than {MAX_SUBRULES} $or combinations")
        if len(members) < 2:
            raise PatternError(path, "There must have at least 2 Objects in $or relationship.")

    def _values(self, rules: Rules, name: str, values: list[Any], path: Path) -> None:
        patterns: list[ValuePattern] = []
        for index, value in enumerate(values):
            where = (*path, index)
            if isinstance(value, dict):
                patterns.append(_match_expression(value, where))
            elif isinstance(value, str):
                ip = parse_ip(value)
                patterns.append(("ip", ip[0], ip[1], ip[1]) if ip is not None else ("str", value))
            elif isinstance(value, bool) or value is None:
                patterns.append(("lit", _spell(value)))
            elif _is_number(value):
                f, spell = number_info(value)
                patterns.append(("num", f, spell))
            else:
                raise PatternError(where, "Match value must be String, number, true, false, or null")
        if not patterns:
            raise PatternError(path, "Empty arrays are not allowed")
        if not rules:
            rules.append({})
        for rule in rules:
            rule[name] = patterns


def _single_key(expr: dict[str, Any], path: Path, message: str = "Only one key allowed in match expression") -> None:
    if len(expr) > 1:
        raise PatternError((*path, list(expr)[1]), message)


def _match_expression(expr: dict[str, Any], path: Path) -> ValuePattern:
    if not expr:
        raise PatternError(path, "Match expression name not found")
    op, value = next(iter(expr.items()))
    where = (*path, op)
    if op == "exactly":
        if not isinstance(value, str):
            raise PatternError(where, "exact match pattern must be a string")
        _single_key(expr, path)
        return ("str", value)
    if op in ("prefix", "suffix"):
        if isinstance(value, dict):
            if not value:
                raise PatternError(where, f"{op.capitalize()} expression name not found")
            inner, text = next(iter(value.items()))
            if inner != "equals-ignore-case":
                raise PatternError((*where, inner), f"Unsupported {op} pattern: {inner}")
            if not isinstance(text, str):
                raise PatternError((*where, inner), "equals-ignore-case match pattern must be a string")
            _single_key(value, where)
            _single_key(expr, path)
            return (f"{op}_eic", text)
        if not isinstance(value, str):
            raise PatternError(where, f"{op} match pattern must be a string")
        _single_key(expr, path)
        return (op, value)
    if op == "equals-ignore-case":
        if not isinstance(value, str):
            raise PatternError(where, "equals-ignore-case match pattern must be a string")
        _single_key(expr, path)
        return ("eic", value)
    if op == "wildcard":
        if not isinstance(value, str):
            raise PatternError(where, "wildcard match pattern must be a string")
        segments = parse_wildcard(value, where)
        _single_key(expr, path)
        return ("wildcard", value, segments)
    if op == "numeric":
        if not isinstance(value, list):
            raise PatternError(where, "Value of numeric must be an array.")
        result = _numeric(value, where)
        _single_key(expr, path, "Too many elements in numeric expression")
        return result
    if op == "exists":
        if value is not True and value is not False:
            raise PatternError(where, "exists match pattern must be either true or false.")
        _single_key(expr, path)
        return ("exists",) if value else ("absent",)
    if op == "cidr":
        if not isinstance(value, str):
            raise PatternError(where, "prefix match pattern must be a string")
        result = parse_cidr(value, where)
        _single_key(expr, path)
        return result
    if op == "anything-but":
        result = _anything_but(value, where)
        _single_key(expr, path)
        return result
    raise PatternError(where, f"Unrecognized match type {op}")


_AB_INNER = {"equals-ignore-case": "ab_eic", "prefix": "ab_prefix", "suffix": "ab_suffix", "wildcard": "ab_wildcard"}


def _anything_but(value: Any, path: Path) -> ValuePattern:
    kind = "ab"
    where = path
    if isinstance(value, dict):
        if not value:
            raise PatternError(path, "Anything-But expression name not found")
        inner_op, inner_value = next(iter(value.items()))
        if inner_op not in _AB_INNER:
            raise PatternError((*path, inner_op), f"Unsupported anything-but pattern: {inner_op}")
        kind = _AB_INNER[inner_op]
        where = (*path, inner_op)
        _single_key(value, path)
        value = inner_value
    if not (isinstance(value, (list, str)) or _is_number(value)):
        raise PatternError(where, "Value of anything-but must be an array or single string/number value.")
    items = value if isinstance(value, list) else [value]
    if kind == "ab":
        strings = [v for v in items if isinstance(v, str)]
        numbers = [v for v in items if _is_number(v)]
        if len(strings) + len(numbers) != len(items):
            bad = next(i for i, v in enumerate(items) if not isinstance(v, str) and not _is_number(v))
            raise PatternError(
                (*where, bad) if isinstance(value, list) else where,
                "Inside anything but list, start|null|boolean is not supported.",
            )
        if (strings and numbers) or not items:
            raise PatternError(
                where, "Inside anything but list, either all values are number or string, mixed type is not supported"
            )
        if numbers:
            return ("ab_num", frozenset(_comparable(v, where) for v in numbers))
        return ("ab_str", frozenset(strings))
    texts: list[str] = []
    for index, item in enumerate(items):
        at = (*where, index) if isinstance(value, list) else where
        if not isinstance(item, str):
            if kind == "ab_eic":
                reason = "Inside anything-but/equals-ignore-case list, number|start|null|boolean is not supported."
            elif kind == "ab_wildcard":
                reason = "wildcard match pattern must be a string"
            else:
                reason = "prefix/suffix match pattern must be a string"
            raise PatternError(at, reason)
        if kind in ("ab_prefix", "ab_suffix") and item == "":
            raise PatternError(at, "Null prefix/suffix not allowed")
        texts.append(item)
    unique = tuple(dict.fromkeys(texts))
    if kind == "ab_wildcard":
        return ("ab_wildcard", tuple((t, parse_wildcard(t, where)) for t in unique))
    return (kind, unique)


def _numeric(items: list[Any], path: Path) -> ValuePattern:
    def at(i: int) -> Path:
        return (*path, i)

    def text(i: int) -> str:
        return _spell(items[i]) if i < len(items) else "]"

    if not items or not isinstance(items[0], str):
        raise PatternError(at(0), f"Invalid member in numeric match: {text(0)}")
    op = items[0]
    if op not in ("=", ">=", ">", "<=", "<"):
        raise PatternError(at(0), f"Unrecognized numeric range operator: {op}")
    if len(items) < 2 or not _is_number(items[1]):
        raise PatternError(at(1), f"Value of {'equals' if op == '=' else op} must be numeric")
    value = _comparable(items[1], at(1))
    if op == "=":
        if len(items) > 2:
            raise PatternError(at(2), "Too many elements in numeric expression")
        return ("numeq", value)
    if op in ("<", "<="):
        if len(items) > 2:
            raise PatternError(at(2), "Too many elements in numeric expression")
        return ("range", -math.inf, False, value, op == "<")
    if len(items) == 2:
        return ("range", value, op == ">", math.inf, False)
    if not isinstance(items[2], str):
        raise PatternError(at(2), f"Bad value in numeric range: {text(2)}")
    op2 = items[2]
    if op2 not in ("<", "<="):
        raise PatternError(at(2), f"Bad numeric range operator: {op2}")
    if len(items) < 4 or not _is_number(items[3]):
        raise PatternError(at(3), f"Value of {op2} must be numeric")
    if len(items) > 4:
        raise PatternError(at(4), "Too many terms in numeric range expression")
    top = _comparable(items[3], at(3))
    if not value < top:
        raise PatternError(path, "Bottom must be less than top")
    return ("range", value, op == ">", top, op2 == "<")


# -- the deliberately plain reference ---------------------------------------------------


def reference_match(pattern: dict[str, Any], event: Any) -> bool:
    """Straightforward evaluation, no precompiled predicates, no pruning tricks: every
    leaf of the event with its full key path, visibility decided per leaf, and an
    exhaustive search over the choices of one leaf per field."""
    compiled = compile_pattern(pattern)
    if not isinstance(event, dict):
        return False
    leaves: list[tuple[str, Any, dict[int, int]]] = []
    counter = iter(range(1 << 62))

    def walk(value: Any, steps: tuple[str, ...], elements: dict[int, int]) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, (*steps, k), elements)
        elif isinstance(value, list):
            array = next(counter)
            for i, v in enumerate(value):
                walk(v, steps, {**elements, array: i} if isinstance(v, (dict, list)) else elements)
        elif all(step_used(s, compiled.used_steps) for s in steps):
            leaves.append((".".join(steps), value, elements))

    walk(event, (), {})

    def fits(chosen: dict[int, int], elements: dict[int, int]) -> bool:
        return all(chosen.get(a, i) == i for a, i in elements.items())

    def search(fields: tuple[tuple[str, tuple[ValuePattern, ...], bool], ...], chosen: dict[int, int]) -> bool:
        if not fields:
            return True
        (name, vps, absent), rest = fields[0], fields[1:]
        named = [(v, e) for n, v, e in leaves if n == name]
        if absent and all(not fits(chosen, e) for _, e in named) and search(rest, chosen):
            return True
        return any(
            fits(chosen, e) and any(_reference_value(vp, v) for vp in vps) and search(rest, {**chosen, **e})
            for v, e in named
        )

    return any(search(sr.fields, {}) for sr in compiled.subrules)


def _reference_value(vp: ValuePattern, value: Any) -> bool:
    kind = vp[0]
    is_str = isinstance(value, str)
    is_num = _is_number(value)
    if kind == "exists":
        return True
    if kind.startswith("ab_"):
        if kind == "ab_num":
            return not (is_num and number_info(value)[0] in vp[1])
        if not is_str:
            return True
        if kind == "ab_str":
            return value not in vp[1]
        if kind == "ab_prefix":
            return not any(f'{value}"'.startswith(p) for p in vp[1])
        if kind == "ab_suffix":
            return not any(f'"{value}'.endswith(p) for p in vp[1])
        if kind == "ab_eic":
            return not any(_reference_eic(p, value) for p in vp[1])
        return not any(re.fullmatch(_wildcard_regex(segs), value, re.S) for _, segs in vp[1])
    if kind == "lit":
        return (value is None and vp[1] == "null") or (isinstance(value, bool) and vp[1] == json.dumps(value))
    if kind in ("num", "numeq", "range"):
        if not is_num:
            return False
        f, spell = number_info(value)
        if kind == "num":
            return (vp[1] is not None and f == vp[1]) or (f is None and spell == vp[2])
        if kind == "numeq":
            return f is not None and f == vp[1]
        if f is None:
            return False
        above = f > vp[1] if vp[2] else f >= vp[1]
        below = f < vp[3] if vp[4] else f <= vp[3]
        return above and below
    if not is_str:
        return False
    if kind == "str":
        return value == vp[1]
    if kind == "ip":
        ip = parse_ip(value)
        return ip is not None and ip[0] == vp[1] and vp[2] <= ip[1] <= vp[3]
    if kind == "prefix":
        return f'"{value}"'.startswith('"' + vp[1])
    if kind == "suffix":
        return f'"{value}"'.endswith(vp[1] + '"')
    if kind == "eic":
        return _reference_eic(vp[1], value)
    if kind == "prefix_eic":
        return any(_reference_eic(vp[1], f'{value}"'[:n]) for n in range(len(value) + 2))
    if kind == "suffix_eic":
        text = f'"{value}'
        return any(_reference_eic(vp[1], text[n:]) for n in range(len(text) + 1))
    if kind == "wildcard":
        return re.fullmatch(_wildcard_regex(vp[2]), value, re.S) is not None
    raise AssertionError(kind)


def _reference_eic(pattern: str, text: str) -> bool:
    regex = "".join("(?:" + "|".join(re.escape(o) for o in {c.lower(), c.upper()}) + ")" for c in pattern)
    return re.fullmatch(regex, text, re.S) is not None


def _wildcard_regex(segments: tuple[str, ...]) -> str:
    return ".*".join(re.escape(s) for s in segments)
