"""Scenario 2: two projector processes share a consumer group; one is SIGKILLed mid-batch and a
third joins, forcing rebalances while events keep arriving. The read models must come out
identical to a clean projection (fencing and stored offsets, invariant 3)."""

from __future__ import annotations

import asyncio
import random

import pytest

from tests.fault.conftest import FaultStack
from tests.fault.harness import (
    check_events,
    produce,
    progress,
    synthetic_log,
    wait_caught_up,
    wait_progress_beyond,
)

pytestmark = pytest.mark.fault


async def test_projectors_in_one_group_survive_a_kill_and_rebalances(
    fault_stack: FaultStack, report: list[str]
) -> None:
    s = fault_stack.settings
    events = synthetic_log(
        seed=2,
        users=100,
        follows=600,
        posts=3500,
        unfollows=50,
        deletes=50,
        blocks=10,
        replies=700,
    )
    cut = len(events) * 3 // 5
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)

    first = fault_stack.service("projector", "projector-a")
    second = fault_stack.service("projector", "projector-b")
    first.spawn()
    second.spawn()
    # Both ready: each holds a share of the partitions after the group's first rebalance.
    await asyncio.gather(
        asyncio.to_thread(first.wait_ready, 60), asyncio.to_thread(second.wait_ready, 60)
    )

    # Events arrive while both consume; the kill lands while batches are in flight.
    wave = asyncio.create_task(produce(s, events[:cut]))
    before = await progress(s.database_url, s.topic)
    await wait_progress_beyond(s.database_url, s.topic, before, 60)
    await asyncio.sleep(rng.uniform(0.0, 0.3))
    assert first.alive, fault_stack.log_tails()
    first.kill()
    at_kill = await progress(s.database_url, s.topic)

    # A third member joins at once: the group rebalances again, and the dead member's share
    # moves only once its session times out (10 s), all while the second wave arrives.
    third = fault_stack.service("projector", "projector-c")
    third.spawn()
    await wave
    await produce(s, events[cut:])
    await asyncio.to_thread(third.wait_ready, 60)
    await wait_caught_up(s, 90)
    assert second.alive and third.alive, fault_stack.log_tails()
    assert second.stop() == 0
    assert third.stop() == 0

    differing = await fault_stack.differences_from_clean_rebuild()
    verdict = await check_events(s.database_url, events)
    report.append(
        verdict.summary(2)
        + f" events={len(events)} projected_at_kill={at_kill} instances=3 seed={seed}"
    )
    print(report[-1])

    assert not differing, f"read models differ from a clean rebuild: {differing}"
    assert verdict.valid, verdict
