"""End-to-end benchmark on the embedded broker (not a test). One command:

    python bench/bench_e2e.py [--handlers 10000] [--jobs 128] [--events 20000] [--rate 1000]
                              [--seconds 10] [--chain 300] [--root CHECKOUT] [--workers 1]
                              [--runner-process] [--concurrency 1]

Prints, from one run on one broker:
1. raw consumer: events/s a confluent-kafka consumer reads from the events topic;
2. plain Faust agent that only decodes the events (the framework's ceiling): events/s;
3. the signalbox worker (with its runner: a job's next command waits for its previous run
   to settle), events topic -> job commands, H handlers spread over J jobs: events/s,
   and its ratio to (2); of which the match step alone (events -> triggers records) and
   the schedule step's intake (runs accepted: queued or commanded), each against (2);
   every run settled: runs/s; where a job's round trip goes; the records each run wrote on
   the broker, by topic;
4. latency produce -> job command at a steady rate, (4a) half the capacity phase 3
   measured, then (4b) ``--rate``, then (4c) a tenth of the capacity, where an event's job
   has rarely a run in flight to wait for (the engine's own hops): p50, p99; of which
   produce -> the match step's triggers record and produce -> the schedule step's
   command; produce -> result settled;
5. one job's serial chain: N events of one job at once, runs/s from its first command
   to its last result (every run waits for the previous one to settle);
6. the full pipeline, internal events matched again: each event starts a run of one of 64
   ``pipe`` jobs, whose settled run's status event (an internal event on the events topic)
   is matched by an ``after`` handler that starts a run of a ``flow`` job. (6a) ``--pipe``
   events at once: events/s fully settled (both runs' results), produce -> the flow run's
   result p50/p99; (6b) at a steady half of (6a)'s rate for ``--seconds``: the same
   latencies;
7. the floor under phases 3 and 4: two plain Faust agents in a row (``plain_relay.py``:
   decode, send on; the worker's Faust driver and linger), with the worker stopped: phase
   3's event count at once (events/s through both hops, and phase 3's share of it), then
   phase 4's steady rates: produce -> second hop and -> first hop, p50/p99. Phase 4
   against it is what the engine adds to the framework's own two hops on this broker.
``--root`` runs the worker from another checkout (to compare before/after in one run);
``--workers N`` starts N workers in one group (the job partitions spread over them);
``--runner-process`` runs the jobs in a ``signalbox runner`` process beside them;
``--fresh`` runs each steady phase on a deployment of its own (fresh topics, a fresh worker
with the same handlers; phase 7 runs each rate through a relay on topics of its own),
since the embedded broker's cost grows with what its topics hold (``bench_broker_drift.py``);
``--steady R1,R2,...`` adds steady phases at those rates after 4c (4d, 4e, ...: up to
eight; phase 7 runs them through the relay too), to see where one worker stops keeping up;
``--concurrency N`` lets each of phase 3's and 4's jobs have N runs in flight (jobs that
keep no cursor; their count then over-counts and is not checked here).
Phases 3 and 4 also print the share of a core the broker, the worker(s), the runner and the
bench itself used (from /proc): whether a phase that does not keep up was short of CPU;
and the first worker's full garbage collections over the phase (its /metrics): whether a
phase's tail met one.
Every loop is bounded in count and time; the broker listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import NewTopic
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from streams.contracts import avro  # noqa: E402
from streams.contracts import topics as topics_mod  # noqa: E402
from streams.kafka import client  # noqa: E402
from streams.kafka.broker import EmbeddedBroker  # noqa: E402
from streams.kafka.connection import KafkaConnection  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from bench_jobs import LANES  # noqa: E402

DEADLINE_S = 300  # any phase that takes longer is reported as failed


def handler_mix(n: int, jobs: int = 128, concurrency: int = 1) -> list[dict]:
    """Realistic event handlers: equality on 1-3 fields, nested paths, exclusions; each job
    with ``concurrency`` runs in flight at most."""
    out = []
    for i in range(n):
        kind = i % 4
        match: dict = {"type": f"t{i}"}
        if kind == 1:
            match["source"] = "orders"
        elif kind == 2:
            match["detail"] = {"region": f"r{i % 7}"}
        h = {"id": f"bench-{i}", "job": f"job{i % jobs}", "event": {"match": match}, "params": {"order": "order.id"},
             "concurrency": concurrency}
        if kind == 3:
            h["event"]["exclude"] = {"test": True}
        out.append(h)
    return out


def event_for(i: int, n_handlers: int, sent: float | None = None) -> dict:
    """~300 bytes, matching exactly one handler."""
    k = i % n_handlers
    return {
        "id": f"e-{i}-{uuid.uuid4().hex[:8]}", "type": f"t{k}", "source": "orders" if k % 4 == 1 else "web",
        "detail": {"region": f"r{k % 7}", "zone": "eu-central-1", "tags": ["a", "b", "c"]},
        "order": {"id": i, "total": 129.95, "currency": "CHF", "lines": 3},
        "customer": {"id": f"c{i % 1000}", "tier": "gold"}, "test": False, "sent": sent,
        "pad": "x" * 40,
    }


def raw_consumer_rate(conn: KafkaConnection, topic: str, count: int) -> float:
    c = Consumer(client.config(conn, **{"group.id": f"raw-{uuid.uuid4()}", "enable.auto.commit": False,
                                        "fetch.wait.max.ms": 10}))
    meta = c.list_topics(topic, timeout=10).topics[topic]
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
    n, first, end = 0, 0.0, time.monotonic() + DEADLINE_S
    while n < count and time.monotonic() < end:
        for msg in c.consume(1000, 0.5):
            if not msg.error():
                json.loads(msg.value())
                n += 1
                if n == 1:
                    first = time.perf_counter()
    elapsed = time.perf_counter() - first
    c.close()
    return n / elapsed if n == count else float("nan")


def plain_agent_rate(bootstrap: str, topic: str, count: int, workdir: Path) -> float:
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "plain_agent.py"), bootstrap, topic, str(count),
                             str(workdir / "plain")], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        end = time.monotonic() + DEADLINE_S
        assert proc.stdout is not None
        while time.monotonic() < end:
            line = proc.stdout.readline()
            if line.startswith("DONE"):
                return count / float(line.split()[1])
            if not line and proc.poll() is not None:
                break
        return float("nan")
    finally:
        proc.terminate()
        proc.wait(30)


class CpuMeter:
    """CPU seconds (user + system) of the bench's processes, read from /proc: what share of
    a core each one used over a phase. On a 2-core machine the broker shares the cores
    with the worker, so a phase that does not keep up says here whether the worker or the
    machine was saturated."""

    def __init__(self, pids: dict[str, list[int]]) -> None:
        self.pids = pids
        self.tick = os.sysconf("SC_CLK_TCK")

    def read(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, pids in self.pids.items():
            total = 0.0
            for pid in pids:
                try:
                    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                except OSError:  # gone (or not Linux): counted as nothing
                    continue
                total += (int(fields[11]) + int(fields[12])) / self.tick  # utime, stime
            out[name] = total
        own = resource.getrusage(resource.RUSAGE_SELF)
        out["bench"] = own.ru_utime + own.ru_stime
        return out

    def share(self, since: tuple[float, dict[str, float]]) -> str:
        """``since`` is (time.monotonic(), read()) at the phase's start."""
        start, before = since
        wall, now = max(1e-3, time.monotonic() - start), self.read()
        return ", ".join(f"{name} {(now[name] - before.get(name, 0.0)) / wall:.0%}" for name in now)

    def mark(self) -> tuple[float, dict[str, float]]:
        return time.monotonic(), self.read()


