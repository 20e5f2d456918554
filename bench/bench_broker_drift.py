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
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_e2e import CpuMeter, Relay  # noqa: E402

from streams.kafka.broker import EmbeddedBroker  # noqa: E402
from streams.kafka.connection import KafkaConnection  # noqa: E402


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
                if not relay.wait_ready():
                    raise SystemExit(f"the relay was not ready in 90 s (see {prefix}.log)")
                meter = CpuMeter({"broker": [broker.pid] if broker.pid else [], "relay": [relay.proc.pid]})
                for run in range(runs):
                    mark = meter.mark()
                    latencies, _, total = relay.measure(args.rate, args.seconds, 10_000)
                    if len(latencies) < 2:
                        print(f"topics {prefix}, run {run + 1}: only {len(latencies)}/{total} measured")
                        continue
                    q = statistics.quantiles(latencies, n=100)
                    p50, p99, got = q[49] * 1000, q[98] * 1000, len(latencies)
                    print(f"topics {prefix}, run {run + 1}: produce -> second hop at {args.rate}/s: p50 {p50:.1f} ms, "
                          f"p99 {p99:.1f} ms ({got}/{total}); CPU: {meter.share(mark)}", flush=True)
            finally:
                relay.stop()


if __name__ == "__main__":
    main()
