"""The records that flow between the steps, built by pure functions (no Kafka here).

match  -> trigger   (JSON on the triggers topic, keyed by job)
schedule -> command (Avro JobCommand on job-commands, keyed by job)
settle -> state to store + internal events (JSON on the events topic)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import jsonvalue
from .identity import run_id
from .matching import Match
from .state_rules import StateDecision, StateLimits

# Run statuses as the feeder names them in its "WorkflowExecution Status Change" events.
NEW_STATUS = {"succeeded": "finished", "failed": "failed", "timed_out": "timed_out"}
STATUS_EVENT_TYPE = "JobRun Status Change"
STATE_WARNING_EVENT_TYPE = "JobState Size Warning"


def trigger_for_event(match: Match, event_text: str, trigger_ref: str, event_time_ms: int | None) -> dict[str, Any]:
    handler = match.handler
    return {
        "run_id": run_id(handler.id, trigger_ref),
        "job": handler.job,
        "handler_id": handler.id,
        "trigger_kind": "event",
        "trigger_ref": trigger_ref,
        "params_json": jsonvalue.dumps(match.params),
        "event_json": event_text,
        "timeout_seconds": handler.timeout_seconds,
        "event_time": event_time_ms,
    }


def command_from_trigger(trigger: dict[str, Any], initial_state_json: str | None, now_ms: int) -> dict[str, Any]:
    return {
        "run_id": trigger["run_id"],
        "job": trigger["job"],
        "handler_id": trigger["handler_id"],
        "trigger_kind": trigger["trigger_kind"],
        "trigger_ref": trigger["trigger_ref"],
        "params_json": trigger["params_json"],
        "event_json": trigger.get("event_json"),
        "initial_state_json": initial_state_json,
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


def settle(result: dict[str, Any], limits: StateLimits) -> Settlement:
    def ms(value: Any) -> int:
        # fastavro gives timestamp-millis back as aware datetimes
        return int(value.timestamp() * 1000) if hasattr(value, "timestamp") else int(value)

    status = result["status"]
    final = result.get("final_state_json")
    size = len(final.encode("utf-8")) if final is not None else 0
    base = {"job": result["job"], "run_id": result["run_id"], "handler_id": result["handler_id"]}
    status_event = {
        "id": f"{result['run_id']}:status:{status}",
        "source": "internal",
        "event_type": STATUS_EVENT_TYPE,
        "new_status": NEW_STATUS[status],
        **base,
        "error": result.get("error"),
        "duration_ms": ms(result["finished_at"]) - ms(result["started_at"]),
        "state_bytes": size,
    }
    settlement = Settlement(state_to_store=None)
    if status == "succeeded" and final is not None:
        decision = limits.decide(size)
        if decision is not StateDecision.REJECT_TOO_LARGE:
            settlement.state_to_store = final
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
