"""Rebuild the read models from offset 0 (invariant 1), and checksum them.

`rebuild` replays the topic into fresh tables in a schema of their own (`rebuild_<ts>`,
created with `CREATE TABLE … (LIKE public.… INCLUDING ALL)`), through the same plan() and
store as the live projector, up to the end offsets captured at start. Then, with
projector_offsets locked against the live projector's commits, it replays whatever the live
projector has committed since, and swaps the tables in one transaction: the live tables move
out, the rebuilt ones move into `public` under the original index names, and
projector_offsets carries the replayed positions.

A live projector may keep running: its next commit waits for the swap and then writes to the
rebuilt tables. If it was behind the replay, its next batch starts before the stored position,
is refused like a fenced one, and it seeks forward to the replayed positions.

Checksums: per table, md5 over every row's text in primary-key order, and the row count.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from datetime import UTC, datetime
from typing import TextIO

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from services.projector import batch, store
from services.projector.runner import plan_record
from services.projector.sql_offsets import RECORD_DEAD_LETTER
from shared.db import SESSION_SETTINGS
from shared.settings import Settings

# Every table the projector derives from the log. Bookkeeping (projector_offsets,
# dead_letters) and the command side (cmd_*) are not rebuilt.
READ_MODELS: tuple[str, ...] = (
    "users",
    "posts",
    "post_versions",
    "post_tags",
    "post_tombstones",
    "reposts",
    "likes",
    "follows",
    "follow_requests",
    "blocks",
    "mutes",
    "audiences",
    "audience_members",
    "home_timeline",
    "pull_authors",
    "pulled_follows",
    "notifications",
)

# Records per transaction of the replay: it writes to tables nobody reads yet, so only memory
# bounds it.
REPLAY_BATCH_RECORDS = 5000

_PRIMARY_KEY = """
SELECT a.attname
  FROM pg_index i
  JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
 WHERE i.indrelid = $1::regclass AND i.indisprimary
 ORDER BY array_position(i.indkey::int2[], a.attnum)
"""

_INDEXES = "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = $1 AND tablename = $2"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def checksums(conn: asyncpg.Connection, schema: str = "public") -> dict[str, str]:
    """Table -> "<rows> <md5 of rows in primary-key order>"."""
    out: dict[str, str] = {}
    for table in READ_MODELS:
        qualified = f"{_quote(schema)}.{_quote(table)}"
        keys = [r["attname"] for r in await conn.fetch(_PRIMARY_KEY, qualified)]
        order = ", ".join(f"t.{_quote(k)}" for k in keys)
        row = await conn.fetchrow(
            f"SELECT count(*) AS n, md5(coalesce(string_agg(t::text, E'\\n' ORDER BY {order}),"
            f" '')) AS digest FROM {qualified} t"
        )
        assert row is not None
        out[table] = f"{row['n']} {row['digest']}"
    return out


def print_checksums(sums: dict[str, str], out: TextIO = sys.stdout) -> None:
    width = max(len(t) for t in sums)
    for table, value in sums.items():
        print(f"{table:<{width}}  {value}", file=out)


class Progress:
    """A one-line progress bar on stderr: events done / total and events per second."""

    def __init__(self, total: int, out: TextIO = sys.stderr, every_s: float = 0.5) -> None:
        self.total = total
        self.done = 0
        self.out = out
        self.every_s = every_s
        self.started = time.monotonic()
        self._last = 0.0

    def advance(self, n: int, force: bool = False) -> None:
        self.done += n
        now = time.monotonic()
        if not force and now - self._last < self.every_s:
            return
        self._last = now
        rate = self.done / max(now - self.started, 1e-6)
        share = self.done / self.total if self.total else 1.0
        bar = "#" * int(share * 30)
        self.out.write(
            f"\rrebuild [{bar:<30}] {self.done}/{self.total} events {rate:,.0f} events/s"
        )
        self.out.flush()

    def finish(self) -> None:
        self.advance(0, force=True)
        self.out.write("\n")
        self.out.flush()


class Replayer:
    """Applies a topic's records into the tables of one schema, batch by batch."""

    def __init__(self, settings: Settings, conn: asyncpg.Connection, progress: Progress) -> None:
        self.settings = settings
        self.conn = conn
        self.progress = progress
        self.positions: dict[int, int] = {}
        self.dead_letters = 0

    async def replay(self, consumer: AIOKafkaConsumer, until: dict[int, int]) -> None:
        """Consume and apply until every partition reached its `until` offset. One batch is
        written while the next is fetched and planned, as in the live projector."""
        topic = self.settings.topic
        for p, end in until.items():
            start = self.positions.get(p, 0)
            if start < end:
                consumer.seek(TopicPartition(topic, p), start)
        planned_to = dict(self.positions)  # next offset to plan, per partition
        writing: asyncio.Future[None] | None = None
        try:
            while any(planned_to.get(p, 0) < end for p, end in until.items()):
                fetched = await consumer.getmany(
                    timeout_ms=0 if writing else 500, max_records=REPLAY_BATCH_RECORDS
                )
                records = [
                    r
                    for recs in fetched.values()
                    for r in recs
                    if planned_to.get(r.partition, 0) <= r.offset < until.get(r.partition, 0)
                ]
                planned = await batch.plan_async(records, plan_record) if records else None
                if planned is not None:
                    planned_to.update(planned.next_offsets)
                if writing is not None:
                    await writing
                    writing = None
                if planned is not None:
                    writing = asyncio.ensure_future(self._write(planned))
                for tp in list(consumer.assignment()):
                    if planned_to.get(tp.partition, 0) >= until.get(tp.partition, 0):
                        consumer.pause(tp)
            if writing is not None:
                await writing
                writing = None
        finally:
            if writing is not None:
                writing.cancel()
        consumer.resume(*consumer.assignment())

    async def _write(self, planned: batch.Planned) -> None:
        async with self.conn.transaction():
            for rec, why in planned.poison:
                self.dead_letters += 1
                await self.conn.execute(
                    RECORD_DEAD_LETTER,
                    rec.topic,
                    rec.partition,
                    rec.offset,
                    why.reason,
                    why.detail[:2000],
                    rec.value,
                )
            await store.apply(self.conn, planned.ops, self.settings.timeline_cap)
        self.positions.update(planned.next_offsets)
        self.progress.advance(len(planned.records))