def worker_env(bs: KafkaConnection, root: Path, jobs: int) -> dict[str, str]:
    """The environment of a bench worker (app ``bench``, topics under ``bench.``) run from
    the checkout ``root``, with ``jobs`` jobs in bench_jobs.py."""
    return {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bs.bootstrap_servers, "SIGNALBOX_BROKER_KIND": "tansu",
            "SIGNALBOX_TOPIC_PREFIX": "bench.", "SIGNALBOX_APP_ID": "bench", "BENCH_JOBS": str(jobs),
            "PYTHONPATH": f"{root.resolve()}:{ROOT / 'bench'}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GcMeter:
    """Full (generation 2) garbage collections of the first worker over a phase, from its
    ``signalbox_gc_pause_seconds`` (/metrics): whether a phase's tail met one. A worker
    that does not export it (``--root`` of older code) prints nothing."""

    def __init__(self, url: str) -> None:
        self.url = url

    def read(self) -> dict[float, float] | None:
        """Bucket upper bound (s) -> collections so far (``inf`` is the count; ``0`` the sum)."""
        try:
            text = urllib.request.urlopen(self.url, timeout=5).read().decode()
        except OSError:
            return None
        out: dict[float, float] = {}
        for family in text_string_to_metric_families(text):
            if family.name != "signalbox_gc_pause_seconds":
                continue
            for sample in family.samples:
                if sample.labels.get("generation") != "2":
                    continue
                if sample.name.endswith("_bucket"):
                    out[float(sample.labels["le"])] = sample.value
                elif sample.name.endswith("_sum"):
                    out[0.0] = sample.value
        return out or None

    def since(self, mark: dict[float, float] | None, what: str = "") -> str:
        """The collections since ``mark`` (None: since the worker started)."""
        now = self.read()
        if now is None:
            return ""
        mark = mark or {}
        n = now[float("inf")] - mark.get(float("inf"), 0.0)
        if not n:
            return f"; full GCs in the worker{what}: none"
        longest = min(le for le in now if le and now[le] - mark.get(le, 0.0) == n)
        return (f"; full GCs in the worker{what}: {n:.0f}, {(now[0.0] - mark.get(0.0, 0.0)) * 1000:.0f} ms in all, "
                f"the longest <= {longest * 1000:g} ms")


def all_end_offsets(bs: KafkaConnection) -> dict[str, int]:
    """Every topic's records so far (``end_offsets`` summed over its partitions)."""
    topics = client.admin(bs).list_topics(timeout=10).topics
    return {name: sum(end_offsets(bs, name).values()) for name in topics if not name.startswith("__")}


def print_records_per_run(before: dict[str, int], after: dict[str, int], runs: int) -> None:
    """3c. the records each run of phase 3 wrote, by topic: what the broker carries per run."""
    grown = {name: after[name] - before.get(name, 0) for name in after if after[name] > before.get(name, 0)}
    total = sum(grown.values())
    print(f"   records per run on the broker: {total / runs:.1f} ("
          + ", ".join(f"{name.split('.', 1)[-1]} {n / runs:.2f}"
                      for name, n in sorted(grown.items(), key=lambda kv: -kv[1])) + ")")


def commands_reader(conn: KafkaConnection, topic: str) -> Consumer:
    c = Consumer(client.config(conn, **{"group.id": f"cmd-{uuid.uuid4()}", "enable.auto.commit": False,
                                        "fetch.wait.max.ms": 5}))
    meta = c.list_topics(topic, timeout=10).topics[topic]
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
    return c


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--handlers", type=int, default=10_000)
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--rate", type=int, default=1_000)
    ap.add_argument("--steady", default="", help="more steady rates after 4c, comma-separated (4d, 4e, ...): "
                                                  "where the worker stops keeping up")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--fresh", action="store_true",
                    help="run each steady phase (4a, 4b, ...) on a deployment of its own: fresh topics, a fresh "
                         "worker with the same handlers (the embedded broker slows down as its topics fill)")
    ap.add_argument("--jobs", type=int, default=128, help="jobs the handlers are spread over (at most 128)")
    ap.add_argument("--chain", type=int, default=300, help="events of the serial-chain phase")
    ap.add_argument("--pipe", type=int, default=3000, help="events of the full-pipeline burst (phase 6a)")
    ap.add_argument("--concurrency", type=int, default=1,
                    help="runs of each of the --jobs in flight at once (the handlers' concurrency; 1: a job's "
                    "next command waits for its previous run to settle)")
    ap.add_argument("--root", type=Path, default=ROOT, help="checkout whose worker is measured")
    ap.add_argument("--profile", action="store_true", help="sample the worker with py-spy")
    ap.add_argument("--workers", type=int, default=1, help="worker processes in the app's group (scaling)")
    ap.add_argument("--runner-process", action="store_true",
                    help="run the jobs in a `signalbox runner` process of its own (workers get --no-runner)")
    args = ap.parse_args()
    if args.profile and (args.workers != 1 or args.runner_process):
        ap.error("--profile samples one worker: use it with --workers 1, without --runner-process")
    if args.fresh and (args.workers != 1 or args.runner_process or args.profile):
        ap.error("--fresh deploys one worker per steady phase: use it with --workers 1, without --runner-process "
                 "or --profile")
    work = Path(tempfile.mkdtemp(prefix="signalbox-bench-"))
    with EmbeddedBroker(work / "tansu.log") as broker:
        bs = KafkaConnection(broker.bootstrap_servers)  # the embedded broker: plaintext
        topics = topics_mod.Topics.load(ROOT / "topics.yaml", "bench.")
        topics_mod.create(client.admin(bs), topics)
        events = [json.dumps(event_for(i, args.handlers)).encode() for i in range(args.events)]
        print(f"events: {args.events} of ~{sum(map(len, events)) // len(events)} bytes; handlers: {args.handlers}")
        client.produce_all(bs, [(topics.events, None, e) for e in events], timeout=120)

        raw = raw_consumer_rate(bs, topics.events, args.events)
        print(f"1. raw confluent-kafka consumer:        {raw:>10,.0f} events/s")
        plain = plain_agent_rate(bs.bootstrap_servers, topics.events, args.events, work)
        print(f"2. plain Faust agent (decode only):     {plain:>10,.0f} events/s   ({plain / raw:.1%} of raw)")

        client.produce_all(bs, [(topics.handlers, h["id"].encode(), json.dumps(h).encode())
                                for h in handler_mix(args.handlers, args.jobs, args.concurrency)], timeout=120)
        chain = {"id": "bench-chain", "job": "chain", "event": {"match": {"type": "chain"}}}
        client.produce_all(bs, [(topics.handlers, b"bench-chain", json.dumps(chain).encode())], timeout=30)
        client.produce_all(bs, [(topics.handlers, h["id"].encode(), json.dumps(h).encode()) for h in pipe_handlers()],
                            timeout=30)
        env = worker_env(bs, args.root, args.jobs)
        print(f"{args.workers} worker(s) from {args.root.resolve()}; handlers over {args.jobs} jobs "
              f"(concurrency {args.concurrency}); runner on"
              + (" (a process of its own)" if args.runner_process else ""))
        before = resource.getrusage(resource.RUSAGE_CHILDREN)  # the plain agent was waited for already
        offsets_before = all_end_offsets(bs)
        workers = []
        gc_port = free_port()
        if args.runner_process:
            workers.append(subprocess.Popen([sys.executable, "-m", "streams", "runner", "--jobs", "bench_jobs",
                                             "--loglevel", "warning"], env=env, cwd=work,
                                            stdout=open(work / "runner.log", "wb"), stderr=subprocess.STDOUT))
        for w in range(args.workers):
            command = [sys.executable, "-m", "streams", "worker", "--jobs", "bench_jobs", "--datadir",
                       str(work / f"worker{w}"), "--loglevel", "warning",
                       *(["--no-runner"] if args.runner_process else [])]
            if args.profile:  # py-spy samples the worker for the whole run; its top lines are printed at the end
                spy = str(Path(sys.executable).with_name("py-spy"))
                # --gil: only samples that hold the GIL (idle threads waiting on a queue or in
                # select would otherwise count as busy); --threads: the thread is a frame
                command = [spy, "record", "--gil", "--threads", "--format", "raw", "-o", str(work / "profile.txt"),
                           "--", *command]
            own = {"SIGNALBOX_METRICS_PORT": str(gc_port)} if w == 0 else {}
            workers.append(subprocess.Popen(command, env={**env, **own}, cwd=work,
                                            stdout=open(work / f"worker{w}.log", "wb"), stderr=subprocess.STDOUT))
        gcs = GcMeter(f"http://127.0.0.1:{gc_port}/metrics")
        meter = CpuMeter({"broker": [broker.pid] if broker.pid else [],
                          "worker": [w.pid for w in workers[1 if args.runner_process else 0:]],
                          **({"runner": [workers[0].pid]} if args.runner_process else {})})
        steady: list[tuple[str, int, str]] = []
        phase3_rate = float("nan")
        fresh_cpu = 0.0  # CPU of the --fresh phases' own workers (startup included): left out of the CPU per run
        try:
            reader = commands_reader(bs, topics.job_commands)
            # the worker's collections since it started: a scrape during the phase would stop
            # its loop (the text of every job's series: 100 ms and more with 1,000 jobs)
            phase3 = meter.mark()
            runs_per_s, steady_runs = float("nan"), 0
            stamps: list[float] = []
            commanded: list[tuple[str, str, float]] = []  # (job, run id, on the broker at)
            end = time.monotonic() + DEADLINE_S
            while len(stamps) < args.events and time.monotonic() < end:
                for msg in reader.consume(1000, 0.5):
                    if not msg.error():
                        if not stamps:
                            phase3 = meter.mark()  # from the first command (not the worker's start)
                        stamps.append(msg.timestamp()[1] / 1000)
                        cmd = avro.commands().decode(msg.value())
                        commanded.append((cmd["job"], cmd["run_id"], stamps[-1]))
            if len(stamps) < args.events:
                print(f"3. signalbox worker: only {len(stamps)} of {args.events} commands in {DEADLINE_S}s")
            else:
                rate = phase3_rate = len(stamps) / (max(stamps) - min(stamps))
                print(f"3. signalbox worker, {args.handlers} handlers: {rate:>8,.0f} events/s -> commands"
                      f"   ({rate / plain:.1%} of the plain agent)")
                match_rate(bs, topics, args.events, plain)
                intake_rate(bs, commanded, args.events, plain)
                print(f"   CPU, share of one core from the first command to the last: {meter.share(phase3)}"
                      f"{gcs.since(None, ' since it started, its startup included')}")
                runs_per_s = round_trip(bs, topics, commanded)
                time.sleep(1)  # the last runs' table writes and status events
                print_records_per_run(offsets_before, all_end_offsets(bs), args.events)

            # 4. latency at a steady rate: half the capacity phase 3 measured, then --rate
            capacity = runs_per_s
            half = max(1, int(capacity / 2)) if capacity == capacity else 0  # NaN: phase 3 failed
            steady += [("4a", half, "half the capacity of phase 3")] if half else []
            steady.append(("4b", args.rate, "the --rate"))
            if half:  # each job gets an event every ~1.3 s: the engine's own hops, no run in flight to wait for
                steady.append(("4c", max(1, int(capacity / 10)), "a tenth of the capacity: jobs mostly idle"))
            for letter, more in zip("defghijk", [int(r) for r in args.steady.split(",") if r], strict=False):
                steady.append((f"4{letter}", more, "a --steady rate"))
            offset = 0
            for label, rate, why in steady:
                if args.fresh:  # its own topics and worker (the first worker idles meanwhile); not in the CPU per run
                    started = resource.getrusage(resource.RUSAGE_CHILDREN)
                    fresh = FreshDeployment(bs, work, env, label, args)
                    try:
                        fresh_meter = CpuMeter({"broker": [broker.pid] if broker.pid else [],
                                                "worker": [fresh.proc.pid], "first worker (idle)": [workers[0].pid]})
                        mark, gc_mark = fresh_meter.mark(), fresh.gcs.read()
                        latency_phase(bs, fresh.topics, fresh.reader, label, rate, why + "; fresh topics and worker",
                                      args.seconds, args.handlers, offset)
                        print(f"   CPU, share of one core over the phase: {fresh_meter.share(mark)}"
                              f"{fresh.gcs.since(gc_mark)}")
                    finally:
                        fresh.stop()
                    done = resource.getrusage(resource.RUSAGE_CHILDREN)
                    fresh_cpu += done.ru_utime - started.ru_utime + done.ru_stime - started.ru_stime
                    offset += int(rate * args.seconds)
                    continue
                mark, gc_mark = meter.mark(), gcs.read()
                latency_phase(bs, topics, reader, label, rate, why, args.seconds, args.handlers, offset)
                print(f"   CPU, share of one core over the phase: {meter.share(mark)}{gcs.since(gc_mark)}")
                offset += int(rate * args.seconds)
                steady_runs += int(rate * args.seconds)
            reader.close()
            chain_rate(bs, topics, args.chain)
            pipe_runs = pipe_phases(bs, topics, args.pipe, args.seconds)
        finally:
            for worker in workers:
                worker.send_signal(signal.SIGINT)
            for worker in workers:
                worker.wait(60)
        # CPU the worker used for phases 3-6 (a fixed amount of work, plus its idle
        # polling): less sensitive to a busy machine than the rates above
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime - fresh_cpu
        runs = args.events + steady_runs + args.chain + pipe_runs
        if not args.profile:  # with --profile the child is py-spy, whose CPU is not the worker's
            print(f"worker CPU: {cpu:.1f} s for {runs} runs = {cpu / runs * 1000:.2f} ms per run "
                  f"(user+sys of {args.workers} worker(s){' and the runner' if args.runner_process else ''}, "
                  "phases 3-6)")
        if args.profile:
            print_profile(work / "profile.txt")
        # 7. the floor: the same steady rates through two plain Faust agents, the worker stopped
        if args.fresh:  # the burst, then each rate through a relay on topics of its own, as phase 4 ran
            relay_latency(bs, [], args.seconds, args.handlers, work, args.events, phase3_rate)
            for label, rate, _ in steady:
                relay_latency(bs, [(label, rate)], args.seconds, args.handlers, work, 0, phase3_rate,
                              prefix=f"bench.relay-{label}")
        else:
            relay_latency(bs, [(label, rate) for label, rate, _ in steady], args.seconds, args.handlers, work,
                          args.events, phase3_rate)


WARM_EVENTS, WARM_RATE = 400, 100  # a --fresh worker's warm-up before its phase: 4 s


class FreshDeployment:
    """``--fresh``: a steady phase's own deployment on the same broker: topics under the
    prefix ``bench-<label>.``, the same handlers, one worker (app ``bench-<label>``), ready
    once an event has made it to a command, then warmed up at a low rate (``WARM_EVENTS``
    events at ``WARM_RATE``/s, spread over every job) and settled."""

    def __init__(self, bs: KafkaConnection, work: Path, env: dict[str, str], label: str,
                 args: argparse.Namespace) -> None:
        prefix = f"bench-{label}."
        self.topics = topics_mod.Topics.load(ROOT / "topics.yaml", prefix)
        topics_mod.create(client.admin(bs), self.topics)
        client.produce_all(bs, [(self.topics.handlers, h["id"].encode(), json.dumps(h).encode())
                                for h in handler_mix(args.handlers, args.jobs, args.concurrency)], timeout=120)
        port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams", "worker", "--jobs", "bench_jobs",
             "--datadir", str(work / f"worker-{label}"), "--loglevel", "warning"],
            env={**env, "SIGNALBOX_TOPIC_PREFIX": prefix, "SIGNALBOX_APP_ID": f"bench-{label}",
                 "SIGNALBOX_METRICS_PORT": str(port)},
            cwd=work, stdout=open(work / f"worker-{label}.log", "wb"), stderr=subprocess.STDOUT)
        self.gcs = GcMeter(f"http://127.0.0.1:{port}/metrics")
        self.reader = commands_reader(bs, self.topics.job_commands)
        p = client.producer(bs, **{"linger.ms": 0})
        end = time.monotonic() + 120
        while time.monotonic() < end:  # ready: its handlers loaded, its partitions assigned
            p.produce(self.topics.events, json.dumps(event_for(10**8, args.handlers)).encode())
            p.flush(10)
            if any(not m.error() for m in self.reader.consume(100, 1.0)):
                break
        else:
            self.stop()
            raise SystemExit(f"{label}: the fresh worker gave no command in 120 s (see worker-{label}.log)")
        # Warm-up: WARM_EVENTS events at WARM_RATE/s, spread over the handlers (so over every
        # job: each job's records exist and its first runs are behind it), their commands
        # read, then settled.
        steady_commands(bs, self.topics, self.reader, WARM_RATE, WARM_EVENTS / WARM_RATE, args.handlers, 10**8 + 1)
        time.sleep(1)  # the warm-up runs settle
        while self.reader.consume(1000, 0.2):
            pass

    def stop(self) -> None:
        self.reader.close()
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(60)


def reader_at_end(bs: KafkaConnection, topic: str) -> Consumer:
    """A reader of ``topic`` that skips what earlier phases wrote."""
    c = commands_reader(bs, topic)
    c.consume(1, 0.5)  # joined
    for tp in c.assignment():
        tp.offset = c.get_watermark_offsets(tp, timeout=10)[1]
        c.seek(tp)
    return c


@dataclass
class Steady:
    """What :func:`steady_commands` read: per command, when its event was produced and
    produce -> the command on the broker (s); produce -> the schedule step wrote it; run id
    -> when its event was produced; the events sent."""

    commands: list[tuple[float, float]]
    to_schedule: list[float]
    sent_by_run: dict[str, float]
    total: int
    produced: list[str] = field(default_factory=list)  # the events' ids, in order
    commanded: set[str] = field(default_factory=set)  # the ids of the events a command was read for
    refused: list[str] = field(default_factory=list)  # produce errors (the broker did not take an event)

    def missing(self) -> list[str]:
        """The events no command was read for, in the order produced."""
        return [event_id for event_id in self.produced if event_id not in self.commanded]

    @property
    def latencies(self) -> list[float]:
        return [latency for _, latency in self.commands]


def steady_commands(bs: KafkaConnection, topics: topics_mod.Topics, reader: Consumer, rate: int, seconds: float,
                    n_handlers: int, first: int) -> Steady:
    """Produce ``rate`` events/s for ``seconds`` (numbered from ``first`` on) and read their
    job commands (30 s at most after the last event)."""
    out = Steady([], [], {}, int(rate * seconds))

    def record(msg: Any) -> None:
        cmd = avro.commands().decode(msg.value())
        sent = json.loads(cmd["event_json"] or "{}").get("sent")
        if sent:  # the command's time on the broker (the reader may lag behind while it produces)
            out.commands.append((sent, msg.timestamp()[1] / 1000 - sent))
            out.to_schedule.append(cmd["created_at"].timestamp() - sent)
            out.sent_by_run[cmd["run_id"]] = sent
            out.commanded.add(json.loads(cmd["event_json"])["id"])

    def delivered(err: Any, msg: Any) -> None:
        if err is not None:
            out.refused.append(f"{err}")

    p = client.producer(bs, **{"linger.ms": 0})
    start = time.perf_counter()
    for i in range(first, first + out.total):
        due = start + (i - first) / rate
        while (wait := due - time.perf_counter()) > 0:  # read while waiting, without spinning
            for msg in reader.consume(100, wait):
                if not msg.error():
                    record(msg)
        event = event_for(i, n_handlers, time.time())
        out.produced.append(event["id"])
        p.produce(topics.events, json.dumps(event).encode(), on_delivery=delivered)
        p.poll(0)
    if p.flush(30):
        out.refused.append("not delivered within 30 s")
    end = time.monotonic() + 30
    while len(out.commands) < out.total and time.monotonic() < end:
        for msg in reader.consume(100, 0.2):
            if not msg.error():
                record(msg)
    return out


def latency_phase(bs: KafkaConnection, topics: topics_mod.Topics, reader: Consumer, label: str, rate: int, why: str,
                  seconds: float, n_handlers: int, first: int) -> None:
    """4. produce -> job command at a steady ``rate`` for ``seconds`` (events numbered from
    ``first`` on): p50/p99 from the command's broker timestamp, where the match step's
    triggers record landed, when the schedule step wrote the command, and the result."""
    triggers = reader_at_end(bs, topics.triggers)
    steady = steady_commands(bs, topics, reader, rate, seconds, n_handlers, first)
    latencies, to_schedule, sent_by_run, total = steady.latencies, steady.to_schedule, steady.sent_by_run, steady.total
    to_trigger: list[float] = []  # produce -> the match step's triggers record on the broker
    end = time.monotonic() + 30
    while len(to_trigger) < total and time.monotonic() < end:
        for msg in triggers.consume(1000, 0.2):
            if not msg.error():
                for t in json.loads(msg.value()):
                    sent = json.loads(t.get("event_json") or "{}").get("sent") if t["trigger_kind"] == "event" else 0
                    if sent:
                        to_trigger.append(msg.timestamp()[1] / 1000 - sent)
    triggers.close()
    if len(latencies) < 2:
        print(f"{label}. produce -> command at {rate}/s: only {len(latencies)}/{total} measured")
        return
    q = statistics.quantiles(latencies, n=100)
    print(f"{label}. produce -> command at {rate}/s ({why}) for {seconds:.0f}s: "
          f"p50 {q[49] * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms ({len(latencies)}/{total} measured)")
    if len(to_trigger) >= 2:
        q = statistics.quantiles(to_trigger, n=100)
        print(f"   of which produce -> triggers record (the match step): p50 {q[49] * 1000:.1f} ms, "
              f"p99 {q[98] * 1000:.1f} ms")
    q = statistics.quantiles(to_schedule, n=100)
    print(f"   of which produce -> command written by the schedule step: p50 {q[49] * 1000:.1f} ms, "
          f"p99 {q[98] * 1000:.1f} ms")
    settled_latency(bs, topics, sent_by_run)


class Relay:
    """``plain_relay.py`` (two plain Faust agents in a row, on the worker's Faust driver and
    linger) on three topics of its own (``prefix``-in, -mid, -out), and readers of its two
    hops. Phase 7 here; ``bench_broker_drift.py`` keeps one across several timed runs."""

    def __init__(self, bs: KafkaConnection, prefix: str, work: Path, first: int = 0) -> None:
        self.bs = bs
        self.prefix = prefix
        self.names = [f"{prefix}-{hop}" for hop in ("in", "mid", "out")]
        admin = client.admin(bs)  # kept until the topics exist (its futures die with it)
        for future in admin.create_topics([NewTopic(n, 4, 1) for n in self.names]).values():
            future.result(30)
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "plain_relay.py"), bs.bootstrap_servers,
                                      *self.names, str(work / prefix)], stdout=open(work / f"{prefix}.log", "wb"),
                                     stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        self.mid: Consumer = reader_at_end(bs, self.names[1])
        self.out: Consumer = reader_at_end(bs, self.names[2])
        self.producer = client.producer(bs, **{"linger.ms": 0})
        self.first = first  # the next event number

    def wait_ready(self) -> bool:
        """Whether a record made both hops within 90 s (the agents are assigned); what the
        warm-up left is read off."""
        ready, end = False, time.monotonic() + 90
        while not ready and time.monotonic() < end:
            self.producer.produce(self.names[0], json.dumps({"warm": True}).encode())
            self.producer.flush(10)
            ready = any(not m.error() for m in self.out.consume(100, 0.5))
        if not ready:
            return False
        time.sleep(1)
        for reader in (self.mid, self.out):
            while reader.consume(1000, 0.2):
                pass
        return True

    def burst(self, count: int, n_handlers: int) -> tuple[float | None, int]:
        """``count`` events at once through both hops: (events/s, None if not all came
        through in time; how many did)."""
        stamps: list[float] = []
        client.produce_all(self.bs, [(self.names[0], None, json.dumps(event_for(i, n_handlers)).encode())
                                     for i in range(self.first, self.first + count)], timeout=120)
        self.first += count
        end = time.monotonic() + DEADLINE_S
        while len(stamps) < count and time.monotonic() < end:
            stamps += [m.timestamp()[1] / 1000 for m in self.out.consume(1000, 0.5) if not m.error()]
        while self.mid.consume(1000, 0.2):
            pass
        if len(stamps) >= count and max(stamps) > min(stamps):
            return len(stamps) / (max(stamps) - min(stamps)), len(stamps)
        return None, len(stamps)

    def measure(self, rate: int, seconds: float, n_handlers: int) -> tuple[list[float], list[float], int]:
        """``rate`` events/s for ``seconds``: (produce -> second hop, produce -> first hop)
        latencies in seconds, and the count sent."""
        total = int(rate * seconds)
        out: list[float] = []
        mid: list[float] = []
        start = time.perf_counter()
        for i in range(total):
            due = start + i / rate
            while due - time.perf_counter() > 0:
                self._take(self.out, out)
                self._take(self.mid, mid)
                time.sleep(min(0.001, max(0.0, due - time.perf_counter())))
            event = event_for(self.first + i, n_handlers, time.time())
            self.producer.produce(self.names[0], json.dumps(event).encode())
            self.producer.poll(0)
        self.producer.flush(30)
        self.first += total
        end = time.monotonic() + 30
        while (len(out) < total or len(mid) < total) and time.monotonic() < end:
            self._take(self.out, out)
            self._take(self.mid, mid)
            time.sleep(0.01)
        return out, mid, total

    @staticmethod
    def _take(reader: Consumer, latencies: list[float]) -> None:
        for msg in reader.consume(500, 0):
            if not msg.error():
                sent = json.loads(msg.value()).get("sent")
                if sent:
                    latencies.append(msg.timestamp()[1] / 1000 - sent)

    def stop(self) -> None:
        self.mid.close()
        self.out.close()
        self.proc.terminate()
        self.proc.wait(30)


