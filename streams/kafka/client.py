"""Plain confluent-kafka clients for the CLI: produce, read a topic to its end, follow it.

Every client keeps librdkafka's own log lines off unless ``set_verbose(True)`` (the CLI's
``-v``): a wrong address is reported once, by ``check_broker``, not by hundreds of retries.

Producers use the murmur2 partitioner (Java's and aiokafka's default), so a record keyed
by job lands on the same partition whichever client wrote it; librdkafka's own default
(CRC32) would break the co-partitioning of the job-keyed topics.
"""

from __future__ import annotations

import socket
import ssl
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from streams.kafka.connection import KafkaConnection

DEFAULT_PORT = 9092
_verbose = False


def set_verbose(on: bool) -> None:
    """Let librdkafka print its own log lines (off by default)."""
    global _verbose
    _verbose = on


def config(conn: KafkaConnection, **extra: object) -> dict[str, Any]:
    """The settings every CLI client starts from: the connection's (address, TLS, SASL)."""
    quiet: dict[str, Any] = {} if _verbose else {"log_level": 0, "log.connection.close": False}
    return {**conn.librdkafka_config(), **quiet, **extra}


def admin(conn: KafkaConnection, **extra: object) -> AdminClient:
    return AdminClient(config(conn, **extra))


class BrokerUnreachable(Exception):
    """No bootstrap server answered; the message names each address and its cause."""


class BadAddress(BrokerUnreachable):
    """A bootstrap address that is not HOST:PORT."""


class TLSFailure(BrokerUnreachable):
    """The TLS handshake failed: unknown CA, wrong host name, no TLS on that port, ..."""


class AuthFailure(BrokerUnreachable):
    """The broker refused our credentials (SASL, or the client certificate)."""


# OpenSSL's verify codes (X509_V_ERR_*) and what they mean to someone connecting to Kafka
_UNKNOWN_CA = {2, 18, 19, 20, 21}
_WRONG_HOST = {62, 64}
_EXPIRED = {9, 10}


def tls_reason(exc: ssl.SSLError, host: str) -> str:
    """One phrase for a failed handshake, naming the cause and the setting that fixes it."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        code, detail = exc.verify_code, exc.verify_message
        if code in _UNKNOWN_CA:
            return (f"unknown CA: the broker's certificate is not signed by a CA this client trusts ({detail}); "
                    "set ssl.ca.location to the CA's PEM file")
        if code in _WRONG_HOST:
            return (f"wrong host name: the broker's certificate is not valid for {host!r} ({detail}); connect "
                    "with a name the certificate lists")
        if code in _EXPIRED:
            return f"the broker's certificate is expired or not yet valid ({detail})"
        return f"the broker's certificate was refused ({detail})"
    reason = exc.reason or str(exc)
    if reason in ("WRONG_VERSION_NUMBER", "PACKET_LENGTH_TOO_LONG", "RECORD_LAYER_FAILURE"):
        return "the broker does not answer TLS on this port (a PLAINTEXT listener?)"
    if "CERTIFICATE_REQUIRED" in reason or "HANDSHAKE_FAILURE" in reason or "UNKNOWN_CA" in reason:
        return (f"the broker refused the handshake ({reason}): it may require a client certificate it trusts "
                "(ssl.certificate.location, ssl.key.location)")
    return f"TLS handshake failed ({reason})"


# An ApiVersions v0 request (correlation id 1, client id "signalbox"): after the handshake
# it makes a broker that refuses our client certificate say so (TLS 1.3 tells the client
# only at its first read).
_API_VERSIONS = bytes.fromhex("00000013" "0012" "0000" "00000001" "0009") + b"signalbox"


def tls_probe(conn: KafkaConnection, host: str, port: int, timeout: float) -> str | None:
    """Why TLS with host:port fails, with the connection's CA and certificate (None: it works)."""
    context = conn.ssl_context()
    assert context is not None
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock, \
                context.wrap_socket(sock, server_hostname=host) as tls:
            tls.sendall(_API_VERSIONS)
            if not tls.recv(4):
                return ("the broker closed the connection after the TLS handshake: it may require a client "
                        "certificate it trusts (ssl.certificate.location, ssl.key.location)")
            return None
    except ssl.SSLError as exc:
        return tls_reason(exc, host)
    except ConnectionRefusedError:
        return None  # not a TLS matter: reported as an unreachable address
    except TimeoutError:
        return f"no TLS answer within {timeout:g}s (a PLAINTEXT listener?)"
    except OSError as exc:  # reset during the handshake
        return f"TLS handshake failed ({exc.strerror or exc or type(exc).__name__})"


def classify(code: int, text: str, conn: KafkaConnection, where: str) -> BrokerUnreachable | None:
    """A librdkafka error (error_cb, KafkaError) as TLSFailure or AuthFailure; None otherwise."""
    if code == KafkaError._SSL:
        return TLSFailure(f"TLS failure at {where}: {text}")
    if code == KafkaError._AUTHENTICATION:
        return AuthFailure(f"authentication failed at {where} ({conn.who()}): {text}")
    return None


def _host_port(address: str) -> tuple[str, int]:
    address = address.strip().split("://", 1)[-1]
    host, sep, port = address.rpartition(":")
    if not sep or "]" in port:  # no port (or a bare IPv6 address)
        host, port = address, str(DEFAULT_PORT)
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        raise BadAddress(f"bootstrap server {address!r} is not HOST:PORT") from None


def _probe(host: str, port: int, timeout: float) -> str | None:
    """Why a TCP connection to host:port fails (None: it connects)."""
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return f"unresolvable ({exc.strerror})"
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except ConnectionRefusedError:
        return "connection refused"
    except TimeoutError:
        return f"timeout (no TCP answer within {timeout:g}s)"
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def check_broker(conn: KafkaConnection, timeout: float = 5.0) -> None:
    """Return when a bootstrap server answers a Kafka metadata request within ``timeout``;
    else raise BrokerUnreachable with one line: each address and why (unresolvable,
    connection refused, timeout), or TLSFailure (unknown CA, wrong host name, ...), or
    AuthFailure (credentials refused) -- at once, not after retries."""
    bootstrap = conn.bootstrap_servers
    addresses = [a.strip() for a in bootstrap.split(",") if a.strip()]
    if not addresses:
        raise BrokerUnreachable("no bootstrap servers given")
    causes = []
    for address in addresses:
        host, port = _host_port(address)
        cause = _probe(host, port, timeout)
        if cause is None and conn.uses_tls:
            tls = tls_probe(conn, host, port, timeout)
            if tls is not None:
                raise TLSFailure(f"TLS failure at {address}: {tls}")
        if cause is None:
            break
        causes.append(f"{address}: {cause}")
    else:
        raise BrokerUnreachable(f"cannot reach Kafka at {'; '.join(causes)}")
    failures: list[BrokerUnreachable] = []

    def on_error(err: KafkaError) -> None:
        failure = classify(err.code(), err.str(), conn, bootstrap)
        if failure is not None:
            failures.append(failure)

    probe = admin(conn, error_cb=on_error)
    deadline = time.monotonic() + timeout
    while True:  # short requests, so a TLS or SASL failure ends the wait at once
        try:
            probe.list_topics(timeout=min(0.5, max(deadline - time.monotonic(), 0.01)))
            return
        except KafkaException as exc:
            error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            failure = classify(error.code(), error.str(), conn, bootstrap) if error is not None else None
            if failure is not None:
                failures.append(failure)
        probe.poll(0)  # serve error_cb
        if failures:
            raise failures[0]
        if time.monotonic() >= deadline:
            raise BrokerUnreachable(f"cannot reach Kafka at {bootstrap}: timeout (no Kafka answer within "
                                    f"{timeout:g}s)")


def producer(conn: KafkaConnection, **extra: object) -> Producer:
    return Producer(config(conn, partitioner="murmur2_random", **{"linger.ms": 5, **extra}))


def produce_all(conn: KafkaConnection, records: list[tuple[str, bytes | None, bytes | None]], timeout: float = 30.0,
                headers: list[tuple[str, bytes]] | None = None) -> None:
    """Produce (topic, key, value) records and wait until every one is acknowledged."""
    errors: list[str] = []
    client_errors: list[str] = []
    p = producer(conn, error_cb=lambda err: client_errors.append(str(err.str())))

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(f"{msg.topic()}: {err}")

    for topic, key, value in records:
        p.produce(topic, key=key, value=value, headers=headers, on_delivery=on_delivery)
        p.poll(0)
    remaining = p.flush(timeout)
    if remaining or errors:
        reasons = errors or client_errors[-1:] or [f"no acknowledgement within {timeout:g}s"]
        raise KafkaException(f"{remaining or len(errors)} record(s) not delivered: {'; '.join(reasons)}")


