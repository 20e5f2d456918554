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

__all__ = ["evaluate_line", "explain", "firing_handlers", "main"]


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


# -- why (not): the explain of one handler against one event ------------------------------------


def _jsonb_failure(event: Any, pattern: Any, path: str) -> str | None:
    """Where ``event @> pattern`` fails first, as a sentence naming the path; None when it holds."""
    from streams.filters.jsonb import contains

    if contains(event, pattern):
        return None
    if isinstance(pattern, dict) and isinstance(event, dict):
        for key, sub in pattern.items():
            where = f"{path}.{key}" if path else key
            if key not in event:
                return f"{where}: the event has no such field (wanted {jsonvalue.dumps(sub)})"
            found = _jsonb_failure(event[key], sub, where)
            if found is not None:
                return found
    return f"{path or '(the event)'}: is {jsonvalue.dumps(event)}, wanted it to contain {jsonvalue.dumps(pattern)}"


def _pattern_leaves(pattern: dict[str, Any], path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """The fields of an EventBridge pattern, each as (path, rule); ``$or`` is one leaf."""
    out: list[tuple[tuple[str, ...], Any]] = []
    for key, rule in pattern.items():
        if isinstance(rule, dict) and not key.startswith("$"):
            out += _pattern_leaves(rule, (*path, key))
        else:
            out.append(((*path, key), rule))
    return out


def _nest(path: tuple[str, ...], rule: Any) -> dict[str, Any]:
    doc: Any = rule
    for key in reversed(path):
        doc = {key: doc}
    return doc  # type: ignore[no-any-return]


def _pattern_failures(pattern: dict[str, Any], event: dict[str, Any]) -> list[str]:
    """The pattern's fields that the event fails, each checked alone."""
    failures = []
    for path, rule in _pattern_leaves(pattern):
        part = EventTrigger.model_validate({"pattern": _nest(path, rule)})
        one = Handler.model_construct(id="explain", job="explain", enabled=True, event=part, params={})
        if not filter_passes(one, event):
            name = ".".join(path)
            value: Any = event
            for key in path:
                value = value.get(key) if isinstance(value, dict) else None
            shown = "absent" if value is None else jsonvalue.dumps(value)
            failures.append(f"pattern field {name}: the event's value is {shown}, the rule is {jsonvalue.dumps(rule)}")
    return failures or ["pattern: no single field fails, but the fields together do not (an $or or array rule)"]


def explain(handler: Handler | dict[str, Any], event: dict[str, Any],
            headers: dict[str, str] | None = None) -> dict[str, Any]:
    """Why ``handler`` fires, or not, for ``event`` with these Kafka ``headers``:
    ``{"fires": bool, "params": {...} or None, "reasons": [...]}``. Each reason names the
    part that failed: disabled, no event trigger, a match key (its path), the exclude
    filter, a pattern field, the creator or emitted_by constraint, a missing param. A once
    handler also needs to be armed, which only the workers know: the answer says so."""
    from streams.model import provenance

    h = parse_handler(handler) if isinstance(handler, dict) else handler
    headers = headers or {}
    reasons: list[str] = []
    if not h.enabled:
        reasons.append("disabled: a disabled handler never fires")
    trigger = h.event
    if trigger is None:
        kind = "cron" if h.cron is not None else "after" if h.after is not None else "no"
        reasons.append(f"no event trigger: a {kind} handler does not match events")
        return {"fires": False, "params": None, "reasons": reasons}
    if trigger.match:
        failure = _jsonb_failure(event, trigger.match, "")
        if failure is not None:
            reasons.append(f"match {failure}")
    if trigger.exclude is not None:
        from streams.filters.jsonb import contains

        if contains(event, trigger.exclude):
            reasons.append(f"exclude: the event contains {jsonvalue.dumps(trigger.exclude)}, which excludes it")
    if trigger.pattern is not None:
        probe = Handler.model_construct(id="explain", job="explain", enabled=True,
                                        event=EventTrigger.model_validate({"pattern": trigger.pattern}), params={})
        if not filter_passes(probe, event):
            reasons += _pattern_failures(trigger.pattern, event)
    if trigger.creator is not None and headers.get(provenance.CREATOR) != trigger.creator:
        reasons.append(f"creator: the event's creator header is {headers.get(provenance.CREATOR)!r}, "
                       f"the handler wants {trigger.creator!r}")
    if trigger.emitted_by is not None and headers.get(provenance.EMITTED_BY_JOB) != trigger.emitted_by:
        reasons.append(f"emitted_by: the event was emitted by {headers.get(provenance.EMITTED_BY_JOB)!r}, "
                       f"the handler wants a run of job {trigger.emitted_by!r}")
    params = None
    if not reasons:
        enabled = h.model_copy(update={"enabled": True})
        matches = compile([enabled]).match(event)
        if matches:
            params = matches[0].params
        else:
            reasons.append("params: the filter passes but the handler's params cannot be taken from the event")
    if not reasons and h.once:
        return {"fires": True, "params": params, "reasons": ["once: fires only while armed (the workers keep that)"]}
    return {"fires": not reasons, "params": params, "reasons": reasons}
