"""Prometheus metrics every HTTP service shares (DESIGN.md §5: every service has /metrics).

Each app owns its registry, so several apps in one process (tests) never collide on names.
A service subclasses `ServiceMetrics` to add its own series to `self.registry`.
"""

from __future__ import annotations

import logging
import time
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram
from prometheus_client.exposition import generate_latest

# Reads take low milliseconds; commands wait for the broker's ack (more with replication);
# argon2 takes tens of ms on login; consistency waits run up to their timeout.
LATENCY_BUCKETS: Final = (
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


# MB_ACCESS_LOG: which answers get an access-log line. "errors" (the default) logs every 4xx
# and 5xx answer and every answer slower than SLOW_REQUEST_S; "all" logs every request. A JSON
# line per request cost ~9 % of the command service's CPU at its maximum POST rate (py-spy),
# and /metrics already counts every answer by route, status and latency.
ACCESS_LOG_MODES: Final = ("errors", "all", "off")
SLOW_REQUEST_S: Final = 1.0


class ServiceMetrics:
    """The request-latency histogram `microblog_<service>_request_seconds` and /metrics."""

    def __init__(self, service: str, access_log: logging.Logger | None = None) -> None:
        self.registry = CollectorRegistry()
        self.requests = Histogram(
            f"microblog_{service}_request_seconds",
            "Time to answer an HTTP request, by route template and status.",
            ["route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._access_log = access_log

    def middleware(self, access_log: str = "all") -> Middleware:
        """Time every request; log it to the access log as `access_log` says (see
        ACCESS_LOG_MODES)."""
        if access_log not in ACCESS_LOG_MODES:
            raise ValueError(f"access_log must be one of {ACCESS_LOG_MODES}, not {access_log!r}")
        logger = self._access_log if access_log != "off" else None
        every = access_log == "all"

        @web.middleware
        async def measure(request: web.Request, handler: Handler) -> web.StreamResponse:
            started = time.perf_counter()
            status = 500
            try:
                response = await handler(request)
                status = response.status
                return response
            except web.HTTPException as exc:
                status = exc.status
                raise
            finally:
                elapsed = time.perf_counter() - started
                resource = request.match_info.route.resource
                # Route templates, never raw paths: ids in paths would explode label cardinality.
                route = resource.canonical if resource is not None else "unmatched"
                self.requests.labels(route, str(status)).observe(elapsed)
                if logger is not None and (every or status >= 400 or elapsed >= SLOW_REQUEST_S):
                    logger.info(
                        "request",
                        extra={
                            "method": request.method,
                            "route": route,
                            "status": status,
                            "duration_ms": round(elapsed * 1000, 3),
                        },
                    )

        return measure

    async def handle(self, _request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )
