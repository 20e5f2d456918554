"""``signalbox dev``: the whole product on this machine, with nothing installed but Python.

Starts the embedded broker, creates the topics of topics.yaml, a webhook receiver and an
SMTP sink on loopback (cli/dev_sinks.py), applies the example handlers and the dev
listeners, starts a worker with the example jobs, sends the sample events, and prints job
commands, run results and what the receiver and the sink get as it happens, until Ctrl-C
stops everything.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException

from streams.cli import formatting
from streams.cli.dev_sinks import LOOPBACK, DevSinks, new_secret
from streams.contracts import avro, records
from streams.contracts import topics as topics_mod
from streams.delivery import secrets
from streams.kafka import client
from streams.kafka.broker import EmbeddedBroker
from streams.kafka.connection import KafkaConnection, connection_env_names
from streams.model import provenance
from streams.model.handler_files import load_handlers
from streams.settings import Settings

EXAMPLES = Path(str(resources.files("streams.examples")))
WORKDIR = Path(".signalbox/dev")
SAMPLE_KEY = b"dev-examples"
DEV_SECRET_NAME = "dev-hook"  # the dev listener's signing secret, by name (listeners.yaml)


class StdoutClosed(Exception):
    """Whoever read our output is gone (`make dev | tee log`, then tee died)."""


def _say(text: str, stamp: bool = True) -> None:
    try:
        print(f"{time.strftime('%H:%M:%S')} {text}" if stamp else text, flush=True)
    except BrokenPipeError:
        # Nobody reads us any more: send the rest of our output (and Python's last flush at
        # exit) nowhere, and stop.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise StdoutClosed from None


def _stdout_closed() -> bool:
    """True when stdout is a pipe whose reader has gone (noticed without writing)."""
    poller = select.poll()
    poller.register(sys.stdout.fileno(), select.POLLOUT)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


class ChildExited(Exception):
    """The broker or the worker stopped by itself."""


def _plain_env() -> dict[str, str]:
    """This shell's environment without its Kafka connection settings: the embedded broker
    is plaintext, no TLS or SASL setting of this shell applies to it."""
    return {k: v for k, v in os.environ.items() if k.upper() not in connection_env_names()}


def _start_worker(settings: Settings, log_path: Path, sinks: DevSinks, secret: str,
                  metrics_port: int) -> subprocess.Popen[bytes]:
    env = {
        **{k: v for k, v in os.environ.items()
           if k.upper() not in {*connection_env_names(), "SIGNALBOX_WEB_PORT", "SIGNALBOX_WEB_HOST"}},
        "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "SIGNALBOX_BROKER_KIND": "tansu",
        "SIGNALBOX_TOPICS_FILE": str(settings.topics_file.resolve()),
        # deliveries may reach dev's own receiver and sink, and nothing else internal
        "SIGNALBOX_DELIVERY_ALLOW": f"{LOOPBACK}/32",
        secrets.env_name(DEV_SECRET_NAME): secret,
        "SIGNALBOX_SMTP_HOST": LOOPBACK,
        "SIGNALBOX_SMTP_PORT": str(sinks.smtp_port),
        "SIGNALBOX_SMTP_STARTTLS": "false",
        "SIGNALBOX_SMTP_TLS": "false",
        "SIGNALBOX_SMTP_USER": "",
        "SIGNALBOX_SMTP_PASSWORD_SECRET": "",
        "SIGNALBOX_SMTP_FROM": "signalbox-dev@localhost",
        # the worker's /metrics (Faust's web server), on loopback
        "SIGNALBOX_METRICS_PORT": str(metrics_port),
    }
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "streams", "worker", "--jobs", "streams.examples.jobs",
             "--datadir", str(settings.datadir)],
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # we stop it ourselves on Ctrl-C, after the output drains
        )


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_gateway(settings: Settings, log_path: Path, port: int) -> subprocess.Popen[bytes]:
    """The HTTP gateway on loopback, authentication off (local development only)."""
    env = {
        **_plain_env(),
        "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "SIGNALBOX_BROKER_KIND": "tansu",
        "SIGNALBOX_TOPICS_FILE": str(settings.topics_file.resolve()),
        "SIGNALBOX_GATEWAY_AUTH": "none",
        "SIGNALBOX_GATEWAY_HOST": "127.0.0.1",
        "SIGNALBOX_GATEWAY_PORT": str(port),
        "SIGNALBOX_GATEWAY_DB_PATH": str(WORKDIR / "gateway.sqlite"),
    }
    with log_path.open("ab") as log:
        return subprocess.Popen([sys.executable, "-m", "streams", "gateway"], env=env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)


def _stop(child: subprocess.Popen[bytes] | None, grace: float = 30) -> None:
    if child is not None and child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(grace)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(10)


def _sample_events(extra: int) -> tuple[list[bytes], list[bytes]]:
    """The example events, and a second wave sent once the first has settled."""
    first = [line.strip().encode() for line in (EXAMPLES / "events.jsonl").read_text().splitlines() if line.strip()]
    first.append(b"this line is not JSON: it goes to the dead-letter topic")
    run = int(time.time())
    # New ids: the same jobs run again, and their commands carry the cursors over.
    return first, [json.dumps({"id": f"wave2-{run}-1", "PID": "CH-002003-9:1600", "source": "actions.js",
                          "event_type": "MigratablePID"}).encode(),
              json.dumps({"id": f"wave2-{run}-2", "submissionDate": "2016-01-18",
                          "formID": "patient_registration_v7", "name": "Bukayo Saka"}).encode()] + [
        json.dumps({"id": f"gen-{run}-{i}", "PID": f"CH-GEN:{i}", "source": "actions.js",
                    "event_type": "MigratablePID"}).encode() for i in range(extra)]


def _send_the_other_kinds(bootstrap: KafkaConnection, topics: topics_mod.Topics) -> None:
    """What events.jsonl cannot say: a trusted ingest's header, and a run-now request."""
    imports = [json.dumps({"id": f"import-{n}", "event_type": "PatientImport", "patient": f"P-{n}"}).encode()
               for n in (1, 2)]
    client.produce_all(bootstrap, [(topics.events, SAMPLE_KEY, imports[0])],
                       headers=[(provenance.CREATOR, b"hospital-gateway")])
    client.produce_all(bootstrap, [(topics.events, SAMPLE_KEY, imports[1])])
    _say("sent PatientImport P-1 with the header creator=hospital-gateway (fires trusted-patient-import) "
         "and P-2 without it (fires nothing)")
    request = records.run_request("heartbeat-report", {}, f"run-dev-{int(time.time())}")
    client.produce_all(bootstrap, [(topics.events, SAMPLE_KEY, json.dumps(request).encode())])
    _say("requested a run of heartbeat-report now, as `signalbox run heartbeat-report` does")


