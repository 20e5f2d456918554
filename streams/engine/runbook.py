"""The run book of each job: which of its runs are in flight, which wait, which retry. Pure.

Every decision of the schedule step is made here, over two key-value stores (in the
worker: Faust tables behind a write overlay, see ``engine.py``):

- ``runs`` (table ``job-runs``, on the job's partition; one changelog, so its writes
  reach Kafka in the order they were made):

  ``m:<job>``                     ``{"running": {run_id: slot}, "head": h, "tail": t,
                                  "once": {handler id: arm token it last fired with},
                                  "cron": {handler id: last tick accepted}}``
  ``q:<job>:<seq>``               a trigger waiting its turn (``head <= seq < tail``)
  ``t:<due ms>:<job>:<run_id>``   a retry due at that time -> the attempt it starts

  Whether a run id was accepted is answered by the job's ``m:`` record (running), its
  queue entries (waiting: an index of run id -> seq kept in memory, read from the
  entries ``head..tail`` the first time a job's queue is asked, and dropped with
  :meth:`RunBook.forget_queues` when the worker's partitions change or a unit's writes are
  rolled back) and by the de-duplication entries (``dedup.py``: runs that settled). A crash
  keeps a prefix of the batch's writes (one changelog partition keeps them in order), and
  the caller writes them in this order (``write_order``): new ``q:`` and ``t:`` entries,
  then de-duplication entries, then ``m:`` records, then the deletions of the entries the
  ``m:`` records no longer point to. So whatever prefix survives, a
  trigger replayed after the crash is recognised (its run waits, runs, or has settled) or
  queued again in the same place, never twice; a result replayed is settled again only if
  its run is still running; a job record never points to a queue entry or timer that is
  gone (``tests/test_runbook_crash.py`` plays every such crash).

  a slot is ``{"attempt", "first_ms", "trigger"?, "retry_key"?}``: ``trigger`` is kept
  only for runs with a retry policy, ``retry_key`` while a retry is pending;
- ``states`` (table ``job-state``): job -> its cursor, the last accepted final state.

The rule (OpenFn's): a run's final state is the next run's initial state. So at most
``concurrency`` runs of a job are in flight (1 by default); a trigger that finds no free
slot waits in the job's queue, and a command is written for it only when a run settles,
carrying the state that run left. A failed run with a retry policy keeps its slot until
it succeeds or gives up.

The book returns what to do in :class:`Outputs`; the caller sends the commands, waits
for the broker's acknowledgements, and only then writes the stores, with the
de-duplication entries of the runs that settled.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from streams.contracts import records
from streams.model import jsonvalue
from streams.model.state_rules import StateLimits

log = logging.getLogger(__name__)


class Store(Protocol):
    def get(self, key: str) -> Any: ...
    def set(self, key: str, value: Any) -> None: ...
    def delete(self, key: str) -> None: ...


@dataclass
class DeadLetter:
    """A record the schedule step gives up on: its value, the reason, extra headers."""

    value: bytes
    reason: str
    headers: dict[str, str] = field(default_factory=dict)
    kind: str = "other"  # the reason's class, a label of signalbox_dead_letters_total (engine/metrics.py)


@dataclass
class Outputs:
    commands: list[tuple[str, bytes]] = field(default_factory=list)  # (job, encoded command)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (job, internal event)
    dead: list[DeadLetter] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)  # run ids that settled: their dedup entries
    # what the metrics count (engine/metrics.py), once the batch is written
    duplicates: list[str] = field(default_factory=list)  # job of each trigger dropped: its run was scheduled
    attempts: list[tuple[str, float]] = field(default_factory=list)  # (job, seconds) of each attempt's result
    retries: list[str] = field(default_factory=list)  # job of each failed attempt retried
    settled: list[tuple[str, str]] = field(default_factory=list)  # (job, final status) of each run settled
    states: list[tuple[str, int]] = field(default_factory=list)  # (job, bytes) of each state stored

    def merge(self, other: Outputs) -> None:
        """Add another unit's outputs to these."""
        self.commands += other.commands
        self.events += other.events
        self.dead += other.dead
        self.accepted += other.accepted
        self.duplicates += other.duplicates
        self.attempts += other.attempts
        self.retries += other.retries
        self.settled += other.settled
        self.states += other.states


def meta_key(job: str) -> str:
    return f"m:{job}"


def queue_key(job: str, seq: int) -> str:
    return f"q:{job}:{seq:012d}"


def retry_key(due_ms: int, job: str, run_id: str) -> str:
    return f"t:{due_ms:015d}:{job}:{run_id}"


def parse_retry_key(key: str) -> tuple[int, str, str]:
    """(due ms, job, run id) of a ``t:`` key; job names contain no ``:``-free guarantee, so
    the run id (a UUID) is taken from the right."""
    _, due, rest = key.split(":", 2)
    job, _, run_id = rest.rpartition(":")
    return int(due), job, run_id


