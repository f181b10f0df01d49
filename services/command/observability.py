"""Metrics, JSON logs and request ids of the command service.

Each app owns its Prometheus registry, so several apps in one process (tests) never collide.
Logs are one JSON object per line; every line written while a request is handled carries its
request id, which also travels into the event envelope (`requestid`), so one id follows a
command from the client through the log to the projector.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest

from services.command.resources import REQUEST_ID
from shared.logs import current_request_id

log = logging.getLogger("microblog.command.access")

# A client's request id is echoed into events and logs, so only short, inert ones are kept.
_SANE_REQUEST_ID: Final = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")

# Commands wait for the broker's ack (a few ms locally, more with replication); argon2 takes
# tens of ms on login and registration.
_LATENCY_BUCKETS: Final = (
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


class CommandMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Histogram(
            "microblog_command_request_seconds",
            "Time to answer an HTTP request, by route template and status.",
            ["route", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.produce = Histogram(
            "microblog_command_produce_seconds",
            "Time from producing an event to the broker's acknowledgement.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.events = Counter(
            "microblog_command_events_produced_total",
            "Events acknowledged by the broker, by type.",
            ["type"],
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "microblog_command_rate_limited_total",
            "Requests answered 429, by the limit that refused them.",
            ["scope"],
            registry=self.registry,
        )

    def middleware(self) -> Middleware:
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
                log.info(
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


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    given = request.headers.get("X-Request-Id", "")
    request_id = given if _SANE_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
    request[REQUEST_ID] = request_id
    # aiohttp runs each request in a task of its own, so the variable is the request's alone.
    current_request_id.set(request_id)
    response = await handler(request)
    response.headers["X-Request-Id"] = request_id
    return response


METRICS: Final = web.AppKey("metrics", CommandMetrics)
