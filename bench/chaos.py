"""Kill -9 one of two workers under load and count, from outside, what that cost (not a test).

    python bench/chaos.py [--root CHECKOUT] [--events 3000] [--rate 300] [--jobs 100]
                          [--restart same|fresh|none] [--kill-after 0.4] [--seed N]

One embedded broker (127.0.0.1 only), the topics of the checkout's topics.yaml, one event
handler per job (``chaos<j>``, matching on the event field ``chaos_job``, params ``id`` and
``seq`` from the event), two workers (``python -m streams worker --jobs chaos_jobs``, each
with its own datadir, the built-in runner on) of the checkout ``--root``. Once both log
``[^Worker]: Ready``, ``--events`` events with unique ids are produced at ``--rate``/s,
spread over the jobs; after ``--kill-after`` of them were sent, the worker that owns the
most triggers partitions (parsed from its log) gets SIGKILL and, per ``--restart``, is
started again on the same datadir, on a fresh one, or not at all. Then the script reads
until nothing new arrives for ``--quiet`` seconds (or everything is accounted for).

Everything is counted from outside, with plain confluent-kafka consumers over every
partition from the beginning, decoding commands and results with fastavro and the
schemas/*.avsc alone:

- lost: events without a job command; duplicate commands: run ids commanded more than
  once; duplicate runs: run ids with more than one result; unfinished: commanded run ids
  without a result;
- cursor: per job, the highest final ``count`` of its results against the distinct events
  of the job (the job adds one per run, so they must be equal), and whether its distinct
  runs started from counts 0..n-1 (each from the state its predecessor left);
- failover: kill -> first command on each partition the killed worker owned; the longest
  gap in commands on the survivor's partitions around the kill; rebalance moments read
  from the workers' logs; produce -> command latency p50/p99/max and how long after the
  kill it stayed above 1 s.

The script imports only streams.kafka.broker, streams.contracts.topics and streams.kafka.client from its own
checkout; the workers run the ``streams`` package of ``--root`` (PYTHONPATH and cwd).
Every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import fastavro
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition
from fastavro.schema import fingerprint, load_schema, to_parsing_canonical_form

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
from streams.contracts import topics as topics_mod  # noqa: E402
from streams.kafka import client  # noqa: E402
from streams.kafka.broker import EmbeddedBroker  # noqa: E402
from streams.kafka.connection import KafkaConnection  # noqa: E402

READY_TEXT = b"[^Worker]: Ready"
LATENCY_SLOW_S = 1.0
GAP_REPORT_S = 0.3  # gaps in a partition's commands longer than this are listed


# -- Avro, from the .avsc alone ---------------------------------------------------------


class AvscDecoder:
    """Single-object Avro (2-byte marker + 8-byte CRC-64-AVRO fingerprint) with fastavro."""

    def __init__(self, path: Path) -> None:
        self.schema = load_schema(str(path))
        self.header = b"\xc3\x01" + bytes.fromhex(fingerprint(to_parsing_canonical_form(self.schema), "CRC-64-AVRO"))

    def decode(self, data: bytes) -> dict[str, Any]:
        if data[:10] != self.header:
            raise ValueError("not single-object Avro of this schema")
        return fastavro.schemaless_reader(io.BytesIO(data[10:]), self.schema)


# -- worker processes -------------------------------------------------------------------


@dataclass
class Worker:
    name: str
    datadir: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    ready_at: float | None = None
    killed_at: float | None = None

    def start(self, root: Path, env: dict[str, str]) -> None:
        self.datadir.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streams", "worker", "--jobs", "chaos_jobs", "--datadir", str(self.datadir)],
                env=env, cwd=root, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        self.started_at = time.time()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def check_ready(self) -> bool:
        """Whether the log says Ready; ready_at is the log line's own time stamp."""
        if self.ready_at is None and self.log.exists() and READY_TEXT in self.log.read_bytes():
            stamps = log_moments(self.log, 0.0, (READY_TEXT.decode(),))
            self.ready_at = stamps.get(READY_TEXT.decode(), time.time())
        return self.ready_at is not None

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.killed_at = time.time()
        self.process.wait(10)

    def stop(self, timeout: float = 30) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode

    def tail(self, lines: int = 30) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


# -- worker logs: assignments and recovery moments --------------------------------------

_STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")
_ROW = re.compile(r"^\|\s*(\S+)\s*\|\s*\{([0-9, \-]*)\}\s*\|")


def _stamp(line: str) -> float | None:
    m = _STAMP.match(line)
    return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp() if m else None