def relay_latency(bs: KafkaConnection, rates: list[tuple[str, int]], seconds: float, n_handlers: int,
                  work: Path, burst: int, phase3: float, prefix: str = "bench.relay") -> None:
    """7. ``burst`` events at once (none if 0), then phase 4's steady rates, through a
    :class:`Relay` with the worker stopped: events/s through both hops; produce -> the
    second agent's record and -> the first's, p50/p99. Phase 4's figures over these are
    what the engine adds to the framework's own two hops on this broker."""
    relay = Relay(bs, prefix, work, first=10**9)
    try:
        if not relay.wait_ready():
            print(f"7. plain two-hop Faust relay: not ready in 90 s (see {prefix}.log)")
            return
        if burst:
            through, got = relay.burst(burst, n_handlers)
            if through is None:
                print(f"7. plain two-hop Faust relay: only {got} of {burst} events through both hops")
            else:
                print(f"7. plain two-hop Faust relay, {burst} events at once: {through:,.0f} events/s through both "
                      f"hops (phase 3: {phase3 / through:.0%} of it)")
        for label, rate in rates:
            out, mid, total = relay.measure(rate, seconds, n_handlers)
            if len(out) < 2 or len(mid) < 2:
                print(f"7{label[1:]}. plain two-hop Faust relay at {rate}/s: only {len(out)}/{total} measured")
                continue
            q, q1 = statistics.quantiles(out, n=100), statistics.quantiles(mid, n=100)
            print(f"7{label[1:]}. plain two-hop Faust relay at {rate}/s (phase {label}'s rate, worker stopped): "
                  f"produce -> second hop p50 {q[49] * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms; -> first hop "
                  f"p50 {q1[49] * 1000:.1f} ms, p99 {q1[98] * 1000:.1f} ms ({len(out)}/{total} measured)")
    finally:
        relay.stop()


def round_trip(bs: KafkaConnection, topics: topics_mod.Topics, commanded: list[tuple[str, str, float]]) -> float:
    """Where a job's round trip went in phase 3 (medians over its runs): command on the
    broker -> the runner starts it; the run; its end -> its result on the broker; the result
    on the broker -> the job's next command on the broker (the schedule step). Returns the
    runs/s of phase 3 (every run done; NaN when some result is missing)."""
    results = commands_reader(bs, topics.run_results)
    codec = avro.results()
    by_run: dict[str, tuple[float, float, float]] = {}  # run id -> (started, finished, result on the broker)
    wanted = {run_id for _, run_id, _ in commanded}
    end = time.monotonic() + 60
    while len(by_run) < len(wanted) and time.monotonic() < end:
        for msg in results.consume(1000, 0.5):
            if not msg.error():
                r = codec.decode(msg.value())
                if r["run_id"] in wanted:
                    by_run[r["run_id"]] = (r["started_at"].timestamp(), r["finished_at"].timestamp(),
                                          msg.timestamp()[1] / 1000)
    results.close()
    if len(by_run) == len(wanted) and commanded:
        first = min(at for _, _, at in commanded)
        last = max(out for _, _, out in by_run.values())
        print(f"   every run done: {len(by_run)} results in {last - first:.1f} s = {len(by_run) / (last - first):,.0f} "
              "runs/s (first command to last result)")
        runs_per_s = len(by_run) / (last - first)
    else:
        print(f"   only {len(by_run)} of {len(wanted)} results within 60 s")
        runs_per_s = float("nan")
    parts: dict[str, list[float]] = {"runner intake": [], "run": [], "result out": [], "schedule step": []}
    previous: dict[str, str] = {}
    for job, run_id, at in sorted(commanded, key=lambda c: c[2]):
        if run_id in by_run:
            started, finished, out = by_run[run_id]
            parts["runner intake"].append(started - at)
            parts["run"].append(finished - started)
            parts["result out"].append(out - finished)
        if job in previous and previous[job] in by_run:
            parts["schedule step"].append(at - by_run[previous[job]][2])
        previous[job] = run_id
    print("   round trip, median ms: " + ", ".join(
        f"{name} {statistics.median(v) * 1000:.0f} (p90 {statistics.quantiles(v, n=10)[8] * 1000:.0f})"
        for name, v in parts.items() if len(v) >= 2))
    return runs_per_s


