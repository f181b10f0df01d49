"""How many records the projector's next batch may take: sized by the timeline rows a batch
writes, not by records (runner.py asks before each fetch and reports each written batch)."""

from __future__ import annotations

# Records per transaction until the projector has seen what a record costs (`BatchSizer`).
# Batches are sized by the timeline rows they write, not by records: the benchmark once
# measured 5,000 post.created events fanning out to ~500 K rows in one 8-11 s transaction
# (every post in it waited for the slowest, and SIGTERM waited for it too).
MAX_BATCH_RECORDS = 1000
# Timeline rows a batch aims at when the projector is behind (when it is live, a batch holds
# what arrived during the previous write, and stays short). Each batch's fan-out sweeps the
# timeline's primary key once, so fewer, larger batches write the same rows with less work: the
# benchmark's 20,000 posts (~2 M rows), written serially against the same database, took
# 13.3 s in 1,000-record batches (~100 K rows each) and 12.2 s in 5,000-record ones (another
# pair of runs: 13.8 s and 13.0 s with 3,000); 300 K rows took ~1.5-2 s to write in the
# benchmark, well inside runner.STOP_GRACE_S.
BATCH_TARGET_ROWS = 300_000
# Bounds of a batch in records, whatever the estimate says (the estimate is an average: a run
# of a wide author's posts may still write more than the target).
MIN_BATCH_RECORDS = 100
MAX_BATCH_RECORDS_BEHIND = 10_000
# A large batch sorts its ~300 K timeline rows before inserting them (EXPLAIN ANALYZE: 9.8 MB
# for 107 K rows, so ~28 MB); the server's default work_mem (16 MB here) would spill to disk.
LARGE_BATCH_WORK_MEM = "64MB"


class BatchSizer:
    """How many records the next batch may hold: BATCH_TARGET_ROWS over the timeline rows a
    recent record wrote (a moving average), within [MIN_BATCH_RECORDS, MAX_BATCH_RECORDS_BEHIND];
    MAX_BATCH_RECORDS until a batch has been written."""

    # Weight of the newest batch in the moving average of rows per record.
    SMOOTHING = 0.3

    def __init__(self) -> None:
        self.rows_per_record: float | None = None

    def observe(self, records: int, rows: int) -> None:
        if records <= 0:
            return
        sample = rows / records
        held = self.rows_per_record
        self.rows_per_record = sample if held is None else held + self.SMOOTHING * (sample - held)

    def records(self) -> int:
        per = self.rows_per_record
        if per is None:
            return MAX_BATCH_RECORDS
        wanted = int(BATCH_TARGET_ROWS / max(per, 1.0))
        return max(MIN_BATCH_RECORDS, min(wanted, MAX_BATCH_RECORDS_BEHIND))
