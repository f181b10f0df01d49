"""Composition root: `python -m services.command`.

Migrates the schema and makes sure the topics exist before taking traffic. SIGTERM (and
Ctrl-C) stop accepting connections, let in-flight commands finish within the shutdown timeout,
flush the producer, and exit 0 — all of which aiohttp's run_app does — within 10 s, which is
what orchestrators commonly grant before SIGKILL.
"""

from __future__ import annotations

import asyncio
import logging
import signal

import uvloop
from aiohttp import web

from services.command.app import create_app
from shared import settings as settings_mod
from shared.db import migrate
from shared.kafka import ensure_topics, quiet_client_logs
from shared.logs import setup_json_logging
from shared.runtime import freeze_startup_heap

log = logging.getLogger("microblog.command")

# In-flight requests get this long to finish; the rest of the 10 s budget is for flushing the
# producer and closing the pool. A command still waiting for its ack after that is cancelled:
# its transaction rolls back and the client, which sees the connection close, may retry.
SHUTDOWN_TIMEOUT_S = 7.0
# After SIGTERM the listening socket closes at once, but aiohttp then closes every connection
# it sees as idle, which includes one whose request bytes sit unread in the kernel while the
# loop was busy (a group-commit flush, say): that client, which sent before the signal, gets a
# reset. This long between the two lets requests already sent be read and started, so they are
# drained like any other in-flight command.
READ_GRACE_S = 0.25


def main() -> None:
    setup_json_logging()
    quiet_client_logs()
    settings = settings_mod.load()
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    applied = loop.run_until_complete(migrate(settings.database_url))
    if applied:
        log.info("applied migrations: %s", ", ".join(applied))
    loop.run_until_complete(ensure_topics(settings))
    log.info("command service on %s (worker %d)", settings.command_url, settings.worker_id)
    loop.run_until_complete(
        serve(create_app(settings), settings.command_host, settings.command_port)
    )
    loop.close()


async def serve(app: web.Application, host: str, port: int) -> None:
    """run_app's lifecycle, plus READ_GRACE_S between closing the socket and closing idle
    connections; SIGTERM or SIGINT end it, and it returns normally (exit 0)."""
    runner = web.AppRunner(
        app, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT_S, access_log=None
    )
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
        freeze_startup_heap()
        await stop.wait()
        log.info("stopping: draining in-flight commands")
        await site.stop()
        await asyncio.sleep(READ_GRACE_S)
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    main()
