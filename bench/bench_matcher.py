"""Benchmark part 1: the matcher alone (no broker; no JSON parsing in the timed loop unless --with-parse).

    python bench/bench_matcher.py [--seconds 3] [--sizes 10,1000,10000,100000] [--profile] [--with-parse]

For each handler count it builds an index of a realistic mix of handlers and times
``index.match(event)`` over events of about 300 bytes that each hit about one handler.
It prints events/s per size and the ratio of the 10,000-handler rate to the 10-handler
rate. ``--with-parse`` times raw event bytes parsed as the worker parses them
(``jsonvalue.load_event_text``) and then matched, and the parse alone: the figure to set
beside event-ruler's and quamina's, whose rates include their JSON parsing.
``--profile`` runs pyinstrument (``pip install pyinstrument``) on the 10,000-handler
loop and prints its top lines.

The mix (per handler, seeded): jsonb ``match`` equality on 1-3 fields (30%), EventBridge
patterns with equality on 1-3 fields (25%), a prefix (15%), a numeric range (10%),
``anything-but`` (10%), ``exists`` (10%); most put their selective value on a nested path.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streams.matching.index import Index, compile
from streams.model import jsonvalue
from streams.model.handlers import parse_handler

SOURCES = ["shop.orders", "shop.payments", "shop.shipping", "crm.customers", "ops.alerts"]
STATUSES = ["placed", "paid", "shipped", "delivered", "cancelled", "refunded"]
REGIONS = ["eu-west-1", "eu-central-1", "us-east-1", "us-west-2", "ap-south-1"]
TIERS = ["bronze", "silver", "gold", "platinum"]


def customer(i: int) -> str:
    return f"c-{i:07d}"


def order_id(i: int) -> str:
    return f"o-{i:07d}-{(i * 7919) % 100000:05d}"


# Handler kinds in proportion (out of 20), spread so that any 10 consecutive handlers
# hold the same mix as 100,000 of them.
KINDS = [0.0, 0.3, 0.55, 0.1, 0.7, 0.35, 0.8, 0.15, 0.9, 0.6, 0.05, 0.4, 0.25, 0.75, 0.2, 0.45, 0.85, 0.5, 0.95, 0.65]


def make_handler(i: int, rng: random.Random) -> dict[str, Any]:
    """Handler i targets customer i (or order i): events for that key hit it."""
    kind = KINDS[i % len(KINDS)]
    cid, source = customer(i), SOURCES[i % len(SOURCES)]
    extra_fields = i % 3
    if kind < 0.30:
        match: dict[str, Any] = {"detail": {"customer": {"id": cid}}}
        if extra_fields >= 1:
            match["source"] = source
        if extra_fields >= 2:
            match["detail"]["customer"]["tier"] = TIERS[i % len(TIERS)]
        event: dict[str, Any] = {"match": match}
    elif kind < 0.55:
        pattern: dict[str, Any] = {"detail": {"customer": {"id": [cid]}}}
        if extra_fields >= 1:
            pattern["source"] = [source, SOURCES[(i + 1) % len(SOURCES)]]
        if extra_fields >= 2:
            pattern["detail"]["customer"]["region"] = [REGIONS[i % len(REGIONS)]]
        event = {"pattern": pattern}
    elif kind < 0.70:
        event = {"pattern": {"detail": {"order": {"id": [{"prefix": order_id(i)[:9]}]}}, "source": [source]}}
    elif kind < 0.80:
        low = (i % 50) * 10
        event = {
            "pattern": {
                "detail": {"customer": {"id": [cid]}, "order": {"total": [{"numeric": [">=", low, "<", low + 400]}]}}
            }
        }
    elif kind < 0.90:
        event = {"pattern": {"detail": {"customer": {"id": [cid]}, "status": [{"anything-but": ["cancelled"]}]}}}
    else:
        event = {
            "pattern": {
                "detail": {"customer": {"id": [cid]}, "coupon": [{"exists": False}], "status": [{"exists": True}]}
            }
        }
    return {"id": f"h-{i}", "job": f"job-{i % 97}", "event": event, "params": {"order": "detail.order.id"}}


def make_event(i: int, rng: random.Random) -> dict[str, Any]:
    """An event for customer i / order i, about 300 bytes."""
    doc = {
        "id": f"ev-{rng.randrange(10**12):012d}",
        "source": SOURCES[i % len(SOURCES)],
        "detail-type": "OrderEvent",
        "time": "2026-11-22T18:00:00Z",
        "detail": {
            "customer": {"id": customer(i), "tier": TIERS[i % len(TIERS)], "region": REGIONS[i % len(REGIONS)]},
            "order": {"id": order_id(i), "total": float(f"{(i % 50) * 10 + rng.random() * 300:.2f}"), "items": 3},
            "status": STATUSES[rng.randrange(len(STATUSES) - 1)],
            "tags": ["web", "promo"],
        },
    }
    # Read it back the way the engine does: exact numbers.
    return jsonvalue.loads(jsonvalue.dumps(doc))


def build(n: int, seed: int = 7) -> tuple[Index, float, list[dict[str, Any]]]:
    rng = random.Random(seed)
    raw = [make_handler(i, rng) for i in range(n)]
    started = time.perf_counter()
    handlers = [parse_handler(h) for h in raw]
    index = compile(handlers)
    return index, time.perf_counter() - started, raw


def events_for(n: int, count: int, seed: int = 11) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [make_event(rng.randrange(n), rng) for _ in range(count)]


def rounds(index: Index, events: list[dict[str, Any]]) -> float:
    """events/s of one pass over the events."""
    started = time.perf_counter()
    for e in events:
        index.match(e)
    return len(events) / (time.perf_counter() - started)


def rate(index: Index, events: list[dict[str, Any]], seconds: float) -> tuple[float, float, float]:
    """(median events/s, best events/s, mean matches per event) over timed passes."""
    matched = sum(len(index.match(e)) for e in events)  # also warms up
    rates = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(rates) < 3:
        rates.append(rounds(index, events))
    return statistics.median(rates), max(rates), matched / len(events)


def paired(a: tuple[Index, list[dict[str, Any]]], b: tuple[Index, list[dict[str, Any]]], seconds: float) -> float:
    """Median over alternating passes of rate(b) / rate(a): both see the same machine load."""
    ratios = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(ratios) < 3:
        ratios.append(rounds(*b) / rounds(*a))
    return statistics.median(ratios)


# one printed row: handlers, build s, median events/s, best, matches/event, candidates/event
ROW = re.compile(r"^\s*(\d+)\s+([\d.]+)\s+([\d,]+)\s+([\d,]+)\s+([\d.]+)\s+([\d.]+)\s*$")


def run(options: list[str], env: dict[str, str] | None = None) -> tuple[dict[int, tuple[float, float, float]], str]:
    """This benchmark in a fresh interpreter (bench_native.py, bench_eventruler.py): its rows
    by handler count, (median events/s, best events/s, matches per event), and its output."""
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), *options], text=True, capture_output=True,
                          env={**os.environ, **(env or {})}, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"bench_matcher failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    rows = {}
    for line in done.stdout.splitlines():
        m = ROW.match(line)
        if m:
            rows[int(m[1])] = (float(m[3].replace(",", "")), float(m[4].replace(",", "")), float(m[5]))
    return rows, done.stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="timed seconds per size")
    ap.add_argument("--sizes", default="10,1000,10000,100000")
    ap.add_argument("--events", type=int, default=5000, help="distinct events per size")
    ap.add_argument("--profile", action="store_true", help="pyinstrument the 10,000-handler loop")
    ap.add_argument("--with-parse", action="store_true",
                    help="time the raw event bytes parsed as the worker parses them (jsonvalue.load_event_text, "
                         "limits on), then matched; also prints the parse alone")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    sample = jsonvalue.dumps(make_event(1, random.Random(1)))
    from streams import native

    print(f"matcher: {' '.join(native.status())}")
    print(f"python {sys.version.split()[0]}; event size {len(sample.encode())} bytes; {args.seconds:g} s per size")
    header = ("handlers", "build s", "events/s", "best", "matches/event", "candidates/event")
    print("{:>9} {:>8} {:>10} {:>10} {:>14} {:>17}".format(*header))
    rates: dict[int, float] = {}
    small: tuple[Index, list[dict[str, Any]]] | None = None
    ratio: float | None = None
    profiled: tuple[Index, list[dict[str, Any]]] | None = None
    if args.with_parse:
        raw = [jsonvalue.dumps(e).encode() for e in events_for(10, args.events)]
        parse_only = rate(ParseOnly(), raw, args.seconds)[0]  # type: ignore[arg-type]
        print(f"parse alone (jsonvalue.load_event_text): {parse_only:,.0f} events/s")
    for n in sizes:
        index, build_s, _ = build(n)
        events = events_for(n, args.events)
        candidates = sum(len(index.candidates(e)) for e in events[:1000]) / min(len(events), 1000)
        if args.with_parse:  # raw bytes in, as the match step gets them
            index, events = WithParse(index), [jsonvalue.dumps(e).encode() for e in events]  # type: ignore[assignment]
        median, best, per_event = rate(index, events, args.seconds)
        rates[n] = median
        print(f"{n:>9} {build_s:>8.2f} {median:>10,.0f} {best:>10,.0f} {per_event:>14.2f} {candidates:>17.2f}")
        if n == 10:
            small = (index, events)
        if n == 10000:
            if small is not None:
                ratio = paired(small, (index, events), args.seconds)
            if args.profile:
                profiled = (index, events)
    if 10 in rates and 10000 in rates:
        print(f"ratio 10,000 / 10 handlers: {rates[10000] / rates[10]:.2f} (medians above)", end="")
        print(f", {ratio:.2f} (alternating passes)" if ratio is not None else "")
    if profiled is not None:
        profile(*profiled)
    return 0


class WithParse:
    """``index.match`` on raw bytes: parsed first, as the worker's match step does."""

    def __init__(self, index: Index) -> None:
        self.index = index

    def match(self, raw: bytes) -> list[Any]:
        doc, _ = jsonvalue.load_event_text(raw)
        return self.index.match(doc)


class ParseOnly:
    def match(self, raw: bytes) -> list[Any]:
        jsonvalue.load_event_text(raw)
        return []


def profile(index: Index, events: list[dict[str, Any]]) -> None:
    try:
        from pyinstrument import Profiler
    except ImportError:
        print("(pyinstrument not installed; pip install pyinstrument)")
        return
    profiler = Profiler(interval=0.0005)
    profiler.start()
    for _ in range(5):
        for e in events:
            index.match(e)
    profiler.stop()
    print(profiler.output_text(unicode=False, color=False, show_all=False))


if __name__ == "__main__":
    sys.exit(main())
