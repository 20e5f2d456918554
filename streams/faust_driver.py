"""A Faust transport for the embedded broker (tansu), selected by the ``tansu://`` URL.

tansu holds every fetch for the client's full max wait even when data is there, and
Faust's aiokafka driver hard-codes ``fetch_max_wait_ms=1500``: a produce -> agent -> output
round trip then takes ~750 ms. This driver lowers the wait for its own consumers only;
against Apache Kafka (``kafka://``) Faust's stock driver is used unchanged.
"""

from __future__ import annotations

from typing import Any

import aiokafka
from faust.transport import drivers
from faust.transport.drivers import aiokafka as faust_aiokafka

EMBEDDED_FETCH_MAX_WAIT_MS = 10


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # Read by AIOKafkaConsumer.start() when it builds its fetcher.
        consumer._fetch_max_wait_ms = EMBEDDED_FETCH_MAX_WAIT_MS
        return consumer


class Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer


def register() -> None:
    drivers.TRANSPORTS.aliases.setdefault("tansu", f"{__name__}:Transport")
