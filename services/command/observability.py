"""Metrics, JSON logs and request ids of the command service.

Each app owns its Prometheus registry, so several apps in one process (tests) never collide.
Logs are one JSON object per line; every line written while a request is handled carries its
request id, which also travels into the event envelope (`requestid`), so one id follows a
command from the client through the log to the projector.
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import Counter, Histogram

from services.command.resources import REQUEST_ID
from shared.logs import current_request_id
from shared.metrics import LATENCY_BUCKETS, ServiceMetrics

log = logging.getLogger("microblog.command.access")

# A client's request id is echoed into events and logs, so only short, inert ones are kept.
_SANE_REQUEST_ID: Final = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")


class CommandMetrics(ServiceMetrics):
    def __init__(self) -> None:
        super().__init__("command", access_log=log)
        self.produce = Histogram(
            "microblog_command_produce_seconds",
            "Time from producing an event to the broker's acknowledgement.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.events = Counter(
            "microblog_command_events_produced_total",
            "Events acknowledged by the broker, by type.",
            ["type"],
            registry=self.registry,
        )
        self.post_batch = Histogram(
            "microblog_command_post_batch_size",
            "Posts recorded and produced together by one group commit (post_batch.py).",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "microblog_command_rate_limited_total",
            "Requests answered 429, by the limit that refused them.",
            ["scope"],
            registry=self.registry,
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
