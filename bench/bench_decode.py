"""Decoding cost of event record values: the guarded ``jsonvalue.load_event`` against the
plain parse it replaced (``simplejson.loads`` with Decimal numbers, as ``load_object`` was)
and against its own parser without the checks (msgspec's decoder with Decimal numbers), over
typical ~300-byte events (``bench_e2e.event_for``) and wider ones (more brackets than the
depth limit, so the depth scan runs in full). Prints ratios; not a test.

    python bench/bench_decode.py [--events 20000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import simplejson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_e2e import event_for  # noqa: E402

from streams.model import jsonvalue  # noqa: E402


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def plain_load_object(data: bytes | None) -> dict[str, Any]:
    """``load_object`` before the limits (no size, depth, number or surrogate checks)."""
    if data is None:
        raise ValueError("null")
    value = simplejson.loads(data.decode("utf-8"), use_decimal=True, parse_constant=_reject_constant)
    if not isinstance(value, dict):
        raise ValueError("not an object")
    return value


_PARSE_ONLY = msgspec.json.Decoder(float_hook=Decimal)


def parse_only(data: bytes) -> Any:
    """The parser load_event tries first (msgspec, Decimal), none of its checks."""
    return _PARSE_ONLY.decode(data)


def per_event(fns: list[Callable[[bytes], Any]], values: list[bytes], repeat: int) -> list[float]:
    """Seconds per event for each function: the values in chunks of 1000, each chunk timed
    ``repeat`` times per function, interleaved, best time per chunk summed (robust against
    other load on the machine)."""
    chunks = [values[i : i + 1000] for i in range(0, len(values), 1000)]
    totals = [0.0] * len(fns)
    for chunk in chunks:
        best = [float("inf")] * len(fns)
        for _ in range(repeat):
            for k, fn in enumerate(fns):
                start = time.perf_counter()
                for v in chunk:
                    fn(v)
                best[k] = min(best[k], time.perf_counter() - start)
        totals = [t + b for t, b in zip(totals, best, strict=True)]
    return [t / len(values) for t in totals]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    values = [json.dumps(event_for(i, 10_000, time.time())).encode() for i in range(args.events)]
    wide = [json.dumps({"id": f"w{i}", "items": [{"k": j, "v": [j, j + 1]} for j in range(60)]}).encode()
            for i in range(args.events // 10)]
    limits = jsonvalue.Limits()
    rows = [
        ("typical", values, sum(map(len, values)) / len(values)),
        ("wide (>100 brackets)", wide, sum(map(len, wide)) / len(wide)),
    ]
    print(f"{'events':<22}{'n':>6}{'bytes':>6}{'before µs':>10}{'parse-only µs':>14}{'after µs':>9}"
          f"{'after/before':>13}{'after/parse-only':>17}")
    for name, batch, size in rows:
        assert all(plain_load_object(v) == jsonvalue.load_event(v, limits) for v in batch)
        before, bare, after = per_event(
            [plain_load_object, parse_only, lambda v: jsonvalue.load_event(v, limits)], batch, args.repeat
        )
        print(f"{name:<22}{len(batch):>6}{size:>6.0f}{before * 1e6:>10.2f}{bare * 1e6:>14.2f}{after * 1e6:>9.2f}"
              f"{after / before:>13.2f}{after / bare:>17.2f}")


if __name__ == "__main__":
    main()
