"""The gateway's read model: runs, jobs, handlers and the latest events in SQLite, built by
consuming the topics. Kafka stays the only source of truth: delete the file and the next
start rebuilds it from the topics (as far back as their retention reaches, docs/api.md).

Each batch of records and the offsets it came from are written in one SQLite transaction,
so a restart resumes exactly where the last one stopped. Records the gateway cannot read
are counted and skipped (the worker dead-letters them; the gateway only reads).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from streams.contracts import avro, records
from streams.contracts import topics as topics_mod
from streams.gateway.config import GatewaySettings
from streams.kafka.connection import kafka_of
from streams.model import handlers, provenance
from streams.settings import Settings

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS offsets (topic TEXT, partition INTEGER, next INTEGER, PRIMARY KEY (topic, partition));
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, job TEXT, handler_id TEXT, trigger_kind TEXT, trigger_ref TEXT,
    params_json TEXT, event_json TEXT, initial_state_json TEXT, created_at INTEGER,
    status TEXT, rank INTEGER, attempt INTEGER, final_state_json TEXT, error TEXT,
    dead_letter_reason TEXT, updated_at INTEGER);
CREATE INDEX IF NOT EXISTS runs_by_time ON runs (created_at DESC, run_id DESC);
CREATE INDEX IF NOT EXISTS runs_by_job ON runs (job, created_at DESC);
CREATE INDEX IF NOT EXISTS runs_by_handler ON runs (handler_id, created_at DESC);
CREATE TABLE IF NOT EXISTS attempts (
    run_id TEXT, attempt INTEGER, status TEXT, started_at INTEGER, finished_at INTEGER,
    error TEXT, delivery_json TEXT, runner TEXT, PRIMARY KEY (run_id, attempt));
CREATE TABLE IF NOT EXISTS handlers (
    id TEXT PRIMARY KEY, value TEXT, valid INTEGER, error TEXT, offset INTEGER, updated_at INTEGER);
CREATE TABLE IF NOT EXISTS jobs (
    job TEXT PRIMARY KEY, state_json TEXT, state_bytes INTEGER, state_updated_at INTEGER,
    running_json TEXT, waiting INTEGER);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, partition INTEGER, offset INTEGER, id TEXT, type TEXT,
    creator TEXT, ts INTEGER, value TEXT);
CREATE INDEX IF NOT EXISTS events_by_id ON events (id);
CREATE TABLE IF NOT EXISTS dead_letters (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, partition INTEGER, offset INTEGER, ts INTEGER, reason TEXT,
    source_topic TEXT, source_partition INTEGER, source_offset INTEGER, key BLOB, headers_json TEXT,
    value BLOB, value_bytes INTEGER, truncated_from INTEGER, replayed_at INTEGER, replayed_as TEXT);
"""

# how a run's status moves: a later attempt beats an earlier one, a final status beats all
PHASE = {"queued": 0, "running": 1, "retrying": 2}
FINAL_RANK = {"succeeded": 1_000_000, "failed": 1_000_000, "timed_out": 1_000_000, "dead_lettered": 2_000_000}
STATUSES = ("queued", "running", "retrying", "succeeded", "failed", "timed_out", "dead_lettered")
FROM_NEW_STATUS = {"started": "running", "retrying": "retrying", "finished": "succeeded", "failed": "failed",
                   "timed_out": "timed_out"}
EVENTS_KEPT = 10_000
DEAD_LETTERS_KEPT = 10_000
DEAD_LETTER_SOURCE_HEADERS = ("reason", "source_topic", "source_partition", "source_offset", "truncated_from")


def _rank(status: str, attempt: int) -> int:
    return FINAL_RANK.get(status, attempt * 10 + PHASE.get(status, 0))


def changelog_topic(settings: Settings, table: str) -> str:
    return f"{settings.app_id}-{table}-changelog"


@dataclass
class Page:
    runs: list[dict[str, Any]]
    next: str | None


