"""The handler index: which handlers fire for an event, at a cost set by the event's fields.

Pure: no Kafka, no Faust. ``compile(handlers) -> Index``; ``index.match(event) -> [Match]``;
``put``/``remove`` change one handler without touching the others.

How it works (the approach of event-ruler and quamina, in Python data structures):

* every enabled handler is reduced to *anchors*: conditions the event must meet for the
  handler to have any chance. A ``match`` (jsonb) filter gives one exact anchor per
  scalar it contains (``(key path, value)``); a ``pattern`` gives, for each ``$or``
  branch, the value patterns of one field the branch needs. The cheapest anchor set is
  kept (exact values first, then the least crowded), so a handler normally sits under
  one exact key;
* anchors live in per-field value indexes: hash maps for exact values (numbers by exact
  value), maps keyed by each registered prefix/suffix length, case-folded keys for
  ``equals-ignore-case``, network buckets for CIDRs, a sorted interval list for numeric
  ranges, and short lists for operators that match most values (``anything-but``,
  ``exists``);
* ``match(event)`` walks the event once along a trie of the anchored paths (keys no
  anchor uses are skipped), looks each reached leaf up, and only the handlers found there
  are checked in full (jsonb containment, the compiled EventBridge pattern, parameter
  paths); an anchor that alone proves its part (a one-field branch, a one-scalar match)
  skips that part's check;
* crowded exact buckets, and anchors that keep firing for handlers that then fail, make
  their handlers move to a better anchor: ``match`` may update the index, so use one index
  per thread.

A handler with no anchor at all (``match: {}`` without a pattern, or only
``exists: false`` fields) is checked on every event. See ``docs/filters.md``.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Iterable
from typing import Any

from streams.filters import eventbridge as eb
from streams.filters.jsonb import ARRAY_STEP, compile_contains, contains, required_leaves, scalar_key
from streams.model.handlers import Handler, ParamPath, parse_handler

__all__ = ["Index", "Match", "compile", "extract", "extract_params", "split_path"]

_MISSING = object()


class Match:
    """A handler that fires for an event, with its parameters. A plain class, not a
    dataclass: the compiled matcher (``streams/native.py``) builds it natively, where a
    dataclass's generated ``__init__`` stays interpreted (5% of a match)."""

    __slots__ = ("handler", "params")

    def __init__(self, handler: Handler, params: dict[str, Any]) -> None:
        self.handler = handler
        self.params = params

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Match) and self.handler == other.handler and self.params == other.params

    __hash__ = None  # type: ignore[assignment]  # params is a dict

    def __repr__(self) -> str:
        return f"Match(handler={self.handler!r}, params={self.params!r})"


# -- parameters -------------------------------------------------------------------------


def split_path(path: ParamPath) -> list[str | int]:
    if isinstance(path, list):
        return list(path)
    return [int(p) if p.isdigit() else p for p in path.split(".")]


def extract(event: Any, path: ParamPath) -> Any:
    """The value at ``path`` in ``event``, or ``_MISSING``."""
    return walk(event, split_path(path))


def walk(event: Any, steps: Iterable[str | int]) -> Any:
    """The value the steps lead to (keys, list indexes), or ``_MISSING``."""
    value = event
    for step in steps:
        if isinstance(value, dict) and isinstance(step, str) and step in value:
            value = value[step]
        elif isinstance(value, list) and isinstance(step, int) and 0 <= step < len(value):
            value = value[step]
        elif isinstance(value, dict) and isinstance(step, int) and str(step) in value:
            value = value[str(step)]
        else:
            return _MISSING
    return value


def extract_params(handler: Handler, event: dict[str, Any]) -> dict[str, Any] | None:
    """All of the handler's parameters, or None when one path is missing."""
    params: dict[str, Any] = {}
    for name, path in handler.params.items():
        value = extract(event, path)
        if value is _MISSING:
            return None
        params[name] = value
    return params


