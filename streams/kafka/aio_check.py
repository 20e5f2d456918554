"""Check, before a worker starts, that aiokafka (Faust's and the runner's client) can connect.

aiokafka logs a failed handshake and retries; Faust then retries forever. This check
connects once per bootstrap address the way those clients will (same TLS context, same
SASL mechanism and credentials), sends one metadata request, and turns a failure into
the one-line TLSFailure / AuthFailure / BrokerUnreachable of :mod:`streams.kafka.client`.
"""

from __future__ import annotations

import asyncio
import ssl

from aiokafka import errors
from aiokafka.conn import create_conn
from aiokafka.protocol.metadata import MetadataRequest

from streams.kafka.client import AuthFailure, BrokerUnreachable, TLSFailure, _host_port, tls_probe, tls_reason
from streams.kafka.connection import KafkaConnection

_AUTH_ERRORS = (errors.SaslAuthenticationFailed, errors.AuthenticationFailedError,
                errors.UnsupportedSaslMechanismError, errors.IllegalSaslStateError,
                errors.AuthenticationMethodNotSupported)


async def check(conn: KafkaConnection, timeout: float = 10.0) -> None:
    """Return once a bootstrap server answers a metadata request through aiokafka."""
    causes = []
    for address in (a.strip() for a in conn.bootstrap_servers.split(",") if a.strip()):
        host, port = _host_port(address)
        if conn.uses_tls:  # the same context aiokafka gets; names the cause, as for the CLI
            reason = await asyncio.to_thread(tls_probe, conn, host, port, timeout)
            if reason is not None:
                raise TLSFailure(f"TLS failure at {address}: {reason}")
        try:
            async with asyncio.timeout(timeout):
                connection = await create_conn(host, port, request_timeout_ms=int(timeout * 1000),
                                               **conn.aiokafka_auth())
                try:
                    await connection.send(MetadataRequest([]))
                finally:
                    connection.close()
            return
        except ssl.SSLError as exc:
            raise TLSFailure(f"TLS failure at {address}: {tls_reason(exc, host)}") from None
        except _AUTH_ERRORS as exc:
            raise AuthFailure(f"authentication failed at {address} ({conn.who()}): {exc}") from None
        except TimeoutError:
            causes.append(f"{address}: timeout (no Kafka answer within {timeout:g}s)")
        except (OSError, errors.KafkaError) as exc:
            cause = exc.__cause__ if isinstance(exc.__cause__, ssl.SSLError) else None
            if cause is not None:
                raise TLSFailure(f"TLS failure at {address}: {tls_reason(cause, host)}") from None
            causes.append(f"{address}: {exc}")
    raise BrokerUnreachable(f"cannot reach Kafka at {'; '.join(causes)}")
