"""Try filters without a broker, like EventBridge's TestEventPattern. Pure: no Kafka import.

``main([FILE])`` reads JSON lines (``-`` for stdin), each one of

* ``{"handler": {...}, "event": {...}}`` — a whole handler record;
* ``{"filter": {"match": ..., "exclude": ..., "pattern": ...}, "event": {...}}`` — a bare
  filter, any of the three keys;

and prints one JSON line per input line, in order:
``{"matched": true|false, "params": {...} or null, "error": null or "..."}``. A line that
cannot be read, or an invalid handler or filter, gives ``matched: false`` and the error
text; the command goes on with the next line. Numbers are read as exact decimals.

:func:`firing_handlers` answers the second question (which handlers of a set fire for an
event); the CLI wires it to the live handler topic.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, TextIO

from pydantic import ValidationError

from streams.matching.index import Index, compile, filter_passes
from streams.model import jsonvalue
from streams.model.handlers import EventTrigger, Handler, InvalidHandler, parse_handler

__all__ = ["evaluate_line", "firing_handlers", "main"]


def _result(matched: bool, params: dict[str, Any] | None, error: str | None) -> dict[str, Any]:
    return {"matched": matched, "params": params, "error": error}


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        message = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def evaluate_line(line: str) -> dict[str, Any]:
    """The answer for one input line."""
    if not line.strip():
        return _result(False, None, "empty line")
    try:
        doc = jsonvalue.loads(line)
    except ValueError as exc:
        return _result(False, None, f"not JSON: {exc}")
    if not isinstance(doc, dict):
        return _result(False, None, "a line must be a JSON object with 'event' and 'handler' or 'filter'")
    given = [k for k in ("handler", "filter") if k in doc]
    extra = sorted(set(doc) - {"handler", "filter", "event"})
    if len(given) != 1 or extra or "event" not in doc:
        return _result(False, None, "a line must hold 'event' and exactly one of 'handler' or 'filter'")
    event = doc["event"]
    if not isinstance(event, dict):
        return _result(False, None, "event: must be a JSON object")
    if "handler" in doc:
        try:
            handler = parse_handler(doc["handler"]) if isinstance(doc["handler"], dict) else None
        except InvalidHandler as exc:
            return _result(False, None, f"handler: {exc}")
        if handler is None:
            return _result(False, None, "handler: must be a JSON object")
        if handler.event is None:
            return _result(False, None, "handler: has no event trigger (cron and after handlers do not match events)")
        matches = compile([handler]).match(event)
        return _result(True, matches[0].params, None) if matches else _result(False, None, None)
    spec = doc["filter"]
    if not isinstance(spec, dict):
        return _result(False, None, "filter: must be a JSON object with match, exclude and/or pattern")
    try:
        trigger = EventTrigger.model_validate(spec)
    except ValidationError as exc:
        return _result(False, None, f"filter: {_describe(exc)}")
    handler = Handler.model_construct(id="dry-run", job="dry-run", enabled=True, event=trigger, params={})
    matched = filter_passes(handler, event)
    return _result(True, {}, None) if matched else _result(False, None, None)


def run(lines: Iterable[str], out: TextIO, strict: bool = False) -> int:
    """Evaluate each line; with ``strict``, 2 when any line reports an error."""
    erred = 0
    for line in lines:
        result = evaluate_line(line.rstrip("\r\n"))
        erred += result["error"] is not None
        out.write(jsonvalue.dumps(result) + "\n")
        out.flush()
    if strict and erred:
        sys.stderr.write(f"test-match: {erred} line(s) reported an error\n")
        return 2
    return 0


def main(argv: list[str], strict: bool = False) -> int:
    """``test-match FILE``: FILE of JSON lines, ``-`` for stdin. Exit 0, or 2 on bad usage
    (and, with ``strict``, when any line reports an error)."""
    if len(argv) != 1:
        sys.stderr.write("usage: test-match FILE   (JSON lines; '-' reads stdin)\n")
        return 2
    if argv[0] == "-":
        return run(sys.stdin, sys.stdout, strict)
    try:
        with open(argv[0], encoding="utf-8") as f:
            return run(f, sys.stdout, strict)
    except OSError as exc:
        sys.stderr.write(f"test-match: cannot read {argv[0]}: {exc.strerror or exc}\n")
        return 2


def firing_handlers(handlers: list[dict[str, Any]], event: dict[str, Any]) -> list[dict[str, Any]]:
    """Which of these handler records fire for ``event``: ``[{"id", "job", "params"}]`` in the
    given order. Invalid records raise :class:`InvalidHandler`; disabled, cron and after
    handlers never fire."""
    index: Index = compile(parse_handler(h) if isinstance(h, dict) else h for h in handlers)
    return [{"id": m.handler.id, "job": m.handler.job, "params": m.params} for m in index.match(event)]
