"""Group commit of new posts sent without an Idempotency-Key (the hot write path).

Each post keeps the guarantees `pipeline.execute` gives one command at a time; only the
round trips, WAL flushes and produce waits are shared by the posts that arrive together:

1. One statement records every post's command-side row and its decided event under an internal
   key (a synchronous commit), before anything is produced. From here a crash loses nothing:
   the relay (`pipeline.relay_pending`) publishes what was recorded and never acknowledged.
2. All events are appended, then all acks awaited (`EventPublisher.publish_many`).
3. Each request is answered with its own event's position, or 503 when its event was not
   acknowledged in time (it stays recorded; the relay appends it once).
4. The acknowledged posts' internal keys are deleted by the next batch's statement, or, when
   no batch follows within FORGET_AFTER_S, by one statement that does not wait for its WAL
   flush (`idempotency.forget_acknowledged` says why either is safe).

A row the batch statement refuses fails the statement for all: then each post is recorded
alone, so a bad row fails only its own request. Posts whose facts are decided on lookups
(mentions, replies, quotes, audiences) have them fetched per request before they queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Final, NamedTuple

import asyncpg
import msgspec
from aiohttp import web

from services.command import idempotency, post_store
from services.command.observability import CommandMetrics
from services.command.pipeline import PLACEHOLDER, PostAccepted
from shared import codec
from shared.events import PostCreated, type_tag
from shared.group_commit import Closed, GroupCommit, Pending
from shared.http import ApiError
from shared.kafka import EventPublisher, Position

# Bounds one statement's arrays and one produce burst; at the load measured (32 concurrent
# clients) batches stay far below it.
MAX_BATCH: Final = 256
# Two flushes at a time: one batch records (waiting for its WAL flush) while the previous one
# waits for its acks. Measured at 300 posts/s open loop on 2 shared cores: p99 fell from
# 86-258 ms with one flush at a time to 10-50 ms with two; three or four were no better.
CONCURRENCY: Final = 2
# How long acknowledged keys wait for the next batch to delete them before a statement of
# their own does. Deleting them as soon as the queue was empty cost a transaction (4 round
# trips) per flush under a closed loop of 32 clients, where the queue empties after most
# flushes: 5 % of the process's CPU in socket writes alone (py-spy --native). A key left
# longer costs nothing but its row.
FORGET_AFTER_S: Final = 0.2

_encoder: Final = msgspec.json.Encoder()
log = logging.getLogger("microblog.command")


def accepted(event: PostCreated, position: Position) -> bytes:
    """The answer to a new post: its id, its event's id and where the event sits on the log."""
    return _encoder.encode(PostAccepted(str(event.data.post_id), str(event.id), str(position)))


def new_post_row(event: PostCreated, key: str) -> post_store.NewPostRow:
    data = event.data
    return post_store.NewPostRow(
        post_id=data.post_id,
        author_id=data.author_id,
        visibility=data.visibility,
        audience_id=data.audience_id,
        mentions=tuple(m.user_id for m in data.mentions),
        media=data.media,
        key=key,
        body=accepted(event, PLACEHOLDER),
        event=codec.encode(event),
    )


def log_unavailable() -> ApiError:
    # Whether the post appears is unknown here: a recorded event is appended once by the
    # relay; one dropped before its batch started never is.
    return ApiError(
        503,
        "log_unavailable",
        "the event log did not acknowledge the event in time; it may still be appended",
    )


class NewPost(NamedTuple):
    event: PostCreated
    row: post_store.NewPostRow


