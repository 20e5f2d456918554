"""Fixtures that give tests a real broker and real worker processes.

Broker, in order: KAFKA_BOOTSTRAP_SERVERS if set (SIGNALBOX_BROKER_KIND says whether it is
tansu); testcontainers' Kafka when a Docker engine answers; else the embedded tansu.
Every test module gets its own topic prefix and app id, so modules never see each
other's records or consumer groups.
"""

from __future__ import annotations

import functools
import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastavro
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from fastavro.schema import fingerprint, load_schema, to_parsing_canonical_form

from streams.contracts import topics as topics_mod
from streams.kafka.broker import EmbeddedBroker

ROOT = Path(__file__).resolve().parent.parent
WAIT = 60.0  # seconds a test waits for an expected record before failing


@dataclass
class BrokerInfo:
    bootstrap: str
    kind: str  # "kafka" or "tansu"
    # how to connect beyond the address (TLS, SASL): the environment of the CLI and the
    # workers (KAFKA_SECURITY_PROTOCOL, ...), and the librdkafka settings of the tests' clients
    env: dict[str, str] = field(default_factory=dict)
    config: dict[str, str] = field(default_factory=dict)

    def client_config(self, **extra: object) -> dict[str, object]:
        return {"bootstrap.servers": self.bootstrap, **self.config, **extra}


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerInfo]:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield BrokerInfo(os.environ["KAFKA_BOOTSTRAP_SERVERS"], os.environ.get("SIGNALBOX_BROKER_KIND", "kafka"))
        return
    if _docker_answers():
        from testcontainers.community.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as kafka:
            yield BrokerInfo(kafka.get_bootstrap_server(), "kafka")
        return
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(log) as embedded:
        yield BrokerInfo(embedded.bootstrap_servers, "tansu")


@functools.cache
def _avro_schema(schema_file: str) -> tuple[Any, bytes]:
    """The parsed .avsc and its CRC-64-AVRO fingerprint, computed once per file: the
    failover tests decode every command seen again each second."""
    schema = load_schema(str(ROOT / "schemas" / schema_file))
    return schema, bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))


def decode_avro(schema_file: str, data: bytes) -> dict[str, Any]:
    """Decode single-object Avro with fastavro and the .avsc alone (no project code)."""
    schema, fingerprint_bytes = _avro_schema(schema_file)
    assert data[:2] == b"\xc3\x01", "not Avro single-object encoding"
    assert data[2:10] == fingerprint_bytes
    return fastavro.schemaless_reader(io.BytesIO(data[10:]), schema)


def command(msg: Message) -> dict[str, Any]:
    """A job command record, decoded from the .avsc alone."""
    return decode_avro("job_command.avsc", msg.value())


def result(msg: Message) -> dict[str, Any]:
    """A run result record, decoded from the .avsc alone."""
    return decode_avro("run_result.avsc", msg.value())


@dataclass
class Stack:
    """One isolated deployment on the shared broker: topics with a prefix, an app id."""

    broker: BrokerInfo
    prefix: str
    app_id: str
    topics: topics_mod.Topics
    workdir: Path
    workers: list[WorkerProcess] = field(default_factory=list)
    _producer: Producer | None = None

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": self.broker.bootstrap,
            "SIGNALBOX_BROKER_KIND": self.broker.kind,
            "SIGNALBOX_TOPIC_PREFIX": self.prefix,
            "SIGNALBOX_APP_ID": self.app_id,
            "SIGNALBOX_TOPICS_FILE": str(ROOT / "topics.yaml"),
            "PYTHONPATH": str(ROOT),
            **self.broker.env,
            # Cron ticks are checked 4x a second in tests (1 s in production): same code path.
            "SIGNALBOX_CRON_INTERVAL_SECONDS": "0.25",
        }

    def producer(self) -> Producer:
        if self._producer is None:
            self._producer = Producer(self.broker.client_config(partitioner="murmur2_random"))
        return self._producer

    def produce(self, topic: str, value: bytes | None, key: bytes | None = None,
                headers: list[tuple[str, bytes]] | None = None) -> None:
        p = self.producer()
        p.produce(topic, value=value, key=key, headers=headers)
        assert p.flush(30) == 0

    def send_event(self, event: dict[str, Any] | str | bytes, key: str = "k") -> None:
        value = event if isinstance(event, bytes) else (event if isinstance(event, str) else json.dumps(event)).encode()
        self.produce(self.topics.events, value, key.encode())

    def apply_handler(self, handler: dict[str, Any], wait: bool = True) -> None:
        """Publish a handler; by default wait until every running worker has applied it
        (handlers reach workers asynchronously, within a fetch or two)."""
        self.produce(self.topics.handlers, json.dumps(handler).encode(), handler["id"].encode())
        if wait:
            self.wait_logged(f"handler {handler['id']} applied")

    def delete_handler(self, handler_id: str, wait: bool = True) -> None:
        self.produce(self.topics.handlers, None, handler_id.encode())
        if wait:
            self.wait_logged(f"handler {handler_id} deleted")

    def wait_logged(self, text: str, timeout: float = WAIT) -> None:
        end = time.monotonic() + timeout
        for worker in self.workers:
            if worker.process is None or worker.process.poll() is not None:
                continue
            while text not in worker.log_text():
                if time.monotonic() > end:
                    raise AssertionError(f"worker {worker.name} never logged {text!r}:\n{worker.tail()}")
                time.sleep(0.05)

    def reader(self, topic: str) -> TopicReader:
        return TopicReader(self.broker, topic)

    def start_worker(self, name: str = "w1", *extra: str, datadir: Path | None = None,
                     env: dict[str, str] | None = None) -> WorkerProcess:
        worker = WorkerProcess(self, name, datadir or self.workdir / name / "data", list(extra), env or {})
        worker.start()
        self.workers.append(worker)
        return worker

    def cli(self, *args: str, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "streams", *args], env=self.env, cwd=self.workdir,
                              capture_output=True, text=True, input=input, timeout=timeout)


class TopicReader:
    """A plain consumer over every partition of a topic, from the beginning."""

    def __init__(self, broker: BrokerInfo, topic: str) -> None:
        self.topic = topic
        self.consumer = Consumer(broker.client_config(**{
            "group.id": f"test-{uuid.uuid4()}", "enable.auto.commit": False, "fetch.wait.max.ms": 20}))
        meta = self.consumer.list_topics(topic, timeout=30).topics[topic]
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
        self.seen: list[Message] = []

    def poll_for(self, seconds: float) -> list[Message]:
        """Everything that arrives within ``seconds``."""
        end = time.monotonic() + seconds
        new = []
        while time.monotonic() < end:
            msg = self.consumer.poll(0.1)
            if msg is not None and not msg.error():
                new.append(msg)
        self.seen += new
        return new

    def wait_for(self, predicate: Callable[[Message], bool], count: int = 1, timeout: float = WAIT) -> list[Message]:
        """Wait until ``count`` records (seen so far or new) satisfy ``predicate``."""
        end = time.monotonic() + timeout
        while True:
            hits = [m for m in self.seen if predicate(m)]
            if len(hits) >= count:
                return hits
            if time.monotonic() > end:
                raise AssertionError(f"{self.topic}: {len(hits)} of {count} expected records after {timeout}s")
            msg = self.consumer.poll(0.1)
            if msg is not None and not msg.error():
                self.seen.append(msg)

    def close(self) -> None:
        self.consumer.close()


class WorkerProcess:
    def __init__(self, stack: Stack, name: str, datadir: Path, extra: list[str], env: dict[str, str]) -> None:
        self.stack, self.name, self.datadir, self.extra, self.env = stack, name, datadir, extra, env
        self.log = stack.workdir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.datadir.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streams", "worker", "--jobs", "tests.e2e_jobs", "--datadir", str(self.datadir),
                 *self.extra],
                env={**self.stack.env, **self.env}, cwd=self.stack.workdir, stdout=log, stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout: float = WAIT) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.log.exists() and b"[^Worker]: Ready" in self.log.read_bytes():
                return
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"worker {self.name} exited {self.process.returncode}:\n{self.tail()}")
            time.sleep(0.2)
        raise AssertionError(f"worker {self.name} not ready after {timeout}s:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(10)


@pytest.fixture(scope="module")
def stack(broker: BrokerInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tag = uuid.uuid4().hex[:8]
    prefix = f"t{tag}."
    topics = topics_mod.Topics.load(ROOT / "topics.yaml", prefix)
    admin = AdminClient(broker.client_config())
    topics_mod.create(admin, topics)
    s = Stack(broker, prefix, f"signalbox-t{tag}", topics, tmp_path_factory.mktemp(f"stack-{tag}"))
    yield s
    for worker in s.workers:
        worker.stop()


@pytest.fixture(scope="module")
def worker(stack: Stack, request: pytest.FixtureRequest) -> Iterator[WorkerProcess]:
    """One worker for the whole test module, named after it (test_e2e_spine -> "spine")."""
    w = stack.start_worker(request.module.__name__.rsplit("_", 1)[-1])
    w.wait_ready()
    yield w
    w.stop()


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:6]}"


def _reader(stack: Stack, topic: str) -> Iterator[TopicReader]:
    reader = stack.reader(topic)
    yield reader
    reader.close()


@pytest.fixture
def commands(stack: Stack) -> Iterator[TopicReader]:
    """The job-commands topic of the module's stack, from the beginning."""
    yield from _reader(stack, stack.topics.job_commands)


@pytest.fixture
def results(stack: Stack) -> Iterator[TopicReader]:
    yield from _reader(stack, stack.topics.run_results)


@pytest.fixture
def events(stack: Stack) -> Iterator[TopicReader]:
    yield from _reader(stack, stack.topics.events)


class GatewayProcess:
    """`signalbox gateway` as a real process (uvicorn) on a free loopback port."""

    def __init__(self, stack: Stack, name: str, env: dict[str, str] | None = None) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.stack, self.name = stack, name
        self.db = stack.workdir / f"{name}.sqlite"
        self.log = stack.workdir / f"{name}.log"
        self.env = {"SIGNALBOX_GATEWAY_PORT": str(self.port), "SIGNALBOX_GATEWAY_DB_PATH": str(self.db), **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = WAIT) -> GatewayProcess:
        import httpx

        with self.log.open("ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "streams", "gateway"],
                                            env={**self.stack.env, **self.env}, cwd=self.stack.workdir,
                                            stdout=log, stderr=subprocess.STDOUT)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.process.poll() is not None:
                raise AssertionError(f"gateway exited {self.process.returncode}:\n{self.tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"gateway not up after {timeout}s:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
