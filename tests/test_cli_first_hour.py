"""The rough edges a new user met in the first hour (issue 11), each against a real broker
and real ``signalbox`` processes."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from streams.contracts import avro
from streams.contracts import topics as topics_mod
from tests.conftest import ROOT, WAIT, BrokerInfo, Stack, unique

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
    # topics check says first what it connects with (secrets masked); nothing else is printed
    shown = f"connection:\n  bootstrap.servers = {address}\n  security.protocol = PLAINTEXT\n"
    assert out.stdout == (shown if command == ["topics", "check"] else "")


@pytest.mark.parametrize("where", ["before", "after"])
def test_kafka_options_before_or_after_the_action_both_count(where: str):
    address = f"127.0.0.1:{_closed_port()}"
    for command in (["topics", "check"], ["handlers", "list"]):
        option = ["--bootstrap-servers", address]
        args = [command[0], *option, command[1]] if where == "before" else [*command, *option]
        out, _ = _cli(*args)
        assert out.returncode == 1 and f"at {address}: connection refused" in out.stderr, (args, out.stderr)


def test_bad_input_is_reported_before_an_unreachable_broker():
    out, _ = _cli("send", "[1, 2]", "--bootstrap-servers", f"127.0.0.1:{_closed_port()}")
    assert out.returncode == 2 and "not an object" in out.stderr, out


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


def _records_for(stack: Stack, topic: str, key: str, seconds: float = 2.0) -> list[bytes | None]:
    reader = stack.reader(topic)
    try:
        return [m.value() for m in reader.poll_for(seconds) if m.key() == key.encode()]
    finally:
        reader.close()


def test_arm_refuses_a_handler_that_is_not_once(stack: Stack):
    plain, listener = unique("plain"), unique("listener")
    stack.apply_handler({"id": plain, "job": "count9", "event": {"match": {"type": "arm"}}}, wait=False)
    stack.apply_handler({"id": listener, "job": "count9", "once": True, "event": {"match": {"type": "arm"}}},
                        wait=False)

    refused = stack.cli("handlers", "arm", plain)
    assert refused.returncode == 2, refused
    assert f"handler {plain!r} is not a once-handler" in refused.stderr and "armed" not in refused.stdout
    assert len(_records_for(stack, stack.topics.handlers, plain)) == 1  # nothing published

    armed = stack.cli("handlers", "arm", listener)
    assert armed.returncode == 0 and armed.stdout.strip() == f"armed {listener}", armed
    assert len(_records_for(stack, stack.topics.handlers, listener)) == 2

    unknown = stack.cli("handlers", "arm", "no-such-handler")
    assert unknown.returncode == 2 and "no handler 'no-such-handler'" in unknown.stderr


def _requested_params(stack: Stack, stdout: str) -> dict[str, Any]:
    request_id = stdout.rsplit("(request ", 1)[1].rstrip(")\n")
    reader = stack.reader(stack.topics.events)
    try:
        [hit] = reader.wait_for(lambda m: json.loads(m.value()).get("id") == request_id)
    finally:
        reader.close()
    return json.loads(hit.value())["params"]


def test_run_fills_params_and_refuses_missing_ones(stack: Stack):
    handler = unique("mars")
    stack.apply_handler({"id": handler, "job": "count9", "once": True, "event": {"match": {"event": "mars"}},
                         "params": {"date": "request.date", "step": "request.step"}}, wait=False)
    nothing = stack.cli("run", handler)
    assert nothing.returncode == 2, nothing
    assert "declares params with no value: date, step" in nothing.stderr and "--allow-missing" in nothing.stderr
    assert nothing.stdout == ""
    partly = stack.cli("run", handler, "--params", '{"date": "20260101"}')
    assert partly.returncode == 2 and "no value: step" in partly.stderr, partly

    full = stack.cli("run", handler, "--params", '{"date": "20260101", "step": 0}')
    assert full.returncode == 0, full
    assert _requested_params(stack, full.stdout) == {"date": "20260101", "step": 0}
    allowed = stack.cli("run", handler, "--allow-missing")
    assert allowed.returncode == 0, allowed
    assert _requested_params(stack, allowed.stdout) == {}

    # constants: a cron handler's params, under --params
    ticker = unique("ticker")
    stack.apply_handler({"id": ticker, "job": "count9",
                         "cron": {"schedule": "0 0 1 1 *", "params": {"region": "eu", "n": 1}}}, wait=False)
    constants = stack.cli("run", ticker)
    assert constants.returncode == 0, constants
    assert _requested_params(stack, constants.stdout) == {"region": "eu", "n": 1}
    overridden = stack.cli("run", ticker, "--params", '{"region": "us"}')
    assert _requested_params(stack, overridden.stdout) == {"region": "us", "n": 1}


def test_unknown_handler_is_bad_input(stack: Stack):
    for args in (["run", "register-patient"], ["handlers", "delete", "register-patient"],
                 ["handlers", "arm", "register-patient"]):
        out = stack.cli(*args)
        assert out.returncode == 2 and "no handler 'register-patient'" in out.stderr, (args, out)


def test_test_match_strict_fails_when_a_line_errs(tmp_path: Path):
    good = json.dumps({"filter": {"match": {"a": 1}}, "event": {"a": 1}})
    bad = json.dumps({"filter": {"pattern": {"n": [{"numeric": [">", 2, "<", 1]}]}}, "event": {"n": 1}})
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(f"{good}\n{bad}\n")
    clean = tmp_path / "clean.jsonl"
    clean.write_text(f"{good}\n")

    lenient, _ = _cli("test-match", str(mixed))
    assert lenient.returncode == 0 and len(lenient.stdout.splitlines()) == 2
    strict, _ = _cli("test-match", "--strict", str(mixed))
    assert strict.returncode == 2, strict
    assert len(strict.stdout.splitlines()) == 2 and "1 line(s) reported an error" in strict.stderr
    ok, _ = _cli("test-match", "--strict", str(clean))
    assert ok.returncode == 0 and json.loads(ok.stdout)["matched"] is True


def test_help_of_topics_check_and_test_match():
    check, _ = _cli("topics", "check", "--help")
    assert check.returncode == 0 and check.stdout.startswith("usage: signalbox topics check")
    assert "Creates nothing" in check.stdout
    create, _ = _cli("topics", "create", "--help")
    assert create.stdout.startswith("usage: signalbox topics create")

    match, _ = _cli("test-match", "--help")
    assert match.returncode == 0
    general, live_only = match.stdout.split("with --live only", 1)
    assert "--bootstrap-servers" not in general.split("options:", 1)[1]
    assert "--strict" in general
    assert "--bootstrap-servers" in live_only and "--topic-prefix" in live_only


def _poll_cli(stack: Stack, args: list[str], lines: int, timeout: float = WAIT) -> list[str]:
    end = time.monotonic() + timeout
    while True:
        out = stack.cli(*args)
        assert out.returncode == 0, out
        if len(out.stdout.splitlines()) >= lines:
            return out.stdout.splitlines()
        assert time.monotonic() < end, f"{args}: {out.stdout!r} after {timeout}s"
        time.sleep(0.5)


def test_dead_letters_and_rejections_latest_first_reason_shown_secrets_not(broker: BrokerInfo, tmp_path: Path):
    with _own_topics(broker, tmp_path) as (stack, _):  # no other test's records on these topics
        worker = stack.start_worker("problems", env={"SIGNALBOX_MAX_EVENT_BYTES": "300"})
        try:
            worker.wait_ready()
            _dead_letters_and_rejections(stack)
        finally:
            worker.stop()


def _dead_letters_and_rejections(stack: Stack) -> None:
    stack.send_event(b"not json at all")
    stack.send_event(b"[1, 2]")
    stack.send_event({"type": "big", "password": "hunter2", "nested": {"api_key": "k-123"}, "pad": "x" * 400})
    bad = unique("bad-handler")
    stack.apply_handler({"id": bad, "job": "count9", "when": "tomorrow",
                         "cron": {"schedule": "@daily", "params": {"api_token": "s3cret-tok"}}}, wait=False)

    letters = [json.loads(line) for line in _poll_cli(stack, ["dead-letters", "--json"], 3)]
    assert len(letters) == 3
    assert "event too large" in letters[0]["reason"] and "the limit is 300" in letters[0]["reason"], letters[0]
    assert "not JSON" in letters[2]["reason"], letters[2]
    assert [x["source"].split("/")[0] for x in letters] == [stack.topics.events] * 3
    offsets = [int(x["source"].split("/")[2]) for x in letters]
    assert offsets == sorted(offsets, reverse=True), "latest first"
    assert all(x["reason"] for x in letters) and "value" not in letters[0]

    human = stack.cli("dead-letters")
    assert human.returncode == 0 and len(human.stdout.splitlines()) == 3
    assert all(" DEAD    reason=" in line for line in human.stdout.splitlines())
    assert stack.cli("dead-letters", "--limit", "1").stdout.splitlines() == human.stdout.splitlines()[:1]

    with_values = stack.cli("dead-letters", "--json", "--values")
    shown = [json.loads(line) for line in with_values.stdout.splitlines()]
    assert shown[0]["value"]["password"] == "[redacted]" and shown[0]["value"]["nested"] == {"api_key": "[redacted]"}
    assert shown[0]["value"]["pad"] == "x" * 400
    assert shown[2]["value"] is None  # not JSON: never shown

    rejected = [json.loads(line) for line in _poll_cli(stack, ["rejections", "--json"], 1)]
    assert [r["handler_id"] for r in rejected] == [bad], rejected
    assert "when" in rejected[0]["reason"] and "Extra inputs are not permitted" in rejected[0]["reason"]
    human_rejections = stack.cli("rejections", "--values")
    assert f"REJECTED handler={bad}" in human_rejections.stdout
    assert '"api_token": "[redacted]"' in human_rejections.stdout

    for out in (human, with_values, human_rejections, stack.cli("rejections"), stack.cli("dead-letters", "--values")):
        for secret in ("hunter2", "k-123", "s3cret-tok"):
            assert secret not in out.stdout + out.stderr


def _result(run_id: str) -> bytes:
    now = int(time.time() * 1000)
    return avro.results().encode({"run_id": run_id, "job": "tailjob", "handler_id": "tail-h", "status": "succeeded",
                                  "final_state_json": None, "error": None, "attempt": 1, "started_at": now,
                                  "finished_at": now, "runner": "test"})


def _command(run_id: str) -> bytes:
    return avro.commands().encode({"run_id": run_id, "job": "tailjob", "handler_id": "tail-h", "trigger_kind": "manual",
                                   "trigger_ref": f"manual:{run_id}", "params_json": "{}", "event_json": None,
                                   "initial_state_json": None, "attempt": 1, "timeout_seconds": 60.0,
                                   "event_time": None, "created_at": int(time.time() * 1000)})


@contextmanager
def _own_topics(broker: BrokerInfo, tmp_path: Path) -> Iterator[tuple[Stack, Producer]]:
    """Topics no other test writes to, and a producer that batches."""
    tag = uuid.uuid4().hex[:8]
    topics = topics_mod.Topics.load(ROOT / "topics.yaml", f"tail{tag}.")
    topics_mod.create(AdminClient({"bootstrap.servers": broker.bootstrap}), topics)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 200, "partitioner": "murmur2_random"})
    yield Stack(broker, f"tail{tag}.", f"signalbox-tail{tag}", topics, tmp_path), producer
    producer.flush(30)


def _tail_then(stack: Stack, args: list[str], then: Callable[[], None]) -> str:
    """Run ``signalbox tail -v ARGS``; once it says where it starts, call ``then``; its stdout."""
    tail = subprocess.Popen([sys.executable, "-m", "streams", "tail", "-v", *args], env=stack.env, cwd=stack.workdir,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert tail.stderr is not None and tail.stdout is not None
        for line in tail.stderr:
            if line.startswith("signalbox tail: following "):
                break
        else:
            raise AssertionError(f"tail never said where it starts (exit {tail.wait(30)})")
        then()
        assert tail.wait(60) == 0
        return tail.stdout.read()
    finally:
        if tail.poll() is None:
            tail.kill()


def test_tail_starts_at_the_true_end_after_a_multi_record_batch(broker: BrokerInfo, tmp_path: Path):
    with _own_topics(broker, tmp_path) as (stack, producer):
        for n in range(6):  # one key, one partition, one batch: the embedded broker's ListOffsets misses 5 of them
            producer.produce(stack.topics.run_results, key=b"tailjob", value=_result(f"old-{n}"))
        assert producer.flush(30) == 0

        def new_result() -> None:
            producer.produce(stack.topics.run_results, key=b"tailjob", value=_result("new"))
            assert producer.flush(30) == 0

        out = _tail_then(stack, ["--count", "1", "--timeout", "60", "--json"], new_result)
    assert [json.loads(line)["run_id"] for line in out.splitlines()] == ["new"]


def test_tail_prints_a_command_before_its_result_and_stamps_lines(broker: BrokerInfo, tmp_path: Path):
    with _own_topics(broker, tmp_path) as (stack, producer):

        def result_first() -> None:  # as a consumer may fetch them: the result, then its command
            producer.produce(stack.topics.run_results, key=b"tailjob", value=_result("r1"))
            producer.produce(stack.topics.run_results, key=b"tailjob", value=_result("no-command"))
            assert producer.flush(30) == 0
            time.sleep(0.4)
            producer.produce(stack.topics.job_commands, key=b"tailjob", value=_command("r1"))
            assert producer.flush(30) == 0

        out = _tail_then(stack, ["--commands", "--count", "2", "--timeout", "60"], result_first)
    lines = out.splitlines()
    assert all(re.match(r"\d\d:\d\d:\d\d (COMMAND|RESULT ) ", line) for line in lines), lines
    runs = [(line.split()[1], re.search(r"run=(\S+)", line).group(1)) for line in lines]  # type: ignore[union-attr]
    assert runs == [("COMMAND", "r1"), ("RESULT", "r1"), ("RESULT", "no-command")], lines
