"""The group-commit batcher on its own: how batches form, and that every submitter gets an
outcome whatever the flush does. The flush here is a plain function recording its batches."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from shared.group_commit import Closed, GroupCommit, Pending


async def settle() -> None:
    """Let every ready task run (a few loop turns; nothing here sleeps for real)."""
    for _ in range(10):
        await asyncio.sleep(0)


class Recorder:
    """A flush that answers each item doubled, after waiting until `release` is set."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.started = asyncio.Event()

    async def __call__(self, batch: Sequence[Pending[int, int]]) -> None:
        self.batches.append([p.item for p in batch])
        self.started.set()
        await self.release.wait()
        for p in batch:
            p.resolve(p.item * 2)


async def test_an_idle_batcher_flushes_a_lone_item_at_once() -> None:
    flush = Recorder()
    group: GroupCommit[int, int] = GroupCommit(flush)
    assert await group.submit(21) == 42
    assert flush.batches == [[21]]
    await group.close(1.0)


async def test_items_queued_during_a_flush_share_the_next_one() -> None:
    flush = Recorder()
    flush.release.clear()
    group: GroupCommit[int, int] = GroupCommit(flush)
    first = asyncio.create_task(group.submit(1))
    await flush.started.wait()
    rest = [asyncio.create_task(group.submit(i)) for i in (2, 3, 4)]
    await settle()
    assert group.queued == 3
    flush.release.set()
    assert await asyncio.gather(first, *rest) == [2, 4, 6, 8]
    assert flush.batches == [[1], [2, 3, 4]]
    await group.close(1.0)


async def test_batches_are_capped() -> None:
    flush = Recorder()
    flush.release.clear()
    group: GroupCommit[int, int] = GroupCommit(flush, max_batch=2)
    first = asyncio.create_task(group.submit(0))
    await flush.started.wait()
    rest = [asyncio.create_task(group.submit(i)) for i in range(1, 6)]
    await settle()
    flush.release.set()
    await asyncio.gather(first, *rest)
    assert flush.batches == [[0], [1, 2], [3, 4], [5]]
    await group.close(1.0)


async def test_a_failing_flush_fails_its_batch_only() -> None:
    calls = 0

    async def flush(batch: Sequence[Pending[int, int]]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("boom")
        for p in batch:
            p.resolve(p.item)

    group: GroupCommit[int, int] = GroupCommit(flush)
    with pytest.raises(ValueError, match="boom"):
        await group.submit(1)
    assert await group.submit(2) == 2
    await group.close(1.0)


async def test_items_the_flush_leaves_unsettled_get_an_error() -> None:
    gate = asyncio.Event()

    async def flush(batch: Sequence[Pending[int, int]]) -> None:
        await gate.wait()
        batch[0].resolve(0)
        if len(batch) > 1:
            batch[1].fail(KeyError("mine"))

    group: GroupCommit[int, int] = GroupCommit(flush)
    alone = asyncio.create_task(group.submit(-1))
    await settle()
    together = [asyncio.create_task(group.submit(i)) for i in range(3)]
    await settle()
    gate.set()
    outcomes = await asyncio.gather(alone, *together, return_exceptions=True)
    assert outcomes[:2] == [0, 0]
    assert isinstance(outcomes[2], KeyError)
    assert isinstance(outcomes[3], RuntimeError)
    await group.close(1.0)


async def test_a_submitter_that_gave_up_is_dropped_and_disturbs_no_one() -> None:
    flush = Recorder()
    flush.release.clear()
    group: GroupCommit[int, int] = GroupCommit(flush)
    first = asyncio.create_task(group.submit(1))
    await flush.started.wait()
    gone = asyncio.create_task(group.submit(2))
    stays = asyncio.create_task(group.submit(3))
    await settle()
    gone.cancel()
    flush.release.set()
    assert await first == 2 and await stays == 6
    assert gone.cancelled()
    # Given up on before its batch started: nothing is done for it.
    assert flush.batches == [[1], [3]]
    await group.close(1.0)


async def test_close_flushes_what_is_queued_then_refuses() -> None:
    flush = Recorder()
    flush.release.clear()
    group: GroupCommit[int, int] = GroupCommit(flush)
    first = asyncio.create_task(group.submit(1))
    await flush.started.wait()
    queued = asyncio.create_task(group.submit(2))
    await settle()
    closing = asyncio.create_task(group.close(5.0))
    await settle()
    flush.release.set()
    await closing
    assert await first == 2 and await queued == 4
    with pytest.raises(Closed):
        await group.submit(3)


async def test_close_gives_up_on_a_stuck_flush() -> None:
    flush = Recorder()
    flush.release.clear()
    group: GroupCommit[int, int] = GroupCommit(flush)
    stuck = asyncio.create_task(group.submit(1))
    await flush.started.wait()
    queued = asyncio.create_task(group.submit(2))
    await settle()
    await group.close(0.01)
    for task in (stuck, queued):
        with pytest.raises(Closed):
            await task


async def test_with_concurrency_two_a_second_batch_flushes_while_the_first_waits() -> None:
    flush = Recorder()
    flush.release.clear()
    group: GroupCommit[int, int] = GroupCommit(flush, concurrency=2)
    first = asyncio.create_task(group.submit(1))
    await flush.started.wait()
    second = [asyncio.create_task(group.submit(i)) for i in (2, 3)]
    # The second flush starts without waiting for the first; a third item has to wait.
    await settle()
    assert flush.batches == [[1], [2, 3]]
    third = asyncio.create_task(group.submit(4))
    await settle()
    assert group.queued == 1 and flush.batches == [[1], [2, 3]]
    flush.release.set()
    assert await asyncio.gather(first, *second, third) == [2, 4, 6, 8]
    assert flush.batches == [[1], [2, 3], [4]]
    await group.close(1.0)


async def test_a_submitter_that_gives_up_mid_flush_leaves_the_flush_alone() -> None:
    flush = Recorder()
    flush.release.clear()
    group: GroupCommit[int, int] = GroupCommit(flush)
    gone = asyncio.create_task(group.submit(1))
    await flush.started.wait()
    gone.cancel()
    await settle()
    flush.release.set()
    assert await group.submit(2) == 4
    assert flush.batches == [[1], [2]]
    await group.close(1.0)
