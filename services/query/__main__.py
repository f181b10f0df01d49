"""`python -m services.query`: migrate, then serve the query API until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging

import uvloop
from aiohttp import web

from services.query.app import create_app
from shared import settings as settings_mod
from shared.db import migrate
from shared.http import setup_logging

log = logging.getLogger("microblog.query")


def main() -> None:
    setup_logging()
    settings = settings_mod.load()
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(migrate(settings.database_url))
    # run_app turns SIGTERM and SIGINT into a graceful shutdown (cleanup_ctx closes the pool)
    # and returns normally, so the process exits 0.
    web.run_app(
        create_app(settings),
        host=settings.query_host,
        port=settings.query_port,
        loop=loop,
        print=log.info,
        # SIGTERM must end the process within 10 s: open streams end in on_shutdown, other
        # requests get this long to finish.
        shutdown_timeout=5.0,
        # Slow clients: an idle keep-alive connection is closed after this long.
        keepalive_timeout=15.0,
    )


if __name__ == "__main__":
    main()
