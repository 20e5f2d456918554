"""The run book survives a kill -9 at any point of a batch's table writes.

The schedule step sends a batch's commands and its states together (both acknowledged),
then its ``job-runs`` writes in ``write_order``; a kill keeps any subset of the commands and
states, or all of them and a prefix of the ``job-runs`` writes, and the batch's input
records, never committed, are processed again by the successor. This test
plays every such crash, for every batch of a scenario (triggers that queue, runs that
settle, one that fails and retries, an event replayed while its run waits), against the
pure ``RunBook`` with in-memory stores, and checks what an operator would count from
outside: every trigger's run is commanded, each run id always with one initial state, and
the cursor counts every trigger once.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any

import pytest

from streams.engine.runbook import Outputs, RunBook, write_order
from streams.model.state_rules import StateLimits

DELETED = object()
JOB = "counter"


class Held:
    """A store over a dict that holds its writes (like the worker's overlay)."""

    def __init__(self, base: dict[str, Any]) -> None:
        self.base = base
        self.writes: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        if key in self.writes:
            value = self.writes[key]
            return None if value is DELETED else value
        value = self.base.get(key)  # decoded afresh, as from RocksDB
        return None if value is None else json.loads(json.dumps(value))

    def set(self, key: str, value: Any) -> None:
        self.writes[key] = json.loads(json.dumps(value))  # stored as its changelog record would be

    def delete(self, key: str) -> None:
        self.writes[key] = DELETED


def apply(base: dict[str, Any], writes: list[tuple[str, Any]]) -> None:
    for key, value in writes:
        if value is DELETED:
            base.pop(key, None)
        else:
            base[key] = value


def trigger(n: int, retry: bool = False) -> dict[str, Any]:
    t = {"run_id": f"run-{n}", "job": JOB, "handler_id": "h", "trigger_kind": "event", "trigger_ref": f"id:e{n}",
         "params_json": json.dumps({"fail_first": retry}), "event_json": None, "timeout_seconds": 30.0,
         "event_time": None}
    if retry:
        t["retry"] = {"attempts": 3, "backoff": {"initial_seconds": 0, "factor": 1, "max_seconds": 0}}
    return t


def run(command: dict[str, Any]) -> dict[str, Any]:
    """The job: counts its runs; a run asked to fail its first attempt does."""
    state = json.loads(command["initial_state_json"] or "{}")
    fails = json.loads(command["params_json"])["fail_first"] and command["attempt"] == 1
    return {"run_id": command["run_id"], "job": command["job"], "handler_id": command["handler_id"],
            "attempt": command["attempt"], "status": "failed" if fails else "succeeded",
            "final_state_json": None if fails else json.dumps({"count": state.get("count", 0) + 1}),
            "error": "first attempt fails" if fails else None, "started_at": 0, "finished_at": 1}


def play(crash_at: tuple[int, int] | None, keep_book: bool = False) -> tuple[list[dict[str, Any]], dict[str, Any], int]:
    """Run the scenario; crash_at = (batch number, how many of its job-runs writes survive,
    -1 for: its commands and not its states, -2: its states and not its commands, -3:
    neither, -4: its commands and those of the next batch, decided on its unwritten writes,
    and no table write of either). ``keep_book``: one book lives from batch to batch (with
    its in-memory index of waiting runs), as in a worker, until the crash; else each batch
    gets a new one (the index is read from the stores every time). Returns the commands,
    the final stores and the batches."""
    runs: dict[str, Any] = {}
    states: dict[str, Any] = {}
    commands: list[dict[str, Any]] = []
    inbox: deque[tuple[str, dict[str, Any]]] = deque(("trigger", trigger(n, retry=n == 2)) for n in range(5))
    inbox.append(("trigger", trigger(3)))  # a replayed event while its run waits
    batch = 0
    book: RunBook | None = None

    def decide(kind: str, record: dict[str, Any], book: RunBook, held_runs: Held, number: int) -> Outputs:
        def seen(run_id: str) -> bool:
            return any(run_id in v for k, v in {**held_runs.base, **held_runs.writes}.items()
                       if k.startswith("b:") and v is not DELETED)

        out = Outputs()
        if kind == "trigger" and record.get("kind") == "retry":
            book.on_retry_due(record, 10**12, out)
        elif kind == "trigger":
            book.on_trigger(record, 10**12, seen, out)
        else:
            book.on_result(record, json.dumps(record).encode(), 10**12, seen, out)
        if out.accepted:
            held_runs.set(f"b:{number:06d}", out.accepted)
        return out

    def land(out: Outputs) -> None:
        sent = [json.loads(value) for _, value in out.commands]
        commands.extend(sent)  # acknowledged before any job-runs write
        for command in sent:
            inbox.append(("result", run(command)))

    while inbox and batch < 200:
        kind, record = inbox[0]
        held_runs, held_states = Held(runs), Held(states)
        if book is None or not keep_book:
            book = RunBook(held_runs, held_states, StateLimits(), 1000, lambda job: 1,
                           lambda c: json.dumps(c).encode())
        book.runs, book.states = held_runs, held_states
        out = decide(kind, record, book, held_runs, batch)
        crashes = crash_at is not None and crash_at[0] == batch
        if not (crashes and crash_at is not None and crash_at[1] in (-2, -3)):
            land(out)
        for key in [k for k in held_runs.writes if k.startswith("t:")]:
            if held_runs.writes[key] is not DELETED:  # a retry timer: due at once here
                inbox.append(("trigger", {"kind": "retry", "job": JOB, "run_id": key.rsplit(":", 1)[1],
                                          "attempt": held_runs.writes[key], "key": key}))
        ordered = sorted(held_runs.writes.items(), key=lambda kv: write_order(kv[0], kv[1] is DELETED))
        if crashes and crash_at is not None:
            if crash_at[1] == -4 and len(inbox) > 1:
                # pipelined: the next batch was decided on this one's unwritten writes, and
                # its commands landed; neither batch's table writes did
                runs_next, states_next = dict(runs), dict(states)
                apply(runs_next, ordered)
                apply(states_next, list(held_states.writes.items()))
                after_runs, after_states = Held(runs_next), Held(states_next)
                book.runs, book.states = after_runs, after_states
                land(decide(*inbox[1], book, after_runs, batch + 1))
            if crash_at[1] >= 0 or crash_at[1] == -2:
                apply(states, list(held_states.writes.items()))
            if crash_at[1] >= 0:
                apply(runs, ordered[:crash_at[1]])
            crash_at = None  # the successor takes the same record again
            book = None  # with nothing of the dead worker's memory
        else:
            apply(states, list(held_states.writes.items()))
            apply(runs, ordered)
            inbox.popleft()
        batch += 1
    return commands, {"runs": runs, "states": states}, batch


def check(commands: list[dict[str, Any]], stores: dict[str, Any], where: str) -> None:
    starts: dict[str, set[str | None]] = {}
    for c in commands:
        starts.setdefault(c["run_id"], set()).add(c["initial_state_json"])
    assert sorted(starts) == [f"run-{n}" for n in range(5)], f"{where}: runs commanded {sorted(starts)}"
    assert all(len(s) == 1 for s in starts.values()), f"{where}: a run commanded with two states: {starts}"
    counts = sorted(json.loads(next(iter(s)) or "{}").get("count", 0) for s in starts.values())
    assert counts == [0, 1, 2, 3, 4], f"{where}: runs started from counts {counts}"
    assert stores["states"][JOB] == {"count": 5}, f"{where}: final state {stores['states'].get(JOB)}"
    meta = stores["runs"][f"m:{JOB}"]
    assert meta["running"] == {} and meta["head"] == meta["tail"], f"{where}: job left {meta}"


@pytest.mark.parametrize("keep_book", [False, True])
def test_the_scenario_without_a_crash_counts_every_trigger_once(keep_book: bool) -> None:
    commands, stores, _ = play(None, keep_book)
    check(commands, stores, "no crash")
    assert [c["attempt"] for c in commands if c["run_id"] == "run-2"] == [1, 2]


def batches_and_writes() -> list[tuple[int, int]]:
    _, _, batches = play(None)
    points = []
    for b in range(batches):
        for k in range(-4, 12):
            points.append((b, k))
    return points


@pytest.mark.parametrize("keep_book", [False, True], ids=["book-per-batch", "book-kept"])
@pytest.mark.parametrize("crash_at", batches_and_writes(), ids=lambda p: f"batch{p[0]}-writes{p[1]}")
def test_a_crash_after_any_prefix_of_any_batch_loses_nothing_and_counts_once(crash_at: tuple[int, int],
                                                                             keep_book: bool) -> None:
    commands, stores, _ = play(crash_at, keep_book)
    check(commands, stores, f"crash at batch {crash_at[0]} after {crash_at[1]} job-runs writes")
