"""aws/event-ruler (Java) on bench_matcher's handlers and events, beside our matcher, in one run.

    python bench/bench_eventruler.py [--sizes 10000] [--seconds 3] [--rounds 5]
                                     [--eventruler-src PATH [--eventruler-ref v2.0.1]]

For each size it takes bench_matcher's own handlers (``make_handler``) and events
(``events_for``, same seeds and count), turns each handler into an EventBridge pattern,
and times event-ruler's ``Machine.rulesForJSONEvent(String)`` (JSON parse included) in a
small Java harness (bench/eventruler/Bench.java). Then it runs
``bench/bench_matcher.py --with-parse`` with the same sizes, seconds and event count, and
prints both rates and their ratio. The two run one after the other, not at once.

Conversion: an EventBridge ``pattern`` passes through unchanged; a jsonb ``match``
(containment) becomes equality: each scalar leaf ``v`` becomes ``[v]`` at its path (a number
``n`` becomes ``[{"numeric": ["=", n]}]``, as jsonb compares numbers by value); both are merged
when a handler has both. Shapes with no exact EventBridge form (``exclude``, header filters,
arrays or empty objects in ``match``, keys holding dots, an empty filter) are skipped and
counted. One gap is inherent: on an event holding an array at a leaf's path, ``[v]`` matches
an element while nested jsonb containment does not; bench_matcher's events hold no array at
those paths, and ``--check`` (on by default) compares the per-event match counts with our
own index on the converted handlers, so a wrong conversion shows.

event-ruler is compiled from source with javac (no Maven Central here) against the Jackson
jars in ~/.m2 (the version event-ruler's pom pins, 2.21.0 for 2.0.1) and jsr305; its other
runtime dependency, ch.randelshofer:fastdoubleparser, is taken from ~/.m2 when there, else
a one-class shim calls the copy of FastDoubleParser that jackson-core shades. The classes
are cached in bench/eventruler/build/ (git-ignored); ``--eventruler-src`` (a checkout or a
bare git dir, also from $EVENTRULER_SRC) is needed the first time or to rebuild.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench_matcher import events_for, make_handler
from bench_matcher import run as run_bench_matcher

from streams.matching.index import compile
from streams.model import jsonvalue
from streams.model.handlers import parse_handler

HERE = Path(__file__).resolve().parent
HARNESS_DIR = HERE / "eventruler"
BUILD = HARNESS_DIR / "build"
M2 = Path.home() / ".m2" / "repository"


class Unconvertible(Exception):
    """A handler shape with no exact EventBridge equivalent."""


# -- handler -> EventBridge pattern -------------------------------------------------------


def match_to_pattern(match: dict[str, Any], path: str = "") -> dict[str, Any]:
    """jsonb containment of an object -> EventBridge equality on each scalar leaf."""
    out: dict[str, Any] = {}
    for key, value in match.items():
        where = f"{path}.{key}" if path else key
        if "." in key:
            raise Unconvertible("key with a dot in match (EventBridge flattens paths with dots)")
        if isinstance(value, dict):
            if not value:
                raise Unconvertible("empty object in match ('is an object')")
            out[key] = match_to_pattern(value, where)
        elif isinstance(value, list):
            raise Unconvertible("array in match (array containment)")
        elif value is None or isinstance(value, bool | str):
            out[key] = [value]
        elif isinstance(value, int | float | Decimal):
            # event-ruler compares numbers as doubles and rejects one a double does not hold exactly.
            try:
                held = Decimal(repr(float(value))) == Decimal(value)
            except OverflowError:
                held = False
            if not held:
                raise Unconvertible("number in match that a double cannot hold")
            out[key] = [{"numeric": ["=", value]}]
        else:
            raise Unconvertible(f"{type(value).__name__} in match")
    return out


def merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Both patterns must hold: merge them when no leaf path is in both."""
    out = dict(a)
    for key, value in b.items():
        if key not in out:
            out[key] = value
        elif isinstance(out[key], dict) and isinstance(value, dict):
            out[key] = merge(out[key], value)
        else:
            raise Unconvertible("match and pattern constrain the same path")
    return out


def to_pattern(handler: dict[str, Any]) -> dict[str, Any]:
    """The EventBridge pattern that fires exactly when the handler's event filter holds."""
    trigger = handler.get("event")
    if not isinstance(trigger, dict):
        raise Unconvertible("not an event trigger")
    unknown = set(trigger) - {"match", "pattern"}
    if unknown:
        raise Unconvertible(f"event filter part(s) {sorted(unknown)} (no EventBridge form)")
    match, pattern = trigger.get("match") or {}, trigger.get("pattern")
    if pattern is None and not match:
        raise Unconvertible("empty filter (matches every event)")
    converted = match_to_pattern(match) if match else {}
    return merge(pattern, converted) if pattern is not None else converted


