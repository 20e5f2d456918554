"""Does the embedded broker slow down as its topics fill? (Not a test.) One command:

    python bench/bench_broker_drift.py [--rate 500] [--seconds 3] [--runs 4]

Starts an embedded broker and the plain two-hop Faust relay of ``bench_e2e.py``'s phase 7
(``plain_relay.py``), then measures produce -> second hop at a steady ``--rate``, ``--runs``
times in a row on the same three topics, then twice more on three fresh topics with a
fresh relay, on the same broker. Each run prints p50/p99 and the share of a core the
broker and the relay used. The rate is the same in every run: any rise is the broker's
(or the relay's) cost growing with what the topics hold, which every later phase of
``bench_e2e.py`` pays more than an earlier one. Bounded in count and time; loopback only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from confluent_kafka import Consumer
from confluent_kafka.admin import NewTopic

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_e2e import CpuMeter, event_for, reader_at_end  # noqa: E402

from streams.kafka import client  # noqa: E402
from streams.kafka.broker import EmbeddedBroker  # noqa: E402
from streams.kafka.connection import KafkaConnection  # noqa: E402


class Relay:
    """plain_relay.py on three topics of its own, and readers of its two hops."""

    def __init__(self, bs: KafkaConnection, prefix: str, work: Path) -> None:
        self.bs = bs
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
        self.first = 0

    def wait_ready(self) -> None:
        end = time.monotonic() + 90  # until a record makes both hops (the agents are assigned)
        while time.monotonic() < end:
            self.producer.produce(self.names[0], b'{"warm": true}')
            self.producer.flush(10)
            if any(not m.error() for m in self.out.consume(100, 0.5)):
                break
        else:
            raise SystemExit(f"the relay was not ready in 90 s (see {self.names[0]}.log)")
        time.sleep(1)
        for reader in (self.mid, self.out):
            while reader.consume(1000, 0.2):
                pass

    def _take(self, into: list[float]) -> None:
        for msg in self.out.consume(500, 0):
            if not msg.error():
                sent = json.loads(msg.value()).get("sent")
                if sent:
                    into.append(msg.timestamp()[1] / 1000 - sent)
        while self.mid.consume(500, 0):
            pass

    def measure(self, rate: int, seconds: float) -> tuple[float, float, int, int]:
        """(p50 ms, p99 ms, measured, sent) of produce -> second hop at ``rate`` for ``seconds``."""
        total, latencies = int(rate * seconds), []
        start = time.perf_counter()
        for i in range(self.first, self.first + total):
            due = start + (i - self.first) / rate
            while due - time.perf_counter() > 0:
                self._take(latencies)
                time.sleep(min(0.001, max(0.0, due - time.perf_counter())))
            self.producer.produce(self.names[0], json.dumps(event_for(i, 10_000, time.time())).encode())
            self.producer.poll(0)
        self.producer.flush(30)
        self.first += total
        end = time.monotonic() + 30
        while len(latencies) < total and time.monotonic() < end:
            self._take(latencies)
            time.sleep(0.01)
        if len(latencies) < 2:
            return float("nan"), float("nan"), len(latencies), total
        q = statistics.quantiles(latencies, n=100)
        return q[49] * 1000, q[98] * 1000, len(latencies), total

    def stop(self) -> None:
        self.mid.close()
        self.out.close()
        self.proc.terminate()
        self.proc.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=int, default=500)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--runs", type=int, default=4, help="runs on the same topics (then 2 on fresh ones)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="signalbox-drift-"))
    with EmbeddedBroker(work / "tansu.log") as broker:
        bs = KafkaConnection(broker.bootstrap_servers)
        for prefix, runs in (("drift.a", args.runs), ("drift.b", 2)):
            relay = Relay(bs, prefix, work)
            try:
                relay.wait_ready()
                meter = CpuMeter({"broker": [broker.pid] if broker.pid else [], "relay": [relay.proc.pid]})
                for run in range(runs):
                    mark = meter.mark()
                    p50, p99, got, total = relay.measure(args.rate, args.seconds)
                    print(f"topics {prefix}, run {run + 1}: produce -> second hop at {args.rate}/s: p50 {p50:.1f} ms, "
                          f"p99 {p99:.1f} ms ({got}/{total}); CPU: {meter.share(mark)}", flush=True)
            finally:
                relay.stop()


if __name__ == "__main__":
    main()
