"""TLS end to end: a worker and the CLI talk to the broker through a real TLS terminator.

The embedded broker answers plaintext only, so a TLS proxy (tests/tls_proxy.py) sits in
front of it with a server certificate from a CA made here (trustme), requires a client
certificate from the same CA (mutual TLS, as Strimzi's), and is the only address the
broker advertises: every connection of the CLI, the worker (Faust, the runner, the
handler feed) and this module's own clients goes through TLS. Clients without the CA, or
without a client certificate, or reaching a certificate for another host name, fail at
once with one line naming the cause and exit 1.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import jwt
import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from streams.kafka import aio_check, client
from streams.kafka.broker import BrokerError, EmbeddedBroker, free_port
from streams.kafka.connection import KafkaConnection
from tests.conftest import BrokerInfo, GatewayProcess, Stack
from tests.tls_proxy import TLSProxy

pytestmark = pytest.mark.broker

KEY_PASSWORD = "key-pass-d3adb33f"  # must never be printed


@dataclass
class Pki:
    ca: trustme.CA
    ca_pem: Path
    cert_pem: Path
    key_pem: Path  # encrypted with KEY_PASSWORD

    def server_context(self, *hosts: str) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert(*hosts).configure_cert(context)
        self.ca.configure_trust(context)
        context.verify_mode = ssl.CERT_REQUIRED  # mutual TLS
        return context

    @property
    def env(self) -> dict[str, str]:
        return {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CA_LOCATION": str(self.ca_pem),
                "KAFKA_SSL_CERTIFICATE_LOCATION": str(self.cert_pem), "KAFKA_SSL_KEY_LOCATION": str(self.key_pem),
                "KAFKA_SSL_KEY_PASSWORD": KEY_PASSWORD}

    @property
    def properties(self) -> dict[str, str]:
        return {"security.protocol": "SSL", "ssl.ca.location": str(self.ca_pem),
                "ssl.certificate.location": str(self.cert_pem), "ssl.key.location": str(self.key_pem),
                "ssl.key.password": KEY_PASSWORD}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    leaf = ca.issue_cert("signalbox-client")
    leaf.cert_chain_pems[0].write_to_path(str(folder / "client.pem"))
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), password=None)
    (folder / "client.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(KEY_PASSWORD.encode())))
    return Pki(ca, folder / "ca.pem", folder / "client.pem", folder / "client.key")


@dataclass
class Tls:
    tansu: EmbeddedBroker
    proxy: TLSProxy


@pytest.fixture(scope="module")
def tls(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tls]:
    port = free_port()
    tansu = EmbeddedBroker(tmp_path_factory.mktemp("tls-broker") / "tansu.log", advertised=f"127.0.0.1:{port}")
    try:
        tansu.start()
    except BrokerError as exc:
        pytest.skip(f"needs the embedded broker: {exc}")
    try:
        with TLSProxy(("127.0.0.1", tansu.port), pki.server_context("127.0.0.1", "localhost"), port) as proxy:
            yield Tls(tansu, proxy)
    finally:
        tansu.stop()


@pytest.fixture(scope="module")
def broker(tls: Tls, pki: Pki) -> BrokerInfo:
    """This module's broker: the TLS proxy's address, the connection's env and settings."""
    return BrokerInfo(tls.proxy.address, "tansu", env=pki.env, config=pki.properties)


def _cli(stack: Stack, *args: str, drop: tuple[str, ...] = (), timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in stack.env.items() if k not in drop}
    return subprocess.run([sys.executable, "-m", "streams", *args], env=env, cwd=stack.workdir,
                          capture_output=True, text=True, timeout=timeout)


def test_cli_and_worker_through_tls(stack: Stack, tls: Tls, tmp_path: Path):
    check = stack.cli("topics", "check")
    assert check.returncode == 0, check.stderr
    assert "security.protocol = SSL" in check.stdout
    assert f"ssl.ca.location = {stack.broker.config['ssl.ca.location']}" in check.stdout
    assert "ssl.key.password = ********" in check.stdout
    assert KEY_PASSWORD not in check.stdout + check.stderr

    worker = stack.start_worker("tls")
    worker.wait_ready()
    handler = tmp_path / "tls.yaml"
    handler.write_text("id: tls-count\njob: count\nevent:\n  match: {type: tls}\nparams: {n: n}\n")
    applied = stack.cli("handlers", "apply", str(handler))
    assert applied.returncode == 0, applied.stderr
    stack.wait_logged("handler tls-count applied")
    sent = stack.cli("send", '{"id": "tls-1", "type": "tls", "n": 7}')
    assert sent.returncode == 0, sent.stderr

    tail = stack.cli("tail", "--from-beginning", "--count", "1", "--timeout", "60", "--json")
    assert tail.returncode == 0, tail.stderr
    result = json.loads(tail.stdout.splitlines()[0])
    assert (result["job"], result["handler_id"], result["status"]) == ("count", "tls-count", "succeeded")
    assert json.loads(result["final_state_json"]) == {"runs": 1, "seen": [{"n": 7}]}
    assert tls.proxy.handshakes > 3  # CLI, worker (Faust, runner, handler feed): all through TLS
    assert KEY_PASSWORD not in worker.log_text()


def test_gateway_through_tls(stack: Stack, tls: Tls) -> None:
    """The gateway's clients (its producer, its read model's consumer, a live subscription's
    consumer) connect through TLS; without the CA it stops at start with one line."""
    import httpx

    secret = "tls-gateway-secret-0123456789abcdef"
    gateway = GatewayProcess(stack, "tls-gateway", {"SIGNALBOX_GATEWAY_JWT_SECRET": secret})
    before = tls.proxy.handshakes
    try:
        gateway.start()
        assert tls.proxy.handshakes > before  # its producer and read model connected through the proxy
        now = int(time.time())
        token = jwt.encode({"sub": "ada", "scope": "events:write runs:read", "exp": now + 300}, secret,
                           algorithm="HS256")
        headers = {"Authorization": f"Bearer {token}"}
        r = httpx.post(f"{gateway.url}/events", json={"id": "tls-gw-1", "type": "tls-gw"}, headers=headers, timeout=30)
        assert r.status_code == 202, r.text
        end = time.monotonic() + 30
        events: list[dict[str, object]] = []
        while time.monotonic() < end and not events:  # the read model consumed it back, through TLS
            events = httpx.get(f"{gateway.url}/events", params={"id": "tls-gw-1"}, headers=headers, timeout=10).json()
            time.sleep(0.2)
        assert events and events[0]["creator"] == "ada", events
        assert KEY_PASSWORD not in gateway.log.read_text()
    finally:
        gateway.stop()
    started = time.monotonic()
    no_ca = _cli(stack, "gateway", "--port", "1", drop=("KAFKA_SSL_CA_LOCATION",))
    assert no_ca.returncode == 1, no_ca.stderr
    assert "certificate" in _one_line_failure(no_ca, time.monotonic() - started).lower()


def _one_line_failure(run: subprocess.CompletedProcess[str], took: float) -> str:
    assert run.returncode == 1, (run.returncode, run.stdout, run.stderr)
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("signalbox: TLS failure at 127.0.0.1:"), run.stderr
    assert took < 15, f"took {took:.1f}s: a retry loop?"
    return lines[0]


def test_cli_without_the_ca_fails_with_one_line(stack: Stack):
    started = time.monotonic()
    run = _cli(stack, "handlers", "list", drop=("KAFKA_SSL_CA_LOCATION",))
    line = _one_line_failure(run, time.monotonic() - started)
    assert "unknown CA" in line and "ssl.ca.location" in line


def test_cli_without_a_client_certificate_fails_with_one_line(stack: Stack):
    started = time.monotonic()
    run = _cli(stack, "send", '{"a": 1}',
               drop=("KAFKA_SSL_CERTIFICATE_LOCATION", "KAFKA_SSL_KEY_LOCATION", "KAFKA_SSL_KEY_PASSWORD"))
    line = _one_line_failure(run, time.monotonic() - started)
    assert "client certificate" in line


def test_wrong_host_name_fails_with_one_line(stack: Stack, tls: Tls, pki: Pki):
    elsewhere = pki.server_context("kafka.example.test")
    with TLSProxy(("127.0.0.1", tls.tansu.port), elsewhere) as proxy:
        started = time.monotonic()
        run = _cli(stack, "topics", "check", "--bootstrap-servers", proxy.address)
        line = _one_line_failure(run, time.monotonic() - started)
    assert "wrong host name" in line and "'127.0.0.1'" in line


def test_worker_without_the_ca_exits_1_with_one_line(stack: Stack):
    env = {k: v for k, v in stack.env.items() if k != "KAFKA_SSL_CA_LOCATION"}
    started = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "streams", "worker", "--jobs", "tests.e2e_jobs", "--datadir",
                          str(stack.workdir / "no-ca")], env=env, cwd=stack.workdir, capture_output=True, text=True,
                         timeout=60)
    line = _one_line_failure(run, time.monotonic() - started)
    assert "unknown CA" in line


def test_aiokafka_check_names_the_cause(tls: Tls, pki: Pki):
    """The worker's aiokafka clients get the same diagnosis (streams/kafka/aio_check.py)."""
    good = KafkaConnection(tls.proxy.address, pki.properties)
    asyncio.run(aio_check.check(good))
    no_ca = KafkaConnection(tls.proxy.address, {k: v for k, v in pki.properties.items() if k != "ssl.ca.location"})
    with pytest.raises(client.TLSFailure, match="unknown CA"):
        asyncio.run(aio_check.check(no_ca))
    plaintext_port = KafkaConnection(tls.tansu.bootstrap_servers, pki.properties)
    with pytest.raises(client.TLSFailure, match="PLAINTEXT listener"):
        asyncio.run(aio_check.check(plaintext_port, timeout=2))


def test_plaintext_client_cannot_use_the_tls_port(tls: Tls):
    """The proxy really is TLS-only: a plaintext client gets no Kafka answer."""
    with pytest.raises(client.BrokerUnreachable, match="timeout"):
        client.check_broker(KafkaConnection(tls.proxy.address), timeout=2)

