"""Scenario 1: SIGKILL the projector five times at random moments of a replay of more than
10 K events; the read models must come out identical to a clean, undisturbed projection."""

from __future__ import annotations

import asyncio
import random

import asyncpg
import pytest

from tests.fault.conftest import FaultStack
from tests.fault.harness import (
    check_events,
    produce,
    projected,
    synthetic_log,
    wait_caught_up,
)

pytestmark = pytest.mark.fault

KILLS = 5


async def test_projector_sigkilled_during_replay_matches_clean_rebuild(
    fault_stack: FaultStack, report: list[str]
) -> None:
    s = fault_stack.settings
    events = synthetic_log(
        seed=1, users=150, follows=1200, posts=8600, unfollows=100, deletes=100, blocks=20
    )
    assert len(events) >= 10_000
    await produce(s, events)
    total = len(events)

    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    mid_replay = 0
    watch = await asyncpg.connect(s.database_url)
    try:
        for i in range(KILLS):
            # A SIGKILLed member stays in its consumer group until its session times out (10 s);
            # the projector keeps its positions in PostgreSQL, not in the group, so each
            # restart joins a group of its own and resumes at once from the stored offsets.
            projector = fault_stack.service(
                "projector", f"projector-{i}", MB_PROJECTOR_GROUP=f"{s.projector_group}_{i}"
            )
            projector.spawn()
            await asyncio.to_thread(projector.wait_ready, 60)
            # Ready means its partitions are claimed and the replay runs. Odd rounds let the
            # instance commit a batch first, so later rounds resume from stored offsets > 0;
            # even rounds kill it within its first batch.
            if i % 2:
                before = sum((await projected(watch, s.topic)).values())
                deadline = asyncio.get_running_loop().time() + 30
                while sum((await projected(watch, s.topic)).values()) == before < total:
                    assert asyncio.get_running_loop().time() < deadline, "no progress"
                    await asyncio.sleep(0.02)
                await asyncio.sleep(rng.uniform(0.0, 0.3))
            else:
                await asyncio.sleep(rng.uniform(0.0, 0.5))
            assert projector.alive, f"projector-{i} died by itself:\n{fault_stack.log_tails()}"
            projector.kill()
            if sum((await projected(watch, s.topic)).values()) < total:
                mid_replay += 1
    finally:
        await watch.close()

    final = fault_stack.service(
        "projector", "projector-final", MB_PROJECTOR_GROUP=f"{s.projector_group}_final"
    )
    final.start()
    await wait_caught_up(s, 60)
    assert final.stop() == 0

    differing = await fault_stack.differences_from_clean_rebuild()
    verdict = await check_events(s.database_url, events)
    report.append(
        verdict.summary(1) + f" events={total} kills={KILLS} mid_replay={mid_replay} seed={seed}"
    )
    print(report[-1])

    assert not differing, f"read models differ from a clean rebuild: {differing}"
    assert verdict.valid, verdict
