"""`signalbox dev`, the README's first command, as a user runs it: output, then Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.broker


def test_dev_shows_commands_and_results_then_stops_cleanly(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "SIGNALBOX_"))}
    # Ctrl-C is SIGINT; a runner that starts us in the background may have set it to be
    # ignored, which a child inherits: give `signalbox dev` the default action back.
    proc = subprocess.Popen([sys.executable, "-m", "streams", "dev"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.default_int_handler))
    lines: list[str] = []
    deadline = time.monotonic() + 120
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    carried = re.compile(r"COMMAND job=migrate-pid .*trigger=event:id:wave2-.* state=[1-9]\d*B")
    try:
        while time.monotonic() < deadline and not any(carried.search(line) for line in lines):
            line = proc.stdout.readline()
            if line:
                lines.append(line.rstrip())
            else:
                assert proc.poll() is None, "\n".join(lines)
                time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    output = "\n".join(lines) + "\n" + rest
    assert any(carried.search(line) for line in lines), output
    # a second shell learns where the broker is from the first lines, ready to paste
    export = next(line for line in lines[:5] if line.startswith("export "))
    assert re.fullmatch(r"export KAFKA_BOOTSTRAP_SERVERS=127\.0\.0\.1:\d+ SIGNALBOX_BROKER_KIND=tansu", export), export
    # the feeder use case: the PID reaches the migration job as its parameter
    pid_command = r'COMMAND job=migrate-pid handler=feeder-migrate-pid .*params=\{"sip":"CH-002003-9:1553"\}'
    assert re.search(pid_command, output)
    assert re.search(r"RESULT  job=migrate-pid .*status=succeeded duration=\d+ms state=\d+B", output)
    # the OpenFn filter: v7 registered, v8 and the excluded one not
    assert '"name":"Jack Wilshere"' in output
    assert "Larry Bird" not in output and "john doe" not in output
    assert "status=failed" in output and "DEAD " in output
    assert proc.returncode == 0 and output.rstrip().endswith("stopped"), output
    assert not (tmp_path / ".signalbox" / "dev" / "worker.log").read_text().count("Traceback")


def test_dev_stopped_with_sigterm_takes_its_worker_and_broker_with_it(tmp_path):
    """A service manager or `timeout` stops with SIGTERM: nothing may outlive `signalbox dev`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "SIGNALBOX_"))}
    proc = subprocess.Popen([sys.executable, "-m", "streams", "dev"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any("watching job commands" in line for line in lines):
        line = proc.stdout.readline()
        assert line or proc.poll() is None, "\n".join(lines)
        lines.append(line.rstrip())
    worker_pid = int(re.search(r"worker started \(pid (\d+)\)", "\n".join(lines)).group(1))
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and rest.rstrip().endswith("stopped"), rest
    with pytest.raises(ProcessLookupError):
        os.kill(worker_pid, 0)
