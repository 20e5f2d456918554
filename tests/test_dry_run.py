"""The dry run: JSON lines in, one answer line out per input line."""

from __future__ import annotations

import io
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from streams.matching import dry_run
from streams.model import jsonvalue
from streams.model.handlers import InvalidHandler


def answers(lines: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "cases.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert dry_run.main([str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(lines)
    return [jsonvalue.loads(line) for line in out]


def test_one_answer_per_line_in_order(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    lines = [
        '{"handler": {"id": "h", "job": "j", "event": {"match": {"a": 1}}, "params": {"x": "b"}}, '
        '"event": {"a": 1.0, "b": 2.50}}',
        '{"filter": {"pattern": {"n": [{"numeric": [">", 1.5]}]}}, "event": {"n": 1.50000000000000000001}}',
        '{"filter": {"pattern": {"n": [{"numeric": [">", 10, "<", 5]}]}}, "event": {"n": 1}}',
        "not json",
        "",
        '{"filter": {"match": {"a": [1]}, "exclude": {"b": true}}, "event": {"a": [1, 2], "b": false}}',
        '{"filter": {"match": {"a": [1]}, "exclude": {"b": true}}, "event": {"a": [1, 2], "b": true}}',
        '{"handler": {"id": "h", "job": "j", "event": {"match": {}}, "params": {"x": "missing"}}, "event": {}}',
        '{"filter": {"pattern": {"s": [{"wildcard": "a**"}]}}, "event": {"s": "a"}}',
        '{"filter": {"shape": 1}, "event": {}}',
        '{"event": {}}',
        '{"filter": {}, "event": [1]}',
    ]
    got = answers(lines, capsys, tmp_path)
    assert got[0] == {"matched": True, "params": {"x": Decimal("2.50")}, "error": None}
    assert got[1] == {"matched": False, "params": None, "error": None}  # not exact as a double
    assert (
        got[2]["matched"] is False and got[2]["error"] == "filter: pattern: n[0].numeric: Bottom must be less than top"
    )
    assert got[3]["error"].startswith("not JSON")
    assert got[4]["error"] == "empty line"
    assert got[5] == {"matched": True, "params": {}, "error": None}
    assert got[6] == {"matched": False, "params": None, "error": None}
    assert got[7] == {"matched": False, "params": None, "error": None}
    assert "s[0].wildcard: Consecutive wildcard characters" in got[8]["error"]
    assert "shape" in got[9]["error"]
    assert "exactly one of" in got[10]["error"]
    assert got[11]["error"] == "event: must be a JSON object"


def test_numbers_are_read_and_written_exactly(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    line = (
        '{"handler": {"id": "h", "job": "j", "event": {"match": {"n": 9007199254740993}}, "params": {"n": "n"}}, '
        '"event": {"n": 9007199254740993}}'
    )
    got = answers(
        [line, line.replace('"event": {"n": 9007199254740993}', '"event": {"n": 9007199254740992}')], capsys, tmp_path
    )
    assert got[0]["params"] == {"n": 9007199254740993}
    assert got[1]["matched"] is False


def test_stdin_and_usage(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO('{"filter": {"pattern": {"a": ["x"]}}, "event": {"a": "x"}}\n'))
    assert dry_run.main(["-"]) == 0
    assert json.loads(capsys.readouterr().out) == {"matched": True, "params": {}, "error": None}
    assert dry_run.main([]) == 2
    assert dry_run.main(["/nonexistent/file.jsonl"]) == 2


def test_firing_handlers_of_a_set() -> None:
    handlers = [
        {"id": "a", "job": "ja", "event": {"pattern": {"type": ["order"]}}, "params": {"id": "id"}},
        {"id": "b", "job": "jb", "event": {"match": {"type": "refund"}}},
        {"id": "c", "job": "jc", "event": {"match": {}}, "enabled": False},
        {"id": "d", "job": "jd", "cron": {"schedule": "@hourly"}},
        {"id": "e", "job": "je", "event": {"match": {"type": "order"}, "exclude": {"test": True}}},
    ]
    assert dry_run.firing_handlers(handlers, {"type": "order", "id": 7}) == [
        {"id": "a", "job": "ja", "params": {"id": 7}},
        {"id": "e", "job": "je", "params": {}},
    ]
    assert dry_run.firing_handlers(handlers, {"type": "order", "test": True}) == []
    with pytest.raises(InvalidHandler):
        dry_run.firing_handlers([{"id": "x", "job": "j", "event": {"pattern": {"a": []}}}], {})
