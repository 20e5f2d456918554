"""`signalbox dev`, the README's first command, as a user runs it: output, then Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
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
    # every trigger kind of the README fires at least once
    kinds = [carried,
             re.compile(r"COMMAND job=record-event handler=eventbridge-hot-sensor .*params=\{\"celsius\":31\.5\}"),
             re.compile(r'COMMAND job=record-event handler=trusted-patient-import .*params=\{"patient":"P-1"\}'),
             re.compile(r"COMMAND job=record-event handler=migration-reported .*trigger=event:"),
             re.compile(r"COMMAND job=report handler=heartbeat-report .*trigger=manual:"),
             re.compile(r"COMMAND job=report handler=heartbeat-report .*trigger=cron:"),
             re.compile(r"COMMAND job=notify-archivist handler=after-migration .*trigger=after:"),
             re.compile(r"COMMAND job=alert handler=import-failed .*trigger=after:"),
             re.compile(r"COMMAND job=run-task handler=aviso-mars-step0 "),
             # the dev listener's delivery, as dev's own receiver got it, signed with the dev secret
             re.compile(r"WEBHOOK received POST /migrations webhook-id=[0-9a-f-]{36} type=run\.finished "
                        r"signature=verified$"),
             # the dev e-mail notification, as dev's own SMTP sink got it
             re.compile(r"MAIL    received to=ops@archive\.example subject='Import failed: always-fails "
                        r"\(broken-import\)' text='Run [0-9a-f-]{36} of always-fails failed"),
             re.compile(r"RESULT  job=webhook\.dev-migration-listener .*status=succeeded .*"
                        r"delivery=webhook:127\.0\.0\.1 status=200 "),
             re.compile(r"RESULT  job=email\.dev-import-failed-mail .*status=succeeded .*"
                        r"delivery=email:127\.0\.0\.1 status=250 ")]
    try:
        while time.monotonic() < deadline and not all(any(k.search(line) for line in lines) for k in kinds):
            line = proc.stdout.readline()
            if line:
                lines.append(line.rstrip())
            else:
                assert proc.poll() is None, "\n".join(lines)
                time.sleep(0.05)
        # the gateway dev started answers, without a token, from the same topics
        url = next(m.group(1) for line in lines if (m := re.search(r"gateway on (http://127\.0\.0\.1:\d+)", line)))
        gateway_runs = _gateway_runs(url, "migrate-pid")
        # and says where the worker's and the gateway's metrics are; both answer
        printed = next(m for line in lines if (m := re.search(r"metrics \(Prometheus\): worker (\S+), gateway (\S+)",
                                                               line)))
        metrics = {where: httpx.get(address, timeout=10) for where, address in zip(("worker", "gateway"),
                                                                                   printed.groups(), strict=True)}
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    output = "\n".join(lines) + "\n" + rest
    assert gateway_runs and {r["job"] for r in gateway_runs} == {"migrate-pid"}, gateway_runs
    assert all(r.status_code == 200 for r in metrics.values()), metrics
    assert 'signalbox_runs_total{job="migrate-pid",status="succeeded"}' in metrics["worker"].text
    assert "signalbox_gateway_requests_total" in metrics["gateway"].text
    missing = [k.pattern for k in kinds if not any(k.search(line) for line in lines)]
    assert not missing, (missing, output)
    # the creator constraint and emitted_by: P-2 had no header, evt-10 was sent, not emitted
    assert '"patient":"P-2"' not in output and "forged" not in output
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
    # the once-listener fires on the first aviso event, every run (the samples share one key)
    assert re.search(r'COMMAND job=run-task handler=aviso-mars-step0 .*params=\{"date":"20261122"\}', output), output
    assert '"date":"20261123"' not in output
    assert proc.returncode == 0 and output.rstrip().endswith("stopped"), output
    assert not (tmp_path / ".signalbox" / "dev" / "worker.log").read_text().count("Traceback")
    # every delivery the receiver got was signed with the dev secret, which nobody printed
    assert "NOT VERIFIED" not in output
    assert "whsec_" not in output and "whsec_" not in (tmp_path / ".signalbox" / "dev" / "worker.log").read_text()
    assert not (tmp_path / ".signalbox" / "dev" / "gateway.log").read_text().count("Traceback")


def _gateway_runs(url: str, job: str, timeout: float = 30) -> list[dict]:
    import httpx

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        r = httpx.get(f"{url}/runs", params={"job": job, "status": "succeeded"}, timeout=5)
        assert r.status_code == 200, r.text
        if r.json()["runs"]:
            return list(r.json()["runs"])
        time.sleep(0.3)
    return []


def _start_dev(tmp_path: Path) -> tuple[subprocess.Popen[str], int, int, int]:
    """`signalbox dev` up to "watching": the process, the worker's and the broker's pids, the broker's port."""
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
    text = "\n".join(lines)
    worker = re.search(r"worker started \(pid (\d+)\)", text)
    broker = re.search(r"embedded broker \(tansu, pid (\d+)\) on 127\.0\.0\.1:(\d+)", text)
    assert worker and broker, text
    return proc, int(worker.group(1)), int(broker.group(1)), int(broker.group(2))


def _assert_all_gone(worker_pid: int, broker_pid: int, port: int) -> None:
    deadline = time.monotonic() + 30
    for pid in (worker_pid, broker_pid):
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            assert time.monotonic() < deadline, f"pid {pid} still alive"
            time.sleep(0.1)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_dev_stopped_with_sigterm_or_sighup_takes_its_worker_and_broker_with_it(tmp_path: Path, sig: int):
    """A service manager or `timeout` stops with SIGTERM, a closed terminal with SIGHUP: nothing may
    outlive `signalbox dev`."""
    proc, worker_pid, broker_pid, port = _start_dev(tmp_path)
    proc.send_signal(sig)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and rest.rstrip().endswith("stopped"), rest
    _assert_all_gone(worker_pid, broker_pid, port)


def test_dev_whose_reader_has_gone_stops_everything(tmp_path: Path):
    """`make dev | tee log`, and tee dies first: dev notices its closed stdout and stops."""
    proc, worker_pid, broker_pid, port = _start_dev(tmp_path)
    assert proc.stdout is not None
    proc.stdout.close()
    assert proc.wait(60) == 0
    _assert_all_gone(worker_pid, broker_pid, port)


@pytest.mark.parametrize("child", ["worker", "broker"])
def test_dev_stops_the_rest_when_a_child_dies(tmp_path: Path, child: str):
    proc, worker_pid, broker_pid, port = _start_dev(tmp_path)
    os.kill(worker_pid if child == "worker" else broker_pid, signal.SIGKILL)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, rest
    assert f"the {child} exited with -9; see .signalbox/dev/" in rest and rest.rstrip().endswith("stopped"), rest
    _assert_all_gone(worker_pid, broker_pid, port)
