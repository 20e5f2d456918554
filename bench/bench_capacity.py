"""One worker's steady-state capacity, and its latency at half of it, beside the plain relay. (Not a test.)

    python bench/bench_capacity.py [--handlers 10000] [--jobs 128] [--seconds 5]
                                   [--start 300] [--step 1.25] [--max 2000] [--root CHECKOUT]

``bench_e2e.py`` takes "capacity" from a burst (phase 3), where the schedule step's batches
are large. At a steady rate they are small, so a worker can fall behind at a rate below
half of its burst capacity (phase 4a). This script measures the steady capacity itself:

1. a ladder of steady rates, from ``--start`` up by ``--step`` while the worker keeps up
   (at most ``--max``). Each rate runs on a deployment of its own (``bench_e2e.py
   --fresh``: fresh topics, a fresh worker with the same handlers, warmed up), since the
   embedded broker slows down as its topics fill. A rate is **kept up** when every event's
   command arrived and the commands of the phase's last quarter came as fast as those of
   its first (their median produce -> command at most 1.5 times the first quarter's plus
   50 ms): a backlog that grows shows as a latency that grows along the phase;
2. the steady capacity: the highest rate kept up;
3. at half of it (the issue's "half the measured capacity", measured at a steady rate),
   produce -> command p50/p99 on a fresh deployment, and the plain two-hop Faust relay
   (phase 7 of ``bench_e2e.py``) at the same rate on topics of its own: what the engine
   adds to the framework's own two hops.

Each row prints the share of a core the broker, the worker and the bench used. Every loop
is bounded in count and time; the broker listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_e2e import (  # noqa: E402
    CpuMeter,
    FreshDeployment,
    Relay,
    Steady,
    commands_reader,
    steady_commands,
    worker_env,
)

from streams.contracts import avro  # noqa: E402
from streams.kafka.broker import EmbeddedBroker  # noqa: E402
from streams.kafka.connection import KafkaConnection  # noqa: E402


def kept_up(steady: Steady) -> tuple[bool, float, float]:
    """(kept up, median produce -> command of the first quarter, of the last quarter), by
    when the events were produced."""
    if steady.missing() or len(steady.commands) < 8:
        return False, float("nan"), float("nan")
    ordered = [latency for _, latency in sorted(steady.commands)]
    quarter = len(ordered) // 4
    early, late = statistics.median(ordered[:quarter]), statistics.median(ordered[-quarter:])
    return late <= 1.5 * early + 0.05, early, late


def quantiles(latencies: list[float]) -> str:
    if len(latencies) < 2:
        return f"only {len(latencies)} measured"
    q = statistics.quantiles(latencies, n=100)
    return f"p50 {q[49] * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms"


def probe(bs: KafkaConnection, broker_pid: int | None, work: Path, env: dict[str, str], label: str, rate: int,
          args: argparse.Namespace) -> Steady:
    """``rate`` events/s for ``--seconds`` on a fresh deployment; prints its row."""
    fresh = FreshDeployment(bs, work, env, label, args)
    try:
        meter = CpuMeter({"broker": [broker_pid] if broker_pid else [], "worker": [fresh.proc.pid]})
        mark = meter.mark()
        steady = steady_commands(bs, fresh.topics, fresh.reader, rate, args.seconds, args.handlers, 0)
        cpu = meter.share(mark)
        if steady.missing():
            trace_missing(bs, fresh, steady)
        reread = worker_lines(fresh, ("signalbox_match_offset_gaps_total",))
        if reread:
            print(f"   the match step read again after a skipped offset: {reread}")
    finally:
        fresh.stop()
    ok, early, late = kept_up(steady)
    print(f"{rate:>6}/s: {'kept up  ' if ok else 'FELL BEHIND'} produce -> command {quantiles(steady.latencies)} "
          f"({len(steady.commands)}/{steady.total}); median first quarter {early * 1000:.0f} ms, last quarter "
          f"{late * 1000:.0f} ms; CPU: {cpu}", flush=True)
    return steady


def worker_lines(fresh: FreshDeployment, names: tuple[str, ...]) -> str:
    """The fresh worker's non-zero samples of these metrics, from its /metrics."""
    try:
        text = urllib.request.urlopen(fresh.gcs.url, timeout=5).read().decode()
    except OSError as exc:
        return f"/metrics: {exc}"
    return "; ".join(line for line in text.splitlines() if line.startswith(names) and not line.endswith(" 0.0"))