def backoff_ms(policy: dict[str, Any], attempt: int, rng: random.Random) -> int:
    """The wait before attempt ``attempt + 1``, after attempt ``attempt`` failed."""
    b = policy.get("backoff") or {}
    delay = min(b.get("initial_seconds", 1.0) * b.get("factor", 2.0) ** (attempt - 1), b.get("max_seconds", 300.0))
    jitter = policy.get("jitter") or 0.0
    if jitter:
        delay *= 1 + jitter * rng.uniform(-1.0, 1.0)
    return max(0, int(delay * 1000))


def empty_meta() -> dict[str, Any]:
    return {"running": {}, "head": 0, "tail": 0, "once": {}, "cron": {}}


def delivery_of(result: dict[str, Any]) -> dict[str, Any]:
    """What a delivery's run result says of it (``delivery/webhook.py``), or {}."""
    try:
        state = jsonvalue.loads(result.get("final_state_json") or "{}")
    except ValueError:
        return {}
    delivery = state.get("delivery") if isinstance(state, dict) else None
    return delivery if isinstance(delivery, dict) else {}


def write_order(key: str, deleted: bool = False) -> int:
    """New queue entries and retry timers first, then de-duplication entries, then job
    records, then the queue entries and timers they no longer point to: any prefix of a
    batch's writes is safe to resume from (module docstring)."""
    if deleted and key[:1] in ("q", "t", "w"):  # w: entries of earlier versions
        return 3
    return {"q": 0, "t": 0, "w": 0, "b": 1, "m": 2}.get(key[:1], 4)


