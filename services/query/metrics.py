"""Prometheus metrics of one query-service app (DESIGN.md §5: every service has /metrics).

Each app owns its registry, so several apps in one process (tests) never collide on names.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest

# Timeline reads are expected in the low milliseconds; consistency waits up to the timeout.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class QueryMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Histogram(
            "microblog_query_request_seconds",
            "Time to answer an HTTP request, by route and status.",
            ["route", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.consistency_waits = Counter(
            "microblog_query_consistency_waits_total",
            "Requests that carried X-Consistency-Position, by outcome (reached or timeout).",
            ["outcome"],
            registry=self.registry,
        )

    def middleware(self) -> Any:
        @web.middleware
        async def measure(request: web.Request, handler: Any) -> web.StreamResponse:
            started = time.perf_counter()
            status = 500
            try:
                response: web.StreamResponse = await handler(request)
                status = response.status
                return response
            except web.HTTPException as exc:
                status = exc.status
                raise
            finally:
                resource = request.match_info.route.resource
                # Route templates, never raw paths: ids in paths would explode label cardinality.
                route = resource.canonical if resource is not None else "unmatched"
                self.requests.labels(route, str(status)).observe(time.perf_counter() - started)

        return measure

    async def handle(self, _request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )
