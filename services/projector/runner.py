"""The projector's consume-apply-commit loop (invariant 3: effectively once).

Each batch from Kafka is applied to PostgreSQL in one transaction together with the next offset
of every partition it touched. Kafka's own group offsets are not used: on (re)assignment the
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

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import ConsumerRecord

from services.projector import store
from services.projector.project import plan
from shared import codec
from shared.codec import PoisonEvent
from shared.events import AnyEvent
from shared.settings import Settings

log = logging.getLogger("microblog.projector")

CLAIM_PARTITION = """
INSERT INTO projector_offsets (topic, partition, next_offset, epoch)
VALUES ($1, $2, 0, 1)
ON CONFLICT (topic, partition) DO UPDATE SET epoch = projector_offsets.epoch + 1,
                                             updated_at = now()
RETURNING next_offset, epoch
"""

ADVANCE = """
UPDATE projector_offsets AS o
   SET next_offset = n.next_offset, updated_at = now()
  FROM unnest($2::int[], $3::bigint[], $4::bigint[]) AS n(partition, next_offset, epoch)
 WHERE o.topic = $1 AND o.partition = n.partition AND o.epoch = n.epoch
"""

RECORD_DEAD_LETTER = """
INSERT INTO dead_letters (topic, partition, "offset", reason, detail, payload)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (topic, partition, "offset") DO NOTHING
"""


def _is_connection_error(exc: asyncpg.PostgresError) -> bool:
    # SQLSTATE class 08 (connection exception) and 57P (operator intervention: shutdown).
    state = getattr(exc, "sqlstate", "") or ""
    return state.startswith("08") or state.startswith("57P")


class Fenced(Exception):
    """Another projector instance owns one of this batch's partitions now."""


class Stats:
    """Counters the /metrics endpoint exposes."""

    def __init__(self) -> None:
        self.events_applied = 0
        self.batches = 0
        self.timeline_rows = 0
        self.dead_letters = 0
        self.fenced = 0
        self.last_batch_at = 0.0


class Projector:
    def __init__(self, settings: Settings, pool: asyncpg.Pool) -> None:
        self.settings = settings
        self.pool = pool
        self.epochs: dict[int, int] = {}
        self.stats = Stats()
        self.consumer: AIOKafkaConsumer | None = None
        self._stopping = asyncio.Event()

    # ------------------------------------------------------------------ rebalance

    async def claim(self, partitions: Sequence[int]) -> dict[int, int]:
        """Take ownership of partitions; returns the offset to resume from for each."""
        resume: dict[int, int] = {}
        async with self.pool.acquire() as conn, conn.transaction():
            for p in sorted(partitions):
                row = await conn.fetchrow(CLAIM_PARTITION, self.settings.topic, p)
                assert row is not None
                self.epochs[p] = row["epoch"]
                resume[p] = row["next_offset"]
        return resume

    # ------------------------------------------------------------------ one batch

    async def apply_batch(
        self, records: Sequence[ConsumerRecord[bytes, bytes]], failed: PoisonEvent | None = None
    ) -> None:
        """Apply records (log order within each partition) and advance offsets, atomically.

        With `failed`, the records are not applied but dead-lettered with that reason.
        """
        if not records:
            return
        events: list[AnyEvent] = []
        poison: list[tuple[ConsumerRecord[bytes, bytes], PoisonEvent]] = []
        next_offsets: dict[int, int] = {}
        for rec in records:
            next_offsets[rec.partition] = rec.offset + 1
            if failed is not None:
                poison.append((rec, failed))
                continue
            try:
                events.append(codec.decode(rec.value))
            except PoisonEvent as exc:
                poison.append((rec, exc))
        ops = plan(events)
        parts = sorted(next_offsets)
        epochs = [self.epochs.get(p, -1) for p in parts]
        async with self.pool.acquire() as conn, conn.transaction():
            status = await conn.execute(
                ADVANCE, self.settings.topic, parts, [next_offsets[p] for p in parts], epochs
            )
            if int(status.rsplit(" ", 1)[-1]) != len(parts):
                self.stats.fenced += 1
                raise Fenced(f"partitions {parts} were reassigned; batch rolled back")
            for rec, why in poison:
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
            fanned = await store.apply(conn, ops, self.settings.timeline_cap)
            # Delivered at commit: the query service wakes read-your-writes waiters on it.
            await conn.execute(
                "SELECT pg_notify('projector_progress', $1)",
                ",".join(f"{p}:{next_offsets[p]}" for p in parts),
            )
        self.stats.events_applied += len(events)
        self.stats.dead_letters += len(poison)
        self.stats.timeline_rows += fanned
        self.stats.batches += 1
        self.stats.last_batch_at = time.time()

    # ------------------------------------------------------------------ the loop

    async def run(self, max_records: int = 5000) -> None:
        settings = self.settings
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            group_id=settings.projector_group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=max_records,
            fetch_max_wait_ms=100,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
        )
        self.consumer = consumer
        consumer.subscribe([settings.topic], listener=_Rebalance(self, consumer))
        await consumer.start()
        log.info("projector consuming %s as group %s", settings.topic, settings.projector_group)
        try:
            while not self._stopping.is_set():
                batch = await consumer.getmany(timeout_ms=200, max_records=max_records)
                records = [rec for recs in batch.values() for rec in recs]
                if not records:
                    continue
                try:
                    await self.apply_batch(records)
                except Fenced as exc:
                    # Our view of ownership is stale; the group will hand the partitions to
                    # their new owner (or back to us, with a fresh claim). Nothing was written.
                    log.warning("%s", exc)
                    await asyncio.sleep(0.2)
                    await self._rewind(consumer, {r.partition for r in records})
                except asyncpg.PostgresError as exc:
                    if _is_connection_error(exc):
                        await self._database_down(consumer, records, exc)
                    else:
                        # A statement failed on this batch's data: apply record by record so
                        # only the offending events are dead-lettered (invariant 7).
                        log.error("batch failed (%s); isolating records", exc)
                        await self._apply_one_by_one(consumer, records)
                except (OSError, asyncpg.InterfaceError) as exc:
                    await self._database_down(consumer, records, exc)
        finally:
            await consumer.stop()

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
    ) -> None:
        for rec in records:
            try:
                await self.apply_batch([rec])
            except asyncpg.PostgresError as exc:
                if _is_connection_error(exc):
                    await self._database_down(consumer, records, exc)
                    return
                await self.apply_batch([rec], failed=PoisonEvent("projection_failed", str(exc)))

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