def match_rate(bs: KafkaConnection, topics: topics_mod.Topics, events: int, plain: float) -> None:
    """3a. the match step alone: events/s from its first triggers record to the one that
    holds the last of the phase's triggers (each event matches one handler)."""
    reader = commands_reader(bs, topics.triggers)
    stamps: list[tuple[float, int]] = []
    seen, end = 0, time.monotonic() + 60
    while seen < events and time.monotonic() < end:
        for msg in reader.consume(1000, 0.5):
            if not msg.error():
                n = sum(1 for t in json.loads(msg.value()) if t.get("trigger_kind") == "event")
                stamps.append((msg.timestamp()[1] / 1000, n))
                seen += n
    reader.close()
    if seen < events or len(stamps) < 2:
        print(f"   match step: only {seen} of {events} triggers")
        return
    stamps.sort()
    rate = events / max(1e-3, stamps[-1][0] - stamps[0][0])
    print(f"   of which the match step, events -> triggers: {rate:,.0f} events/s ({rate / plain:.0%} of the plain "
          f"agent; the commands then wait for each job's previous run to settle)")


def intake_rate(bs: KafkaConnection, commanded: list[tuple[str, str, float]], events: int, plain: float) -> None:
    """3b. the schedule step's intake: events/s from the first run it accepted to the last,
    a run accepted when its trigger was queued (a ``q:`` record on the ``job-runs``
    changelog, Faust's topic ``bench-job-runs-changelog``) or, never queued, commanded."""
    reader = commands_reader(bs, "bench-job-runs-changelog")
    accepted: dict[str, float] = {}
    end = time.monotonic() + 60
    idle = 0
    while time.monotonic() < end and idle < 4:
        msgs = [m for m in reader.consume(1000, 0.5) if not m.error()]
        idle = 0 if msgs else idle + 1
        for msg in msgs:
            if (msg.key() or b"").startswith(b'"q:') and msg.value():
                accepted.setdefault(json.loads(msg.value())["run_id"], msg.timestamp()[1] / 1000)
    reader.close()
    for _, run_id, at in commanded:
        accepted.setdefault(run_id, at)
    stamps = sorted(accepted[run_id] for _, run_id, _ in commanded if run_id in accepted)
    if len(stamps) < events:
        print(f"   schedule step intake: only {len(stamps)} of {events} runs found")
        return
    rate = events / max(1e-3, stamps[-1] - stamps[0])
    print(f"   of which the schedule step's intake, runs accepted (queued or commanded): {rate:,.0f} events/s "
          f"({rate / plain:.0%} of the plain agent)")


def settled_latency(bs: KafkaConnection, topics: topics_mod.Topics, sent_by_run: dict[str, float]) -> None:
    """Phase 4's full pipeline: produce -> the run's result on the broker (p50, p99)."""
    reader = commands_reader(bs, topics.run_results)
    codec = avro.results()
    out: dict[str, float] = {}
    end = time.monotonic() + 30
    while len(out) < len(sent_by_run) and time.monotonic() < end:
        for msg in reader.consume(1000, 0.2):
            if not msg.error():
                run_id = codec.decode(msg.value())["run_id"]
                if run_id in sent_by_run and run_id not in out:
                    out[run_id] = msg.timestamp()[1] / 1000 - sent_by_run[run_id]
    reader.close()
    if len(out) >= 2:
        q = statistics.quantiles(list(out.values()), n=100)
        print(f"   produce -> result (settled): p50 {q[49] * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms "
              f"({len(out)}/{len(sent_by_run)} measured)")


def chain_rate(bs: KafkaConnection, topics: topics_mod.Topics, n: int) -> None:
    """5. n events of one job at once: runs/s from its first command to its last result."""
    results = commands_reader(bs, topics.run_results)
    commands = commands_reader(bs, topics.job_commands)
    client.produce_all(bs, [(topics.events, None, json.dumps({"id": f"chain-{uuid.uuid4()}", "type": "chain"}).encode())
                            for _ in range(n)], timeout=60)
    first: float | None = None
    ends: list[float] = []
    end = time.monotonic() + DEADLINE_S
    while first is None and time.monotonic() < end:
        for msg in commands.consume(1000, 0.2):
            if not msg.error() and msg.key() == b"chain":
                first = msg.timestamp()[1] / 1000
                break
    while len(ends) < n and time.monotonic() < end:
        for msg in results.consume(1000, 0.2):
            if not msg.error() and msg.key() == b"chain":
                ends.append(msg.timestamp()[1] / 1000)
    commands.close()
    results.close()
    if first is None or len(ends) < n:
        print(f"5. serial chain: only {len(ends)} of {n} results in {DEADLINE_S}s")
        return
    print(f"5. one job's serial chain, {n} runs: {n / (max(ends) - first):,.1f} runs/s "
          f"({(max(ends) - first) / n * 1000:.1f} ms per run, command to settled result to next command)")


def pipe_handlers() -> list[dict[str, Any]]:
    """Phase 6: lane i's event handler (job pipe<i>) and its flow (job flow<i>, after a
    pipe<i> run succeeds), the send time carried in the params."""
    out: list[dict[str, Any]] = []
    for i in range(LANES):
        out.append({"id": f"bench-pipe{i}", "job": f"pipe{i}", "event": {"match": {"type": "pipe", "lane": i}},
                    "params": {"sent": "sent", "tag": "tag"}})
        out.append({"id": f"bench-flow{i}", "job": f"flow{i}", "after": {"job": f"pipe{i}", "status": "success",
                                                                         "state": "own"},
                    "params": {"sent": "final_state.sent", "tag": "final_state.tag"}})
    return out


