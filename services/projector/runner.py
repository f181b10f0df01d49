"""The projector's consume-apply-commit loop (invariant 3: effectively once).

Each batch from Kafka is applied to PostgreSQL in one transaction (a replay's batch in a few
consecutive ones, `batch.Planned.parts`), each together with the next offset of every
partition it touched. Kafka's own group offsets are not used: on (re)assignment the
projector reads its positions from PostgreSQL and seeks there, so a crash at any point replays
exactly the events whose effects were not committed.

Fencing: every assignment bumps the partition's `epoch` row. A batch's transaction first
updates the offset rows *where the epoch is still ours*; a stale instance (its partitions were
reassigned while it was busy) updates fewer rows than it expects, so it rolls back instead of
overwriting. The row locks it takes also make the newcomer's epoch bump wait until an in-flight
transaction of the old owner has finished.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import ConsumerRecord

from services.projector import batch, store
from services.projector.batch_size import LARGE_BATCH_WORK_MEM, MAX_BATCH_RECORDS, BatchSizer
from services.projector.project import Op, ops_for
from services.projector.sql_offsets import (
    ADVANCE,
    CLAIM_PARTITION,
    NOTIFY_PROGRESS,
    RECORD_DEAD_LETTER,
)
from services.projector.stats import Stats
from services.projector.trimmer import Trimmer
from shared import codec
from shared.codec import PoisonEvent
from shared.settings import Settings

log = logging.getLogger("microblog.projector")

# How long a batch in flight at SIGTERM may run on before it is cancelled (rolled back: its
# events are applied again by whoever owns the partitions next, nothing is lost).
STOP_GRACE_S = 4.0


def _is_retryable(exc: asyncpg.PostgresError) -> bool:
    # Deadlock (40P01) or serialization failure (40001): nothing was written; run it again.
    state = getattr(exc, "sqlstate", "") or ""
    return state in ("40P01", "40001")


def _is_connection_error(exc: asyncpg.PostgresError) -> bool:
    # SQLSTATE class 08 (connection exception) and 57P (operator intervention: shutdown).
    state = getattr(exc, "sqlstate", "") or ""
    return state.startswith("08") or state.startswith("57P")


def plan_record(value: bytes | None) -> list[Op]:
    """Decode one record and plan it; anything that cannot become operations is poison
    (invariant 7), including an event this projector has no rule for."""
    event = codec.decode(value)
    try:
        return ops_for(event)
    except Exception as exc:
        raise PoisonEvent("projection_failed", f"{type(exc).__name__}: {exc}") from exc


def _unwritten(planned: batch.Planned) -> list[ConsumerRecord[bytes, bytes]]:
    """A batch's records not committed: one written in several transactions may fail in a
    later one, after the earlier ones committed."""
    return [r for part in planned.parts[planned.written :] for r in part.records]


class Fenced(Exception):
    """Another projector instance owns one of this batch's partitions now, or the batch
    starts before the stored position (it was fetched before a reassignment sought back)."""


class Projector:
    def __init__(self, settings: Settings, pool: asyncpg.Pool) -> None:
        self.settings = settings
        self.pool = pool
        self.epochs: dict[int, int] = {}
        # Next offset to apply per owned partition, for the lag metric.
        self.positions: dict[int, int] = {}
        self.stats = Stats()
        self.consumer: AIOKafkaConsumer | None = None
        self._stopping = asyncio.Event()
        self.trimmer = Trimmer(pool, settings.timeline_cap, self.stats)
        self.sizer = BatchSizer()

    # ------------------------------------------------------------------ rebalance

    async def claim(self, partitions: Sequence[int]) -> dict[int, int]:
        """Take ownership of partitions; returns the offset to resume from for each."""
        resume: dict[int, int] = {}
        epochs: dict[int, int] = {}
        async with self.pool.acquire() as conn, conn.transaction():
            for p in sorted(partitions):
                row = await conn.fetchrow(CLAIM_PARTITION, self.settings.topic, p)
                assert row is not None
                epochs[p] = row["epoch"]
                resume[p] = row["next_offset"]
        # Claimed only once committed, and (no await between) the caller seeks right after:
        # the loop never applies records fetched before the seek (see `_claimed`).
        self.epochs.update(epochs)
        self.positions.update(resume)
        return resume

    def lag(self) -> dict[int, int]:
        """End offset minus next offset for each owned partition whose end is known."""
        consumer = self.consumer
        if consumer is None:
            return {}
        ends = {tp.partition: consumer.highwater(tp) for tp in consumer.assignment()}
        pos = self.positions
        return {p: max(e - pos[p], 0) for p, e in ends.items() if e is not None and p in pos}

    # ------------------------------------------------------------------ one batch

    async def apply_batch(
        self, records: Sequence[ConsumerRecord[bytes, bytes]], failed: PoisonEvent | None = None
    ) -> None:
        """Apply records (log order within each partition) and advance offsets: each of the
        batch's transactions (`batch.Planned.parts`) commits its events with their offsets.

        With `failed`, the records are not applied but dead-lettered with that reason.
        """
        if records:
            await self.write_planned(batch.plan(records, plan_record, failed))

    async def write_planned(self, planned: batch.Planned) -> None:
        """Write a planned batch: its transactions (`planned.parts`) one after the other."""
        for i, part in enumerate(planned.parts):
            planned.written = i
            await self.write_batch(part)
        planned.written = len(planned.parts)

    async def write_batch(self, planned: batch.Planned) -> None:
        """Write a planned batch and advance its partitions' offsets in one transaction, if
        this instance still owns them at the batch's first offsets (else Fenced)."""
        started = time.perf_counter()
        ops, parts, next_offsets = planned.ops, planned.partitions, planned.next_offsets
        # Ownership as of now, not as of planning: a rebalance may have come in between.
        epochs = [self.epochs.get(p, -1) for p in parts]
        async with self.pool.acquire() as conn, conn.transaction():
            status = await conn.execute(
                ADVANCE,
                self.settings.topic,
                parts,
                [next_offsets[p] for p in parts],
                epochs,
                [planned.first_offsets[p] for p in parts],
            )
            if int(status.rsplit(" ", 1)[-1]) != len(parts):
                self.stats.fenced += 1
                raise Fenced(
                    f"partitions {parts} were reassigned or already past this batch;"
                    " batch rolled back"
                )
            if len(planned.records) > MAX_BATCH_RECORDS:
                await conn.execute(f"SET LOCAL work_mem = '{LARGE_BATCH_WORK_MEM}'")
            await store.lock(conn, ops)
            for rec, why in planned.poison:
                log.warning("dead-letter %s[%d]@%d: %s", rec.topic, rec.partition, rec.offset, why)
                await conn.execute(
                    RECORD_DEAD_LETTER,
                    rec.topic,
                    rec.partition,
                    rec.offset,
                    why.reason,
                    why.detail[:2000],
                    rec.value,
                )
            applied = await store.apply(conn, ops, self.settings.timeline_cap)
            # Delivered at commit: the query service wakes read-your-writes waiters on it, and
            # streams on the wake-up, if any (one statement for both, see NOTIFY_PROGRESS).
            progress = ",".join(f"{p}:{next_offsets[p]}" for p in parts)
            await conn.execute(NOTIFY_PROGRESS, progress, store.wakeup_payload(applied))
        self.positions.update(next_offsets)
        self.stats.dead_letters += len(planned.poison)
        self.stats.timeline_rows += applied.fanned
        self.trimmer.note(applied)
        self.sizer.observe(len(planned.records), applied.fanned)
        seconds = time.perf_counter() - started + planned.plan_seconds
        self.stats.observe_batch(seconds, planned.events, time.time())

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        settings = self.settings
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            group_id=settings.projector_group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=MAX_BATCH_RECORDS,
            # Live, a fetch waits up to MB_PROJECTOR_FETCH_WAIT_MS for 64 KB rather than return
            # each record at once: each fetch that returns to an idle projector is a batch, with
            # its transaction, WAL flush, NOTIFY and offsets. In the benchmark's mixed load (100
            # posts/s among 1,000 req/s on 2 cores), 50 ms against 20 took the load's p99 from
            # 16-530 ms (8 of 15 runs within 50 ms) to 12-36 ms (9 of 9); a post's visibility
            # p99 for median authors rose from 45-61 to 64-94 ms, its target being 1 s.
            fetch_max_wait_ms=settings.projector_fetch_wait_ms,
            fetch_min_bytes=64 * 1024,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            session_timeout_ms=10_000,
            # A member learns of a rebalance from its next heartbeat. Of instances started
            # together, the first to join took all 12 partitions until its next one, 1 s later.
            # At 200 ms the rebuild figure read 17.4 K events/s against 14.2 K (medians, 12 runs).
            heartbeat_interval_ms=200,
        )
        self.consumer = consumer
        consumer.subscribe([settings.topic], listener=_Rebalance(self, consumer))
        await consumer.start()
        log.info("projector consuming %s as group %s", settings.topic, settings.projector_group)
        # One batch is written while the next is fetched and planned (CPU, in this process)
        # so that planning overlaps PostgreSQL's work; writes still run one at a time.
        inflight: tuple[asyncio.Future[None], batch.Planned] | None = None
        try:
            while not self._stopping.is_set():
                limit = self.sizer.records()
                fetched = await consumer.getmany(
                    timeout_ms=0 if inflight else 200, max_records=limit
                )
                records = self._claimed(consumer, fetched)
                planner = batch.Planner(plan_record)
                await planner.add(records)
                if inflight is not None:
                    await self._top_up(consumer, planner, inflight[0], limit)
                planned = planner.done() if len(planner) else None
                if inflight is not None:
                    if not await self._settle(consumer, *inflight):
                        # Positions were sought back: what was fetched meanwhile goes back too.
                        if planned is not None:
                            await self._rewind(consumer, set(planned.partitions))
                        planned = None
                    inflight = None
                elif fetched and not records:
                    await asyncio.sleep(0.01)  # put back: let the claim finish
                if planned is not None and not self._stopping.is_set():
                    inflight = (asyncio.ensure_future(self.write_planned(planned)), planned)
            if inflight is not None:
                await self._settle(consumer, *inflight)
        finally:
            await self.trimmer.close()
            await consumer.stop()

    async def _top_up(
        self,
        consumer: AIOKafkaConsumer,
        planner: batch.Planner,
        writing: asyncio.Future[None],
        limit: int,
    ) -> None:
        """While the previous batch is being written, keep adding what arrives to the next one,
        up to `limit` records: when behind, batches grow to the rows they are sized for; when
        live, the next batch takes everything that arrived during the write, at once."""
        while not writing.done() and len(planner) < limit and not self._stopping.is_set():
            fetched = await consumer.getmany(timeout_ms=5, max_records=limit - len(planner))
            await planner.add(self._claimed(consumer, fetched))

    async def _settle(
        self, consumer: AIOKafkaConsumer, task: asyncio.Future[None], planned: batch.Planned
    ) -> bool:
        """Wait for a batch's write and handle its failure; False if positions were sought
        back (or the projector is stopping), so batches fetched since must not be written."""
        try:
            await self._until_stopped(task)
            return True
        except asyncio.CancelledError:
            if not self._stopping.is_set():
                raise
            log.info("stopping: in-flight batch rolled back, its owner re-applies it")
        except Fenced as exc:
            # Our view of ownership is stale; the group will hand the partitions to their new
            # owner (or back to us, with a fresh claim). Nothing was written.
            log.warning("%s", exc)
            await asyncio.sleep(0.2)
            await self._rewind(consumer, set(planned.partitions))
        except asyncpg.PostgresError as exc:
            records = _unwritten(planned)
            if _is_connection_error(exc) or _is_retryable(exc):
                await self._database_down(consumer, records, exc)
            else:
                # A statement failed on this batch's data: apply record by record so only the
                # offending events are dead-lettered (invariant 7).
                log.error("batch failed (%s); isolating records", exc)
                return await self._apply_one_by_one(consumer, records)
        except (OSError, asyncpg.InterfaceError, asyncpg.InternalClientError) as exc:
            await self._database_down(consumer, _unwritten(planned), exc)
        return False

    def _claimed(
        self,
        consumer: AIOKafkaConsumer,
        fetched: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]],
    ) -> list[ConsumerRecord[bytes, bytes]]:
        """The fetched records of partitions this instance has claimed. aiokafka fetches a new
        partition (from the group's reset position) while on_partitions_assigned still claims
        it; writing those would only be fenced and cost a rewind, so they are put back: the
        claim's seek to the stored position, or a later fetch, brings them again."""
        records: list[ConsumerRecord[bytes, bytes]] = []
        for tp, recs in fetched.items():
            if tp.partition in self.epochs:
                records.extend(recs)
            elif recs and tp in consumer.assignment():
                consumer.seek(tp, recs[0].offset)
        return records

    async def _until_stopped(self, task: asyncio.Future[None]) -> None:
        """Wait for a batch's write; if a stop is requested meanwhile, give it STOP_GRACE_S,
        then cancel it (the transaction rolls back) so SIGTERM ends the process within its
        10 s budget."""
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            either: set[asyncio.Future[Any]] = {task, stopping}
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if not task.done():
                await asyncio.wait({task}, timeout=STOP_GRACE_S)
            if not task.done():
                task.cancel()
            await task
        finally:
            stopping.cancel()

    async def _rewind(self, consumer: AIOKafkaConsumer, partitions: set[int]) -> None:
        """Seek back to the positions stored in PostgreSQL for partitions we still hold."""
        while not self._stopping.is_set():
            try:
                async with self.pool.acquire() as conn:
                    rows = await conn.fetch(
                        "SELECT partition, next_offset FROM projector_offsets"
                        " WHERE topic = $1 AND partition = ANY($2::int[])",
                        self.settings.topic,
                        sorted(partitions),
                    )
                break
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                await asyncio.sleep(0.5)
        else:
            return
        held = {tp.partition for tp in consumer.assignment()}
        for row in rows:
            if row["partition"] in held:
                tp = TopicPartition(self.settings.topic, row["partition"])
                consumer.seek(tp, row["next_offset"])

    async def _database_down(
        self,
        consumer: AIOKafkaConsumer,
        records: Sequence[ConsumerRecord[bytes, bytes]],
        exc: BaseException,
    ) -> None:
        # PostgreSQL went away mid-batch: nothing of it was committed. Re-read the stored
        # positions once the database is back and go on from there.
        log.warning("database unavailable (%s); retrying", exc)
        await asyncio.sleep(0.5)
        await self._rewind(consumer, {r.partition for r in records})

    async def _apply_one_by_one(
        self, consumer: AIOKafkaConsumer, records: Sequence[ConsumerRecord[bytes, bytes]]
    ) -> bool:
        """Apply records one at a time, dead-lettering those that fail; False if the database
        went away meanwhile (positions were sought back)."""
        for rec in records:
            try:
                await self.apply_batch([rec])
            except asyncpg.PostgresError as exc:
                if _is_connection_error(exc):
                    await self._database_down(consumer, records, exc)
                    return False
                await self.apply_batch([rec], failed=PoisonEvent("projection_failed", str(exc)))
        return True

    def stop(self) -> None:
        self._stopping.set()


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, projector: Projector, consumer: AIOKafkaConsumer) -> None:
        self.projector = projector
        self.consumer = consumer

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        for tp in revoked:
            self.projector.epochs.pop(tp.partition, None)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        if not assigned:
            return
        resume = await self.projector.claim([tp.partition for tp in assigned])
        for tp in assigned:
            self.consumer.seek(tp, resume[tp.partition])
        log.info("assigned partitions %s", sorted(resume))
