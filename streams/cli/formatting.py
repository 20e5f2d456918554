"""One line per handler, command and result, as `tail`, `handlers list` and `dev` print them."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from streams.model import handlers, jsonvalue


def describe_trigger(h: handlers.Handler) -> str:
    if h.event is not None:
        parts = {k: v for k, v in h.event.model_dump(exclude_none=True).items() if v not in ({}, None)}
        text = "event " + jsonvalue.dumps(parts)
    elif h.cron is not None:
        text = f"cron {h.cron.schedule!r} {h.cron.timezone} misfire={h.cron.misfire}"
    else:
        assert h.after is not None
        text = f"after {h.after.job} status={h.after.status} state={h.after.state}"
    return text + ("\tonce" if h.once else "")


def ms_of(value: Any) -> int:
    return int(value.timestamp() * 1000) if isinstance(value, datetime) else int(value)


def format_result(r: dict[str, Any]) -> str:
    duration = ms_of(r["finished_at"]) - ms_of(r["started_at"])
    size = len(r["final_state_json"].encode()) if r["final_state_json"] else 0
    line = (f"RESULT  job={r['job']} handler={r['handler_id']} run={r['run_id']} "
            f"status={r['status']} duration={duration}ms state={size}B")
    if r["job"].startswith(("webhook.", "email.")) and r["final_state_json"]:
        try:
            d = json.loads(r["final_state_json"]).get("delivery") or {}
        except (ValueError, AttributeError):
            d = {}
        if d:
            line += f" delivery={d.get('transport')}:{d.get('host')} status={d.get('status')} " \
                    f"{d.get('ms')}ms attempt={d.get('attempt')}"
    return line + (f" error={r['error']!r}" if r["error"] else "")


def format_command(c: dict[str, Any]) -> str:
    state = len(c["initial_state_json"].encode()) if c["initial_state_json"] else 0
    ref = c["trigger_ref"]
    trigger = ref if ref.startswith(f"{c['trigger_kind']}:") else f"{c['trigger_kind']}:{ref}"
    return (f"COMMAND job={c['job']} handler={c['handler_id']} run={c['run_id']} "
            f"trigger={trigger} params={c['params_json']} state={state}B")