def pipe_phases(bs: KafkaConnection, topics: topics_mod.Topics, n: int, seconds: float) -> int:
    """6a: n events at once, fully settled; 6b: a steady half of 6a's rate for ``seconds``.
    Returns the runs the phase started (two per event)."""
    results = reader_at_end(bs, topics.run_results)
    codec = avro.results()
    flow_done: dict[str, tuple[float, float]] = {}  # event tag -> (its flow run's result on the broker, since produce)

    def read(until_count: int, deadline: float) -> None:
        while len(flow_done) < until_count and time.monotonic() < deadline:
            for msg in results.consume(1000, max(0.0, min(0.2, deadline - time.monotonic()))):
                if msg.error() or not (msg.key() or b"").startswith(b"flow"):
                    continue
                result = codec.decode(msg.value())
                state = json.loads(result.get("final_state_json") or "{}")
                tag, sent = state.get("tag"), state.get("sent")
                if isinstance(tag, str) and isinstance(sent, (int, float)) and tag not in flow_done:
                    done = msg.timestamp()[1] / 1000
                    flow_done[tag] = (done, done - sent)

    def event(i: int) -> bytes:
        tag = f"pipe-{uuid.uuid4()}"  # what the flow run's result is found by
        return json.dumps({"id": tag, "type": "pipe", "lane": i % LANES, "sent": time.time(), "tag": tag}).encode()

    try:
        first = time.time()
        client.produce_all(bs, [(topics.events, None, event(i)) for i in range(n)], timeout=60)
        read(n, time.monotonic() + DEADLINE_S)
        if len(flow_done) < n:
            print(f"6a. full pipeline: only {len(flow_done)} of {n} flow runs settled in {DEADLINE_S}s")
            return 2 * n
        rate = n / (max(done for done, _ in flow_done.values()) - first)
        print(f"6a. full pipeline, {n} events at once over {LANES} lanes (event -> run -> status event matched "
              f"again -> flow run): {rate:,.0f} events/s fully settled ({2 * rate:,.0f} runs/s)")
        print_quantiles("   produce -> flow run's result", [took for _, took in flow_done.values()])
        flow_done.clear()
        marks = {topic: end_offsets(bs, topic) for topic in (topics.events, topics.job_commands, topics.run_results)}
        steady = max(1, int(rate / 2))
        total = int(steady * seconds)
        p = client.producer(bs, **{"linger.ms": 0})
        start = time.perf_counter()
        for i in range(total):
            while (wait := start + i / steady - time.perf_counter()) > 0:
                read(total, time.monotonic() + wait)  # read while waiting, without spinning
            p.produce(topics.events, event(i))
            p.poll(0)
        p.flush(30)
        read(total, time.monotonic() + 60)
        print(f"6b. full pipeline at {steady}/s (half of 6a) for {seconds:.0f}s: {len(flow_done)}/{total} settled")
        print_quantiles("   produce -> flow run's result", [took for _, took in flow_done.values()])
        pipe_hops(bs, topics, set(flow_done), marks)
        return 2 * (n + total)
    finally:
        results.close()


def end_offsets(bs: KafkaConnection, topic: str) -> dict[int, int]:
    c = commands_reader(bs, topic)
    try:
        return {tp.partition: c.get_watermark_offsets(tp, timeout=10)[1] for tp in c.assignment()}
    finally:
        c.close()


def pipe_hops(bs: KafkaConnection, topics: topics_mod.Topics, tags: set[str], marks: dict[str, dict[int, int]]) -> None:
    """Where 6b's time went, medians over its events (broker timestamps, and the command's
    creation time in the worker): produce -> pipe result -> its status event on the events
    topic -> flow command created -> flow result."""
    at: dict[str, dict[str, float]] = {tag: {} for tag in tags}  # tag -> hop -> time (s)
    sent: dict[str, float] = {}
    results, commands = avro.results(), avro.commands()

    def scan(topic: str, take: Any) -> None:
        c = Consumer(client.config(bs, **{"group.id": f"hops-{uuid.uuid4()}", "enable.auto.commit": False}))
        ends = end_offsets(bs, topic)
        c.assign([TopicPartition(topic, part, off) for part, off in marks[topic].items()])
        left = {part for part, off in marks[topic].items() if ends.get(part, 0) > off}
        deadline = time.monotonic() + 60
        while left and time.monotonic() < deadline:
            for msg in c.consume(1000, 0.2):
                if msg.error():
                    continue
                if msg.offset() + 1 >= ends[msg.partition()]:
                    left.discard(msg.partition())
                take(msg)
        c.close()

    def on_result(msg: Any) -> None:
        key = msg.key() or b""
        if key.startswith((b"pipe", b"flow")):
            state = json.loads(results.decode(msg.value()).get("final_state_json") or "{}")
            if state.get("tag") in at:
                at[state["tag"]][key[:4].decode() + " result"] = msg.timestamp()[1] / 1000
                sent[state["tag"]] = state["sent"]

    def on_event(msg: Any) -> None:
        doc = json.loads(msg.value())
        if doc.get("source") == "internal" and str(doc.get("job", "")).startswith("pipe"):
            tag = (doc.get("final_state") or {}).get("tag")
            if tag in at:
                at[tag]["status event"] = msg.timestamp()[1] / 1000

    def on_command(msg: Any) -> None:
        if (msg.key() or b"").startswith(b"flow"):
            cmd = commands.decode(msg.value())
            tag = json.loads(cmd["params_json"] or "{}").get("tag")
            if tag in at:
                at[tag]["flow command"] = cmd["created_at"].timestamp()

    scan(topics.run_results, on_result)
    scan(topics.events, on_event)
    scan(topics.job_commands, on_command)
    order = ["pipe result", "status event", "flow command", "flow result"]
    complete = [(sent[tag], *(hops[h] for h in order)) for tag, hops in at.items() if tag in sent and len(hops) == 4]
    if not complete:
        return
    names = ["produce -> pipe result", "-> its status event", "-> flow command", "-> flow result"]
    medians = [statistics.median(t[i + 1] - t[i] for t in complete) * 1000 for i in range(4)]
    print("   where it went, median ms: " + ", ".join(f"{name} {m:.0f}" for name, m in zip(names, medians, strict=True))
          + f" ({len(complete)} events)")


def print_quantiles(what: str, seconds: list[float]) -> None:
    if len(seconds) >= 2:
        q = statistics.quantiles(seconds, n=100)
        print(f"{what}: p50 {q[49] * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms")


def print_profile(path: Path, top: int = 25) -> None:
    """Self and total sample counts per function, from py-spy's collapsed stacks."""
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    threads: dict[str, int] = {}  # the first frame names the thread (py-spy --threads)
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        n = int(count)
        samples += n
        threads[frames[0]] = threads.get(frames[0], 0) + n
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for frame in set(frames):
            total[frame] = total.get(frame, 0) + n
    print(f"profile: {samples} samples holding the GIL; by thread: " + ", ".join(
        f"{name[:40]} {n / samples:.0%}" for name, n in sorted(threads.items(), key=lambda kv: -kv[1])[:5]))
    print("top functions by own time (own%, total%)")
    for frame, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {n / samples:6.1%} {total[frame] / samples:6.1%}  {frame[:110]}")
    print("the project's functions by total time (own%, total%)")
    ours = [(frame, n) for frame, n in total.items() if "streams/" in frame]
    for frame, n in sorted(ours, key=lambda kv: -kv[1])[:top]:
        print(f"  {own.get(frame, 0) / samples:6.1%} {n / samples:6.1%}  {frame[:110]}")


if __name__ == "__main__":
    main()
