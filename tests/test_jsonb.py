"""jsonb containment: PostgreSQL's answers (vectors) and one table per edge case."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from streams.filters.jsonb import compile_contains, contains, required_leaves, scalar_equal
from streams.matching.index import compile as compile_index

VECTORS = Path(__file__).parent / "vectors"

with (VECTORS / "jsonb.sample.jsonl").open(encoding="utf-8") as _f:
    JSONB_VECTORS = [json.loads(line, parse_float=Decimal) for line in _f if line.strip()]


def check(event: Any, pattern: Any) -> bool:
    """contains(), the compiled checker and a one-handler index must agree."""
    answer = contains(event, pattern)
    if isinstance(pattern, dict) and isinstance(event, dict):
        assert compile_contains(pattern)(event) is answer
        index = compile_index([{"id": "h", "job": "j", "event": {"match": pattern}}])
        assert bool(index.match(event)) is answer
    return answer


@pytest.mark.parametrize("case", JSONB_VECTORS, ids=[c["id"] for c in JSONB_VECTORS])
def test_postgresql_vectors(case: dict[str, Any]) -> None:
    assert check(case["event"], case["pattern"]) is case["expected"]


TABLE: list[tuple[str, Any, Any, bool]] = [
    # objects
    ("empty-pattern", {"a": 1}, {}, True),
    ("extra-keys", {"a": 1, "b": 2}, {"a": 1}, True),
    ("missing-key", {"b": 2}, {"a": 1}, False),
    ("nested", {"a": {"b": {"c": 1, "d": 2}}}, {"a": {"b": {"c": 1}}}, True),
    ("empty-object-needs-object", {"a": [1]}, {"a": {}}, False),
    ("empty-object-present", {"a": {"x": 1}}, {"a": {}}, True),
    ("empty-array-needs-array", {"a": {}}, {"a": []}, False),
    ("empty-array-present", {"a": [1]}, {"a": []}, True),
    # null versus missing
    ("null-value", {"a": None}, {"a": None}, True),
    ("null-not-missing", {}, {"a": None}, False),
    ("null-not-false", {"a": False}, {"a": None}, False),
    # arrays of scalars: order and repeats do not matter
    ("array-subset", {"a": [1, 2, 3]}, {"a": [3, 1]}, True),
    ("array-repeats", {"a": [1]}, {"a": [1, 1, 1]}, True),
    ("array-not-subset", {"a": [1, 2]}, {"a": [1, 4]}, False),
    # arrays of objects: each pattern object inside ONE event element
    ("objects-one-element", {"a": [{"x": 1, "y": 2}, {"z": 3}]}, {"a": [{"x": 1, "y": 2}]}, True),
    ("objects-split-elements", {"a": [{"x": 1}, {"y": 2}]}, {"a": [{"x": 1, "y": 2}]}, False),
    ("objects-two-patterns", {"a": [{"x": 1}, {"y": 2}]}, {"a": [{"x": 1}, {"y": 2}]}, True),
    ("objects-same-element-twice", {"a": [{"x": 1, "y": 2}]}, {"a": [{"x": 1}, {"y": 2}]}, True),
    ("nested-arrays", {"a": [[1, 2], [3]]}, {"a": [[1]]}, True),
    ("nested-array-scalar", {"a": [[1, 2], [3]]}, {"a": [1]}, False),
    # top-level scalar-in-array rule, and only there
    ("top-level-scalar", ["a", "b"], "a", True),
    ("top-level-scalar-absent", ["a", "b"], "c", False),
    ("nested-scalar-vs-array", {"a": ["foo"]}, {"a": "foo"}, False),
    ("array-vs-scalar", {"a": "foo"}, {"a": ["foo"]}, False),
    # numbers by exact value
    ("num-int-decimal", {"n": 1}, {"n": Decimal("1.0")}, True),
    ("num-exponent", {"n": Decimal("1e0")}, {"n": 1}, True),
    ("num-zero-sign", {"n": Decimal("-0")}, {"n": 0}, True),
    ("num-big", {"n": 9007199254740993}, {"n": 9007199254740992}, False),
    ("num-precision", {"n": Decimal("1.0000000000000001")}, {"n": 1}, False),
    ("num-in-array", {"n": [Decimal("2.50")]}, {"n": [Decimal("2.5")]}, True),
    # types differ
    ("true-vs-1", {"a": True}, {"a": 1}, False),
    ("1-vs-string", {"a": 1}, {"a": "1"}, False),
    ("true-vs-string", {"a": True}, {"a": "true"}, False),
    # strings: exact, no folding, no normalisation
    ("case", {"s": "ABC"}, {"s": "abc"}, False),
    ("normalisation", {"s": "e\u0301"}, {"s": "\u00e9"}, False),
]


@pytest.mark.parametrize(("event", "pattern", "expected"), [t[1:] for t in TABLE], ids=[t[0] for t in TABLE])
def test_edge_cases(event: Any, pattern: Any, expected: bool) -> None:
    assert check(event, pattern) is expected


def test_scalar_equal_is_type_aware() -> None:
    assert scalar_equal(1, Decimal("1.00"))
    assert not scalar_equal(True, 1)
    assert not scalar_equal(None, False)
    assert scalar_equal("a", "a")


def test_required_leaves_are_necessary() -> None:
    leaves = required_leaves({"a": [{"b": 1}, "x"], "c": None, "d": {}})
    assert [sig for sig, _ in leaves] == [("a", 0, "b"), ("a", 0), ("c",)]
    assert required_leaves({}) == []
