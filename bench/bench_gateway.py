"""Gateway ingest benchmark on the embedded broker (not a test). One command:

    python bench/bench_gateway.py [--events 20000] [--batch 100] [--clients 8] [--singles 2000]

Prints, from one run on one broker, with the same ~300-byte events:
1. baseline: `signalbox send --file` (one process, confluent-kafka, batching producer):
   events/s from start to exit;
2. the gateway, batches: ``--clients`` concurrent HTTP clients POST ``--batch`` events per
   request (JWT checked, every event validated, 202 after acks=all): events/s and the
   request latency p50/p99, and the ratio to (1);
3. the gateway, one event per request: requests/s and p50/p99.
Every count is checked from outside: a plain consumer counts the events on the topic.
Every loop is bounded in count and time; everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import jwt
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from streams.contracts import topics as topics_mod  # noqa: E402
from streams.kafka.broker import EmbeddedBroker  # noqa: E402

DEADLINE_S = 300
SECRET = "bench-" + uuid.uuid4().hex


def event(i: int, tag: str) -> dict:
    return {"id": f"{tag}-{i}", "type": f"t{i % 100}", "source": "orders",
            "detail": {"region": f"r{i % 7}", "zone": "eu-central-1", "tags": ["a", "b", "c"]},
            "order": {"id": i, "total": 129.95, "currency": "CHF", "lines": 3},
            "customer": {"id": f"c{i % 1000}", "tier": "gold"}, "test": False, "pad": "x" * 60}


def count_on_topic(bootstrap: str, topic: str, prefix: str, expected: int) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"count-{uuid.uuid4()}", "enable.auto.commit": False,
                  "fetch.wait.max.ms": 10})
    meta = c.list_topics(topic, timeout=10).topics[topic]
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
    seen: set[str] = set()
    end = time.monotonic() + 60
    marker = f"{prefix}-".encode()
    while len(seen) < expected and time.monotonic() < end:
        for msg in c.consume(1000, 0.5):
            if not msg.error() and marker in msg.value():
                event_id = json.loads(msg.value()).get("id", "")
                if event_id.startswith(f"{prefix}-"):
                    seen.add(event_id)
    c.close()
    return len(seen)


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) >= 2 else values[0]


async def post_all(url: str, bodies: list[list[dict] | dict], clients: int, token: str) -> tuple[float, list[float]]:
    queue: asyncio.Queue[list[dict] | dict] = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)
    latencies: list[float] = []
    headers = {"Authorization": f"Bearer {token}"}

    async def one_client() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60, headers=headers) as c:
            while not queue.empty():
                body = queue.get_nowait()
                t0 = time.perf_counter()
                r = await c.post("/events", json=body)
                latencies.append((time.perf_counter() - t0) * 1000)
                if r.status_code != 202:
                    raise RuntimeError(f"{r.status_code} {r.text[:200]}")

    start = time.perf_counter()
    async with asyncio.timeout(DEADLINE_S):
        await asyncio.gather(*(one_client() for _ in range(clients)))
    return time.perf_counter() - start, latencies


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--singles", type=int, default=2000)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    with EmbeddedBroker(work / "tansu.log") as broker:
        bs = broker.bootstrap_servers
        topics = topics_mod.Topics.load(ROOT / "topics.yaml", "bench.")
        topics_mod.create(AdminClient({"bootstrap.servers": bs}), topics)
        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bs, "SIGNALBOX_BROKER_KIND": "tansu",
               "SIGNALBOX_TOPIC_PREFIX": "bench.", "PYTHONPATH": str(ROOT)}

        # 1. baseline: signalbox send --file
        tag = f"send{uuid.uuid4().hex[:6]}"
        path = work / "events.jsonl"
        path.write_text("".join(json.dumps(event(i, tag)) + "\n" for i in range(args.events)))
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "streams", "send", "--file", str(path)], env=env, check=True,
                       stdout=subprocess.DEVNULL, timeout=DEADLINE_S)
        send_s = time.perf_counter() - t0
        n = count_on_topic(bs, topics.events, tag, args.events)
        send_rate = args.events / send_s
        print(f"1. signalbox send --file:        {send_rate:>9,.0f} events/s  ({n} of {args.events} on the topic)")

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        gw_env = {**env, "SIGNALBOX_GATEWAY_JWT_SECRET": SECRET, "SIGNALBOX_GATEWAY_PORT": str(port),
                  "SIGNALBOX_GATEWAY_DB_PATH": str(work / "gw.sqlite"), "SIGNALBOX_GATEWAY_MAX_BATCH_EVENTS": "1000"}
        gateway = subprocess.Popen([sys.executable, "-m", "streams", "gateway"], env=gw_env, cwd=work,
                                   stdout=open(work / "gateway.log", "wb"), stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            end = time.monotonic() + 60
            while time.monotonic() < end:
                try:
                    if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            token = jwt.encode({"sub": "bench", "scope": "events:write", "exp": int(time.time()) + 3600}, SECRET,
                               algorithm="HS256")
            # 2. batches
            tag = f"gwb{uuid.uuid4().hex[:6]}"
            evs = [event(i, tag) for i in range(args.events)]
            bodies: list[list[dict] | dict] = [evs[i:i + args.batch] for i in range(0, len(evs), args.batch)]
            seconds, lat = asyncio.run(post_all(url, bodies, args.clients, token))
            n = count_on_topic(bs, topics.events, tag, args.events)
            rate = args.events / seconds
            print(f"2. gateway, {args.batch}/request, {args.clients} clients: {rate:>9,.0f} events/s  "
                  f"({rate / send_rate:.2f}x send; request p50 {pct(lat, 50):.1f} ms, p99 {pct(lat, 99):.1f} ms; "
                  f"{n} of {args.events} on the topic)")
            # 3. one event per request
            tag = f"gws{uuid.uuid4().hex[:6]}"
            singles: list[list[dict] | dict] = [event(i, tag) for i in range(args.singles)]
            seconds, lat = asyncio.run(post_all(url, singles, args.clients, token))
            n = count_on_topic(bs, topics.events, tag, args.singles)
            rate = args.singles / seconds
            print(f"3. gateway, 1/request, {args.clients} clients:   {rate:>9,.0f} events/s  "
                  f"({rate / send_rate:.2f}x send; request p50 {pct(lat, 50):.1f} ms, p99 {pct(lat, 99):.1f} ms; "
                  f"{n} of {args.singles} on the topic)")
        finally:
            gateway.terminate()
            gateway.wait(20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