def compiled_pattern(handler: Handler) -> eb.CompiledPattern | None:
    """The handler's EventBridge pattern, compiled (once, at validation, when possible)."""
    trigger = handler.event
    if trigger is None or trigger.pattern is None:
        return None
    cached = getattr(trigger.pattern, "compiled", None)
    if isinstance(cached, eb.CompiledPattern) and cached.source is trigger.pattern:
        return cached
    return eb.compile_pattern(trigger.pattern)


def filter_passes(handler: Handler, event: dict[str, Any], pattern: eb.CompiledPattern | None = None) -> bool:
    """All given parts of the event trigger hold: match, not exclude, pattern."""
    trigger = handler.event
    if trigger is None:
        return False
    if trigger.match and not contains(event, trigger.match):
        return False
    if trigger.exclude is not None and contains(event, trigger.exclude):
        return False
    if trigger.pattern is not None:
        compiled = pattern if pattern is not None else compiled_pattern(handler)
        if compiled is None or not compiled.matches(event):
            return False
    return True


# -- per-field value indexes for EventBridge anchors ------------------------------------

# How much an anchor narrows the candidates, best first, and what choosing one costs on
# top of the handlers already waiting under the same key (an estimate of extra candidates).
RANK_EXACT, RANK_NARROW, RANK_RANGE, RANK_SCAN, RANK_BROAD, RANK_EXISTS = range(6)
_PENALTY = (0, 1, 4, 16, 256, 1024)


def _fold(text: str) -> str:
    """Case-insensitive key, applied character by character (upper, then casefold)."""
    return text.upper().casefold()


def _fold_key(text: str) -> str | None:
    """The folded key an equals-ignore-case pattern's matches all share, or None when some
    character's lower and upper forms fold apart (such patterns are scanned instead)."""
    parts = []
    for c in text:
        low, up = _fold(c.lower()), _fold(c.upper())
        if low != up:
            return None
        parts.append(low)
    return "".join(parts)


class _LengthMap:
    """Strings of several lengths; ``hits(text)`` finds those that are a prefix (or
    suffix) of ``text`` with one hash lookup per distinct registered length."""

    __slots__ = ("by_key", "lengths", "suffix")

    def __init__(self, suffix: bool) -> None:
        self.by_key: dict[str, dict[int, Any]] = {}
        self.lengths: dict[int, int] = {}
        self.suffix = suffix

    def add(self, key: str, reg: int, item: Any) -> None:
        self.by_key.setdefault(key, {})[reg] = item
        self.lengths[len(key)] = self.lengths.get(len(key), 0) + 1

    def remove(self, key: str, reg: int) -> None:
        bucket = self.by_key[key]
        del bucket[reg]
        if not bucket:
            del self.by_key[key]
        n = self.lengths[len(key)] - 1
        if n:
            self.lengths[len(key)] = n
        else:
            del self.lengths[len(key)]

    def size(self, key: str) -> int:
        return len(self.by_key.get(key, ()))

    def hits(self, text: str) -> list[dict[int, Any]]:
        by_key = self.by_key
        n = len(text)
        found = []
        for length in self.lengths:
            if length <= n:
                bucket = by_key.get(text[n - length :] if self.suffix else text[:length])
                if bucket is not None:
                    found.append(bucket)
        return found


class _Ranges:
    """Numeric intervals; stabbing queries over a lazily re-sorted array."""

    __slots__ = ("_highs", "_items", "_lows", "_sorted", "items")

    def __init__(self) -> None:
        self.items: dict[int, tuple[float, bool, float, bool, Any]] = {}
        self._sorted = True
        self._lows: list[float] = []
        self._items: list[tuple[float, bool, float, bool, Any]] = []
        self._highs: list[float] = []

    def add(self, reg: int, item: tuple[float, bool, float, bool, Any]) -> None:
        self.items[reg] = item
        self._sorted = False

    def remove(self, reg: int) -> None:
        del self.items[reg]
        self._sorted = False

    def _sort(self) -> None:
        ordered = sorted(self.items.values(), key=lambda it: it[0])
        self._items = ordered
        self._lows = [it[0] for it in ordered]
        self._highs = list(itertools.accumulate((it[2] for it in ordered), max))
        self._sorted = True

    def stab(self, value: float, out: set[Any]) -> None:
        if not self._sorted:
            self._sort()
        items, highs = self._items, self._highs
        j = bisect.bisect_right(self._lows, value) - 1
        while j >= 0 and highs[j] >= value:
            low, low_open, high, high_open, token = items[j]
            if not (low_open and value == low) and (value < high or (value == high and not high_open)):
                out.add(token)
            j -= 1


