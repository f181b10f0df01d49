"""Composition root: `python -m services.projector` runs the projector.

Besides the consumer loop it serves /healthz, /readyz and /metrics on MB_PROJECTOR_PORT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

import uvloop
from aiohttp import web

from services.projector.runner import Projector
from shared.db import create_pool, migrate
from shared.http import healthz, json_response, setup_logging
from shared.kafka import ensure_topics
from shared.settings import Settings, load

log = logging.getLogger("microblog.projector")

PROJECTOR = web.AppKey("projector", Projector)


async def readyz(request: web.Request) -> web.Response:
    projector = request.app[PROJECTOR]
    try:
        async with projector.pool.acquire(timeout=2) as conn:
            await conn.fetchval("SELECT 1")
    except Exception:
        return json_response({"status": "database unavailable"}, status=503)
    consumer = projector.consumer
    if consumer is None or not consumer.assignment():
        return json_response({"status": "waiting for partition assignment"}, status=503)
    return json_response({"status": "ready", "partitions": sorted(projector.epochs)})


async def metrics(request: web.Request) -> web.Response:
    s = request.app[PROJECTOR].stats
    lines = [
        "# TYPE microblog_projector_events_applied_total counter",
        f"microblog_projector_events_applied_total {s.events_applied}",
        "# TYPE microblog_projector_batches_total counter",
        f"microblog_projector_batches_total {s.batches}",
        "# TYPE microblog_projector_timeline_rows_total counter",
        f"microblog_projector_timeline_rows_total {s.timeline_rows}",
        "# TYPE microblog_projector_dead_letters_total counter",
        f"microblog_projector_dead_letters_total {s.dead_letters}",
        "# TYPE microblog_projector_fenced_batches_total counter",
        f"microblog_projector_fenced_batches_total {s.fenced}",
    ]
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")


async def serve(settings: Settings) -> None:
    await migrate(settings.database_url)
    await ensure_topics(settings)
    pool = await create_pool(settings.database_url, min_size=1, max_size=4)
    projector = Projector(settings, pool)
    app = web.Application()
    app[PROJECTOR] = projector
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.projector_host, settings.projector_port)
    await site.start()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, projector.stop)
    try:
        await projector.run()
    finally:
        await runner.cleanup()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pool.close(), 5)
    log.info("projector stopped")


def main(argv: list[str]) -> int:
    setup_logging()
    command = argv[1] if len(argv) > 1 else "run"
    if command != "run":
        print(f"unknown command {command!r}; usage: python -m services.projector [run]")
        return 2
    uvloop.run(serve(load()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