def _dev_listeners(sinks: DevSinks) -> Path:
    """listeners.yaml with the receiver's address filled in, written to the work folder."""
    path = WORKDIR / "listeners.yaml"
    path.write_text((EXAMPLES / "listeners.yaml").read_text().replace("DEV_RECEIVER", sinks.webhook_url))
    return path


def export_line(bootstrap: str) -> str:
    """The shell line that points the CLI at this dev broker (its port is random)."""
    return f"export KAFKA_BOOTSTRAP_SERVERS={bootstrap} SIGNALBOX_BROKER_KIND=tansu"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_dev(events: int = 0) -> int:
    # SIGTERM (a service manager, `timeout`) and SIGHUP (the terminal closed) stop everything
    # as Ctrl-C does, and so does a closed stdout or the exit of either child: the worker and
    # the broker are children of this process and must not outlive it.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    code = 0
    if WORKDIR.exists():
        shutil.rmtree(WORKDIR)  # the broker keeps nothing between runs, so neither do we
    WORKDIR.mkdir(parents=True)
    broker = EmbeddedBroker(WORKDIR / "tansu.log")
    worker: subprocess.Popen[bytes] | None = None
    gateway: subprocess.Popen[bytes] | None = None
    sinks: DevSinks | None = None
    started = time.monotonic()
    try:
        broker.start()
        plain = KafkaConnection(broker.bootstrap_servers)  # the embedded broker: plaintext on loopback
        settings = Settings(bootstrap_servers=broker.bootstrap_servers, broker_kind="tansu",
                            datadir=WORKDIR / "worker-data")
        topics = topics_mod.Topics.load(settings.topics_file, settings.topic_prefix)
        _say(f"embedded broker (tansu, pid {broker.pid}) on {broker.bootstrap_servers}; log {WORKDIR / 'tansu.log'}")
        _say("to use the signalbox CLI from a second shell (after `. .venv/bin/activate`), run there:")
        _say(export_line(broker.bootstrap_servers), stamp=False)  # no time stamp: copy and paste it
        topics_mod.create(client.admin(plain), topics)
        _say(f"created {len(topics.specs)} topics from {settings.topics_file}")
        secret = new_secret()  # this run's; the worker gets it by environment, nobody sees it
        sinks = DevSinks(secret)
        _say(f"webhook receiver on {sinks.webhook_url}, SMTP sink on {LOOPBACK}:{sinks.smtp_port} "
             f"(the worker may deliver to {LOOPBACK} only)")
        handlers, errors = load_handlers([EXAMPLES / "handlers.yaml", _dev_listeners(sinks)])
        assert not errors, errors
        client.produce_all(plain, [
            (topics.handlers, h.id.encode(), h.model_dump_json(exclude_none=True).encode()) for h in handlers])
        for h in handlers:
            _say(f"handler {h.id}: job {h.job}, {formatting.describe_trigger(h)}")
        metrics_port = _free_port()
        worker = _start_worker(settings, WORKDIR / "worker.log", sinks, secret, metrics_port)
        _say(f"worker started (pid {worker.pid}); log {WORKDIR / 'worker.log'}")
        port = _free_port()
        gateway = _start_gateway(settings, WORKDIR / "gateway.log", port)
        _say(f"gateway on http://127.0.0.1:{port} (OpenAPI at /docs; authentication off: dev only); "
             f"log {WORKDIR / 'gateway.log'}")
        _say(f"metrics (Prometheus): worker http://127.0.0.1:{metrics_port}/metrics, "
             f"gateway http://127.0.0.1:{port}/metrics")
        first, second = _sample_events(events)
        # One key: one partition, read in file order, so the once-listener fires on aviso-1
        # in every run (unkeyed, the two aviso events could be read in either order).
        client.produce_all(plain, [(topics.events, SAMPLE_KEY, v) for v in first])
        _say(f"sent {len(first)} sample events from {EXAMPLES / 'events.jsonl'}")
        _send_the_other_kinds(plain, topics)
        _say("watching job commands and run results (Ctrl-C to stop)")
        _follow(plain, topics, broker, [worker, gateway], sinks, second, started)
    except (KeyboardInterrupt, StdoutClosed):
        pass
    except ChildExited as exc:
        _say_if_possible(str(exc))
        code = 1
    except (KafkaException, TimeoutError):
        if broker.returncode is None:
            raise
        _say_if_possible(f"the broker exited with {broker.returncode}; see {WORKDIR / 'tansu.log'}")
        code = 1
    finally:
        _say_if_possible("stopping")
        # With the broker gone there is nothing to commit or flush: a short grace, not the
        # 30 s a worker may spend retrying a dead broker.
        grace = 30 if broker.returncode is None else 3
        _stop(gateway, grace)
        _stop(worker, grace)
        broker.stop()
        if sinks is not None:
            sinks.close()
        _say_if_possible("stopped")
    return code