class _Field:
    """Everything anchored on one flattened field name."""

    __slots__ = (
        "eic",
        "exact",
        "exists",
        "ip",
        "lit",
        "num",
        "only_exact",
        "prefix",
        "prefix_eic",
        "ranges",
        "scan",
        "spell",
        "suffix",
        "suffix_eic",
        "wild_prefix",
        "wild_suffix",
    )

    def __init__(self) -> None:
        self.exact: dict[str, dict[int, Any]] = {}
        self.num: dict[float, dict[int, Any]] = {}
        self.spell: dict[str, dict[int, Any]] = {}
        self.lit: dict[str, dict[int, Any]] = {}
        self.ip: dict[tuple[int, int], dict[int, dict[int, tuple[int, int, Any]]]] = {}
        self.prefix = _LengthMap(suffix=False)
        self.suffix = _LengthMap(suffix=True)
        self.prefix_eic = _LengthMap(suffix=False)
        self.suffix_eic = _LengthMap(suffix=True)
        self.wild_prefix = _LengthMap(suffix=False)
        self.wild_suffix = _LengthMap(suffix=True)
        self.eic: dict[str, dict[int, tuple[Callable[[eb.Leaf], bool], Any]]] = {}
        self.ranges = _Ranges()
        self.scan: dict[int, tuple[Callable[[eb.Leaf], bool], Any]] = {}
        self.exists: dict[int, Any] = {}
        self.only_exact = True  # nothing but exact values: a string needs one lookup

    def _update_only_exact(self) -> None:
        self.only_exact = not (
            self.ip or self.eic or self.scan or self.prefix.by_key or self.suffix.by_key
            or self.prefix_eic.by_key or self.suffix_eic.by_key or self.wild_prefix.by_key
            or self.wild_suffix.by_key
        )  # fmt: skip

    def empty(self) -> bool:
        return not (
            self.exact or self.num or self.spell or self.lit or self.ip or self.eic or self.scan or self.exists
            or self.ranges.items or self.prefix.by_key or self.suffix.by_key or self.prefix_eic.by_key
            or self.suffix_eic.by_key or self.wild_prefix.by_key or self.wild_suffix.by_key
        )  # fmt: skip

    # Where a value pattern goes: (structure, key, rank, crowding).
    def place(self, vp: eb.ValuePattern) -> tuple[str, Any, int, int]:
        kind = vp[0]
        if kind == "str":
            return "exact", vp[1], RANK_EXACT, len(self.exact.get(vp[1], ()))
        if kind == "num":
            if vp[1] is not None:
                return "num", vp[1], RANK_EXACT, len(self.num.get(vp[1], ()))
            return "spell", vp[2], RANK_EXACT, len(self.spell.get(vp[2], ()))
        if kind == "numeq":
            return "num", vp[1], RANK_EXACT, len(self.num.get(vp[1], ()))
        if kind == "lit":
            return "lit", vp[1], RANK_EXACT, len(self.lit.get(vp[1], ()))
        if kind == "ip":
            bits, low, high = vp[1], vp[2], vp[3]
            plen = bits - (low ^ high).bit_length()
            ip_key = (bits, plen)
            crowd = len(self.ip.get(ip_key, {}).get(low >> (bits - plen), ()))
            return "ip", (ip_key, low >> (bits - plen)), (RANK_EXACT if low == high else RANK_NARROW), crowd
        if kind in ("prefix", "suffix"):
            mapping = self.prefix if kind == "prefix" else self.suffix
            # An empty prefix/suffix is the (always present) quote: every string matches.
            rank = RANK_NARROW if vp[1] else RANK_BROAD
            return kind, vp[1], rank, mapping.size(vp[1])
        if kind == "eic":
            key = _fold_key(vp[1])
            if key is not None:
                return "eic", key, RANK_NARROW, len(self.eic.get(key, ()))
            return "scan", None, RANK_SCAN, len(self.scan)
        if kind in ("prefix_eic", "suffix_eic"):
            key = _fold_key(vp[1])
            if key is not None:
                mapping = self.prefix_eic if kind == "prefix_eic" else self.suffix_eic
                return kind, key, (RANK_NARROW if key else RANK_BROAD), mapping.size(key)
            return "scan", None, RANK_SCAN, len(self.scan)
        if kind == "wildcard":
            segments = vp[2]
            if len(segments) == 1:
                return "exact", segments[0], RANK_EXACT, len(self.exact.get(segments[0], ()))
            if segments[0]:
                return "wild_prefix", segments[0], RANK_RANGE, self.wild_prefix.size(segments[0])
            if segments[-1]:
                return "wild_suffix", segments[-1], RANK_RANGE, self.wild_suffix.size(segments[-1])
            return "scan", None, RANK_SCAN, len(self.scan)
        if kind == "range":
            return "ranges", None, RANK_RANGE, len(self.ranges.items)
        if kind == "exists":
            return "exists", None, RANK_EXISTS, len(self.exists)
        return "scan", None, RANK_BROAD, len(self.scan)  # anything-but

    def add(self, vp: eb.ValuePattern, structure: str, key: Any, reg: int, token: Any) -> dict[int, Any] | None:
        """Register; returns the bucket for exact structures (so crowding can be seen)."""
        if structure in ("exact", "num", "spell", "lit"):
            bucket: dict[int, Any] = getattr(self, structure).setdefault(key, {})
            bucket[reg] = token
            return bucket
        if structure == "ip":
            (bits_plen, net) = key
            self.ip.setdefault(bits_plen, {}).setdefault(net, {})[reg] = (vp[2], vp[3], token)
        elif structure in ("prefix", "suffix"):
            getattr(self, structure).add(key, reg, token)
        elif structure in ("prefix_eic", "suffix_eic", "wild_prefix", "wild_suffix"):
            getattr(self, structure).add(key, reg, (eb.shared_predicate(vp), token))
        elif structure == "eic":
            self.eic.setdefault(key, {})[reg] = (eb.shared_predicate(vp), token)
        elif structure == "ranges":
            self.ranges.add(reg, (vp[1], vp[2], vp[3], vp[4], token))
        elif structure == "exists":
            self.exists[reg] = token
        else:
            self.scan[reg] = (eb.shared_predicate(vp), token)
        self._update_only_exact()
        return None

    def remove(self, structure: str, key: Any, reg: int) -> None:
        if structure in ("exact", "num", "spell", "lit", "eic"):
            mapping = getattr(self, structure)
            del mapping[key][reg]
            if not mapping[key]:
                del mapping[key]
        elif structure == "ip":
            (bits_plen, net) = key
            nets = self.ip[bits_plen]
            del nets[net][reg]
            if not nets[net]:
                del nets[net]
            if not nets:
                del self.ip[bits_plen]
        elif structure in ("prefix", "suffix", "prefix_eic", "suffix_eic", "wild_prefix", "wild_suffix"):
            getattr(self, structure).remove(key, reg)
        elif structure == "ranges":
            self.ranges.remove(reg)
        elif structure == "exists":
            del self.exists[reg]
        else:
            del self.scan[reg]
        self._update_only_exact()

    def collect(self, value: Any, out: set[Any]) -> None:
        """Add the tokens anchored here whose value pattern this leaf value meets."""
        if self.exists:
            out.update(self.exists.values())
        leaf: eb.Leaf | None = None
        if isinstance(value, str):
            hit = self.exact.get(value)
            if hit:
                out.update(hit.values())
            if self.only_exact:
                return
            if self.prefix.lengths:
                for bucket in self.prefix.hits(value + '"'):
                    out.update(bucket.values())
            if self.suffix.lengths:
                for bucket in self.suffix.hits('"' + value):
                    out.update(bucket.values())
            if self.eic or self.prefix_eic.lengths or self.suffix_eic.lengths:
                leaf = self._collect_folded(value, out)
            if self.wild_prefix.lengths or self.wild_suffix.lengths:
                leaf = self._collect_wildcards(value, leaf, out)
            if self.ip:
                self._collect_ip(value, out)
        elif value is None or isinstance(value, bool):
            hit = self.lit.get("null" if value is None else "true" if value else "false")
            if hit:
                out.update(hit.values())
        elif self.num or self.spell or self.ranges.items:
            f, spell = eb.number_info(value)
            if f is not None:
                hit = self.num.get(f)
                if hit:
                    out.update(hit.values())
                if self.ranges.items:
                    self.ranges.stab(f, out)
            else:
                hit = self.spell.get(spell)
                if hit:
                    out.update(hit.values())
        if self.scan:
            leaf = leaf or eb.Leaf(value, eb._NO_ARRAYS)
            for check, token in self.scan.values():
                if check(leaf):
                    out.add(token)

    def _collect_folded(self, value: str, out: set[Any]) -> eb.Leaf:
        leaf = eb.Leaf(value, eb._NO_ARRAYS)
        if self.eic:
            checks = self.eic.get(_fold(value))
            if checks:
                for check, token in checks.values():
                    if check(leaf):
                        out.add(token)
        for mapping, text in ((self.prefix_eic, value + '"'), (self.suffix_eic, '"' + value)):
            if mapping.lengths:
                for bucket in mapping.hits(_fold(text)):
                    for check, token in bucket.values():
                        if check(leaf):
                            out.add(token)
        return leaf

    def _collect_wildcards(self, value: str, leaf: eb.Leaf | None, out: set[Any]) -> eb.Leaf:
        leaf = leaf or eb.Leaf(value, eb._NO_ARRAYS)
        for mapping in (self.wild_prefix, self.wild_suffix):
            if mapping.lengths:
                for bucket in mapping.hits(value):
                    for check, token in bucket.values():
                        if check(leaf):
                            out.add(token)
        return leaf

    def _collect_ip(self, value: str, out: set[Any]) -> None:
        parsed = eb.parse_ip(value)
        if parsed is None:
            return
        bits, address = parsed
        for (b, plen), nets in self.ip.items():
            if b == bits:
                bucket = nets.get(address >> (bits - plen))
                if bucket:
                    for low, high, token in bucket.values():
                        if low <= address <= high:
                            out.add(token)