# -- building event-ruler and the harness ---------------------------------------------------


@dataclass
class Source:
    tree: Path  # holds src/main
    version: str
    commit: str


def run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


def pom_version(pom: str) -> str:
    found = re.search(r"<artifactId>event-ruler</artifactId>\s*(?:<[^>]+>[^<]*</[^>]+>\s*)*?<version>([^<]+)", pom)
    return found.group(1) if found else "unknown"


def checkout(src: Path, ref: str, into: Path) -> Source:
    """event-ruler's src/main and pom.xml from a bare git dir (at ref, else HEAD) or a checkout."""
    if (src / "src" / "main").is_dir():
        commit = "unknown"
        if shutil.which("git"):
            got = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], text=True, capture_output=True)
            commit = got.stdout.strip() or commit
        return Source(src, pom_version((src / "pom.xml").read_text()), commit)
    git = ["git", f"--git-dir={src}"]
    got = subprocess.run([*git, "rev-parse", "--verify", f"{ref}^{{commit}}"], text=True, capture_output=True)
    if got.returncode != 0:
        print(f"(ref {ref} not in {src}; using HEAD)")
        ref = "HEAD"
        got = run([*git, "rev-parse", "--verify", "HEAD^{commit}"])
    commit = got.stdout.strip()
    (into / "src" / "main").mkdir(parents=True)
    # Archive the src/main tree only: the repository's test data may be absent from a partial copy.
    with subprocess.Popen([*git, "archive", "--format=tar", f"{commit}:src/main"], stdout=subprocess.PIPE) as tar:
        subprocess.run(["tar", "x", "-C", str(into / "src" / "main")], stdin=tar.stdout, check=True)
    if tar.returncode != 0:
        raise SystemExit(f"git archive of {commit}:src/main failed")
    return Source(into, pom_version(run([*git, "show", f"{commit}:pom.xml"]).stdout), commit)


def find_jar(candidates: list[Path], what: str) -> Path:
    for jar in candidates:
        if jar.is_file():
            return jar
    raise SystemExit(f"{what} not found; looked at: {', '.join(map(str, candidates))}")


def jackson_jars(version: str) -> list[Path]:
    base = M2 / "com" / "fasterxml" / "jackson" / "core"
    minor = ".".join(version.split(".")[:2])
    jars = [base / name / version / f"{name}-{version}.jar" for name in ("jackson-core", "jackson-databind")]
    jars = [find_jar([jar], jar.name) for jar in jars]
    annotations = [base / "jackson-annotations" / v / f"jackson-annotations-{v}.jar" for v in (version, minor)]
    return [*jars, find_jar(annotations, "jackson-annotations")]


def jsr305_jar() -> Path:
    return find_jar([M2 / "com/google/code/findbugs/jsr305/3.0.2/jsr305-3.0.2.jar", Path("/usr/share/java/jsr305.jar")],
                    "jsr305 (apt-get install libjsr305-java)")


SHIM = """package ch.randelshofer.fastdoubleparser;

/** event-ruler's one use of FastDoubleParser, served by the copy jackson-core {jackson} shades ({fdp}). */
public final class JavaBigDecimalParser {{
    private JavaBigDecimalParser() {{}}

    public static java.math.BigDecimal parseBigDecimal(CharSequence str) {{
        return {shaded}.JavaBigDecimalParser.parseBigDecimal(str);
    }}
}}
"""


def fastdoubleparser(jackson_version: str, jackson_core: Path, into: Path) -> tuple[list[Path], list[Path], str]:
    """(jars, extra sources, description) giving ch.randelshofer.fastdoubleparser.JavaBigDecimalParser."""
    jar = M2 / "ch/randelshofer/fastdoubleparser/2.0.1/fastdoubleparser-2.0.1.jar"
    if jar.is_file():
        return [jar], [], f"fastdoubleparser {jar.name}"
    shaded = f"com.fasterxml.jackson.core.internal.shaded.fdp.v{jackson_version.replace('.', '_')}"
    with zipfile.ZipFile(jackson_core) as zf:
        names = set(zf.namelist())
        if shaded.replace(".", "/") + "/JavaBigDecimalParser.class" not in names:
            raise SystemExit(f"no fastdoubleparser jar and no {shaded} in {jackson_core.name}")
        pom = next((n for n in names if n.endswith("jackson-core/pom.xml")), None)
        text = zf.read(pom).decode() if pom else ""
    found = re.search(r"<artifactId>fastdoubleparser</artifactId>\s*<version>([^<]+)", text)
    fdp = f"fastdoubleparser {found.group(1) if found else '?'}"
    source = into / "shim" / "ch" / "randelshofer" / "fastdoubleparser" / "JavaBigDecimalParser.java"
    source.parent.mkdir(parents=True)
    source.write_text(SHIM.format(jackson=jackson_version, fdp=fdp, shaded=shaded))
    return [], [source], f"shim over jackson-core {jackson_version}'s shaded {fdp}"