def _partitions(text: str) -> set[int]:
    out: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            a, b = part.split("-", 1)
            out.update(range(int(a), int(b) + 1))
        elif part:
            out.add(int(part))
    return out


@dataclass
class Assignment:
    at: float
    group: str
    topics: dict[str, set[int]] = field(default_factory=dict)


def log_assignments(path: Path) -> list[Assignment]:
    """Every "Setting newly assigned partitions" table of a worker log, in order."""
    if not path.exists():
        return []
    out: list[Assignment] = []
    current: Assignment | None = None
    for line in path.read_text(errors="replace").splitlines()[:500_000]:
        if "Setting newly assigned partitions" in line:
            current = Assignment(_stamp(line) or 0.0, "")
            continue
        if current is None:
            continue
        row = _ROW.match(line)
        if row and row.group(1) != "topic":
            current.topics[row.group(1)] = _partitions(row.group(2))
        if "for group " in line:
            current.group = line.rsplit("for group ", 1)[1].strip()
            out.append(current)
            current = None
    return out


def log_moments(path: Path, after: float, texts: tuple[str, ...]) -> dict[str, float]:
    """The first time (epoch s) each text appears in a log line stamped after ``after``."""
    found: dict[str, float] = {}
    if not path.exists():
        return found
    for line in path.read_text(errors="replace").splitlines()[:500_000]:
        at = _stamp(line)
        if at is None or at < after:
            continue
        for text in texts:
            if text not in found and text in line:
                found[text] = at
    return found


def owned(path: Path, group: str, topic: str, before: float | None = None) -> set[int]:
    """Partitions of ``topic`` the worker's last assignment in ``group`` (before a time) gave it."""
    latest: set[int] = set()
    for a in log_assignments(path):
        if a.group == group and (before is None or a.at <= before):
            latest = a.topics.get(topic, set())
    return latest


# -- reading commands and results -------------------------------------------------------


@dataclass
class Record:
    partition: int
    offset: int
    ts: float  # the record's CreateTime, epoch seconds (set by the worker's producer)
    value: dict[str, Any]


class Outputs:
    """One plain consumer over every partition of job-commands and run-results."""

    def __init__(self, conn: KafkaConnection, commands_topic: str, results_topic: str, schemas: Path) -> None:
        self.commands_topic, self.results_topic = commands_topic, results_topic
        self.cmd_codec = AvscDecoder(schemas / "job_command.avsc")
        self.res_codec = AvscDecoder(schemas / "run_result.avsc")
        self.consumer = Consumer(client.config(conn, **{"group.id": f"chaos-reader-{uuid.uuid4()}",
                                                        "enable.auto.commit": False, "fetch.wait.max.ms": 10}))
        tps = []
        for topic in (commands_topic, results_topic):
            meta = self.consumer.list_topics(topic, timeout=30).topics[topic]
            tps += [TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions]
        self.consumer.assign(tps)
        self.commands: list[Record] = []
        self.results: list[Record] = []
        self.undecodable = 0
        self.last_new = time.monotonic()

    def poll(self, seconds: float) -> int:
        """Read what arrives within ``seconds`` (at most 10,000 records); returns how many."""
        end = time.monotonic() + max(seconds, 0.0)
        n = 0
        while n < 10_000:
            left = end - time.monotonic()
            msgs = self.consumer.consume(1000, max(min(left, 0.2), 0.001))
            for msg in msgs:
                if msg.error():
                    if msg.error().code() != KafkaError._PARTITION_EOF:
                        print(f"  reader error: {msg.error()}", file=sys.stderr)
                    continue
                self._take(msg)
                n += 1
            if left <= 0:
                break
        if n:
            self.last_new = time.monotonic()
        return n

    def _take(self, msg: Message) -> None:
        is_cmd = msg.topic() == self.commands_topic
        try:
            value = (self.cmd_codec if is_cmd else self.res_codec).decode(msg.value())
        except Exception:
            self.undecodable += 1
            return
        rec = Record(msg.partition(), msg.offset(), msg.timestamp()[1] / 1000, value)
        (self.commands if is_cmd else self.results).append(rec)

    def close(self) -> None:
        self.consumer.close()


# -- the scenario -----------------------------------------------------------------------


def event_id_of(command: dict[str, Any]) -> str | None:
    try:
        return json.loads(command["params_json"]).get("id")
    except (ValueError, AttributeError):
        return None


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[min(int(q * 1000), 999) - 1]