# -- the index --------------------------------------------------------------------------

# A candidate token is (entry, proof): the handler's entry, and what the anchor that
# fired already proves about it.
PROVES_MATCH, PROVES_PATTERN = 1, 2
Token = tuple["_Entry", int]
# A bucket of exact anchors that grows to one of these sizes has its handlers re-anchored
# (each moves to its least crowded alternative, if it has a better one).
_REBALANCE_FROM = 8


class _EbNode:
    """Trie of anchored EventBridge field names (one step per node, arrays transparent)."""

    __slots__ = ("children", "field")

    def __init__(self) -> None:
        self.children: dict[str, _EbNode] = {}
        self.field: _Field | None = None

    def follow(self, key: str) -> _EbNode | None:
        return eb.follow_key(self, key)


class _JbNode:
    """Trie of anchored jsonb signatures (keys and array steps); values at the leaves."""

    __slots__ = ("children", "values")

    def __init__(self) -> None:
        self.children: dict[str | int, _JbNode] = {}
        self.values: dict[Any, dict[int, Token]] | None = None


class _Entry:
    __slots__ = ("contains", "enabled", "excludes", "handler", "misses", "params", "pattern", "registrations", "seq")

    def __init__(self, handler: Handler, pattern: eb.CompiledPattern | None, seq: int) -> None:
        self.handler = handler
        self.pattern = pattern
        self.seq = seq
        trigger = handler.event
        self.enabled = handler.enabled and trigger is not None
        match = trigger.match if trigger is not None else None
        exclude = trigger.exclude if trigger is not None else None
        self.contains = compile_contains(match) if match else None
        self.excludes = compile_contains(exclude) if exclude is not None else None
        self.params = [(name, split_path(path)) for name, path in handler.params.items()]
        self.misses = 0
        # (structure, field name, key, registration number)
        self.registrations: list[tuple[str, Any, Any, int]] = []