def javac(classpath: list[Path], sources: list[Path], out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    cmd = ["javac", "-nowarn", "-encoding", "UTF-8", "--release", "8", "-cp", os.pathsep.join(map(str, classpath)),
           "-d", str(out), *map(str, sources)]
    done = subprocess.run(cmd, text=True, capture_output=True)
    if done.returncode != 0:
        raise SystemExit(f"javac failed:\n{done.stderr}")


def prepare(args: argparse.Namespace) -> tuple[list[Path], str]:
    """(runtime classpath, description of what was built), compiling what the cache lacks."""
    stamp_file = BUILD / "stamp.json"
    stamp: dict[str, Any] = json.loads(stamp_file.read_text()) if stamp_file.is_file() else {}
    jars = [*jackson_jars(args.jackson_version), jsr305_jar()]
    src = args.eventruler_src or os.environ.get("EVENTRULER_SRC")
    library = BUILD / "eventruler"
    if src or not (library.is_dir() and stamp.get("jackson") == args.jackson_version):
        if not src:
            raise SystemExit("event-ruler is not built yet: pass --eventruler-src (a checkout or bare git dir "
                             "of github.com/aws/event-ruler) or set EVENTRULER_SRC")
        with tempfile.TemporaryDirectory() as tmp:
            source = checkout(Path(src), args.eventruler_ref, Path(tmp) / "er")
            extra_jars, extra_src, fdp = fastdoubleparser(args.jackson_version, jars[0], Path(tmp))
            java = sorted((source.tree / "src" / "main").rglob("*.java"))
            print(f"compiling event-ruler {source.version} ({source.commit[:12]}, {len(java)} files) ...", flush=True)
            javac([*jars, *extra_jars], [*java, *extra_src], library)
        stamp = {"version": source.version, "commit": source.commit, "jackson": args.jackson_version,
                 "fastdoubleparser": fdp, "extra_jars": list(map(str, extra_jars))}
        stamp_file.write_text(json.dumps(stamp, indent=1))
    classpath = [library, *jars, *map(Path, stamp.get("extra_jars", []))]
    harness_src = HARNESS_DIR / "Bench.java"
    digest = hashlib.sha256(harness_src.read_bytes()).hexdigest()
    harness = BUILD / "harness"
    if stamp.get("harness") != digest or not (harness / "Bench.class").is_file():
        javac(classpath, [harness_src], harness)
        stamp["harness"] = digest
        stamp_file.write_text(json.dumps(stamp, indent=1))
    described = (f"event-ruler {stamp['version']} ({stamp['commit'][:12]}), jackson {stamp['jackson']}, "
                 f"{stamp['fastdoubleparser']}")
    return [harness, *classpath], described


# -- the run ----------------------------------------------------------------------------------


@dataclass
class Result:
    median: float
    best: float
    per_event: float


def eventruler(classpath: list[Path], rules: Path, events: Path, args: argparse.Namespace,
               counts: Path | None) -> Result:
    cmd = ["java", *args.jvm_opt, "-cp", os.pathsep.join(map(str, classpath)), "Bench", str(rules), str(events),
           str(args.seconds), str(args.rounds), str(args.warmup)]
    if counts is not None:
        cmd.append(str(counts))
    done = subprocess.run(cmd, text=True, capture_output=True)
    if done.returncode != 0:
        raise SystemExit(f"Bench failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    fields = dict(kv.split("=", 1) for kv in line.split()[1:])
    return Result(float(fields["median"]), float(fields["best"]), float(fields["matches_per_event"]))


def ours(args: argparse.Namespace) -> tuple[dict[int, Result], str]:
    """bench_matcher.py --with-parse, same sizes, seconds and events: rows by size, and its output."""
    rows, out = run_bench_matcher(["--with-parse", "--sizes", args.sizes, "--seconds", str(args.seconds),
                                   "--events", str(args.events)])
    return {n: Result(*row) for n, row in rows.items()}, out


def check(converted: list[dict[str, Any]], events: list[dict[str, Any]], counts: Path) -> str:
    """Per-event match counts of our index on the converted handlers against event-ruler's."""
    index = compile([parse_handler(h) for h in converted])
    theirs = [int(x) for x in counts.read_text().split()]
    differ = [i for i, e in enumerate(events) if len(index.match(e)) != theirs[i]]
    if not differ:
        return f"same match count on all {len(events)} events"
    i = differ[0]
    return (f"MATCH COUNTS DIFFER on {len(differ)} of {len(events)} events (first: event {i}, ours "
            f"{len(index.match(events[i]))}, event-ruler {theirs[i]}): {jsonvalue.dumps(events[i])}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000", help="handler counts, comma-separated (as bench_matcher)")
    ap.add_argument("--seconds", type=float, default=3.0, help="timed seconds per size, for each engine")
    ap.add_argument("--rounds", type=int, default=5, help="event-ruler: timed rounds the seconds are split into")
    ap.add_argument("--warmup", type=float, default=2.0, help="event-ruler: untimed seconds before the rounds")
    ap.add_argument("--events", type=int, default=5000, help="distinct events per size (as bench_matcher)")
    ap.add_argument("--eventruler-src", help="event-ruler checkout or bare git dir (default $EVENTRULER_SRC); "
                                             "needed to build, rebuilds when given")
    ap.add_argument("--eventruler-ref", default="v2.0.1", help="tag or commit, for a git dir (default v2.0.1)")
    ap.add_argument("--jackson-version", default="2.21.0", help="jars from ~/.m2 (event-ruler 2.0.1 pins 2.21.0)")
    ap.add_argument("--jvm-opt", action="append", default=[], help="extra java option (repeatable)")
    ap.add_argument("--no-check", dest="check", action="store_false",
                    help="skip comparing per-event match counts with our index on the converted handlers")
    ap.add_argument("--no-ours", dest="ours", action="store_false", help="event-ruler only")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")

    classpath, built = prepare(args)
    java = subprocess.run(["java", "-version"], text=True, capture_output=True).stderr.splitlines()
    print(f"{built}; {java[0] if java else 'java ?'}")
    print(f"{args.seconds:g} s per size ({args.rounds} rounds, after {args.warmup:g} s warm-up), "
          f"{args.events} events, rulesForJSONEvent(String) (parse included)")

    results: dict[int, Result] = {}
    with tempfile.TemporaryDirectory(prefix="bench_eventruler.") as tmp:
        for n in sizes:
            rng = random.Random(7)  # as bench_matcher.build
            raw = [make_handler(i, rng) for i in range(n)]
            converted, skipped = [], {}
            rules = Path(tmp) / f"rules-{n}.jsonl"
            with rules.open("w", encoding="utf-8") as out:
                for h in raw:
                    try:
                        pattern = to_pattern(h)
                    except Unconvertible as exc:
                        skipped[str(exc)] = skipped.get(str(exc), 0) + 1
                        continue
                    converted.append(h)
                    out.write(jsonvalue.dumps({"name": h["id"], "pattern": pattern}) + "\n")
            for reason, count in skipped.items():
                print(f"{n} handlers: skipped {count} that event-ruler cannot express exactly: {reason}")
            events = events_for(n, args.events)  # same seeds as bench_matcher
            texts = Path(tmp) / f"events-{n}.jsonl"
            texts.write_text("".join(jsonvalue.dumps(e) + "\n" for e in events), encoding="utf-8")
            counts = Path(tmp) / f"counts-{n}.txt" if args.check else None
            results[n] = eventruler(classpath, rules, texts, args, counts)
            if counts is not None:
                print(f"{n} handlers ({len(converted)} converted): {check(converted, events, counts)}")

    rows: dict[int, Result] = {}
    if args.ours:
        rows, output = ours(args)
        print("bench_matcher.py --with-parse output:")
        print("".join(f"  | {line}\n" for line in output.splitlines()), end="")

    header = ("handlers", "event-ruler/s", "best", "matches/ev", "ours/s", "best", "matches/ev", "ours/er")
    print("{:>9} {:>13} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8}".format(*header))
    for n in sizes:
        er, us = results[n], rows.get(n)
        line = f"{n:>9} {er.median:>13,.0f} {er.best:>10,.0f} {er.per_event:>10.2f}"
        if us is not None:
            line += f" {us.median:>10,.0f} {us.best:>10,.0f} {us.per_event:>10.2f} {us.median / er.median:>8.2f}"
            if abs(us.per_event - er.per_event) > 0.01 * max(us.per_event, er.per_event, 1):
                line += "  <- matches/event differ: conversion suspect"
        print(line)
    if rows:
        print("ours/er: ratio of the medians; ours = bench_matcher.py --with-parse, run after event-ruler")
    return 0


if __name__ == "__main__":
    sys.exit(main())