async def _end_offsets(settings: Settings, consumer: AIOKafkaConsumer) -> dict[int, int]:
    topic = settings.topic
    # The producer's partitions_for waits for the topic's metadata; the consumer's
    # partitions_for_topic only reads what happens to be cached.
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        partitions = await producer.partitions_for(topic)
    finally:
        await producer.stop()
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(tps)
    ends = await consumer.end_offsets(tps)
    return {tp.partition: off for tp, off in ends.items()}


# After the replay the whole timeline table is known at once, so the cap applies to every
# timeline that grew past it, as the live projector's amortized trim would have.
_TRIM_ALL = """
SELECT user_id FROM home_timeline GROUP BY user_id HAVING count(*) > $1
"""


async def _swap(conn: asyncpg.Connection, fresh: str, old: str) -> None:
    """Move the live tables to `old` and the rebuilt ones to public, keeping index names."""
    await conn.execute(f"CREATE SCHEMA {_quote(old)}")
    for table in READ_MODELS:
        live = {
            _normalise(r["indexdef"]): r["indexname"]
            for r in await conn.fetch(_INDEXES, "public", table)
        }
        await conn.execute(f"ALTER TABLE public.{_quote(table)} SET SCHEMA {_quote(old)}")
        await conn.execute(f"ALTER TABLE {_quote(fresh)}.{_quote(table)} SET SCHEMA public")
        for r in await conn.fetch(_INDEXES, "public", table):
            name = live.get(_normalise(r["indexdef"]))
            if name and name != r["indexname"]:
                await conn.execute(
                    f"ALTER INDEX public.{_quote(r['indexname'])} RENAME TO {_quote(name)}"
                )


def _normalise(indexdef: str) -> str:
    return re.sub(r"INDEX \S+ ON \S+", "INDEX ON", indexdef)


async def rebuild(settings: Settings, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Replay the topic into fresh tables and switch over; returns the replayed event count."""
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S%f")
    fresh, old = f"rebuild_{stamp}", f"replaced_{stamp}"
    admin = await asyncpg.connect(settings.database_url, server_settings=SESSION_SETTINGS)
    work = await asyncpg.connect(
        settings.database_url,
        server_settings={**SESSION_SETTINGS, "search_path": f"{fresh},public"},
    )
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    try:
        await admin.execute(f"CREATE SCHEMA {_quote(fresh)}")
        for table in READ_MODELS:
            await admin.execute(
                f"CREATE TABLE {_quote(fresh)}.{_quote(table)}"
                f" (LIKE public.{_quote(table)} INCLUDING ALL)"
            )
        ends = await _end_offsets(settings, consumer)
        starts = await consumer.beginning_offsets(list(consumer.assignment()))
        total = sum(ends[tp.partition] - off for tp, off in starts.items())
        progress = Progress(total, err)
        replayer = Replayer(settings, work, progress)
        replayer.positions = {tp.partition: off for tp, off in starts.items()}
        await replayer.replay(consumer, ends)

        async with admin.transaction():
            # Blocks the live projector's commits (and claims) until the swap commits.
            await admin.execute("LOCK TABLE public.projector_offsets IN EXCLUSIVE MODE")
            live = {
                r["partition"]: r["next_offset"]
                for r in await admin.fetch(
                    "SELECT partition, next_offset FROM public.projector_offsets WHERE topic = $1",
                    settings.topic,
                )
            }
            catch_up = {p: max(off, ends.get(p, 0)) for p, off in live.items()}
            progress.total += sum(max(off - ends.get(p, 0), 0) for p, off in live.items())
            await replayer.replay(consumer, catch_up)
            cap = settings.timeline_cap
            big = [r["user_id"] for r in await work.fetch(_TRIM_ALL, cap * 5 // 4)]
            if big:
                await store.trim(work, big, [], cap)
            progress.finish()
            await _swap(admin, fresh, old)
            positions = {p: replayer.positions.get(p, 0) for p in ends}
            await admin.execute(
                """
                INSERT INTO public.projector_offsets (topic, partition, next_offset)
                SELECT $1, p, o FROM unnest($2::int[], $3::bigint[]) AS n(p, o)
                ON CONFLICT (topic, partition) DO UPDATE
                   SET next_offset = EXCLUDED.next_offset, updated_at = now()
                """,
                settings.topic,
                list(positions),
                list(positions.values()),
            )
        await admin.execute(f"DROP SCHEMA {_quote(old)} CASCADE")
        await admin.execute(f"DROP SCHEMA {_quote(fresh)} CASCADE")
        print(
            f"rebuilt {len(READ_MODELS)} read models from {progress.done} events"
            f" ({replayer.dead_letters} dead letters)",
            file=out,
        )
        print_checksums(await checksums(admin), out)
        return progress.done
    except BaseException:
        await admin.execute(f"DROP SCHEMA IF EXISTS {_quote(fresh)} CASCADE")
        raise
    finally:
        await consumer.stop()
        await work.close()
        await admin.close()
