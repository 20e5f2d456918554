"""The matcher compiled with mypyc against the same code as plain Python (not a test).

    make install                          # builds the compiled matcher (streams/native.py)
    python bench/bench_native.py [--rounds 3] [--seconds 3] [--sizes 10,10000,100000]

Times ``bench_matcher.py --with-parse`` with the install's compiled build
(``SIGNALBOX_NATIVE=1``) and as plain Python (``SIGNALBOX_NATIVE=0``), in alternation, and
prints the median events/s of each and their ratio. The compiled build is what a worker
uses after ``make install``; the matcher's tests run on both forms (``tests/test_native.py``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

import bench_matcher

ROOT = Path(__file__).resolve().parent.parent


def rates(form: str, sizes: str, seconds: float) -> dict[int, float]:
    """Median events/s per handler count of one ``bench_matcher.py --with-parse`` run."""
    rows, _ = bench_matcher.run(["--with-parse", "--sizes", sizes, "--seconds", str(seconds)],
                                env={"SIGNALBOX_NATIVE": form})
    return {n: row[0] for n, row in rows.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="alternating runs of each")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--sizes", default="10000")
    args = ap.parse_args()
    check = subprocess.run([sys.executable, "-c", "import streams"], env={**os.environ, "SIGNALBOX_NATIVE": "1"},
                           capture_output=True, text=True)
    if check.returncode != 0:
        print("no compiled build of the current sources: `make install` (or `signalbox native build`)\n"
              + check.stderr[-500:], file=sys.stderr)
        return 2
    sizes = [int(s) for s in args.sizes.split(",")]
    compiled: dict[int, list[float]] = {n: [] for n in sizes}
    plain: dict[int, list[float]] = {n: [] for n in sizes}
    for _ in range(args.rounds):
        for n, r in rates("1", args.sizes, args.seconds).items():
            compiled[n].append(r)
        for n, r in rates("0", args.sizes, args.seconds).items():
            plain[n].append(r)
    print(f"bench_matcher.py --with-parse, median of {args.rounds} alternating runs (events/s):")
    for n in sizes:
        c, p = statistics.median(compiled[n]), statistics.median(plain[n])
        print(f"  {n:>7} handlers: compiled {c:>9,.0f}   plain Python {p:>9,.0f}   ratio {c / p:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
