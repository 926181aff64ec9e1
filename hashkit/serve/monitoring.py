"""Prometheus metrics of the service (``GET /metrics``), in a registry of its own, and the ASGI
middleware that counts and times every request by route."""

from __future__ import annotations

import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.routing import Mount

_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ServiceMetrics:
    """Requests, errors and latency by route; index size and reloads; queries per batch."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "hashkit_http_requests",
            "HTTP requests answered, by route, method and status.",
            ["route", "method", "status"],
            registry=r,
        )
        self.errors = Counter(
            "hashkit_http_errors",
            "HTTP requests answered with a 4xx or 5xx status, by route and status.",
            ["route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "hashkit_http_request_duration_seconds",
            "Time from request to response, by route.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queries = Counter(
            "hashkit_search_queries", "Queries searched, by kind (code or image).", ["kind"],
            registry=r,
        )  # fmt: skip
        self.batch_queries = Histogram(
            "hashkit_search_batch_queries",
            "Queries searched together in one batch.",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.index_codes = Gauge("hashkit_index_codes", "Codes in the index served.", registry=r)
        self.store_codes = Gauge("hashkit_store_codes", "Codes in its code store.", registry=r)
        self.index_version = Gauge(
            "hashkit_index_version", "Snapshots loaded since start (1 = the first).", registry=r
        )
        self.reloads = Counter(
            "hashkit_index_reloads", "New index snapshots swapped in.", registry=r
        )
        self.reload_failures = Counter(
            "hashkit_index_reload_failures",
            "Changed index files that could not be loaded (the old snapshot stays).",
            registry=r,
        )

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        if status >= 400:
            self.errors.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def observe_snapshot(self, snapshot) -> None:
        self.index_codes.set(snapshot.count)
        self.store_codes.set(len(snapshot.ids))
        self.index_version.set(snapshot.version)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def route_label(scope) -> str:
    """The route template that answered a request (``/api/items/{item_id}``, ``/docs``), the
    path of the mount whose app answered it (``/static``), or ``other`` when nothing matched."""
    route = scope.get("route")
    if route is not None:
        return route.path
    # Only FastAPI's own routes put themselves in the scope; Starlette's routes (the OpenAPI
    # pages) and mounts leave just their endpoint, the function or the mounted app.
    endpoint = scope.get("endpoint")
    if endpoint is not None and "app" in scope:
        for route in scope["app"].routes:
            if endpoint is (
                route.app if isinstance(route, Mount) else getattr(route, "endpoint", None)
            ):
                return route.path
    return "other"


class MetricsMiddleware:
    """Pure ASGI middleware (no per-request task or body copy): times each HTTP request and
    records it under its route (:func:`route_label`), or ``other`` for paths no route matched,
    so that arbitrary URLs cannot grow the metrics."""

    def __init__(self, app, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_and_record_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record_status)
        finally:
            self.metrics.observe_request(
                route_label(scope), scope["method"], status, time.perf_counter() - start
            )