def stalls(commands: list[float], waiting: list[tuple[float, float]], lo: float, hi: float,
           shortest: float = GAP_REPORT_S) -> list[tuple[float, float]]:
    """(start, length) of the stalls of one partition that overlap [lo, hi], longest first.

    A stall is a gap between consecutive commands during which work was waiting: it starts
    at the gap's start, or later at the first send of an event that was commanded only at
    the gap's end or after (so the end of the input is not a stall). ``waiting``: (sent,
    first command or inf) of the partition's events."""
    out = []
    for a, b in itertools.pairwise(sorted(commands)):
        if b - a <= shortest or b <= lo or a >= hi:
            continue
        pending = [sent for sent, cmd in waiting if sent < b and cmd >= b]
        if pending:
            start = max(a, min(pending))
            if b - start > shortest:
                out.append((start, b - start))
    return sorted(out, key=lambda g: -g[1])


def locate_lost(bs: KafkaConnection, topics: topics_mod.Topics, sent: dict[str, tuple[str, float]], delivered: set[str],
                outputs: Outputs, kill: float | None) -> dict[str, str]:
    """For events without a command: where they are on the events topic, whether a triggers
    record names them (so the loss is in match or in schedule), and when their neighbours on
    the same events partition got their commands (relative to the kill)."""
    first_cmd: dict[str, float] = {}
    for r in outputs.commands:
        eid = event_id_of(r.value)
        if eid is not None:
            first_cmd[eid] = min(first_cmd.get(eid, r.ts), r.ts)
    lost = sorted(delivered - set(first_cmd))
    if not lost:
        return {}
    lost_set = set(lost)
    where = {e: "not on the events topic" for e in lost}
    position: dict[tuple[int, int], str] = {}
    for msg in client.read_to_end(bs, topics.events, timeout=60):
        key = (msg.key() or b"").decode(errors="replace")
        if key in sent:
            position[(msg.partition(), msg.offset())] = key
        if key in lost_set:
            where[key] = f"events {msg.partition()}/{msg.offset()}, no trigger"
    needles = {e: f'"id:{e}"'.encode() for e in lost}
    for msg in client.read_to_end(bs, topics.triggers, timeout=60):
        value = msg.value() or b""
        for e, needle in needles.items():
            if needle in value or e.encode() in value:
                where[e] = where[e].replace(", no trigger", "") + f", trigger {msg.partition()}/{msg.offset()}"
    ref = kill if kill is not None else min(t for _, t in sent.values())
    at = {eid: pos for pos, eid in position.items()}
    for e in lost[:20]:
        where[e] += f", sent at kill{sent[e][1] - ref:+.2f}s"
        if e in at:
            part, off = at[e]
            around = []
            for o in range(off - 2, off + 3):
                n = position.get((part, o))
                if n is not None and n != e:
                    around.append(f"{o}:" + (f"{first_cmd[n] - ref:+.2f}" if n in first_cmd else "none"))
            where[e] += f"; neighbours' commands at kill+ {' '.join(around)}"
    return where


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description="Kill -9 one of two signalbox workers under load; count lost/duplicate commands and runs, "
                    "cursor errors, failover seconds. Embedded broker on 127.0.0.1 only.")
    ap.add_argument("--root", type=Path, default=ROOT,
                    help="checkout whose `streams` package the workers run (PYTHONPATH and cwd); default: %(default)s")
    ap.add_argument("--events", type=int, default=3000, help="events to produce (default %(default)s)")
    ap.add_argument("--rate", type=float, default=300.0, help="events per second (default %(default)s)")
    ap.add_argument("--jobs", type=int, default=100, help="jobs (one event handler each) the events are spread "
                    "over (default %(default)s, at most 1000)")
    ap.add_argument("--restart", choices=["same", "fresh", "none"], default="same",
                    help="after the kill, start the killed worker again on the same datadir, on a fresh datadir, "
                         "or not at all (default %(default)s)")
    ap.add_argument("--restart-delay", type=float, default=0.0,
                    help="seconds between the kill and the restart (default %(default)s)")
    ap.add_argument("--kill-after", type=float, default=0.4,
                    help="fraction of the events sent before the kill (default %(default)s)")
    ap.add_argument("--no-kill", action="store_true", help="kill nobody (a baseline run)")
    ap.add_argument("--victim", choices=["most", "first"], default="most",
                    help="kill the worker owning the most triggers partitions (from its log), or the first one "
                         "(default %(default)s)")
    ap.add_argument("--seed", type=int, default=None, help="random seed for the job of each event (default: random)")
    ap.add_argument("--job-ms", type=float, default=3.0, help="milliseconds each run sleeps (default %(default)s)")
    ap.add_argument("--quiet", type=float, default=20.0,
                    help="stop reading after this many seconds without a new command or result (default %(default)s)")
    ap.add_argument("--settle", type=float, default=3.0,
                    help="stop earlier, once every event has a command and every run a result, after this many "
                         "quiet seconds (default %(default)s)")
    ap.add_argument("--ready-timeout", type=float, default=120.0,
                    help="seconds to wait for the workers to be ready (default %(default)s)")
    ap.add_argument("--deadline", type=float, default=600.0,
                    help="bound on the whole run, seconds (default %(default)s)")
    ap.add_argument("--worker-env", action="append", default=[], metavar="KEY=VALUE",
                    help="extra environment for the workers (repeatable)")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="directory for the broker log, worker logs and datadirs (default: a new temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (always kept with --workdir)")
    ap.add_argument("--json", action="store_true", help="also print the summary as one JSON line")
    ap.add_argument("--dump", type=Path, default=None,
                    help="write every command and result read (JSON lines: kind, partition, offset, time, value)")
    args = ap.parse_args(argv)
    if not 1 <= args.jobs <= 1000:
        ap.error("--jobs must be 1..1000")
    if args.events < 1 or args.rate <= 0:
        ap.error("--events and --rate must be positive")
    if not 0.0 <= args.kill_after <= 1.0:
        ap.error("--kill-after must be within 0..1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root = args.root.resolve()
    if not (root / "streams" / "__main__.py").is_file():
        print(f"chaos: {root} has no streams package", file=sys.stderr)
        return 2
    rnd = random.Random(args.seed)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="signalbox-chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:6]
    t_begin = time.monotonic()
    deadline = t_begin + args.deadline
    summary: dict[str, Any] = {"root": str(root), "events": args.events, "rate": args.rate, "jobs": args.jobs,
                               "restart": "no kill" if args.no_kill else args.restart, "seed": args.seed,
                               "workdir": str(work),
                               "loadavg_at_start": os.getloadavg()[0]}

    with EmbeddedBroker(work / "tansu.log") as broker:
        bs = KafkaConnection(broker.bootstrap_servers)  # the embedded broker: plaintext
        prefix, app_id = f"chaos{tag}.", f"chaos-{tag}"
        topics = topics_mod.Topics.load(root / "topics.yaml", prefix)
        topics_mod.create(client.admin(bs), topics)
        handlers = [{"id": f"chaos-h{j}", "job": f"chaos{j}", "event": {"match": {"chaos_job": f"chaos{j}"}},
                     "params": {"id": "id", "seq": "seq"}} for j in range(args.jobs)]
        client.produce_all(bs, [(topics.handlers, h["id"].encode(), json.dumps(h).encode()) for h in handlers])
        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bs.bootstrap_servers, "SIGNALBOX_BROKER_KIND": "tansu",
               "SIGNALBOX_TOPIC_PREFIX": prefix, "SIGNALBOX_APP_ID": app_id,
               "SIGNALBOX_TOPICS_FILE": str(root / "topics.yaml"), "PYTHONPATH": f"{root}:{HERE}",
               "CHAOS_JOBS": str(args.jobs), "CHAOS_SLEEP_MS": str(args.job_ms)}
        for kv in args.worker_env:
            k, _, v = kv.partition("=")
            env[k] = v
        workers = [Worker(n, work / n / "data", work / f"{n}.log") for n in ("w1", "w2")]
        extra: list[Worker] = []
        outputs: Outputs | None = None
        try:
            for w in workers:
                w.start(root, env)
            ready_end = min(time.monotonic() + args.ready_timeout, deadline)
            while not all(w.check_ready() for w in workers):
                if time.monotonic() > ready_end or not all(w.alive() for w in workers):
                    for w in workers:
                        print(f"--- {w.name} ({'alive' if w.alive() else 'exited'}):\n{w.tail()}", file=sys.stderr)
                    print("chaos: workers not ready", file=sys.stderr)
                    return 1
                time.sleep(0.1)
            print(f"workers ready {max(w.ready_at or 0 for w in workers) - min(w.started_at for w in workers):.1f}s "
                  f"after start; root {root}; workdir {work}", flush=True)
            outputs = Outputs(bs, topics.job_commands, topics.run_results, root / "schemas")

            # -- produce at a steady rate, kill (and restart) on the way ------------------
            sent: dict[str, tuple[str, float]] = {}  # event id -> (job, send time)
            delivered: set[str] = set()
            failed: list[str] = []

            def on_delivery(err: KafkaError | None, msg: Message) -> None:
                eid = msg.key().decode()
                if err is None:
                    delivered.add(eid)
                else:
                    failed.append(eid)

            def restart() -> None:
                assert victim is not None
                again = Worker(f"{victim.name}-{args.restart}",
                               victim.datadir if args.restart == "same" else work / f"{victim.name}-fresh" / "data",
                               work / f"{victim.name}-{args.restart}.log")
                again.start(root, env)
                extra.append(again)

            p = client.producer(bs, **{"linger.ms": 1})
            kill_at = args.events + 1 if args.no_kill else int(args.events * args.kill_after)
            victim: Worker | None = None
            survivor: Worker | None = None
            before_kill: dict[str, set[int]] = {}
            restart_due: float | None = None
            start = time.perf_counter()
            for i in range(args.events):
                if time.monotonic() > deadline:
                    print(f"chaos: deadline hit after {i} events", file=sys.stderr)
                    break
                if i == kill_at:
                    a1, a2 = (owned(w.log, app_id, topics.triggers) for w in workers)
                    victim = workers[1] if args.victim == "most" and len(a2) > len(a1) else workers[0]
                    survivor = workers[1] if victim is workers[0] else workers[0]
                    before_kill = {"victim_triggers": owned(victim.log, app_id, topics.triggers),
                                   "survivor_triggers": owned(survivor.log, app_id, topics.triggers),
                                   "victim_runner": owned(victim.log, f"{app_id}-runner", topics.job_commands),
                                   "survivor_runner": owned(survivor.log, f"{app_id}-runner", topics.job_commands)}
                    victim.kill9()
                    print(f"kill -9 {victim.name} (triggers partitions {sorted(before_kill['victim_triggers'])}, "
                          f"runner partitions {sorted(before_kill['victim_runner'])}) after {i} events", flush=True)
                    if args.restart != "none":
                        restart_due = time.monotonic() + args.restart_delay
                if restart_due is not None and time.monotonic() >= restart_due:
                    restart_due = None
                    restart()
                due = start + i / args.rate
                while (wait := due - time.perf_counter()) > 0:
                    outputs.poll(min(wait, 0.05))
                job = f"chaos{rnd.randrange(args.jobs)}"
                eid = f"ev-{tag}-{i}"
                now = time.time()
                sent[eid] = (job, now)
                body = {"id": eid, "chaos_job": job, "seq": i, "sent": now}
                p.produce(topics.events, key=eid.encode(), value=json.dumps(body).encode(), on_delivery=on_delivery)
                p.poll(0)
            send_seconds = time.perf_counter() - start
            p.flush(30)
            sending_done = time.monotonic()
            print(f"sent {len(sent)} events in {send_seconds:.1f}s ({len(delivered)} acknowledged, "
                  f"{len(failed)} failed)", flush=True)

            # -- read until quiet --------------------------------------------------------
            while time.monotonic() < deadline:
                if restart_due is not None and time.monotonic() >= restart_due:  # a restart delay past the sending
                    restart_due = None
                    restart()
                outputs.poll(0.5)
                for w in extra:
                    w.check_ready()
                quiet = time.monotonic() - outputs.last_new
                if quiet >= args.quiet:
                    break
                if quiet >= args.settle and restart_due is None:
                    commanded = {event_id_of(r.value) for r in outputs.commands}
                    run_ids = {r.value["run_id"] for r in outputs.commands}
                    finished = {r.value["run_id"] for r in outputs.results}
                    if delivered <= commanded and run_ids <= finished:
                        break
            summary["read_seconds_after_sending"] = round(time.monotonic() - sending_done, 1)
            summary["loadavg_at_end"] = os.getloadavg()[0]
            for w in [*workers, *extra]:  # before stopping: a stop rebalances the others
                if w.killed_at is None:
                    summary[f"{w.name}_triggers_at_end"] = sorted(owned(w.log, app_id, topics.triggers))
            lost_where = locate_lost(bs, topics, sent, delivered, outputs, victim.killed_at if victim else None)
            for w in [*workers, *extra]:
                summary[f"{w.name}_rebalances"] = sum(1 for a in log_assignments(w.log) if a.group == app_id)
            summary["sending_ended_at_kill_plus_s"] = (round(time.time() - (time.monotonic() - sending_done)
                                                             - victim.killed_at, 2)
                                                       if victim is not None and victim.killed_at else None)
        finally:
            exits = {w.name: w.stop() for w in [*workers, *extra] if w.killed_at is None}
            if outputs is not None:
                outputs.close()

        # -- count -------------------------------------------------------------------------
        assert outputs is not None
        report(summary, args, sent, delivered, outputs, victim, survivor, before_kill, extra, exits, lost_where)
        if args.dump is not None:
            with args.dump.open("w") as out:
                for kind, records in (("command", outputs.commands), ("result", outputs.results)):
                    for r in records:
                        out.write(json.dumps({"kind": kind, "partition": r.partition, "offset": r.offset,
                                              "ts": r.ts, "value": r.value}, default=str) + "\n")
    if args.json:
        print(json.dumps(summary, default=str))
    if not args.keep and args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def report(summary: dict[str, Any], args: argparse.Namespace, sent: dict[str, tuple[str, float]],
           delivered: set[str], outputs: Outputs, victim: Worker | None, survivor: Worker | None,
           before_kill: dict[str, set[int]], extra: list[Worker], exits: dict[str, int | None],
           lost_where: dict[str, str]) -> None:
    commands, results = outputs.commands, outputs.results
    first_cmd: dict[str, Record] = {}
    cmds_per_run: dict[str, int] = defaultdict(int)
    for r in sorted(commands, key=lambda r: r.ts):
        cmds_per_run[r.value["run_id"]] += 1
        eid = event_id_of(r.value)
        if eid is not None and eid not in first_cmd:
            first_cmd[eid] = r
    res_per_run: dict[str, int] = defaultdict(int)
    statuses: dict[str, int] = defaultdict(int)
    for r in results:
        res_per_run[r.value["run_id"]] += 1
        statuses[r.value["status"]] += 1
    lost = [e for e in delivered if e not in first_cmd]
    dup_cmd = {k: v for k, v in cmds_per_run.items() if v > 1}
    dup_run = {k: v for k, v in res_per_run.items() if v > 1}
    unfinished = [k for k in cmds_per_run if k not in res_per_run]

    # cursor: the highest count any result of the job reached (a run repeated by a runner after
    # the kill may write an older count later), and the chain: the distinct runs of a job,
    # each started from the state its predecessor left, start from 0, 1, ..., n-1
    expected: dict[str, int] = defaultdict(int)
    for eid in delivered:
        expected[sent[eid][0]] += 1
    top: dict[str, int] = {}
    for r in results:
        try:
            count = json.loads(r.value["final_state_json"] or "{}").get("count", 0)
        except ValueError:
            continue
        top[r.value["job"]] = max(top.get(r.value["job"], 0), count)
    starts: dict[str, dict[str, int]] = defaultdict(dict)  # job -> run id -> initial count
    for r in commands:
        try:
            initial = json.loads(r.value["initial_state_json"] or "{}")
        except ValueError:
            continue
        starts[r.value["job"]][r.value["run_id"]] = initial.get("count", 0)
    broken_chains = sum(1 for job, n in expected.items() if sorted(starts[job].values()) != list(range(n)))
    exact = under = over = 0
    deficit = surplus = 0
    worst: list[tuple[str, int, int]] = []
    for job, n in expected.items():
        final = top.get(job, 0)
        if final == n:
            exact += 1
        elif final < n:
            under += 1
            deficit += n - final
        else:
            over += 1
            surplus += final - n
        if final != n:
            worst.append((job, n, final))
    worst.sort(key=lambda w: -abs(w[1] - w[2]))

    lat = sorted(first_cmd[e].ts - sent[e][1] for e in first_cmd if e in sent)
    kill_time = victim.killed_at if victim is not None and victim.killed_at is not None else float("inf")
    lat_before = sorted(first_cmd[e].ts - sent[e][1] for e in first_cmd if e in sent and sent[e][1] < kill_time)
    summary["latency_before_kill_p50_s"] = quantile(lat_before, 0.5)
    summary["latency_before_kill_p99_s"] = quantile(lat_before, 0.99)
    summary["lost_where"] = lost_where
    # p50 and max latency per second of sending (second 0 = the first event), to see a backlog build
    t0 = min((t for _, t in sent.values()), default=0.0)
    buckets: dict[int, list[float]] = defaultdict(list)
    for e in first_cmd:
        if e in sent:
            buckets[int(sent[e][1] - t0)].append(first_cmd[e].ts - sent[e][1])
    summary["latency_by_second"] = {b: (round(statistics.median(v), 2), round(max(v), 2))
                                    for b, v in sorted(buckets.items())}
    summary["kill_at_second"] = round(kill_time - t0, 2) if kill_time != float("inf") else None
    summary.update({
        "sent": len(sent), "acknowledged": len(delivered), "commands": len(commands), "results": len(results),
        "undecodable": outputs.undecodable, "lost_events": len(lost), "duplicate_commands": len(dup_cmd),
        "extra_commands": sum(v - 1 for v in dup_cmd.values()), "duplicate_runs": len(dup_run),
        "extra_results": sum(v - 1 for v in dup_run.values()), "unfinished_runs": len(unfinished),
        "statuses": dict(statuses), "jobs_with_events": len(expected), "cursor_exact": exact,
        "cursor_under": under, "cursor_over": over, "cursor_missing_counts": deficit, "cursor_extra_counts": surplus,
        "broken_chains": broken_chains,
        "latency_p50_s": quantile(lat, 0.5), "latency_p99_s": quantile(lat, 0.99),
        "latency_max_s": lat[-1] if lat else float("nan"), "worker_exits": exits,
    })

    kill = victim.killed_at if victim is not None else None
    by_part: dict[int, list[float]] = defaultdict(list)
    for r in commands:
        by_part[r.partition].append(r.ts)
    res_by_part: dict[int, list[float]] = defaultdict(list)
    for r in results:
        res_by_part[r.partition].append(r.ts)
    if kill is not None and victim is not None and survivor is not None:
        summary["victim"] = victim.name
        summary.update({k: sorted(v) for k, v in before_kill.items()})
        failover: dict[int, float | None] = {}
        for part in sorted(before_kill["victim_triggers"]):
            after = [t for t in by_part[part] if t > kill]
            failover[part] = min(after) - kill if after else None
        summary["failover_commands_s"] = failover
        summary["failover_commands_max_s"] = max((v for v in failover.values() if v is not None), default=None)
        runner_failover: dict[int, float | None] = {}
        for part in sorted(before_kill["victim_runner"]):
            after = [t for t in res_by_part[part] if t > kill]
            runner_failover[part] = min(after) - kill if after else None
        summary["failover_results_s"] = runner_failover
        # the partitions' events: (sent, first command) by the partition their job's commands use
        job_part = {r.value["job"]: r.partition for r in commands}
        waiting: dict[int, list[tuple[float, float]]] = defaultdict(list)
        for e in delivered:
            job, t_sent = sent[e]
            if job in job_part:
                waiting[job_part[job]].append((t_sent, first_cmd[e].ts if e in first_cmd else float("inf")))
        pauses = {}
        for part in sorted(before_kill["survivor_triggers"]):
            g = stalls(by_part[part], waiting[part], kill - 1.0, kill + 60.0, shortest=0.0)
            pauses[part] = (round(g[0][1], 3), round(g[0][0] - kill, 3)) if g else None
        summary["survivor_pause_s"] = {p: v[0] if v else None for p, v in pauses.items()}
        summary["survivor_pause_starts_at_kill_plus_s"] = {p: v[1] if v else None for p, v in pauses.items()}
        summary["survivor_pause_max_s"] = max((v[0] for v in pauses.values() if v), default=None)
        # every stall, any partition, from a second before the kill on (restarts make a second rebalance)
        summary["stalls_after_kill"] = {p: [(round(a - kill, 2), round(length, 2)) for a, length in
                                            sorted(stalls(by_part[p], waiting[p], kill - 1.0, kill + 600))]
                                        for p in sorted(by_part)}
        late = [sent[e][1] - kill for e in first_cmd if e in sent and sent[e][1] >= kill - 5.0
                and first_cmd[e].ts - sent[e][1] > LATENCY_SLOW_S]
        summary["latency_above_1s_until_kill_plus_s"] = round(max(late), 2) if late else 0.0
        summary["events_above_1s"] = sum(1 for x in lat if x > LATENCY_SLOW_S)
        moments = log_moments(survivor.log, kill, ("Setting newly assigned partitions", "Worker ready",
                                                   "Recovery complete", "Restore complete"))
        summary["survivor_log_after_kill_s"] = {k: round(v - kill, 2) for k, v in moments.items()}
        for w in extra:
            summary[f"{w.name}_ready_after_kill_s"] = round(w.ready_at - kill, 2) if w.ready_at else None
    elif victim is None:
        summary["longest_gaps"] = {p: round(max((b - a for a, b in itertools.pairwise(sorted(ts))), default=0.0), 2)
                                   for p, ts in sorted(by_part.items())}

    def s(x: Any) -> str:
        return "-" if x is None else (f"{x:.2f}" if isinstance(x, float) else str(x))

    print("=" * 78)
    print(f"chaos summary  root={summary['root']}  restart={summary['restart']}  seed={args.seed}")
    print(f"  events: sent {summary['sent']}, acknowledged {summary['acknowledged']}; jobs {args.jobs}; "
          f"rate {args.rate:g}/s; job sleep {args.job_ms:g} ms")
    print(f"  commands {summary['commands']}, results {summary['results']} {dict(statuses)}, "
          f"undecodable {summary['undecodable']}")
    print(f"  LOST events (no command):        {summary['lost_events']}"
          + (f"  e.g. {dict(list(lost_where.items())[:5])}" if lost_where else ""))
    print(f"  duplicate commands (run ids):    {summary['duplicate_commands']} (+{summary['extra_commands']} records)")
    print(f"  duplicate runs (>1 result):      {summary['duplicate_runs']} (+{summary['extra_results']} records)")
    print(f"  unfinished runs (no result):     {summary['unfinished_runs']}")
    print(f"  cursor: {exact}/{len(expected)} jobs exact, {under} under (missing {deficit} counts), "
          f"{over} over (+{surplus}); {broken_chains} jobs whose runs did not start from 0..n-1"
          + (f"; worst {worst[:3]} (job, events, final count)" if worst else ""))
    print(f"  latency produce->command: p50 {s(summary['latency_p50_s'])} s, p99 {s(summary['latency_p99_s'])} s, "
          f"max {s(summary['latency_max_s'])} s ({len(lat)} events); before the kill: "
          f"p50 {s(summary['latency_before_kill_p50_s'])} s, p99 {s(summary['latency_before_kill_p99_s'])} s")
    print(f"  latency by second of sending (p50, max; kill at second {summary['kill_at_second']}): "
          + " ".join(f"{b}:{v[0]}/{v[1]}" for b, v in summary["latency_by_second"].items()))
    if kill is not None and victim is not None:
        print(f"  killed {victim.name}: triggers {summary['victim_triggers']}, runner {summary['victim_runner']}; "
              f"survivor triggers {summary['survivor_triggers']}")
        print(f"  (a) kill -> first command on the victim's partitions: "
              f"{ {p: s(v) for p, v in summary['failover_commands_s'].items()} } s; "
              f"max {s(summary['failover_commands_max_s'])} s")
        print(f"      kill -> first result on the victim runner's partitions: "
              f"{ {p: s(v) for p, v in summary['failover_results_s'].items()} } s")
        print(f"  (b) survivor's longest stall (no command while work waited) around the kill: "
              f"{ {p: s(v) for p, v in summary['survivor_pause_s'].items()} } s "
              f"(starting at kill+{summary['survivor_pause_starts_at_kill_plus_s']}); "
              f"max {s(summary['survivor_pause_max_s'])} s")
        print(f"  (c) latency > 1 s until kill+{s(summary['latency_above_1s_until_kill_plus_s'])} s "
              f"(of events sent; sending ended at kill+{s(summary.get('sending_ended_at_kill_plus_s'))} s) "
              f"({summary['events_above_1s']} events above 1 s)")
        print(f"  survivor log after kill (s): {summary['survivor_log_after_kill_s']}")
        for w in extra:
            print(f"  {w.name}: ready at kill+{s(summary[f'{w.name}_ready_after_kill_s'])} s; "
                  f"triggers at end {summary.get(f'{w.name}_triggers_at_end')}")
        print(f"  stalls > {GAP_REPORT_S} s (no command while work waited) per partition, (kill+start, length): "
              f"{summary['stalls_after_kill']}")
    elif victim is None:
        print(f"  no kill; longest command gap per partition (s): {summary.get('longest_gaps')}")
    print("  app-group assignments per worker log (start + each rebalance): "
          + ", ".join(f"{k[:-len('_rebalances')]}={v}" for k, v in summary.items() if k.endswith("_rebalances")))
    print(f"  worker exit codes at the end: {exits}; read {summary['read_seconds_after_sending']} s after sending; "
          f"1-min load average {summary['loadavg_at_start']:.2f} at start, {summary['loadavg_at_end']:.2f} at end "
          f"({os.cpu_count()} CPUs, shared with other users' processes)")
    print("=" * 78, flush=True)


if __name__ == "__main__":
    sys.exit(main())