class RunBook:
    def __init__(self, runs: Store, states: Store, limits: StateLimits, queue_max: int,
                 concurrency: Callable[[str], int], encode: Callable[[dict[str, Any]], bytes],
                 rng: random.Random | None = None) -> None:
        self.runs = runs
        self.states = states
        self.limits = limits
        self.queue_max = queue_max
        self.concurrency = concurrency
        self.encode = encode
        self.rng = rng or random.Random()
        self._queued: dict[str, dict[str, int]] = {}  # job -> {run id: seq} of its queue entries

    def forget_queues(self) -> None:
        """Drop the in-memory index of waiting run ids (read again from the queue entries
        when next asked): after the stores' writes were rolled back, or the partitions
        this worker owns changed."""
        self._queued.clear()

    def _queue_index(self, job: str, meta: dict[str, Any]) -> dict[str, int]:
        index = self._queued.get(job)
        if index is None:
            index = {}
            for seq in range(meta["head"], meta["tail"]):
                trigger = self.runs.get(queue_key(job, seq))
                if trigger is not None:
                    index[trigger["run_id"]] = seq
            self._queued[job] = index
        return index

    # -- triggers ---------------------------------------------------------------------

    def on_trigger(self, trigger: dict[str, Any], now: int, seen: Callable[[str], bool], out: Outputs) -> None:
        """A new trigger: start its run, queue it, or drop it (seen before, disarmed, or
        the queue is full: dead-lettered)."""
        run_id, job, handler_id = trigger["run_id"], trigger["job"], trigger["handler_id"]
        meta = self.runs.get(meta_key(job)) or empty_meta()
        # "waiting": the list job records held before the w: entries
        why = ("running" if run_id in meta["running"] else "queued" if self._waits(meta, job, run_id)
               else "waiting list" if run_id in meta.get("waiting", ())
               else "settled or started in this batch" if seen(run_id) else None)
        if why is not None:
            log.info("run %s already scheduled (%s); trigger %s ignored", run_id, why, trigger["trigger_ref"])
            out.duplicates.append(job)
            return
        token = trigger.get("once_token")
        once = meta.setdefault("once", {})
        if token is not None and once.get(handler_id) == token:
            log.info("listener %s is disarmed; trigger %s ignored", handler_id, trigger["trigger_ref"])
            return
        if trigger.get("cron_tick") is not None:  # even when the tick overflows: it is not sent again
            ticks = meta.setdefault("cron", {})
            ticks[handler_id] = max(float(trigger["cron_tick"]), float(ticks.get(handler_id) or 0))
        if meta["head"] == meta["tail"] and len(meta["running"]) < self.concurrency(job):
            if not self._dispatch(meta, trigger, now, out):
                self.runs.set(meta_key(job), meta)
                return
        else:
            waiting = meta["tail"] - meta["head"]
            if waiting >= self.queue_max:
                out.dead.append(self._dead_trigger(
                    trigger, f"job {job!r} queue is full: {waiting} triggers wait (SIGNALBOX_JOB_QUEUE_MAX)",
                    "queue_full"))
                self.runs.set(meta_key(job), meta)
                return
            try:  # refuse now what could not be sent later
                self.encode(records.command_from_trigger(trigger, None, now))
            except Exception as exc:
                out.dead.append(self._dead_trigger(trigger, f"job command cannot be encoded: {exc}",
                                                   "command_unencodable"))
                self.runs.set(meta_key(job), meta)
                return
            self.runs.set(queue_key(job, meta["tail"]), trigger)
            self._queue_index(job, meta)[run_id] = meta["tail"]
            meta["tail"] += 1
        if token is not None:
            once[handler_id] = token
        self.runs.set(meta_key(job), meta)

    def _dispatch(self, meta: dict[str, Any], trigger: dict[str, Any], now: int, out: Outputs,
                  attempt: int = 1, first_ms: int | None = None) -> bool:
        """Write the trigger's command with the job's current state; take a slot. False
        (and a dead letter) when the command cannot be encoded."""
        job = trigger["job"]
        state = self.states.get(job)
        command = records.command_from_trigger(
            {**trigger, "attempt": attempt}, jsonvalue.dumps(state) if state is not None else None, now)
        try:
            encoded = self.encode(command)
        except Exception as exc:
            out.dead.append(self._dead_trigger(trigger, f"job command cannot be encoded: {exc}", "command_unencodable"))
            return False
        slot: dict[str, Any] = {"attempt": attempt, "first_ms": first_ms if first_ms is not None else now}
        if trigger.get("retry"):
            slot["trigger"] = trigger
        meta["running"][trigger["run_id"]] = slot
        out.commands.append((job, encoded))
        return True

    def _fill(self, job: str, meta: dict[str, Any], now: int, out: Outputs) -> None:
        """Start waiting triggers while the job has free slots."""
        limit = self.concurrency(job)
        while len(meta["running"]) < limit and meta["head"] < meta["tail"]:
            key = queue_key(job, meta["head"])
            trigger = self.runs.get(key)
            self.runs.delete(key)
            meta["head"] += 1
            if trigger is None:
                log.warning("job %s: queue entry %s is missing; skipped", job, key)
                continue
            self._queue_index(job, meta).pop(trigger["run_id"], None)
            self._dispatch(meta, trigger, now, out)

    def _waits(self, meta: dict[str, Any], job: str, run_id: str) -> bool:
        """Whether the run waits in the job's queue (between head and tail: an entry
        outside was written before a crash that lost its job record)."""
        if meta["head"] == meta["tail"]:
            return False
        seq = self._queue_index(job, meta).get(run_id)
        return seq is not None and meta["head"] <= seq < meta["tail"]

    # -- retries ----------------------------------------------------------------------

    def on_retry_due(self, item: dict[str, Any], now: int, out: Outputs) -> None:
        """A retry timer fired (sent by the owner's timer, possibly twice): start the next
        attempt unless it has started already."""
        job, run_id, attempt = item["job"], item["run_id"], int(item["attempt"])
        meta = self.runs.get(meta_key(job))
        slot = meta["running"].get(run_id) if meta else None
        if slot is None or slot.get("retry_key") is None or slot["attempt"] + 1 != attempt:
            log.info("retry %s of run %s: not pending (done already)", attempt, run_id)
            if item.get("key") and (slot is None or slot.get("retry_key") != item["key"]):
                self.runs.delete(item["key"])  # a timer whose run moved on (written before a crash)
            return
        self.runs.delete(slot.pop("retry_key"))
        trigger = slot["trigger"]
        del meta["running"][run_id]
        if self._dispatch(meta, trigger, now, out, attempt=attempt, first_ms=slot["first_ms"]):
            log.info("run %s of job %s: attempt %d started", run_id, job, attempt)
        else:
            self._fill(job, meta, now, out)
        self.runs.set(meta_key(job), meta)

    # -- results ----------------------------------------------------------------------

    def on_result(self, result: dict[str, Any], raw: bytes, now: int, seen: Callable[[str], bool],
                  out: Outputs) -> None:
        """A run result: store the state, emit the status events, retry or release the
        slot and start the next waiting trigger. A result whose final state cannot be
        accepted is dead-lettered (``raw``) and its run settled as failed."""
        job, run_id, attempt = result["job"], result["run_id"], result.get("attempt", 1)
        meta = self.runs.get(meta_key(job))
        slot = meta["running"].get(run_id) if meta else None
        if slot is None and not seen(run_id):
            reason = (f"run result for run {run_id} of job {job!r}, which was never scheduled "
                      "(or its de-duplication entry expired)")
            out.dead.append(DeadLetter(raw, reason, {"job": job, "run_id": run_id}, "unknown_run"))
            return
        if slot is None or slot["attempt"] != attempt or slot.get("retry_key") is not None:
            log.info("result of run %s attempt %s (job %s) is not in flight: a repeat; not settled again",
                     run_id, attempt, job)
            return
        assert meta is not None
        out.attempts.append((job, records.duration_ms(result) / 1000))
        if result["status"] != "succeeded" and self._retry(meta, slot, result, now, out):
            self.runs.set(meta_key(job), meta)
            return
        try:
            settlement = records.settle(result, self.limits)
        except ValueError as exc:  # e.g. an external executor's final state is not a JSON object
            reason = f"run result {run_id}: {exc}"
            out.dead.append(DeadLetter(raw, reason, {"job": job, "run_id": run_id}, "invalid_final_state"))
            result = {**result, "status": "failed", "final_state_json": None, "error": reason}
            if self._retry(meta, slot, result, now, out):
                self.runs.set(meta_key(job), meta)
                return
            settlement = records.settle(result, self.limits)
        if settlement.state_to_store is not None:
            self.states.set(job, settlement.state_value)
            out.states.append((job, len(settlement.state_to_store.encode("utf-8", "backslashreplace"))))
        for event in settlement.events:
            if event["event_type"] == records.STATE_WARNING_EVENT_TYPE:
                log.warning("job %s run %s: final state is %d bytes (stored: %s)", job, run_id,
                            event["state_bytes"], event["stored"])
            out.events.append((job, event))
        del meta["running"][run_id]
        out.settled.append((job, result["status"]))
        out.accepted.append(run_id)  # its de-duplication entry is written before this record
        self._fill(job, meta, now, out)
        self.runs.set(meta_key(job), meta)

    def _retry(self, meta: dict[str, Any], slot: dict[str, Any], result: dict[str, Any], now: int,
               out: Outputs) -> bool:
        """Schedule the next attempt of a failed run; False when it gives up (after a dead
        letter, if it had a retry policy) or has no policy."""
        trigger = slot.get("trigger")
        policy = trigger.get("retry") if trigger else None
        if not policy:
            return False
        attempt = slot["attempt"]
        limit = None
        delay = backoff_ms(policy, attempt, self.rng)
        delivery = delivery_of(result)
        if delivery.get("retry_after_seconds") is not None:  # the receiver's Retry-After, capped
            cap = (policy.get("backoff") or {}).get("max_seconds", 300.0) * 1000
            delay = int(min(max(delay, float(delivery["retry_after_seconds"]) * 1000), cap))
        if delivery.get("retry") is False:
            limit = "permanent"
        elif attempt >= policy["attempts"]:
            limit = "attempts"
        elif policy.get("max_age_seconds") and now + delay - slot["first_ms"] > policy["max_age_seconds"] * 1000:
            limit = "max_age"
        if limit is not None:
            assert trigger is not None
            out.dead.append(self._gave_up(trigger, result, attempt, limit))
            return False
        key = retry_key(now + delay, result["job"], result["run_id"])
        self.runs.set(key, attempt + 1)
        slot["retry_key"] = key
        out.events.append((result["job"], records.retrying_event(result, delay)))
        out.retries.append(result["job"])
        log.info("run %s of job %s: attempt %d %s; attempt %d in %d ms", result["run_id"], result["job"], attempt,
                 result["status"], attempt + 1, delay)
        return True

    # -- dead letters -----------------------------------------------------------------

    @staticmethod
    def _dead_trigger(trigger: dict[str, Any], reason: str, kind: str) -> DeadLetter:
        log.warning("trigger %s of handler %s dead-lettered: %s", trigger["trigger_ref"], trigger["handler_id"], reason)
        return DeadLetter(jsonvalue.dumps(trigger).encode("utf-8", "backslashreplace"), reason,
                          {"handler_id": trigger["handler_id"], "job": trigger["job"], "run_id": trigger["run_id"]},
                          kind)

    @staticmethod
    def _gave_up(trigger: dict[str, Any], result: dict[str, Any], attempts: int, limit: str) -> DeadLetter:
        """EventBridge's DLQ attributes: which rule, which target, how often, why."""
        error = (result.get("error") or result["status"])[:2000]
        why = {"attempts": "attempts exhausted", "max_age": "max_age_seconds reached",
               "permanent": "a permanent failure"}[limit]
        reason = f"run {result['run_id']} of job {result['job']} gave up after {attempts} attempts ({why}): {error}"
        log.warning("%s", reason)
        body = {"handler_id": trigger["handler_id"], "job": result["job"], "run_id": result["run_id"],
                "attempts": attempts, "last_status": result["status"], "last_error": result.get("error"),
                "limit": limit, "trigger_ref": trigger["trigger_ref"], "params_json": trigger["params_json"]}
        return DeadLetter(jsonvalue.dumps(body).encode("utf-8", "backslashreplace"), reason,
                          {"handler_id": trigger["handler_id"], "job": result["job"], "run_id": result["run_id"],
                           "attempts": str(attempts), "limit": limit, "last_error": error}, "gave_up")