def _consumer(conn: KafkaConnection, **extra: object) -> Consumer:
    """A consumer of its own group (never committed), reading from partitions' ends or EOF."""
    return Consumer(config(conn, **{
        "group.id": f"signalbox-cli-{uuid.uuid4()}",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "fetch.wait.max.ms": 50,
        **extra,
    }))


def _assign(consumer: Consumer, topic: str, offset: int, timeout: float) -> int:
    meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    if meta is None or meta.error is not None or not meta.partitions:
        raise KafkaException(f"topic {topic} does not exist")
    consumer.assign([TopicPartition(topic, p, offset) for p in meta.partitions])
    return len(meta.partitions)


def read_to_end(conn: KafkaConnection, topic: str, timeout: float = 30.0) -> list[Message]:
    """Every record of ``topic`` up to the end seen by fetches (not ListOffsets)."""
    consumer = _consumer(conn)
    try:
        pending = _assign(consumer, topic, OFFSET_BEGINNING, timeout)
        out: list[Message] = []
        at_end: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(at_end) < pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic}: no end reached within {timeout}s")
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    at_end.add(msg.partition())
                    continue
                raise KafkaException(msg.error())
            at_end.discard(msg.partition())
            out.append(msg)
        return out
    finally:
        consumer.close()


def latest_by_key(messages: list[Message]) -> dict[bytes, bytes | None]:
    """A compacted topic's view: the last value per key (None = tombstone)."""
    latest: dict[bytes, bytes | None] = {}
    for msg in messages:
        if msg.key() is not None:
            latest[msg.key()] = msg.value()
    return latest


def fetched_ends(conn: KafkaConnection, partitions: list[TopicPartition],
                 timeout: float = 10.0) -> list[TopicPartition]:
    """Each partition's end (the offset the next record gets) as a fetch reports it.

    The embedded broker's ListOffsets(LATEST) answers the newest batch's base offset + 1,
    ignoring the other records of a multi-record batch (faust_driver.fetched_highwaters
    corrects the same answer for the worker): fetch from just below the listed end and
    take the high watermark of that fetch's answer, never below the listed end."""
    probe = _consumer(conn)
    try:
        listed: dict[tuple[str, int], tuple[int, int]] = {}
        for tp in partitions:
            listed[(tp.topic, tp.partition)] = probe.get_watermark_offsets(tp, timeout=timeout)
        probe.assign([TopicPartition(t, p, max(high - 1, low)) for (t, p), (low, high) in listed.items()])
        answered: set[tuple[str, int]] = set()
        deadline = time.monotonic() + timeout
        while len(answered) < len(listed):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no fetch answer for {sorted(set(listed) - answered)} within {timeout}s")
            msg = probe.poll(0.1)
            if msg is None:
                continue
            if msg.error() and msg.error().code() != KafkaError._PARTITION_EOF:
                raise KafkaException(msg.error())
            answered.add((msg.topic(), msg.partition()))  # a record or the end: a fetch answered
        ends = []
        for (topic, partition), (_, listed_high) in listed.items():
            _, fetched_high = probe.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
            ends.append(TopicPartition(topic, partition, max(listed_high, fetched_high)))
        return ends
    finally:
        probe.close()


def follow(
    conn: KafkaConnection, topics: list[str], from_beginning: bool = False, timeout: float = 30.0,
    fetched_end: bool = False, on_assigned: Callable[[list[TopicPartition]], None] | None = None,
) -> Iterator[Message | None]:
    """Yield records of ``topics`` as they arrive, and None when idle for 0.2 s; forever.
    Without ``from_beginning``, from each partition's end; ``fetched_end`` takes that end
    from a fetch, not from ListOffsets (for the embedded broker: see fetched_ends)."""
    consumer = _consumer(conn, **{"enable.partition.eof": False})
    try:
        assignment = []
        for topic in topics:
            meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
            if meta is None or meta.error is not None:
                raise KafkaException(f"topic {topic} does not exist")
            start = OFFSET_BEGINNING if from_beginning else OFFSET_END
            assignment += [TopicPartition(topic, p, start) for p in meta.partitions]
        if fetched_end and not from_beginning:
            assignment = fetched_ends(conn, assignment, timeout)
        consumer.assign(assignment)
        if on_assigned is not None:
            on_assigned(assignment)
        while True:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error():
                raise KafkaException(msg.error())
            yield msg
    finally:
        consumer.close()
