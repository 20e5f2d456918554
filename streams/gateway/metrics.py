"""The gateway's Prometheus metrics, served at ``GET /metrics`` on the gateway's own port.

One registry per app (``app.state.metrics``), so two apps in one process do not collide.
Labels are bounded: a route is its template (``/handlers/{handler_id}``, never the id;
``unmatched`` for a path no route serves), a method, a status code, a transport. The
README lists every metric.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    disable_created_metrics,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

TRANSPORTS = ("websocket", "sse")
UNMATCHED = "unmatched"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})  # any other: "other"

disable_created_metrics()  # no *_created series: half the output, and nothing reads them


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.requests = Counter("signalbox_gateway_requests", "HTTP requests answered, by route, method and status",
                                ["route", "method", "status"], registry=r)
        self.ingested = Counter("signalbox_gateway_ingested_events",
                                "Events POST /events put on the events topic (acknowledged by the broker)", registry=r)
        self.open = Gauge("signalbox_gateway_open_subscriptions", "Live subscriptions open now, by transport",
                          ["transport"], registry=r)
        self.messages = Counter("signalbox_gateway_subscription_messages",
                                "Messages sent to subscribers, by transport", ["transport"], registry=r)
        self.replayed = Counter("signalbox_gateway_replayed_messages",
                                "Messages sent to subscribers that were on the topic before their binding was made "
                                "(a since= in the past), by transport", ["transport"], registry=r)
        for transport in TRANSPORTS:
            self.open.labels(transport)
            self.messages.labels(transport)
            self.replayed.labels(transport)
        self.ingested.inc(0)
        self._children: dict[tuple[str, str, int], Any] = {}

    def prepare(self, app: FastAPI) -> None:
        """Create each route's series for its success status at 0 (the routes of the OpenAPI
        schema, built here without touching the app's cached one)."""
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        for path, operations in schema.get("paths", {}).items():
            for method, operation in operations.items():
                for status in operation.get("responses", {}):
                    if str(status).startswith("2"):
                        self.requests.labels(path, method.upper(), str(status))

    def request(self, route: str, method: str, status: int) -> None:
        """Count one answer; the labels are bounded: routes x 8 methods x status codes."""
        key = (route, method, status)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.requests.labels(route, method if method in METHODS else "other",
                                                                str(status))
        child.inc()


def metrics_of(app: Any) -> GatewayMetrics:
    metrics = getattr(app.state, "metrics", None)
    if metrics is None:
        metrics = app.state.metrics = GatewayMetrics()
    return metrics


class RequestMetrics:
    """ASGI middleware: counts each HTTP request by route template, method and status, when
    its response starts (a stream, SSE, is counted as it opens)."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        counted = False

        def count(status: int) -> None:
            nonlocal counted
            counted = True
            route = scope.get("route")
            self.metrics.request(getattr(route, "path", None) or UNMATCHED, scope["method"], status)

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not counted:
                count(int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        except BaseException:
            if not counted:
                count(500)
            raise


async def serve_metrics(request: Request) -> Response:
    """``GET /metrics``: the Prometheus text format; no token needed (counts only)."""
    return Response(generate_latest(metrics_of(request.app).registry), media_type=CONTENT_TYPE_LATEST)


def install(app: FastAPI) -> GatewayMetrics:
    metrics = metrics_of(app)
    app.add_middleware(RequestMetrics, metrics=metrics)
    metrics.prepare(app)
    app.add_api_route("/metrics", serve_metrics, methods=["GET"], include_in_schema=False)
    metrics.requests.labels("/metrics", "GET", "200")
    return metrics
