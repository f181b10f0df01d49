"""Operator commands for the dead-letter store (invariant 7: poison never blocks, but an
operator can look at it and, once the code is fixed, apply it after all).

Replaying applies a dead letter's stored bytes as the live projector would: decode again
(upcasters included), plan, apply in one transaction, delete the dead letter in that same
transaction. Every operation is state-based, so applying an old event late converges to what
an in-order projection would have written.
"""

from __future__ import annotations

import sys
from typing import TextIO

import asyncpg

from services.projector import store
from services.projector.runner import plan_record
from services.projector.store import wakeup_payload
from shared.codec import PoisonEvent
from shared.settings import Settings

LIST = """
SELECT id, topic, partition, "offset", reason, recorded_at, detail
  FROM dead_letters ORDER BY id
"""

PENDING = """
SELECT id, topic, partition, "offset", payload FROM dead_letters
 WHERE $1::bigint IS NULL OR id = $1 ORDER BY id
"""


async def list_dead_letters(conn: asyncpg.Connection, out: TextIO = sys.stdout) -> int:
    rows = await conn.fetch(LIST)
    print(
        f"{'id':>6}  {'topic':<30} {'part':>4} {'offset':>10}  {'reason':<18} recorded_at", file=out
    )
    for r in rows:
        print(
            f"{r['id']:>6}  {r['topic']:<30} {r['partition']:>4} {r['offset']:>10}"
            f"  {r['reason']:<18} {r['recorded_at'].isoformat()}",
            file=out,
        )
    print(f"{len(rows)} dead letter(s)", file=out)
    return len(rows)


async def replay(
    conn: asyncpg.Connection, settings: Settings, only: int | None = None, out: TextIO = sys.stdout
) -> tuple[int, int]:
    """Re-apply dead letters (all, or the one with id `only`); returns (applied, kept)."""
    applied = kept = 0
    for row in await conn.fetch(PENDING, only):
        where = f"#{row['id']} {row['topic']}[{row['partition']}]@{row['offset']}"
        try:
            ops = plan_record(row["payload"])
        except PoisonEvent as why:
            kept += 1
            print(f"{where}: still poison ({why.reason}: {why.detail[:200]})", file=out)
            continue
        try:
            async with conn.transaction():
                result = await store.apply(conn, ops, settings.timeline_cap)
                await conn.execute("DELETE FROM dead_letters WHERE id = $1", row["id"])
                payload = wakeup_payload(result)
                if payload is not None:
                    await conn.execute("SELECT pg_notify('stream_wakeup', $1)", payload)
        except asyncpg.PostgresError as exc:
            kept += 1
            print(f"{where}: failed again ({exc})", file=out)
            continue
        applied += 1
        print(f"{where}: applied", file=out)
    if only is not None and applied + kept == 0:
        print(f"no dead letter #{only}", file=out)
    return applied, kept
