"""The gateway's FastAPI application: one process, stateless, Kafka the only source of truth.

``create_app`` wires the routers of the other gateway modules; everything they share lives
on ``app.state``: ``settings`` (the worker's :class:`~streams.settings.Settings`: broker,
topics), ``gs`` (:class:`~streams.gateway.config.GatewaySettings`), ``topics``, ``auth``,
``producer`` (an :class:`~streams.kafka.async_producer.AsyncProducer`) and ``readmodel``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from streams.contracts import topics as topics_mod
from streams.gateway.auth import Authenticator
from streams.gateway.config import GatewaySettings
from streams.kafka.connection import kafka_of
from streams.settings import Settings


def create_app(settings: Settings, gs: GatewaySettings) -> FastAPI:
    from streams.gateway import api, ingest, metrics, pages, subscriptions
    from streams.gateway.readmodel import ReadModel
    from streams.kafka.async_producer import AsyncProducer

    topics = topics_mod.Topics.load(settings.topics_file, settings.topic_prefix)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        producer = AsyncProducer(kafka_of(settings))
        readmodel = ReadModel(settings, gs, topics)
        app.state.producer = producer
        app.state.readmodel = readmodel
        await readmodel.start()
        try:
            yield
        finally:
            await readmodel.stop()
            producer.close()

    app = FastAPI(
        title="signalbox gateway",
        version="0.1.0",
        description="Ingest events, manage handlers and listeners, read runs, subscribe to live streams.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.gs = gs
    app.state.topics = topics
    app.state.auth = Authenticator(gs)
    app.include_router(ingest.router)
    app.include_router(api.router)
    app.include_router(subscriptions.router)
    pages.mount(app)  # the dashboard: /ui, its static files, / redirects there
    subscriptions.hub_of(app)  # a bad exchanges file stops the gateway at start, not at the first connection
    metrics.install(app)  # GET /metrics, and every request counted
    return app
