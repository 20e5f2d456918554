"""The rough edges a new user met in the first hour (issue 11), each against a real broker
and real ``signalbox`` processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import ROOT, WAIT, Stack

pytestmark = pytest.mark.broker

SIGNALBOX = Path(sys.executable).parent / "signalbox"  # the console script, as a user runs it


def _wait_for_text(log: Path, process: subprocess.Popen[bytes], text: str, timeout: float = WAIT) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        content = log.read_text(errors="replace") if log.exists() else ""
        if text in content:
            return content
        if process.poll() is not None:
            raise AssertionError(f"exited {process.returncode} before logging {text!r}:\n{content[-3000:]}")
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not logged after {timeout}s:\n{log.read_text(errors='replace')[-3000:]}")


def test_worker_imports_jobs_from_the_current_directory_and_from_a_file(stack: Stack, tmp_path: Path):
    project = tmp_path / "project"
    (project / "jobs").mkdir(parents=True)
    (project / "myjobs.py").write_text(
        "from streams.jobs import Run, job\n\n@job('from-cwd')\ndef f(run: Run) -> dict:\n    return {}\n")
    (project / "jobs" / "filejobs.py").write_text(
        "from streams.jobs import Run, job\n\n@job('from-file')\ndef g(run: Run) -> dict:\n    return {}\n")
    env = {k: v for k, v in stack.env.items() if k != "PYTHONPATH"}  # the worker finds myjobs.py by itself
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [str(SIGNALBOX), "worker", "--jobs", "myjobs", "--jobs", "./jobs/filejobs.py",
             "--datadir", str(tmp_path / "data")],
            env=env, cwd=project, stdout=out, stderr=subprocess.STDOUT)
    try:
        content = _wait_for_text(log, worker, "jobs registered:")
        registered = content.split("jobs registered:", 1)[1].splitlines()[0]
        assert "from-cwd" in registered and "from-file" in registered, registered
    finally:
        worker.terminate()
        worker.wait(30)

    missing = subprocess.run([str(SIGNALBOX), "worker", "--jobs", "./jobs/nope.py", "--datadir", str(tmp_path / "d2")],
                             env=env, cwd=project, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "nope.py" in missing.stderr, missing.stderr


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _not_kafka() -> Iterator[str]:
    """A loopback port that accepts connections and closes them without a word."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        server.close()


def _cli(*args: str, timeout: float = 60) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "SIGNALBOX_"))}
    env["PYTHONPATH"] = str(ROOT)
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "streams", *args], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=timeout)
    return out, time.monotonic() - start


@pytest.mark.parametrize("command", [["send", '{"a": 1}'], ["handlers", "list"], ["tail"], ["topics", "check"],
                                     ["state", "j"], ["run", "h"]])
def test_a_closed_port_fails_fast_with_one_line(command: list[str]):
    address = f"127.0.0.1:{_closed_port()}"
    out, took = _cli(*command, "--bootstrap-servers", address)
    assert out.returncode == 1, out
    assert took < 10, took
    assert out.stderr.splitlines() == [f"signalbox: cannot reach Kafka at {address}: connection refused"], out.stderr
    assert out.stdout == ""


def test_an_unresolvable_name_fails_fast_with_one_line():
    out, took = _cli("send", '{"a": 1}', "--bootstrap-servers", "nonexistent.invalid:9092")
    assert out.returncode == 1 and took < 10, (out, took)
    [line] = out.stderr.splitlines()
    assert line.startswith("signalbox: cannot reach Kafka at nonexistent.invalid:9092: unresolvable"), line


def test_a_port_that_does_not_speak_kafka_times_out_and_verbose_shows_librdkafka():
    with _not_kafka() as address:
        out, took = _cli("handlers", "list", "--bootstrap-servers", address)
        assert out.returncode == 1 and took < 15, (out, took)
        assert out.stderr.splitlines() == [
            f"signalbox: cannot reach Kafka at {address}: timeout (no Kafka answer within 5s)"], out.stderr
        verbose, _ = _cli("handlers", "list", "-v", "--bootstrap-servers", address)
    assert verbose.returncode == 1
    assert "rdkafka" in verbose.stderr and len(verbose.stderr.splitlines()) > 1, verbose.stderr
