"""Prometheus metrics, one registry per app (so several apps can live in one process).

With ``--workers N`` each worker process keeps its own counters: scrape each worker, or run
one worker per container (the usual deployment).
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Latency buckets (seconds) around the service's targets (p99 <= 10 ms).
_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """The service's counters and histograms."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("txanomaly_http_requests", "HTTP requests by route and status",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("txanomaly_http_request_seconds", "Request latency by route",
                                 ["route"], buckets=_BUCKETS, registry=self.registry)
        self.transactions = Counter("txanomaly_transactions",
                                    "Transactions by outcome (stored, replayed, scored, "
                                    "flagged)", ["outcome"], registry=self.registry)
        self.ready = Gauge("txanomaly_ready", "1 when the model and the database are ready",
                           registry=self.registry)

    def count(self, outcome: str, n: int = 1) -> None:
        if n:
            self.transactions.labels(outcome).inc(n)


class MetricsMiddleware:
    """Pure ASGI middleware: counts requests and times them by route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        # Stays unset only when no answer was sent: the client went away before its request
        # was read (errors.UnexpectedErrors answers every failure). 499 is nginx's name for it.
        status = [499]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route: Any = scope.get("route")
            name = getattr(route, "path", "other")  # not an API route: docs, 404s
            self.metrics.latency.labels(name).observe(time.perf_counter() - started)
            self.metrics.requests.labels(scope["method"], name, str(status[0])).inc()
