"""The records that flow between the steps, built by pure functions (no Kafka here).

match  -> trigger   (JSON on the triggers topic, keyed by job)
schedule -> command (Avro JobCommand on job-commands, keyed by job)
settle -> state to store + internal events (JSON on the events topic)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from streams.matching.match import Match
from streams.model import jsonvalue
from streams.model.handlers import Handler
from streams.model.identity import run_id
from streams.model.state_rules import StateDecision, StateLimits

# Run statuses as the feeder names them in its "WorkflowExecution Status Change" events.
NEW_STATUS = {"succeeded": "finished", "failed": "failed", "timed_out": "timed_out"}
FINAL_STATUSES = frozenset(NEW_STATUS.values())
RETRYING = "retrying"
STARTED = "started"
STATUS_EVENT_TYPE = "JobRun Status Change"
STATE_WARNING_EVENT_TYPE = "JobState Size Warning"


RUN_REQUESTED_EVENT_TYPE = "JobRun Requested"


def make_trigger(
    handler: Handler,
    kind: str,
    ref: str,
    params: dict[str, Any],
    event_text: str | None = None,
    event_time_ms: int | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A trigger record. ``extra``: initial_state_json (overrides the job's cursor),
    once_token (arm token of a once-handler), cron_tick (epoch seconds)."""
    return {
        "run_id": run_id(handler.id, ref),
        "job": handler.job,
        "handler_id": handler.id,
        "trigger_kind": kind,
        "trigger_ref": ref,
        "params_json": jsonvalue.dumps(params),
        "event_json": event_text,
        "timeout_seconds": handler.timeout_seconds,
        "event_time": event_time_ms,
        **{k: v for k, v in extra.items() if v is not None},
        **({"retry": handler.retry.model_dump()} if handler.retry is not None else {}),
    }


def trigger_for_event(match: Match, event_text: str, trigger_ref: str, event_time_ms: int | None,
                      once_token: int | None = None) -> dict[str, Any]:
    return make_trigger(match.handler, "event", trigger_ref, match.params, event_text, event_time_ms,
                        once_token=once_token)


