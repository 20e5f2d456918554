"""A TLS terminator for the tests: TLS on a loopback port, plaintext to the broker behind it.

The embedded broker (tansu) answers plaintext only, so the TLS tests put this in front of
it, advertise this proxy's address, and every client (CLI, worker, the tests' own) then
talks TLS, as it would to Amazon MSK, Confluent Cloud or Strimzi. It runs an asyncio loop
in a thread of the test process; no system package needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from types import TracebackType

from streams.kafka.broker import free_port


class TLSProxy:
    def __init__(self, upstream: tuple[str, int], context: ssl.SSLContext, port: int | None = None) -> None:
        self.upstream, self.context = upstream, context
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.handshakes = 0  # connections whose TLS handshake succeeded
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"tls-proxy-{self.port}", daemon=True)
        self._server: asyncio.Server | None = None

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.handshakes += 1
        try:
            broker_reader, broker_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(self._pipe(client_reader, broker_writer), self._pipe(broker_reader, client_writer))

    async def _start(self) -> None:
        # failed handshakes (the tests' clients without the CA) are expected: not logged
        self._loop.set_exception_handler(lambda loop, context: None)
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, ssl=self.context,
                                                  ssl_handshake_timeout=10)

    def start(self) -> TLSProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
                for task in asyncio.all_tasks():
                    if task is not asyncio.current_task():
                        task.cancel()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    def __enter__(self) -> TLSProxy:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
