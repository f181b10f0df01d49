"""Composition root: `python -m services.command`.

Migrates the schema and makes sure the topics exist before taking traffic. SIGTERM (and
Ctrl-C) stop accepting connections, let in-flight commands finish within the shutdown timeout,
flush the producer, and exit 0 — all of which aiohttp's run_app does.
"""

from __future__ import annotations

import asyncio
import logging

import uvloop
from aiohttp import web

from services.command.app import create_app
from shared import settings as settings_mod
from shared.db import migrate
from shared.http import setup_logging
from shared.kafka import ensure_topics

log = logging.getLogger("microblog.command")

# Longer than the produce timeout, so a command waiting for its ack still gets its answer.
SHUTDOWN_TIMEOUT_S = 15.0


def main() -> None:
    setup_logging()
    settings = settings_mod.load()
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    applied = loop.run_until_complete(migrate(settings.database_url))
    if applied:
        log.info("applied migrations: %s", ", ".join(applied))
    loop.run_until_complete(ensure_topics(settings))
    log.info("command service on %s (worker %d)", settings.command_url, settings.worker_id)
    web.run_app(
        create_app(settings),
        host=settings.command_host,
        port=settings.command_port,
        shutdown_timeout=max(SHUTDOWN_TIMEOUT_S, settings.produce_timeout_s + 5),
        access_log=None,
        print=None,
        loop=loop,
    )


if __name__ == "__main__":
    main()
