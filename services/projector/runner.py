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
from collections import deque
from collections.abc import Sequence

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import ConsumerRecord

from services.projector import store
from services.projector.project import Op, lock_slots, merge, ops_for
from shared import codec
from shared.codec import PoisonEvent
from shared.settings import Settings

log = logging.getLogger("microblog.projector")

WAKEUP_LIMIT = 500
# Amortized trimming: timelines touched since the last trim are visited every TRIM_EVERY
# batches, or sooner when that many users piled up.
TRIM_EVERY = 50
TRIM_PENDING_LIMIT = 20_000

CLAIM_PARTITION = """
INSERT INTO projector_offsets (topic, partition, next_offset, epoch)
VALUES ($1, $2, 0, 1)
ON CONFLICT (topic, partition) DO UPDATE SET epoch = projector_offsets.epoch + 1,
                                             updated_at = now()
RETURNING next_offset, epoch
"""

# A batch also must not start before the stored position: records fetched before a
# (re)assignment, which then sought back to that position, would otherwise be applied twice
# (once now, once when they are fetched again).
ADVANCE = """
UPDATE projector_offsets AS o
   SET next_offset = n.next_offset, updated_at = now()
  FROM unnest($2::int[], $3::bigint[], $4::bigint[], $5::bigint[])
       AS n(partition, next_offset, epoch, first_offset)
 WHERE o.topic = $1 AND o.partition = n.partition AND o.epoch = n.epoch
   AND o.next_offset <= n.first_offset
"""

RECORD_DEAD_LETTER = """
INSERT INTO dead_letters (topic, partition, "offset", reason, detail, payload)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (topic, partition, "offset") DO NOTHING
"""


LOCK_SLOTS_SQL = (
    # unnest keeps the array's (sorted) order, so slots are taken in ascending order.
    "SELECT count(pg_advisory_xact_lock(7401, s)) FROM unnest($1::int[]) AS s"
)
# How long a batch in flight at SIGTERM may run on before it is cancelled (rolled back: its
# events are applied again by whoever owns the partitions next, nothing is lost).
STOP_GRACE_S = 4.0
# Records per transaction. The benchmark measured 5,000 post.created events fanning out to
# ~500 K timeline rows in one 8-11 s transaction: every post in it waited for the slowest, and
# SIGTERM waited for it too. 1,000 keeps batches set-based but short.
MAX_BATCH_RECORDS = 1000


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


class Fenced(Exception):
    """Another projector instance owns one of this batch's partitions now, or the batch
    starts before the stored position (it was fetched before a reassignment sought back)."""


# Batch apply latency buckets, seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# The events/s gauge averages over this many seconds.
RATE_WINDOW_S = 10.0


class Stats:
    """Counters the /metrics endpoint exposes."""

    def __init__(self) -> None:
        self.events_applied = 0
        self.batches = 0
        self.timeline_rows = 0
        self.timeline_rows_trimmed = 0
        self.dead_letters = 0
        self.fenced = 0
        self.last_batch_at = 0.0
        self.latency_counts = [0] * len(LATENCY_BUCKETS)
        self.latency_sum = 0.0
        self.latency_count = 0
        self._samples: deque[tuple[float, int]] = deque()

    def observe_batch(self, seconds: float, events: int, now: float) -> None:
        self.events_applied += events
        self.batches += 1
        self.last_batch_at = now
        self.latency_sum += seconds
        self.latency_count += 1
        for i, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                self.latency_counts[i] += 1
        self._samples.append((now, self.events_applied))
        while self._samples and self._samples[0][0] < now - RATE_WINDOW_S:
            self._samples.popleft()

    def events_per_second(self, now: float) -> float:
        """Events applied per second over the last RATE_WINDOW_S (0 when idle)."""
        recent = [s for s in self._samples if s[0] >= now - RATE_WINDOW_S]
        if not recent:
            return 0.0
        first_t, first_n = recent[0]
        span = max(now - first_t, 1.0)
        return (self.events_applied - first_n) / span