class PostWriter:
    """Records, publishes and answers new posts in groups (see the module docstring)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        publisher: EventPublisher,
        metrics: CommandMetrics,
        timeout_s: float,
    ) -> None:
        self._pool = pool
        self._timeout = timeout_s
        self._publisher = publisher
        self._metrics = metrics
        # Internal keys whose events were acknowledged, not yet deleted (see _record).
        self._settled: list[str] = []
        self._forgetting: asyncio.Task[None] | None = None
        self._group: GroupCommit[NewPost, Position] = GroupCommit(
            self._flush, max_batch=MAX_BATCH, concurrency=CONCURRENCY, name="posts"
        )

    async def create(self, event: PostCreated, key: str) -> Position:
        """Record, publish and wait for the ack of one decided post.created.

        Bounded from the request's own start, queueing included: while the broker is away
        every flush waits out the produce timeout, and the posts queued behind it must not
        wait for several of them. A post given up on before its batch started is dropped
        (shared/group_commit.py); one given up on later may still be appended, as the 503 says.
        """
        try:
            async with asyncio.timeout(self._timeout):
                return await self._group.submit(NewPost(event, new_post_row(event, key)))
        except TimeoutError:
            raise log_unavailable() from None
        except Closed:
            raise ApiError(503, "shutting_down", "the service is shutting down; retry") from None

    async def close(self, timeout_s: float) -> None:
        await self._group.close(timeout_s)
        if self._forgetting is not None:
            self._forgetting.cancel()
        with contextlib.suppress(Exception):  # best effort: a left key is re-relayed, once
            await self._forget()

    async def _flush(self, batch: Sequence[Pending[NewPost, Position]]) -> None:
        self._metrics.post_batch.observe(len(batch))
        recorded = await self._record(batch)
        if not recorded:
            return
        started = time.perf_counter()
        outcomes = await self._publisher.publish_many(
            [p.item.event for p in recorded], [p.item.row.event for p in recorded]
        )
        elapsed = time.perf_counter() - started
        acknowledged = 0
        for pending, outcome in zip(recorded, outcomes, strict=True):
            if isinstance(outcome, Position):
                self._metrics.produce.observe(elapsed)
                self._settled.append(pending.item.row.key)
                acknowledged += 1
                pending.resolve(outcome)
            else:
                pending.fail(log_unavailable())
        self._metrics.events.labels(type_tag(PostCreated)).inc(acknowledged)
        if self._settled and self._forgetting is None:
            self._forgetting = asyncio.create_task(self._forget_later(), name="post-keys-forget")

    async def _forget_later(self) -> None:
        """Delete the settled keys no batch took along meanwhile (see FORGET_AFTER_S)."""
        try:
            await asyncio.sleep(FORGET_AFTER_S)
            await self._forget()
        except Exception as exc:  # the keys stay listed; a later batch or timer retries
            log.warning("deleting acknowledged post keys failed: %r", exc)
            return
        finally:
            self._forgetting = None
        # A flush that settled keys while this deleted saw a timer running and left them to
        # it: without another, they would wait for the next post (test_command_post_batch).
        if self._settled:
            self._forgetting = asyncio.create_task(self._forget_later(), name="post-keys-forget")

    async def _forget(self) -> None:
        if not self._settled:
            return
        forget, self._settled = self._settled, []
        try:
            await idempotency.forget_acknowledged(self._pool, idempotency.INTERNAL_SCOPE, forget)
        except BaseException:
            self._settled.extend(forget)
            raise

    async def _record(
        self, batch: Sequence[Pending[NewPost, Position]]
    ) -> list[Pending[NewPost, Position]]:
        """The posts durably recorded; those that could not be are failed already."""
        rows = [p.item.row for p in batch]
        async with self._pool.acquire() as conn:
            # The keys settled by earlier batches go in the same statement: under load the
            # clean-up costs no round trip and no WAL flush of its own.
            forget, self._settled = self._settled, []
            try:
                await post_store.record_new_posts(
                    conn, idempotency.INTERNAL_SCOPE, rows, forget=forget
                )
                return list(batch)
            except BaseException as exc:
                self._settled.extend(forget)
                if len(batch) == 1 or not isinstance(exc, asyncpg.PostgresError):
                    raise
            recorded = []
            for pending, row in zip(batch, rows, strict=True):
                try:
                    await post_store.record_new_posts(conn, idempotency.INTERNAL_SCOPE, [row])
                    recorded.append(pending)
                except asyncpg.PostgresError as exc:
                    pending.fail(exc)
            return recorded


POST_WRITER: Final = web.AppKey("post_writer", PostWriter)
