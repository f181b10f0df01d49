"""Scenario 3: the Kafka broker stops and restarts under a stream of posts. Every acknowledged
post is visible exactly once, a refused one never, an unknown one at most once; while the
broker is down the command service refuses with 503 within its produce timeout, never hangs."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from tests.fault.conftest import FaultStack
from tests.fault.harness import (
    client_session,
    post_counts,
    register,
    stream_posts,
    wait_caught_up,
)
from tests.fault.history import History, Outcome, check

pytestmark = pytest.mark.fault

PRODUCE_TIMEOUT_S = 3.0
# Scheduling on a busy 2-core machine, the connection and the answer itself.
SLACK_S = 3.0


async def test_kafka_restart_under_posts(fault_stack: FaultStack, report: list[str]) -> None:
    s = fault_stack.settings
    kafka = fault_stack.infra.kafka
    command = fault_stack.service("command", MB_PRODUCE_TIMEOUT_S=str(PRODUCE_TIMEOUT_S))
    projector = fault_stack.service("projector")
    command.start()
    projector.start()

    history = History()
    stop = asyncio.Event()
    # The client gives up well after the service promised to answer: a hang shows as unknown.
    async with client_session(PRODUCE_TIMEOUT_S + 3 * SLACK_S) as http:
        authors = [await register(http, command.url, f"s3_author_{i}") for i in range(6)]
        load = asyncio.create_task(stream_posts(http, command.url, authors, history, "s3", stop))
        await asyncio.sleep(2.0)
        await asyncio.to_thread(kafka.stop)
        down_from = time.monotonic()
        await asyncio.sleep(4.0)
        down_until = time.monotonic()
        await asyncio.to_thread(fault_stack.infra.restart_kafka)
        up_at = time.monotonic()
        # Go on until a post sent after the restart is acknowledged (bounded: a producer that
        # never recovers fails the assertion below instead of hanging here).
        for _ in range(75):
            if _acked_after(history, up_at):
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)
        stop.set()
        await load

    assert projector.alive and command.alive, fault_stack.log_tails()
    await wait_caught_up(s, 60)
    conn = await asyncpg.connect(s.database_url)
    try:
        seen = await post_counts(conn, "s3 ")
    finally:
        await conn.close()
    verdict = check(history.outcomes(), seen)
    during = history.within(down_from, down_until + PRODUCE_TIMEOUT_S + SLACK_S)
    during = [a for a in during if a.started < down_until]
    slowest = max((a.latency_s for a in during), default=0.0)
    report.append(
        verdict.summary(3) + f" during_outage={len(during)} slowest_during={slowest:.1f}s"
    )
    print(report[-1])

    assert verdict.valid, verdict
    assert history.keys(Outcome.OK), "no post was acknowledged at all"
    assert during, "no request was sent while the broker was down"
    refused = [a for a in during if a.status != 503]
    assert not refused, f"while Kafka was down, answers other than 503: {refused[:5]}"
    assert slowest <= PRODUCE_TIMEOUT_S + SLACK_S, f"a request took {slowest:.1f}s"
    assert _acked_after(history, up_at), (
        "no post sent after the broker came back was acknowledged within 15 s"
    )


def _acked_after(history: History, t: float) -> bool:
    return any(a.started > t and a.outcome is Outcome.OK for a in history.attempts)