def wakeup_payload(applied: store.Applied) -> str | None:
    """Users whose home timeline or notifications changed, for the query service's streams:
    comma-separated ids, or `*` for "many" (NOTIFY payloads must stay under 8000 bytes)."""
    if applied.overflow or len(applied.users) > WAKEUP_LIMIT:
        return "*"
    if not applied.users:
        return None
    payload = ",".join(str(u) for u in sorted(applied.users))
    return payload if len(payload) < 7900 else "*"


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
        self._trim_users: set[int] = set()
        self._trim_authors: set[int] = set()
        self._batches_since_trim = 0

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
        self.positions.update(resume)
        return resume

    def lag(self) -> dict[int, int]:
        """End offset minus next offset for each owned partition whose end is known."""
        consumer = self.consumer
        if consumer is None:
            return {}
        out: dict[int, int] = {}
        for tp in consumer.assignment():
            end = consumer.highwater(tp)
            if end is not None and tp.partition in self.positions:
                out[tp.partition] = max(end - self.positions[tp.partition], 0)
        return out

    # ------------------------------------------------------------------ one batch

    async def apply_batch(
        self, records: Sequence[ConsumerRecord[bytes, bytes]], failed: PoisonEvent | None = None
    ) -> None:
        """Apply records (log order within each partition) and advance offsets, atomically.

        With `failed`, the records are not applied but dead-lettered with that reason.
        """
        if not records:
            return
        started = time.perf_counter()
        per_event: list[list[Op]] = []
        poison: list[tuple[ConsumerRecord[bytes, bytes], PoisonEvent]] = []
        next_offsets: dict[int, int] = {}
        first_offsets: dict[int, int] = {}
        for rec in records:
            next_offsets[rec.partition] = rec.offset + 1
            first_offsets.setdefault(rec.partition, rec.offset)
            if failed is not None:
                poison.append((rec, failed))
                continue
            try:
                per_event.append(plan_record(rec.value))
            except PoisonEvent as exc:
                poison.append((rec, exc))
        ops = merge(per_event)
        parts = sorted(next_offsets)
        epochs = [self.epochs.get(p, -1) for p in parts]
        async with self.pool.acquire() as conn, conn.transaction():
            status = await conn.execute(
                ADVANCE,
                self.settings.topic,
                parts,
                [next_offsets[p] for p in parts],
                epochs,
                [first_offsets[p] for p in parts],
            )
            if int(status.rsplit(" ", 1)[-1]) != len(parts):
                self.stats.fenced += 1
                raise Fenced(
                    f"partitions {parts} were reassigned or already past this batch;"
                    " batch rolled back"
                )
            slots = lock_slots(ops)
            if slots:
                await conn.execute(LOCK_SLOTS_SQL, slots)
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
            applied = await store.apply(conn, ops, self.settings.timeline_cap)
            trimmed = await self._maybe_trim(conn, applied)
            # Delivered at commit: the query service wakes read-your-writes waiters on it.
            await conn.execute(
                "SELECT pg_notify('projector_progress', $1)",
                ",".join(f"{p}:{next_offsets[p]}" for p in parts),
            )
            payload = wakeup_payload(applied)
            if payload is not None:
                await conn.execute("SELECT pg_notify('stream_wakeup', $1)", payload)
        self.positions.update(next_offsets)
        self.stats.dead_letters += len(poison)
        self.stats.timeline_rows += applied.fanned
        self.stats.timeline_rows_trimmed += trimmed
        self.stats.observe_batch(time.perf_counter() - started, len(per_event), time.time())

    async def _maybe_trim(self, conn: asyncpg.Connection, applied: store.Applied) -> int:
        """Amortized timeline trimming (DESIGN.md §4): remember whose timelines grew, visit
        them every TRIM_EVERY batches; never per insert."""
        self._trim_users |= applied.users
        self._trim_authors |= applied.wide_authors
        self._batches_since_trim += 1
        if self._batches_since_trim < TRIM_EVERY and len(self._trim_users) < TRIM_PENDING_LIMIT:
            return 0
        deleted = 0
        if self._trim_users or self._trim_authors:
            deleted = await store.trim(
                conn, self._trim_users, self._trim_authors, self.settings.timeline_cap
            )
        self._trim_users, self._trim_authors = set(), set()
        self._batches_since_trim = 0
        return deleted

    # ------------------------------------------------------------------ the loop

    async def run(self, max_records: int = MAX_BATCH_RECORDS) -> None:
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
                    await self._apply_until_stopped(records)
                except asyncio.CancelledError:
                    if not self._stopping.is_set():
                        raise
                    log.info("stopping: in-flight batch rolled back, its owner re-applies it")
                    break
                except Fenced as exc:
                    # Our view of ownership is stale; the group will hand the partitions to
                    # their new owner (or back to us, with a fresh claim). Nothing was written.
                    log.warning("%s", exc)
                    await asyncio.sleep(0.2)
                    await self._rewind(consumer, {r.partition for r in records})
                except asyncpg.PostgresError as exc:
                    if _is_connection_error(exc) or _is_retryable(exc):
                        await self._database_down(consumer, records, exc)
                    else:
                        # A statement failed on this batch's data: apply record by record so
                        # only the offending events are dead-lettered (invariant 7).
                        log.error("batch failed (%s); isolating records", exc)
                        await self._apply_one_by_one(consumer, records)
                except (OSError, asyncpg.InterfaceError, asyncpg.InternalClientError) as exc:
                    await self._database_down(consumer, records, exc)
        finally:
            await consumer.stop()

    async def _apply_until_stopped(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        """Apply a batch; if a stop is requested meanwhile, give it STOP_GRACE_S, then cancel it
        (the transaction rolls back) so SIGTERM ends the process within its 10 s budget."""
        task = asyncio.ensure_future(self.apply_batch(records))
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
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