class ReadModel:
    def __init__(self, settings: Settings, gs: GatewaySettings, topics: topics_mod.Topics) -> None:
        self.settings = settings
        self.topics = topics
        self.path = gs.db_path
        self.rebuilt = not Path(self.path).exists()
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)
        self.state_topic = changelog_topic(settings, "job-state")
        self.runs_topic = changelog_topic(settings, "job-runs")
        self.wanted = [topics.events, topics.job_commands, topics.run_results, topics.handlers, topics.dead_letter,
                       self.state_topic, self.runs_topic]
        self.skipped = 0
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._assigned: set[TopicPartition] = set()
        self._progress = asyncio.Event()
        self.listeners: list[Any] = []  # callables(kind, data) told of each applied record
        self.applied: Counter[str] = Counter()  # records applied so far, by kind: what a page was rendered at

    # -- consuming -----------------------------------------------------------------------

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            **kafka_of(self.settings).aiokafka_kwargs(), enable_auto_commit=False,
            fetch_max_wait_ms=self.settings.fetch_max_wait_ms, auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 << 20,
        )
        await self._consumer.start()
        await self._assign()
        self._task = asyncio.create_task(self._run(), name="readmodel")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()
        self.db.close()

    async def _assign(self) -> None:
        """Assign every partition of the wanted topics that exists (changelogs appear when a
        worker first starts); resume from the stored offsets."""
        assert self._consumer is not None
        await self._consumer._client.force_metadata_update()  # new topics since the last look
        found: set[TopicPartition] = set()
        for topic in self.wanted:
            parts = self._consumer.partitions_for_topic(topic)
            if parts is None:
                self._consumer._client.add_topic(topic)
                continue
            found |= {TopicPartition(topic, p) for p in parts}
        if found == self._assigned:
            return
        self._consumer.assign(sorted(found))
        stored = {(r["topic"], r["partition"]): r["next"] for r in self.db.execute("SELECT * FROM offsets")}
        for tp in found:
            if (tp.topic, tp.partition) in stored:
                self._consumer.seek(tp, stored[(tp.topic, tp.partition)])
            else:
                await self._consumer.seek_to_beginning(tp)
        self._assigned = found

    async def _run(self) -> None:
        assert self._consumer is not None
        last_look = time.monotonic()
        while True:
            try:
                batches = await self._consumer.getmany(timeout_ms=200, max_records=2000)
            except Exception as exc:  # a broker hiccup must not end the read model
                log.warning("read model: fetch failed: %s", exc)
                await asyncio.sleep(1)
                continue
            if batches:
                self._apply(batches)
            self._progress.set()
            self._progress = asyncio.Event()
            if time.monotonic() - last_look > 5 or len(self._assigned) == 0:
                last_look = time.monotonic()
                try:
                    await self._assign()
                except Exception as exc:
                    log.warning("read model: metadata refresh failed: %s", exc)

    def _apply(self, batches: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        applied: list[tuple[str, dict[str, Any]]] = []
        self.db.execute("BEGIN")
        try:
            for tp, msgs in batches.items():
                for msg in msgs:
                    try:
                        out = self._apply_one(tp.topic, msg)
                    except Exception as exc:  # bad records are the worker's to dead-letter
                        self.skipped += 1
                        log.debug("read model: skipped %s/%s/%s: %s", tp.topic, tp.partition, msg.offset, exc)
                        out = None
                    if out is not None:
                        applied.append(out)
                self.db.execute("INSERT OR REPLACE INTO offsets VALUES (?, ?, ?)",
                                (tp.topic, tp.partition, msgs[-1].offset + 1))
            self.db.execute(f"DELETE FROM events WHERE seq <= (SELECT MAX(seq) FROM events) - {EVENTS_KEPT}")
            self.db.execute("DELETE FROM dead_letters WHERE seq <= (SELECT MAX(seq) FROM dead_letters) - "
                            f"{DEAD_LETTERS_KEPT}")
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        for kind, data in applied:
            self.applied[kind] += 1
            for listener in self.listeners:
                listener(kind, data)

    def _apply_one(self, topic: str, msg: ConsumerRecord[bytes, bytes]) -> tuple[str, dict[str, Any]] | None:
        ts = msg.timestamp
        if topic == self.topics.job_commands:
            return "command", self._command(avro.commands().decode(msg.value or b""), ts)
        if topic == self.topics.run_results:
            return "result", self._result(avro.results().decode(msg.value or b""), ts)
        if topic == self.topics.events:
            return self._event(msg, ts)
        if topic == self.topics.handlers:
            return self._handler(msg, ts)
        if topic == self.topics.dead_letter:
            return self._dead_letter(msg, ts)
        if topic == self.state_topic:
            self._state(msg, ts)
        elif topic == self.runs_topic:
            self._queue(msg)
        return None

    def _set_status(self, run_id: str, job: str, handler_id: str, status: str, attempt: int, ts: int,
                    **fields: Any) -> None:
        rank = _rank(status, attempt)
        self.db.execute(
            "INSERT INTO runs (run_id, job, handler_id, status, rank, attempt, updated_at, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id) DO UPDATE SET "
            "status = CASE WHEN excluded.rank >= runs.rank THEN excluded.status ELSE runs.status END, "
            "rank = MAX(runs.rank, excluded.rank), attempt = MAX(runs.attempt, excluded.attempt), "
            "updated_at = MAX(runs.updated_at, excluded.updated_at)",
            (run_id, job, handler_id, status, rank, attempt, ts, ts))
        for name, value in fields.items():
            if value is not None:
                self.db.execute(f"UPDATE runs SET {name} = ? WHERE run_id = ?", (value, run_id))

    def _command(self, c: dict[str, Any], ts: int) -> dict[str, Any]:
        created = _ms(c.get("created_at")) or ts
        self._set_status(c["run_id"], c["job"], c["handler_id"], "queued", c.get("attempt", 1), ts)
        self.db.execute(
            "UPDATE runs SET trigger_kind = ?, trigger_ref = ?, params_json = ?, event_json = ?, "
            "initial_state_json = COALESCE(initial_state_json, ?), created_at = MIN(created_at, ?) WHERE run_id = ?",
            (c["trigger_kind"], c["trigger_ref"], c["params_json"], c.get("event_json"), c.get("initial_state_json"),
             created, c["run_id"]))
        return c

    def _result(self, r: dict[str, Any], ts: int) -> dict[str, Any]:
        delivery = None
        if r.get("final_state_json") and r["job"].startswith(("webhook.", "email.")):
            with contextlib.suppress(ValueError, AttributeError):
                d = json.loads(r["final_state_json"]).get("delivery")
                delivery = json.dumps(d) if d else None
        self.db.execute("INSERT OR REPLACE INTO attempts VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (r["run_id"], r.get("attempt", 1), r["status"], _ms(r["started_at"]), _ms(r["finished_at"]),
                         r.get("error"), delivery, r.get("runner")))
        self._set_status(r["run_id"], r["job"], r["handler_id"], "running", r.get("attempt", 1), ts)
        if r["status"] == "succeeded":
            self.db.execute("UPDATE runs SET final_state_json = ? WHERE run_id = ?", (r.get("final_state_json"),
                                                                                     r["run_id"]))
        if r.get("error"):
            self.db.execute("UPDATE runs SET error = ? WHERE run_id = ?", (r["error"], r["run_id"]))
        return r

    def _event(self, msg: ConsumerRecord[bytes, bytes], ts: int) -> tuple[str, dict[str, Any]] | None:
        raw = msg.value
        if raw is None:
            return None
        doc = json.loads(raw)
        if not isinstance(doc, dict):
            return None
        headers = provenance.header_map(msg.headers)
        if records.is_status_event(doc):
            status = FROM_NEW_STATUS.get(doc.get("new_status", ""))
            if status is not None:
                attempt = doc.get("attempt", 1) if isinstance(doc.get("attempt"), int) else 1
                self._set_status(doc["run_id"], doc["job"], str(doc.get("handler_id")), status, attempt, ts,
                                 error=doc.get("error") if status != "succeeded" else None)
            return "status", doc
        event_id = doc.get("id") if isinstance(doc.get("id"), str) else None
        kind = doc.get("event_type", doc.get("type", doc.get("detail-type")))
        self.db.execute("INSERT INTO events (partition, offset, id, type, creator, ts, value) VALUES (?,?,?,?,?,?,?)",
                        (msg.partition, msg.offset, event_id, kind if isinstance(kind, str) else None,
                         headers.get(provenance.CREATOR), ts, raw.decode("utf-8", "replace")))
        return "event", doc

    def _handler(self, msg: ConsumerRecord[bytes, bytes], ts: int) -> tuple[str, dict[str, Any]] | None:
        handler_id = (msg.key or b"").decode("utf-8", "replace")
        if msg.value is None:
            self.db.execute("DELETE FROM handlers WHERE id = ?", (handler_id,))
            return "handler", {"id": handler_id, "deleted": True}
        error = None
        try:
            handlers.parse_handler(msg.value, key=handler_id)
        except handlers.InvalidHandler as exc:
            error = str(exc)
        self.db.execute("INSERT OR REPLACE INTO handlers VALUES (?, ?, ?, ?, ?, ?)",
                        (handler_id, msg.value.decode("utf-8", "replace"), error is None, error, msg.offset, ts))
        return "handler", {"id": handler_id, "deleted": False}

    def _dead_letter(self, msg: ConsumerRecord[bytes, bytes], ts: int) -> tuple[str, dict[str, Any]] | None:
        headers = provenance.header_map(msg.headers)
        run_id, job = headers.get("run_id"), headers.get("job")
        self.db.execute(
            "INSERT INTO dead_letters (partition, offset, ts, reason, source_topic, source_partition, source_offset, "
            "key, headers_json, value, value_bytes, truncated_from) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (msg.partition, msg.offset, ts, headers.get("reason", ""), headers.get("source_topic"),
             _int(headers.get("source_partition")), _int(headers.get("source_offset")), msg.key,
             json.dumps({k: v for k, v in headers.items() if k not in DEAD_LETTER_SOURCE_HEADERS}),
             msg.value, len(msg.value or b""), _int(headers.get("truncated_from"))))
        if run_id and job:
            self._set_status(run_id, job, headers.get("handler_id", ""), "dead_lettered", 0, ts,
                             dead_letter_reason=headers.get("reason", ""))
            return "dead_letter", {"run_id": run_id, "job": job, "reason": headers.get("reason", "")}
        return None

    def _state(self, msg: ConsumerRecord[bytes, bytes], ts: int) -> None:
        job = json.loads(msg.key or b'""')
        if msg.value is None:
            self.db.execute("UPDATE jobs SET state_json = NULL, state_bytes = 0 WHERE job = ?", (job,))
            return
        state = json.loads(msg.value)
        text = state if isinstance(state, str) else json.dumps(state)
        self.db.execute("INSERT INTO jobs (job, state_json, state_bytes, state_updated_at) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT (job) DO UPDATE SET state_json = excluded.state_json, "
                        "state_bytes = excluded.state_bytes, state_updated_at = excluded.state_updated_at",
                        (job, text, len(text.encode()), ts))

    def _queue(self, msg: ConsumerRecord[bytes, bytes]) -> None:
        key = json.loads(msg.key or b'""')
        if not isinstance(key, str) or not key.startswith("m:"):
            return
        job = key[2:]
        if msg.value is None:
            running, waiting = "[]", 0
        else:
            meta = json.loads(msg.value)
            running = json.dumps([{"run_id": run_id, "attempt": slot.get("attempt", 1),
                                   "retry_pending": "retry_key" in slot}
                                  for run_id, slot in meta.get("running", {}).items()])
            waiting = int(meta.get("tail", 0)) - int(meta.get("head", 0))
        self.db.execute("INSERT INTO jobs (job, running_json, waiting) VALUES (?, ?, ?) ON CONFLICT (job) DO UPDATE "
                        "SET running_json = excluded.running_json, waiting = excluded.waiting", (job, running, waiting))

    # -- reading -------------------------------------------------------------------------

    async def sync(self, topics: Iterable[str], timeout: float = 10.0) -> bool:
        """Wait until every record on ``topics`` as of now has been applied (read your
        writes across gateways); False when ``timeout`` passed first."""
        assert self._consumer is not None
        parts = [tp for tp in self._assigned if tp.topic in set(topics)]
        if not parts:
            return True
        ends = await self._consumer.end_offsets(parts)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stored = {(r["topic"], r["partition"]): r["next"] for r in self.db.execute("SELECT * FROM offsets")}
            if all(stored.get((tp.topic, tp.partition), 0) >= end for tp, end in ends.items()):
                return True
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    await self._progress.wait()
        return False

    def lag(self) -> int:
        """Records the consumer has seen on the broker (high watermarks of its last fetch)
        that the read model has not applied yet; 0 when caught up."""
        if self._consumer is None:
            return 0
        stored = {(r["topic"], r["partition"]): r["next"] for r in self.db.execute("SELECT * FROM offsets")}
        total = 0
        for tp in self._assigned:
            high = self._consumer.highwater(tp)
            if high is not None:
                total += max(0, high - stored.get((tp.topic, tp.partition), 0))
        return total

    def handlers(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute("SELECT * FROM handlers ORDER BY id")]

    def handler(self, handler_id: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM handlers WHERE id = ?", (handler_id,)).fetchone()
        return dict(row) if row else None

    def runs(self, job: str | None = None, handler_id: str | None = None, status: str | None = None,
             since_ms: int | None = None, until_ms: int | None = None, text: str | None = None,
             limit: int = 50, cursor: str | None = None) -> Page:
        where, args = [], []
        for column, value in (("job", job), ("handler_id", handler_id), ("status", status)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if since_ms is not None:
            where.append("created_at >= ?")
            args.append(since_ms)
        if until_ms is not None:
            where.append("created_at < ?")
            args.append(until_ms)
        if text:
            where.append("instr(event_json, ?) > 0")
            args.append(text)
        if cursor:
            created, _, run_id = cursor.partition(":")
            where.append("(created_at < ? OR (created_at = ? AND run_id < ?))")
            args += [int(created), int(created), run_id]
        sql = ("SELECT * FROM runs" + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY created_at DESC, run_id DESC LIMIT ?")
        rows = [dict(r) for r in self.db.execute(sql, [*args, limit + 1])]
        more = len(rows) > limit
        rows = rows[:limit]
        return Page([_run_row(r) for r in rows],
                    f"{rows[-1]['created_at']}:{rows[-1]['run_id']}" if more and rows else None)

    def run(self, run_id: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            return None
        out = _run_row(dict(row), full=True)
        out["attempts"] = [
            {**{k: a[k] for k in ("attempt", "status", "started_at", "finished_at", "error", "runner")},
             "duration_ms": (a["finished_at"] or 0) - (a["started_at"] or 0),
             "delivery": json.loads(a["delivery_json"]) if a["delivery_json"] else None}
            for a in self.db.execute("SELECT * FROM attempts WHERE run_id = ? ORDER BY attempt", (run_id,))]
        return out

    def job(self, job: str, last: int = 10) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM jobs WHERE job = ?", (job,)).fetchone()
        runs = self.runs(job=job, limit=last).runs
        if row is None and not runs:
            return None
        state = json.loads(row["state_json"]) if row is not None and row["state_json"] else None
        return {"job": job, "state": state, "state_bytes": row["state_bytes"] if row else 0,
                "state_updated_at": row["state_updated_at"] if row else None,
                "running": json.loads(row["running_json"]) if row is not None and row["running_json"] else [],
                "waiting": row["waiting"] or 0 if row is not None else 0, "last_runs": runs}

    def jobs(self) -> list[dict[str, Any]]:
        return [{"job": r["job"], "state_bytes": r["state_bytes"] or 0, "waiting": r["waiting"] or 0,
                 "running": len(json.loads(r["running_json"])) if r["running_json"] else 0}
                for r in self.db.execute("SELECT * FROM jobs ORDER BY job")]

    def events(self, limit: int = 50, event_id: str | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM events", []
        if event_id is not None:
            sql, args = sql + " WHERE id = ?", [event_id]
        rows = self.db.execute(sql + " ORDER BY seq DESC LIMIT ?", [*args, limit])
        return [{"id": r["id"], "type": r["type"], "creator": r["creator"], "partition": r["partition"],
                 "offset": r["offset"], "time": r["ts"], "event": json.loads(r["value"])} for r in rows]

    def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        """The latest dead letters, newest first (values as stored: show them redacted only)."""
        return [_dead_row(r) for r in self.db.execute("SELECT * FROM dead_letters ORDER BY seq DESC LIMIT ?",
                                                      (limit,))]

    def dead_letter(self, seq: int) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM dead_letters WHERE seq = ?", (seq,)).fetchone()
        return _dead_row(row) if row else None

    def mark_replayed(self, seq: int, ts: int, replayed_as: str) -> None:
        self.db.execute("UPDATE dead_letters SET replayed_at = ?, replayed_as = ? WHERE seq = ?",
                        (ts, replayed_as, seq))

    def last_fired(self) -> dict[str, int]:
        """handler id -> created_at of its newest run."""
        return {r[0]: r[1] for r in self.db.execute("SELECT handler_id, MAX(created_at) FROM runs GROUP BY handler_id")}

    def last_run_of_jobs(self) -> dict[str, dict[str, Any]]:
        """job -> its newest run (run_id, status, created_at)."""
        rows = self.db.execute("SELECT job, run_id, status, MAX(created_at) AS created_at FROM runs GROUP BY job")
        return {r["job"]: {"run_id": r["run_id"], "status": r["status"], "created_at": r["created_at"]} for r in rows}


def _int(value: str | None) -> int | None:
    return int(value) if value is not None and value.lstrip("-").isdigit() else None


def _dead_row(r: sqlite3.Row) -> dict[str, Any]:
    out = dict(r)
    out["headers"] = json.loads(out.pop("headers_json") or "{}")
    out["key"] = out["key"].decode("utf-8", "replace") if out["key"] is not None else None
    return out


def _run_row(r: dict[str, Any], full: bool = False) -> dict[str, Any]:
    out = {k: r[k] for k in ("run_id", "job", "handler_id", "status", "attempt", "trigger_kind", "trigger_ref",
                             "created_at", "updated_at", "error", "dead_letter_reason")}
    out["params"] = json.loads(r["params_json"]) if r.get("params_json") else None
    if full:
        for name in ("event_json", "initial_state_json", "final_state_json"):
            text = r.get(name)
            out[name.removesuffix("_json")] = json.loads(text) if text else None
            out[name.removesuffix("_json") + "_bytes"] = len(text.encode()) if text else 0
    return out


def _ms(value: Any) -> int:
    if value is None:
        return 0
    return int(value.timestamp() * 1000) if hasattr(value, "timestamp") else int(value)
