"""The rough edges a new user met in the first hour (issue 11), each against a real broker
and real ``signalbox`` processes."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import WAIT, Stack

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