def trigger_for_tick(handler: Handler, tick: float) -> dict[str, Any]:
    stamp = datetime.fromtimestamp(tick, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert handler.cron is not None
    return make_trigger(handler, "cron", f"cron:{stamp}", handler.cron.params, event_time_ms=int(tick * 1000),
                        cron_tick=tick)


def after_fires(handler: Handler, status_event: dict[str, Any]) -> bool:
    assert handler.after is not None
    if status_event.get("new_status") not in FINAL_STATUSES:
        return False  # "retrying": the run is not over
    finished = status_event.get("new_status") == "finished"
    return handler.after.status == "either" or (handler.after.status == "success") == finished


def trigger_for_after(handler: Handler, params: dict[str, Any], status_event: dict[str, Any], event_text: str,
                      once_token: int | None = None) -> dict[str, Any]:
    """Flow/catch: the downstream run starts with the upstream's final state (when asked
    for and present), else with its own cursor."""
    assert handler.after is not None
    upstream = status_event.get("final_state")
    initial = jsonvalue.dumps(upstream) if handler.after.state == "upstream" and upstream is not None else None
    return make_trigger(handler, "after", f"after:{status_event['run_id']}", params, event_text,
                        initial_state_json=initial, once_token=once_token)


def is_status_event(event: dict[str, Any]) -> bool:
    return (event.get("source") == "internal" and event.get("event_type") == STATUS_EVENT_TYPE
            and isinstance(event.get("job"), str) and isinstance(event.get("run_id"), str))


def is_run_request(event: dict[str, Any]) -> bool:
    return event.get("event_type") == RUN_REQUESTED_EVENT_TYPE and isinstance(event.get("handler_id"), str)


def run_request(handler_id: str, params: dict[str, Any], request_id: str) -> dict[str, Any]:
    """The event `signalbox run` sends: start a handler's job now, outside its trigger."""
    return {"id": request_id, "source": "signalbox", "event_type": RUN_REQUESTED_EVENT_TYPE,
            "handler_id": handler_id, "params": params}


def trigger_for_request(handler: Handler, request: dict[str, Any], event_text: str) -> dict[str, Any]:
    params = request.get("params") if isinstance(request.get("params"), dict) else {}
    return make_trigger(handler, "manual", f"manual:{request.get('id')}", params, event_text)


def command_from_trigger(trigger: dict[str, Any], cursor_json: str | None, now_ms: int) -> dict[str, Any]:
    """The job command; its initial state is the trigger's own (flows) or the job's cursor."""
    return {
        "run_id": trigger["run_id"],
        "job": trigger["job"],
        "handler_id": trigger["handler_id"],
        "trigger_kind": trigger["trigger_kind"],
        "trigger_ref": trigger["trigger_ref"],
        "params_json": trigger["params_json"],
        "event_json": trigger.get("event_json"),
        "initial_state_json": trigger.get("initial_state_json", cursor_json),
        "attempt": trigger.get("attempt", 1),
        "timeout_seconds": float(trigger.get("timeout_seconds", 300.0)),
        "event_time": trigger.get("event_time"),
        "created_at": now_ms,
    }


@dataclass
class Settlement:
    """What settling one run result does: maybe store a state, emit internal events."""

    state_to_store: str | None
    events: list[dict[str, Any]] = field(default_factory=list)
    state_value: Any = None  # state_to_store, parsed


def _ms(value: Any) -> int:
    # fastavro gives timestamp-millis back as aware datetimes
    return int(value.timestamp() * 1000) if hasattr(value, "timestamp") else int(value)


def duration_ms(record: dict[str, Any]) -> int:
    """A run result's run time: finished_at - started_at, in milliseconds."""
    return _ms(record["finished_at"]) - _ms(record["started_at"])


def _attempt_status(record: dict[str, Any], new_status: str) -> dict[str, Any]:
    """The fields of a status event about one attempt of a run (command or result)."""
    attempt = record.get("attempt", 1)
    return {
        "id": f"{record['run_id']}:status:{new_status}:{attempt}",
        "source": "internal",
        "event_type": STATUS_EVENT_TYPE,
        "new_status": new_status,
        "job": record["job"], "run_id": record["run_id"], "handler_id": record["handler_id"],
        "attempt": attempt,
    }


def started_event(command: dict[str, Any]) -> dict[str, Any]:
    """The internal status event a runner emits as it starts an attempt (Mistral's
    TASK_LAUNCHED); flow and catch handlers ignore it."""
    return _attempt_status(command, STARTED)


def retrying_event(result: dict[str, Any], retry_in_ms: int) -> dict[str, Any]:
    """The internal status event of an attempt that failed and will be retried. Flow and
    catch handlers ignore it: they fire on the run's final outcome only."""
    return {
        **_attempt_status(result, RETRYING),
        "attempt_status": result["status"],
        "error": result.get("error"),
        "duration_ms": duration_ms(result),
        "retry_in_ms": retry_in_ms,
    }


def settle(result: dict[str, Any], limits: StateLimits) -> Settlement:
    """The state to store and the internal events for one run result.

    Raises ValueError when ``final_state_json`` is not a JSON object."""
    status = result["status"]
    final = result.get("final_state_json")
    # ValueError if not JSON; one level less than events may have: the status event holds it
    final_state = jsonvalue.loads(final, max_depth=jsonvalue.DEFAULT_MAX_DEPTH - 1) if final is not None else None
    if final is not None and not isinstance(final_state, dict):
        raise ValueError("final_state_json must hold a JSON object")
    size = len(final.encode("utf-8")) if final is not None else 0
    base = {"job": result["job"], "run_id": result["run_id"], "handler_id": result["handler_id"]}
    status_event = {
        "id": f"{result['run_id']}:status:{status}",
        "source": "internal",
        "event_type": STATUS_EVENT_TYPE,
        "new_status": NEW_STATUS[status],
        **base,
        "error": result.get("error"),
        "attempt": result.get("attempt", 1),
        "duration_ms": duration_ms(result),
        "state_bytes": size,
        # what a flow/catch handler's run starts with (OpenFn passes it downstream)
        "final_state": final_state,
    }
    settlement = Settlement(state_to_store=None)
    if status == "succeeded" and final is not None:
        decision = limits.decide(size)
        if decision is not StateDecision.REJECT_TOO_LARGE:
            settlement.state_to_store = final
            settlement.state_value = final_state
        if decision is not StateDecision.STORE:
            stored = decision is StateDecision.STORE_WITH_WARNING
            settlement.events.append({
                "id": f"{result['run_id']}:state-size",
                "source": "internal",
                "event_type": STATE_WARNING_EVENT_TYPE,
                **base,
                "state_bytes": size,
                "warn_bytes": limits.warn_bytes,
                "max_bytes": limits.max_bytes,
                "stored": stored,
            })
        status_event["state_stored"] = settlement.state_to_store is not None
    settlement.events.insert(0, status_event)
    return settlement
