"""The matcher compiled with mypyc against the same code as plain Python (not a test; it
changes nothing in the checkout).

    pip install -c constraints.txt mypy      # mypyc comes with it; needs a C compiler
    python bench/bench_native.py [--rounds 3] [--seconds 3] [--sizes 10000]

It copies ``streams/`` and the matcher's tests into a temporary directory, compiles the
matcher's modules there with mypyc (unchanged source), runs the matcher's tests against the
compiled modules (event-ruler's vectors, the jsonb and index tables), then times
``bench_matcher.py --with-parse`` on the copy and on this checkout in alternation, and
prints the median events/s of each and their ratio. Measured before choosing a compiled
core for issue #12's target 4.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMPILED = ["streams/matching/index.py", "streams/matching/match.py", "streams/filters/eventbridge.py",
            "streams/filters/jsonb.py"]
TESTS = ["tests/test_eventbridge.py", "tests/test_index.py", "tests/test_jsonb.py"]


def rates(root: Path, sizes: str, seconds: float) -> dict[int, float]:
    """Median events/s per handler count of one ``bench_matcher.py --with-parse`` run on ``root``."""
    # bench_matcher.py puts its own checkout first on sys.path: run the copy's own
    out = subprocess.run([sys.executable, str(root / "bench" / "bench_matcher.py"), "--with-parse", "--sizes", sizes,
                          "--seconds", str(seconds)], cwd=root, env={"PYTHONPATH": str(root), "PATH": ""},
                         capture_output=True, text=True, timeout=600, check=True).stdout
    found = {}
    for line in out.splitlines():
        m = re.match(r"\s*(\d+)\s+[\d.]+\s+([\d,]+)\s", line)
        if m:
            found[int(m.group(1))] = float(m.group(2).replace(",", ""))
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="alternating runs of each")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--sizes", default="10000")
    args = ap.parse_args()
    mypyc = shutil.which("mypyc", path=str(Path(sys.executable).parent))
    if mypyc is None:
        print("mypyc not found: pip install -c constraints.txt mypy", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="signalbox-native-") as tmp:
        work = Path(tmp)
        shutil.copytree(ROOT / "streams", work / "streams", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(ROOT / "tests", work / "tests", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(ROOT / "bench", work / "bench", ignore=shutil.ignore_patterns("__pycache__"))
        # no pyproject.toml in the build directory: mypyc's setuptools build would read it
        build = subprocess.run([mypyc, "--ignore-missing-imports", *COMPILED], cwd=work, capture_output=True,
                               text=True, timeout=900)
        if build.returncode != 0:
            print(build.stdout[-3000:], build.stderr[-3000:], sep="\n", file=sys.stderr)
            return 1
        built = sorted(p.name for p in work.glob("streams/**/*.so"))
        print(f"compiled with mypyc: {', '.join(built)}")
        tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS], cwd=work,
                               env={"PYTHONPATH": str(work), "PATH": ""}, capture_output=True, text=True,
                               timeout=900)
        print(f"the matcher's tests on the compiled modules: {tests.stdout.strip().splitlines()[-1]}")
        if tests.returncode != 0:
            print(tests.stdout[-5000:], file=sys.stderr)
            return 1
        sizes = [int(s) for s in args.sizes.split(",")]
        compiled: dict[int, list[float]] = {n: [] for n in sizes}
        plain: dict[int, list[float]] = {n: [] for n in sizes}
        for _ in range(args.rounds):
            for n, r in rates(work, args.sizes, args.seconds).items():
                compiled[n].append(r)
            for n, r in rates(ROOT, args.sizes, args.seconds).items():
                plain[n].append(r)
        print(f"bench_matcher.py --with-parse, median of {args.rounds} alternating runs (events/s):")
        for n in sizes:
            c, p = statistics.median(compiled[n]), statistics.median(plain[n])
            print(f"  {n:>7} handlers: compiled {c:>9,.0f}   plain Python {p:>9,.0f}   ratio {c / p:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
