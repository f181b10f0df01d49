"""Group commit: concurrent requests share one flush (one transaction, shared produce requests, or
one read statement).

A single worker task takes whatever queued while the previous flush ran and hands it to the
flush function as one batch. An idle batcher adds no wait: the first request flushes alone at
once, and requests only group when the flush in progress makes them queue anyway. That is what
PostgreSQL does with concurrent commits (one WAL flush serves several), done one level up where
it also saves the round trips and the per-record produce waits.

The flush settles each item's future itself (so it may answer before its own clean-up work);
any future it leaves unsettled, or every one when it raises, gets the error, so no submitter
waits forever. Items whose submitter stopped waiting before their batch started are dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

log = logging.getLogger("microblog.group_commit")

I = TypeVar("I")  # noqa: E741 - the conventional name of an item type
R = TypeVar("R")


class Pending(Generic[I, R]):
    """One submitted item and the future its submitter awaits."""

    __slots__ = ("future", "item")

    def __init__(self, item: I, future: asyncio.Future[R]) -> None:
        self.item = item
        self.future = future

    def resolve(self, result: R) -> None:
        # The submitter may have gone (cancelled); the item's work is done regardless.
        if not self.future.done():
            self.future.set_result(result)

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)


Flush = Callable[[Sequence[Pending[I, R]]], Awaitable[None]]


class Closed(RuntimeError):
    """Submitted after the batcher was closed (the service is shutting down)."""


class GroupCommit(Generic[I, R]):
    """Batches submitted items into calls of `flush`, at most `max_batch` items each and at
    most `concurrency` calls at a time (so one batch's produce overlaps the next one's
    commit)."""

    def __init__(
        self,
        flush: Flush[I, R],
        *,
        max_batch: int = 256,
        concurrency: int = 1,
        name: str = "group",
    ) -> None:
        self._flush = flush
        self._max_batch = max_batch
        self._concurrency = concurrency
        self._queue: list[Pending[I, R]] = []
        self._running: set[asyncio.Task[None]] = set()
        self._wakeup = asyncio.Event()
        self._closed = False
        self._worker = asyncio.create_task(self._run(), name=f"group-commit-{name}")

    async def submit(self, item: I) -> R:
        """Queue `item` for the next flush and wait for its outcome."""
        if self._closed:
            raise Closed("the service is shutting down")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append(Pending(item, future))
        self._wakeup.set()
        return await future

    @property
    def queued(self) -> int:
        """Items waiting for a flush."""
        return len(self._queue)

    async def _run(self) -> None:
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                while self._queue and len(self._running) < self._concurrency:
                    batch = self._queue[: self._max_batch]
                    del self._queue[: self._max_batch]
                    task = asyncio.create_task(self._flush_one(batch))
                    self._running.add(task)
                    task.add_done_callback(self._flushed)
                if self._closed and not self._queue and not self._running:
                    return
        finally:
            for task in self._running:
                task.cancel()
            await asyncio.gather(*self._running, return_exceptions=True)

    def _flushed(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._wakeup.set()

    async def _flush_one(self, batch: list[Pending[I, R]]) -> None:
        # A submitter that gave up (timed out, cancelled) before its batch started gets
        # nothing written: its outcome is unknown to its client either way, and a backlog of
        # abandoned items would only delay the live ones.
        batch = [p for p in batch if not p.future.done()]
        if not batch:
            return
        try:
            await self._flush(batch)
        except asyncio.CancelledError:
            for p in batch:
                p.fail(Closed("the service is shutting down"))
            raise
        except Exception as exc:
            log.warning("group flush of %d items failed: %r", len(batch), exc)
            for p in batch:
                p.fail(exc)
        else:
            for p in batch:
                p.fail(RuntimeError("the flush left this item unsettled"))

    async def close(self, timeout_s: float) -> None:
        """Refuse new items and flush what is queued; after `timeout_s`, cancel the flushes."""
        self._closed = True
        self._wakeup.set()
        done, _ = await asyncio.wait([self._worker], timeout=timeout_s)
        if not done:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        for p in self._queue:
            p.fail(Closed("the service is shutting down"))
        self._queue.clear()