def trace_missing(bs: KafkaConnection, fresh: FreshDeployment, steady: Steady) -> None:
    """Where the events without a command went: a late command (60 s more), their triggers,
    dead letters."""
    wanted = set(steady.missing())
    print(f"   {len(wanted)} events without a command after 30 s: {sorted(wanted)[:5]}", flush=True)
    end = time.monotonic() + 60
    while wanted - steady.commanded and time.monotonic() < end:
        for msg in fresh.reader.consume(100, 0.5):
            if not msg.error():
                cmd = avro.commands().decode(msg.value())
                event_id = json.loads(cmd["event_json"] or "{}").get("id")
                if event_id in wanted:
                    steady.commanded.add(event_id)
                    print(f"   late command for {event_id}: run {cmd['run_id']} of {cmd['job']} at "
                          f"{time.time() - json.loads(cmd['event_json'])['sent']:.1f} s", flush=True)
    print(f"   events the broker refused: {len(steady.refused)} {steady.refused[:3]}", flush=True)
    # what the worker counted: events read by its match step, by outcome; its lag; skipped offsets
    print("   worker: " + worker_lines(fresh, ("signalbox_events_consumed_total", "signalbox_consumer_lag",
                                              "signalbox_dead_letters_total", "signalbox_match_offset_gaps_total")))
    log = Path(fresh.proc.args[fresh.proc.args.index("--datadir") + 1] + ".log")
    if log.is_file():
        lines = [line for line in log.read_text().splitlines() if "skipped" in line or "again" in line]
        print("   worker log: " + " | ".join(lines))
    for topic in (fresh.topics.events, fresh.topics.triggers, fresh.topics.dead_letter):
        reader = commands_reader(bs, topic)
        found, end = 0, time.monotonic() + 20
        while time.monotonic() < end:
            batch = reader.consume(1000, 1.0)
            if not batch:
                break
            for msg in batch:
                if msg.error() or msg.value() is None:
                    continue
                text = msg.value().decode("utf-8", "replace")
                for event_id in wanted:
                    if event_id in text:
                        found += 1
                        print(f"   {topic} p{msg.partition()}@{msg.offset()} holds {event_id}: {text[:300]}")
        reader.close()
        print(f"   {topic}: {found} records hold a missing event", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--handlers", type=int, default=10_000)
    ap.add_argument("--jobs", type=int, default=128, help="jobs the handlers are spread over (at most 128)")
    ap.add_argument("--seconds", type=float, default=5.0, help="seconds per rate")
    ap.add_argument("--start", type=int, default=300, help="the ladder's first rate (events/s)")
    ap.add_argument("--step", type=float, default=1.25, help="each rate is the previous one times this")
    ap.add_argument("--max", type=int, default=2000, help="the ladder's highest rate")
    ap.add_argument("--root", type=Path, default=ROOT, help="checkout whose worker is measured")
    args = ap.parse_args()
    if args.step <= 1 or args.start < 1 or args.seconds < 1:
        ap.error("--step must be above 1, --start at least 1 and --seconds at least 1")
    args.concurrency = 1  # FreshDeployment's handlers: a job's next run waits for its previous one
    work = Path(tempfile.mkdtemp(prefix="signalbox-capacity-"))
    with EmbeddedBroker(work / "tansu.log") as broker:
        bs = KafkaConnection(broker.bootstrap_servers)
        env = worker_env(bs, args.root, args.jobs)
        print(f"one worker from {args.root.resolve()}, {args.handlers} handlers over {args.jobs} jobs, runner on; "
              f"{args.seconds:g} s per rate, each on fresh topics and a fresh worker")
        capacity, rate, step = 0, args.start, 0
        while rate <= args.max and step < 20:
            if not kept_up(probe(bs, broker.pid, work, env, f"cap{step}", rate, args))[0]:
                break
            capacity, rate, step = rate, max(rate + 1, int(rate * args.step)), step + 1
        if not capacity:
            print(f"steady capacity: below {args.start}/s (the first rate fell behind)")
            return
        print(f"steady capacity: {capacity}/s (the highest rate kept up"
              + (f"; {rate}/s fell behind)" if rate <= args.max else f"; --max {args.max}/s reached)"))
        half = max(1, capacity // 2)
        print(f"at half of it, {half}/s:")
        steady = probe(bs, broker.pid, work, env, "half", half, args)
        relay = Relay(bs, "capacity.relay", work)
        try:
            if relay.wait_ready():
                out, _, total = relay.measure(half, args.seconds, args.handlers)
                print(f"   plain two-hop Faust relay at {half}/s (fresh topics): produce -> second hop "
                      f"{quantiles(out)} ({len(out)}/{total})")
                if len(out) >= 2 and len(steady.latencies) >= 2:
                    worker_p99 = statistics.quantiles(steady.latencies, n=100)[98]
                    relay_p99 = statistics.quantiles(out, n=100)[98]
                    print(f"   the worker's p99 is {worker_p99 / relay_p99:.1f}x the relay's")
            else:
                print("   plain two-hop Faust relay: not ready in 90 s")
        finally:
            relay.stop()


if __name__ == "__main__":
    main()
