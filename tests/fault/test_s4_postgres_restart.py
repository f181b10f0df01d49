"""Scenario 4: PostgreSQL restarts under load. The projector reconnects and catches up on its
own; the query service answers 503 while the database is away (not 500, not a hang) and serves
again afterwards without a restart; posts keep the history's guarantees."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from tests.fault.conftest import FaultStack
from tests.fault.harness import (
    client_session,
    follow,
    post_counts,
    read_loop,
    register,
    stream_posts,
    wait_caught_up,
)
from tests.fault.history import History, check

pytestmark = pytest.mark.fault

READ_TIMEOUT_S = 10.0


async def test_postgres_restart_under_load(fault_stack: FaultStack, report: list[str]) -> None:
    s = fault_stack.settings
    pg = fault_stack.infra.postgres
    command = fault_stack.service("command")
    projector = fault_stack.service("projector")
    query = fault_stack.service("query")
    for svc in (command, projector, query):
        svc.start()
    query_pid = query.proc.pid if query.proc else None

    history = History()
    stop = asyncio.Event()
    async with client_session(READ_TIMEOUT_S) as http:
        authors = [await register(http, command.url, f"s4_author_{i}") for i in range(3)]
        reader = await register(http, command.url, "s4_reader")
        for a in authors:
            await follow(http, command.url, reader, a)
        writes = asyncio.create_task(stream_posts(http, command.url, authors, history, "s4", stop))
        reads = asyncio.create_task(read_loop(http, query.url, reader, stop))
        await asyncio.sleep(2.0)
        await asyncio.to_thread(pg.stop)
        down_from = time.monotonic()
        await asyncio.sleep(3.0)
        down_until = time.monotonic()
        await asyncio.to_thread(fault_stack.infra.restart_postgres)
        up_at = time.monotonic()
        await asyncio.sleep(4.0)
        stop.set()
        await writes
        done_reads = await reads

    # Report first, assert after: the summary line is wanted even when a service died.
    died = [svc.name for svc in (command, projector, query) if not svc.alive]
    behind: AssertionError | None = None
    if projector.alive:
        try:
            await wait_caught_up(s, 60)
        except AssertionError as exc:
            behind = exc
    conn = await asyncpg.connect(s.database_url)
    try:
        seen = await post_counts(conn, "s4 ")
    finally:
        await conn.close()
    verdict = check(history.outcomes(), seen)
    during = [r for r in done_reads if down_from <= r.started and r.started < down_until]
    after = [r for r in done_reads if r.started > up_at + 1.0]
    statuses = sorted({r.status or 0 for r in during})
    report.append(
        verdict.summary(4)
        + f" reads_during_outage={len(during)} statuses_during={statuses}"
        + f" reads_ok_after={sum(r.status == 200 for r in after)}/{len(after)}"
        + (f" died={died}" if died else "")
    )
    print(report[-1])

    assert not died, f"{died} died during the outage:\n{fault_stack.log_tails()}"
    assert behind is None, behind
    assert verdict.valid, verdict
    assert during, "no read was sent while PostgreSQL was down"
    wrong = [r for r in during if r.status != 503]
    assert not wrong, f"query answers while PostgreSQL was down, other than 503: {wrong[:5]}"
    assert after and all(r.status == 200 for r in after), f"after the restart: {after[:5]}"
    assert query.proc is not None and query.proc.pid == query_pid
