"""What a produced record costs the sender's CPU in a burst and at a steady rate. (Not a test.)

    python bench/bench_send.py [--records 20000] [--rate 1500] [--seconds 3]
                               [--partitions 1,8] [--linger 5,15]

The worker sends every record through aiokafka (``app.producer.send``, ``acks=all``). For
each topic size (``--partitions``) and producer linger (``--linger``, ms) this starts an
aiokafka producer on an embedded broker and measures the process's CPU time per record
(user + system, ``time.process_time``):

- **burst**: ``--records`` records sent at once, then every acknowledgement awaited;
- **steady**: ``--rate`` records/s for ``--seconds`` (three at a time, then a sleep), each
  acknowledgement awaited at the end.

Keys spread over 128 values (the bench's jobs), so records spread over the partitions. A
steady rate gives each linger window a few records per partition: the ratio steady/burst
is what a request and a partition batch cost beyond their records. Every loop is bounded;
the broker listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from aiokafka import AIOKafkaProducer
from confluent_kafka.admin import NewTopic

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streams.kafka import client  # noqa: E402
from streams.kafka.broker import EmbeddedBroker  # noqa: E402
from streams.kafka.connection import KafkaConnection  # noqa: E402

VALUE = b"x" * 400  # about a trigger's or a command's size


async def burst(producer: AIOKafkaProducer, topic: str, count: int) -> float:
    """CPU µs per record of ``count`` records sent at once."""
    started = time.process_time()
    acks = [await producer.send(topic, VALUE, key=str(i % 128).encode()) for i in range(count)]
    await asyncio.wait_for(asyncio.gather(*acks), 120)
    return (time.process_time() - started) / count * 1e6


async def steady(producer: AIOKafkaProducer, topic: str, rate: int, seconds: float) -> float:
    """CPU µs per record of ``rate`` records/s for ``seconds``, three at a time."""
    count = int(rate * seconds)
    acks = []
    started, start = time.process_time(), time.perf_counter()
    for i in range(count):
        if i % 3 == 0 and (wait := start + i / rate - time.perf_counter()) > 0:
            await asyncio.sleep(wait)
        acks.append(await producer.send(topic, VALUE, key=str(i % 128).encode()))
    await asyncio.wait_for(asyncio.gather(*acks), 120)
    return (time.process_time() - started) / count * 1e6


async def measure(bootstrap: str, topic: str, linger_ms: int, args: argparse.Namespace) -> tuple[float, float]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=linger_ms)
    await producer.start()
    try:
        await burst(producer, topic, 1000)  # warm-up: metadata, connections
        return await burst(producer, topic, args.records), await steady(producer, topic, args.rate, args.seconds)
    finally:
        await producer.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=20_000, help="records of the burst")
    ap.add_argument("--rate", type=int, default=1_500, help="records/s of the steady phase")
    ap.add_argument("--seconds", type=float, default=3.0, help="seconds of the steady phase")
    ap.add_argument("--partitions", default="1,8", help="partition counts of the topic, comma-separated")
    ap.add_argument("--linger", default="5,15", help="producer linger values (ms), comma-separated")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="signalbox-send-"))
    with EmbeddedBroker(work / "tansu.log") as broker:
        admin = client.admin(KafkaConnection(broker.bootstrap_servers))  # kept until the topics exist
        sizes = [int(p) for p in args.partitions.split(",")]
        for future in admin.create_topics([NewTopic(f"send-{p}", p, 1) for p in sizes]).values():
            future.result(30)
        print(f"aiokafka producer, acks=all, {len(VALUE)}-byte records, keys over 128 values; CPU per record "
              f"(the bench process, user + system): a burst of {args.records}, then {args.rate}/s for "
              f"{args.seconds:g} s")
        print(f"{'partitions':>10} {'linger ms':>9} {'burst µs':>9} {'steady µs':>10} {'steady/burst':>13}")
        for partitions in sizes:
            for linger in (int(v) for v in args.linger.split(",")):
                b, s = asyncio.run(measure(broker.bootstrap_servers, f"send-{partitions}", linger, args))
                print(f"{partitions:>10} {linger:>9} {b:>9.1f} {s:>10.1f} {s / b:>13.1f}", flush=True)


if __name__ == "__main__":
    main()