def _say_if_possible(text: str) -> None:
    try:
        _say(text)
    except StdoutClosed:
        pass


def _follow(bootstrap: KafkaConnection, topics: topics_mod.Topics, broker: EmbeddedBroker,
            children: list[subprocess.Popen[bytes]], sinks: DevSinks, later: list[bytes], started: float) -> None:
    results = 0
    last_record = time.monotonic()
    # The broker is local and up: a short metadata wait, so a broker that died meanwhile is
    # reported in seconds, not after the 30 s default.
    watched = [topics.job_commands, topics.run_results, topics.dead_letter]
    for msg in client.follow(bootstrap, watched, True, timeout=8.0):
        for child, name in zip(children, ("worker", "gateway"), strict=True):
            if child.poll() is not None:
                raise ChildExited(f"the {name} exited with {child.returncode}; see {WORKDIR / f'{name}.log'}")
        if broker.returncode is not None:
            raise ChildExited(f"the broker exited with {broker.returncode}; see {WORKDIR / 'tansu.log'}")
        while not sinks.lines.empty():  # what the receiver and the sink got meanwhile
            _say(sinks.lines.get_nowait())
        if msg is None:
            if _stdout_closed():
                raise StdoutClosed
            # The first wave has settled (quiet for a second): send the second one.
            if later and results and time.monotonic() - last_record > 1.0:
                client.produce_all(bootstrap, [(topics.events, None, v) for v in later])
                _say(f"sent {len(later)} more event(s): their commands carry the jobs' states")
                later = []
            continue
        last_record = time.monotonic()
        _say(_describe(msg.topic(), msg.value(), dict(msg.headers() or []), topics))
        if msg.topic() == topics.run_results:
            results += 1
            if results == 1:
                _say(f"first run result {time.monotonic() - started:.1f}s after start")


def _describe(topic: str, value: bytes, headers: dict[str, Any], topics: topics_mod.Topics) -> str:
    if topic == topics.job_commands:
        return formatting.format_command(avro.commands().decode(value))
    if topic == topics.run_results:
        return formatting.format_result(avro.results().decode(value))
    return f"DEAD    {value[:60]!r} reason={headers.get('reason', b'').decode()!r}"
