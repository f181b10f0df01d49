"""Composition root: `python -m services.command`.

Migrates the schema and makes sure the topics exist before taking traffic. SIGTERM (and
Ctrl-C) stop accepting connections, let in-flight commands finish within the shutdown timeout,
flush the producer, and exit 0 (shared.runtime.serve) within 10 s, which is
what orchestrators commonly grant before SIGKILL.
"""

from __future__ import annotations

import asyncio
import logging

import uvloop

from services.command.app import create_app
from shared import settings as settings_mod
from shared.db import migrate
from shared.kafka import ensure_topics, quiet_client_logs
from shared.logs import setup_json_logging
from shared.runtime import serve

log = logging.getLogger("microblog.command")

# In-flight requests get this long to finish; the rest of the 10 s budget is for flushing the
# producer and closing the pool. A command still waiting for its ack after that is cancelled:
# its transaction rolls back and the client, which sees the connection close, may retry.
SHUTDOWN_TIMEOUT_S = 7.0


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
        serve(
            create_app(settings),
            settings.command_host,
            settings.command_port,
            shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        )
    )
    loop.close()


if __name__ == "__main__":
    main()
