"""`python -m services.query`: migrate, then serve the query API until SIGTERM/SIGINT.

With MB_QUERY_WORKERS=N (N > 1) this process only supervises: it starts N worker processes
that share the port (SO_REUSEPORT, the kernel spreads connections among them), forwards
SIGTERM/SIGINT to them and exits 0 once they all have; if one dies on its own, it stops the
others and exits non-zero so the orchestrator restarts the whole service.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from typing import Final

import uvloop

from services.query.app import create_app
from shared import runtime
from shared import settings as settings_mod
from shared.db import migrate
from shared.http import setup_logging

log = logging.getLogger("microblog.query")

WORKERS_ENV: Final = "MB_QUERY_WORKERS"
# Set by the supervisor in its workers' environment: serve on a shared port, don't migrate.
_WORKER_ENV: Final = "MB_QUERY_WORKER"
# One process by default: on 2 cores shared with PostgreSQL and the load generator, a second
# worker measured no better (home reads, closed loop, 32 in flight: 1 worker 635 and 625
# req/s, 2 workers 478 and 698 req/s, with a worse p99 at 400 req/s); on more cores, raise it.
DEFAULT_WORKERS: Final = 1


def serve(
    settings: settings_mod.Settings, loop: asyncio.AbstractEventLoop, shared_port: bool
) -> None:
    # SIGTERM and SIGINT end in a graceful shutdown (cleanup_ctx closes the pool) and return
    # normally, so the process exits 0.
    app = create_app(settings)
    log.info("query service on %s:%d", settings.query_host, settings.query_port)
    loop.run_until_complete(
        runtime.serve(
            app,
            settings.query_host,
            settings.query_port,
            reuse_port=shared_port,
            # SIGTERM must end the process within 10 s: open streams end in on_shutdown, other
            # requests get this long to finish.
            shutdown_timeout=5.0,
            # Slow clients: an idle keep-alive connection is closed after this long.
            keepalive_timeout=15.0,
        )
    )


def supervise(workers: int) -> int:
    env = {**os.environ, _WORKER_ENV: "1"}
    procs = [
        subprocess.Popen([sys.executable, "-m", "services.query"], env=env) for _ in range(workers)
    ]
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while any(p.poll() is None for p in procs):
        if not stopping and any(p.poll() is not None for p in procs):
            log.error("a query worker exited on its own; stopping the others")
            stop(signal.SIGTERM, None)
        time.sleep(0.2)
    # A worker still starting up when the signal came dies of it (its handlers weren't set
    # yet): it had nothing in flight, so that is a clean stop too.
    clean = (0, -signal.SIGTERM, -signal.SIGINT)
    return 0 if stopping and all(p.returncode in clean for p in procs) else 1


def main() -> None:
    setup_logging()
    settings = settings_mod.load()
    workers = int(os.environ.get(WORKERS_ENV) or DEFAULT_WORKERS)
    is_worker = os.environ.get(_WORKER_ENV) == "1"
    if not is_worker:
        asyncio.run(migrate(settings.database_url))
        if workers > 1:
            sys.exit(supervise(workers))
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    serve(settings, loop, shared_port=is_worker)


if __name__ == "__main__":
    main()
