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
from services.projector.runs import interleave_order, merge, segments, slot_mode
from shared.codec import PoisonEvent

Record: TypeAlias = "ConsumerRecord[bytes, bytes]"
# Each partition's planned events in log order.
Streams: TypeAlias = dict[int, list[list[Op]]]
# Each planned event's record offset, per partition, in step with Streams.
Offsets: TypeAlias = dict[int, list[int]]

# Shortest run of new posts (shared lock slots) that a batch holding events that lock
# exclusively writes in a transaction of its own (runs.segments). Live batches are short and
# stay whole: each extra transaction is another commit (a WAL flush) and its round trips; a
# replay's batches hold thousands of posts, whose fan-out is what the other instance waited for.
MIN_SHARED_RUN = 500


class Planned:
    """What `plan` made of a batch; the runner writes it in one transaction."""

    def __init__(self, records: Sequence[Record]) -> None:
        self.records = records
        # Each event's operations in the order they are written; merged on first use.
        self.planned_events: list[list[Op]] = []
        self._ops: list[Op] | None = None
        self.events = 0
        self.poison: list[tuple[Record, PoisonEvent]] = []
        # Per partition: the first offset in the batch, and the one after its last.
        self.first_offsets: dict[int, int] = {}
        self.next_offsets: dict[int, int] = {}
        self.plan_seconds = 0.0
        # The transactions the batch is written in, in order (runs.segments): itself, or
        # consecutive pieces of it.
        self.parts: list[Planned] = [self]
        # How many of `parts` are committed (the runner counts them as it writes).
        self.written = 0

    @property
    def ops(self) -> list[Op]:
        """The batch's operations (runs.merge of its events)."""
        if self._ops is None:
            self._ops = merge(self.planned_events)
        return self._ops

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
    out, streams, offsets = Planned(records), Streams(), Offsets()
    _plan_into(out, streams, offsets, records, plan_one, failed)
    return _merged(out, streams, offsets, time.perf_counter() - started)


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
        self._offsets = Offsets()
        self._busy = 0.0

    def __len__(self) -> int:
        return len(self._records)

    async def add(self, records: Sequence[Record]) -> None:
        """Plan more records (after those already added, log order within each partition)."""
        for i in range(0, len(records), CHUNK):
            started = time.perf_counter()
            chunk = records[i : i + CHUNK]
            self._records.extend(chunk)
            _plan_into(self._out, self._streams, self._offsets, chunk, self._plan_one, None)
            self._busy += time.perf_counter() - started
            await asyncio.sleep(0)

    def done(self) -> Planned:
        started = time.perf_counter()
        busy = self._busy + time.perf_counter() - started
        return _merged(self._out, self._streams, self._offsets, busy)


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
    offsets: Offsets,
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
            ops = plan_one(rec.value)
        except PoisonEvent as exc:
            out.poison.append((rec, exc))
            continue
        streams.setdefault(rec.partition, []).append(ops)
        offsets.setdefault(rec.partition, []).append(rec.offset)


def _merged(out: Planned, streams: Streams, offsets: Offsets, seconds: float) -> Planned:
    parts = list(streams)
    order = [(parts[i], j) for i, j in interleave_order([streams[p] for p in parts])]
    out.planned_events = [streams[p][j] for p, j in order]
    out.events = len(order)
    out.plan_seconds = seconds
    # Only a batch longer than MIN_SHARED_RUN can be cut (live ones, short, skip the lock
    # modes). Nor is one holding poison: its dead letters are written by the transaction that
    # moves past them, and placing them in a piece is not worth it for what is rare.
    if len(order) <= MIN_SHARED_RUN or out.poison:
        return out
    pieces = segments([slot_mode(e) for e in out.planned_events], MIN_SHARED_RUN)
    if len(pieces) > 1:
        out.parts = [_part(out, streams, offsets, order[r.start : r.stop]) for r in pieces]
    return out


def _part(
    whole: Planned, streams: Streams, offsets: Offsets, order: list[tuple[int, int]]
) -> Planned:
    """The piece of `whole` holding the events at `order` (a prefix of each partition's rest)."""
    first_offsets: dict[int, int] = {}
    next_offsets: dict[int, int] = {}
    for p, j in order:
        offset = offsets[p][j]
        first_offsets.setdefault(p, offset)
        next_offsets[p] = offset + 1
    records = [
        r
        for r in whole.records
        if r.partition in first_offsets
        and first_offsets[r.partition] <= r.offset < next_offsets[r.partition]
    ]
    part = Planned(records)
    part.first_offsets, part.next_offsets = first_offsets, next_offsets
    part.planned_events = [streams[p][j] for p, j in order]
    part.events = len(order)
    part.plan_seconds = whole.plan_seconds * len(order) / max(whole.events, 1)
    return part
