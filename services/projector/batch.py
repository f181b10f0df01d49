"""One batch of records, planned: its operations, its poison records and the offsets it moves.

Planning is pure CPU (decode, plan, merge) and touches no state, so the runner plans the next
batch while the previous one is still being written (runner.Projector.run).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import TypeAlias

from aiokafka.structs import ConsumerRecord

from services.projector.project import Op
from services.projector.runs import interleave, merge
from shared.codec import PoisonEvent

Record: TypeAlias = "ConsumerRecord[bytes, bytes]"
# Each partition's planned events in log order.
Streams: TypeAlias = dict[int, list[list[Op]]]


class Planned:
    """What `plan` made of a batch; the runner writes it in one transaction."""

    def __init__(self, records: Sequence[Record]) -> None:
        self.records = records
        self.ops: list[Op] = []
        self.events = 0
        self.poison: list[tuple[Record, PoisonEvent]] = []
        # Per partition: the first offset in the batch, and the one after its last.
        self.first_offsets: dict[int, int] = {}
        self.next_offsets: dict[int, int] = {}
        self.plan_seconds = 0.0

    @property
    def partitions(self) -> list[int]:
        return sorted(self.next_offsets)


# Records planned between two yields to the event loop in `plan_async`: the batch being written
# meanwhile resumes within about a millisecond whenever PostgreSQL answers.
CHUNK = 100


def plan(
    records: Sequence[Record],
    plan_one: Callable[[bytes | None], list[Op]],
    failed: PoisonEvent | None = None,
) -> Planned:
    """Plan records (log order within each partition) with `plan_one`, which raises
    PoisonEvent for a record that cannot become operations. With `failed`, every record is
    poison for that reason."""
    started = time.perf_counter()
    out, streams = Planned(records), Streams()
    _plan_into(out, streams, records, plan_one, failed)
    return _merged(out, streams, time.perf_counter() - started)


class Planner:
    """Plans a batch piece by piece as its records arrive (the runner tops up the next batch
    while the previous one is being written), yielding to the event loop every CHUNK records
    so that the write goes on meanwhile (planning is CPU in this process, the write mostly
    PostgreSQL's)."""

    def __init__(self, plan_one: Callable[[bytes | None], list[Op]]) -> None:
        self._plan_one = plan_one
        self._records: list[Record] = []
        self._out = Planned(self._records)
        self._streams = Streams()
        self._busy = 0.0

    def __len__(self) -> int:
        return len(self._records)

    async def add(self, records: Sequence[Record]) -> None:
        """Plan more records (after those already added, log order within each partition)."""
        for i in range(0, len(records), CHUNK):
            started = time.perf_counter()
            chunk = records[i : i + CHUNK]
            self._records.extend(chunk)
            _plan_into(self._out, self._streams, chunk, self._plan_one, None)
            self._busy += time.perf_counter() - started
            await asyncio.sleep(0)

    def done(self) -> Planned:
        started = time.perf_counter()
        busy = self._busy + time.perf_counter() - started
        return _merged(self._out, self._streams, busy)


async def plan_async(
    records: Sequence[Record], plan_one: Callable[[bytes | None], list[Op]]
) -> Planned:
    """`plan`, yielding to the event loop every CHUNK records (see `Planner`)."""
    planner = Planner(plan_one)
    await planner.add(records)
    return planner.done()


def _plan_into(
    out: Planned,
    streams: Streams,
    records: Sequence[Record],
    plan_one: Callable[[bytes | None], list[Op]],
    failed: PoisonEvent | None,
) -> None:
    # Each partition's events in log order; interleave() lines up runs across partitions.
    for rec in records:
        out.next_offsets[rec.partition] = rec.offset + 1
        out.first_offsets.setdefault(rec.partition, rec.offset)
        if failed is not None:
            out.poison.append((rec, failed))
            continue
        try:
            streams.setdefault(rec.partition, []).append(plan_one(rec.value))
        except PoisonEvent as exc:
            out.poison.append((rec, exc))


def _merged(out: Planned, streams: Streams, seconds: float) -> Planned:
    out.events = sum(len(s) for s in streams.values())
    out.ops = merge(interleave(streams.values()))
    out.plan_seconds = seconds
    return out