def _indexable_name(name: str) -> bool:
    """Field names with an empty step (``a..b``, ``.a``, ``a.``, ``""``) depend on
    event-ruler's step pruning; they are never anchors, only checked."""
    return "" not in name.split(".")


def _single_chain(match: Any) -> bool:
    """One scalar at the end of one path: finding that scalar proves containment."""
    while isinstance(match, (dict, list)):
        if len(match) != 1:
            return False
        match = next(iter(match.values())) if isinstance(match, dict) else match[0]
    return True


class Index:
    """The live handler set, indexed for matching."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._seq = itertools.count()
        self._reg = itertools.count()
        self._unanchored: dict[str, _Entry] = {}
        self._fields: dict[str, _Field] = {}
        self._eb_root = _EbNode()
        self._jb_root = _JbNode()
        self._jb_count = 0
        self._rebalancing = False
        # Anchors that keep firing for handlers that then fail: (structure, name, key) -> misses.
        self._heat: dict[tuple[str, Any, Any], int] = {}

    # -- the handler set ---------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, handler_id: object) -> bool:
        return handler_id in self._entries

    def get(self, handler_id: str) -> Handler | None:
        entry = self._entries.get(handler_id)
        return entry.handler if entry else None

    def handlers(self) -> list[Handler]:
        return [e.handler for e in self._entries.values()]

    def put(self, handler: Handler | dict[str, Any]) -> None:
        """Add or replace one handler (a dict is validated first)."""
        if not isinstance(handler, Handler):
            handler = parse_handler(handler)
        old = self._entries.get(handler.id)
        if old is not None:
            self._unregister(old)
        entry = _Entry(handler, compiled_pattern(handler), old.seq if old else next(self._seq))
        self._entries[handler.id] = entry
        if handler.enabled and handler.event is not None:
            self._register(entry)

    def remove(self, handler_id: str) -> Handler | None:
        entry = self._entries.pop(handler_id, None)
        if entry is None:
            return None
        self._unregister(entry)
        return entry.handler

    # -- matching ----------------------------------------------------------------------

    def candidates(self, event: dict[str, Any]) -> dict[str, int]:
        """Handler id -> proof bits, for every handler whose anchor the event meets (a
        superset of the handlers that fire)."""
        return {entry.handler.id: proof for entry, proof in self._candidates(event).items()}

    def _candidates(self, event: dict[str, Any]) -> dict[_Entry, int]:
        tokens: set[Token] = set()
        eb_root = self._eb_root if self._fields else None
        jb_root = self._jb_root if self._jb_count else None
        if eb_root is not None or jb_root is not None:
            _walk(event, eb_root, jb_root, tokens)
        proofs = dict.fromkeys(self._unanchored.values(), 0)
        for entry, proof in tokens:
            proofs[entry] = proofs.get(entry, 0) | proof
        return proofs

    def match(self, event: dict[str, Any]) -> list[Match]:
        """The handlers that fire for ``event``, with their parameters, in insertion order."""
        if not isinstance(event, dict):
            return []
        proofs = self._candidates(event)
        if not proofs:
            return []
        chosen = list(proofs)
        if len(chosen) > 1:
            chosen.sort(key=lambda e: e.seq)
        matches = []
        for entry in chosen:
            params = _confirm(entry, proofs[entry], event)
            if params is None:
                self._missed(entry)
            else:
                matches.append(Match(entry.handler, params))
        return matches

    def _missed(self, entry: _Entry) -> None:
        """A candidate that did not fire. An anchor that keeps firing for nothing gets
        hotter, and the handler is re-anchored elsewhere if it has a cooler choice."""
        entry.misses += 1
        if entry.misses < 16 or entry.misses & (entry.misses - 1):
            return
        for structure, name, key, _ in entry.registrations:
            if structure != "unanchored":
                heat_key = (structure, name, key)
                self._heat[heat_key] = self._heat.get(heat_key, 0) + entry.misses
        self._unregister(entry)
        self._register(entry)

    # -- anchors -----------------------------------------------------------------------

    def _register(self, entry: _Entry) -> None:
        hid = entry.handler.id
        jsonb_choice = self._best_jsonb(entry.handler)
        eb_choice = self._best_pattern(entry.pattern) if entry.pattern is not None else None
        crowded: list[dict[int, Token]] = []
        if jsonb_choice is None and eb_choice is None:
            self._unanchored[hid] = entry
            entry.registrations.append(("unanchored", None, None, 0))
            return
        if eb_choice is None or (jsonb_choice is not None and jsonb_choice[0] <= eb_choice[0]):
            assert jsonb_choice is not None
            signature, key = jsonb_choice[1]
            proof = PROVES_MATCH if _single_chain(entry.handler.event.match) else 0  # type: ignore[union-attr]
            node = self._jb_root
            for step in signature:
                child = node.children.get(step)
                if child is None:
                    child = node.children[step] = _JbNode()
                node = child
            if node.values is None:
                node.values = {}
            bucket = node.values.setdefault(key, {})
            reg = next(self._reg)
            bucket[reg] = (entry, proof)
            self._jb_count += 1
            entry.registrations.append(("jsonb", signature, key, reg))
            if len(bucket) >= _REBALANCE_FROM and len(bucket) & (len(bucket) - 1) == 0:
                crowded.append(bucket)
        else:
            for name, vps, single in eb_choice[1]:
                field = self._field(name)
                token = (entry, PROVES_PATTERN if single else 0)
                for vp in vps:
                    structure, key, _, _ = field.place(vp)
                    reg = next(self._reg)
                    field_bucket = field.add(vp, structure, key, reg, token)
                    entry.registrations.append((structure, name, key, reg))
                    if (field_bucket is not None and len(field_bucket) >= _REBALANCE_FROM
                            and len(field_bucket) & (len(field_bucket) - 1) == 0):
                        crowded.append(field_bucket)
        if crowded and not self._rebalancing:
            self._rebalance(crowded)

    def _rebalance(self, buckets: list[dict[int, Token]]) -> None:
        self._rebalancing = True
        try:
            for entry in {token[0] for bucket in buckets for token in list(bucket.values())}:
                if self._entries.get(entry.handler.id) is entry:
                    self._unregister(entry)
                    self._register(entry)
        finally:
            self._rebalancing = False

    def _field(self, name: str) -> _Field:
        field = self._fields.get(name)
        if field is None:
            field = self._fields[name] = _Field()
            eb.insert_path(self._eb_root, name.split("."), _EbNode).field = field
        return field

    def _drop_field(self, name: str) -> None:
        del self._fields[name]
        path = [self._eb_root]
        for part in name.split("."):
            path.append(path[-1].children[part])
        path[-1].field = None
        for parent, part, node in zip(reversed(path[:-1]), reversed(name.split(".")), reversed(path[1:]), strict=True):
            if node.children or node.field is not None:
                break
            del parent.children[part]

    def _unregister(self, entry: _Entry) -> None:
        for structure, name, key, reg in entry.registrations:
            if structure == "unanchored":
                self._unanchored.pop(entry.handler.id, None)
            elif structure == "jsonb":
                self._drop_jsonb(name, key, reg)
            else:
                field = self._fields[name]
                field.remove(structure, key, reg)
                if field.empty():
                    self._drop_field(name)
        entry.registrations.clear()

    def _drop_jsonb(self, signature: tuple[str | int, ...], key: Any, reg: int) -> None:
        path = [self._jb_root]
        for step in signature:
            path.append(path[-1].children[step])
        leaf = path[-1]
        assert leaf.values is not None
        del leaf.values[key][reg]
        self._jb_count -= 1
        if not leaf.values[key]:
            del leaf.values[key]
            if not leaf.values:
                leaf.values = None
        for parent, step, node in zip(reversed(path[:-1]), reversed(signature), reversed(path[1:]), strict=True):
            if node.children or node.values is not None:
                break
            del parent.children[step]

    def _jsonb_crowd(self, signature: tuple[str | int, ...], key: Any) -> int:
        node: _JbNode | None = self._jb_root
        for step in signature:
            node = node.children.get(step) if node is not None else None
        if node is None or node.values is None:
            return 0
        return len(node.values.get(key, ()))

    def _best_jsonb(self, handler: Handler) -> tuple[int, Any] | None:
        match = handler.event.match if handler.event is not None else None
        if not match:
            return None
        best = None
        for signature, key in required_leaves(match):
            crowd = self._jsonb_crowd(signature, key) + self._heat.get(("jsonb", signature, key), 0)
            if best is None or crowd < best[0]:
                best = (crowd, (signature, key))
        return best

    def _best_pattern(self, pattern: eb.CompiledPattern) -> tuple[int, Any] | None:
        """One field per sub-rule; None when some sub-rule has no field that must exist."""
        picks: list[tuple[str, tuple[eb.ValuePattern, ...], bool]] = []
        total = 0
        for subrule in pattern.subrules:
            best = None
            for name, vps, absent in subrule.fields:
                if absent or not vps or not _indexable_name(name):
                    continue
                field = self._fields.get(name) or _Field()
                cost = sum(
                    crowd + _PENALTY[rank] + self._heat.get((structure, name, key), 0)
                    for structure, key, rank, crowd in map(field.place, vps)
                )
                if best is None or cost < best[0]:
                    best = (cost, (name, vps, len(subrule.fields) == 1))
            if best is None:
                return None
            picks.append(best[1])
            total += best[0]
        return total, picks


def _confirm(entry: _Entry, proof: int, event: dict[str, Any]) -> dict[str, Any] | None:
    """The parameters when the candidate really fires, else None."""
    if not entry.enabled:
        return None
    if entry.contains is not None and not proof & PROVES_MATCH and not entry.contains(event):
        return None
    if entry.excludes is not None and entry.excludes(event):
        return None
    if entry.pattern is not None and not proof & PROVES_PATTERN and not entry.pattern.matches(event):
        return None
    params: dict[str, Any] = {}
    for name, steps in entry.params:
        value = walk(event, steps)
        if value is _MISSING:
            return None
        params[name] = value
    return params


def _walk(obj: dict[str, Any], eb_node: _EbNode | None, jb_node: _JbNode | None, out: set[Token]) -> None:
    """Visit an event object along both tries at once; look each reached leaf up."""
    eb_children = eb_node.children if eb_node is not None else None
    jb_children = jb_node.children if jb_node is not None else None
    for key, value in obj.items():
        e = None
        if eb_children:
            e = eb_children.get(key)
            if e is None and "." in key:
                e = eb_node.follow(key)  # type: ignore[union-attr]
        j = jb_children.get(key) if jb_children else None
        if e is None and j is None:
            continue
        if isinstance(value, dict):
            _walk(value, e, j, out)
        elif isinstance(value, list):
            _walk_list(value, e, j, out)
        else:
            _leaf(value, e, j, out)


def _walk_list(arr: list[Any], eb_node: _EbNode | None, jb_node: _JbNode | None, out: set[Token]) -> None:
    j = jb_node.children.get(ARRAY_STEP) if jb_node is not None else None
    if eb_node is None and j is None:
        return
    for value in arr:
        if isinstance(value, dict):
            _walk(value, eb_node, j, out)
        elif isinstance(value, list):
            _walk_list(value, eb_node, j, out)
        else:
            _leaf(value, eb_node, j, out)


def _leaf(value: Any, eb_node: _EbNode | None, jb_node: _JbNode | None, out: set[Token]) -> None:
    if eb_node is not None:
        field = eb_node.field
        if field is not None:
            field.collect(value, out)
    if jb_node is not None:
        values = jb_node.values
        if values is not None:
            hit = values.get(scalar_key(value))
            if hit:
                out.update(hit.values())


def compile(handlers: Iterable[Handler | dict[str, Any]]) -> Index:
    """An index of the given handlers (dicts are validated like handler records)."""
    index = Index()
    for handler in handlers:
        index.put(handler)
    return index
