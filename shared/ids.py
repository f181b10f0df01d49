"""Time-ordered identifiers.

Snowflake-style 64-bit ids for users and posts: id order is creation order, so a timeline's
keyset pagination is a plain range scan on (user_id, post_id). UUIDv7 for event ids (RFC 9562),
which CloudEvents consumers can sort and deduplicate on.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from datetime import UTC, datetime

# 2025-01-01T00:00:00Z in milliseconds; 41 bits of milliseconds last ~69 years from here.
EPOCH_MS = 1_735_689_600_000
WORKER_BITS = 10
SEQUENCE_BITS = 12
MAX_WORKER = (1 << WORKER_BITS) - 1
MAX_SEQUENCE = (1 << SEQUENCE_BITS) - 1


class SnowflakeGenerator:
    """Makes unique, increasing 63-bit ids: milliseconds | worker (10 bits) | sequence (12 bits).

    Two command-service processes must use different worker ids (MB_WORKER_ID). If the clock
    steps back, the generator keeps using the last millisecond it saw rather than repeat ids.
    """

    def __init__(self, worker_id: int, clock_ms: object = None) -> None:
        if not 0 <= worker_id <= MAX_WORKER:
            raise ValueError(f"worker_id must be in 0..{MAX_WORKER}")
        self._worker = worker_id
        self._clock = clock_ms if callable(clock_ms) else lambda: int(time.time() * 1000)
        self._last_ms = -1
        self._seq = 0
        self._lock = threading.Lock()

    def next_id(self) -> int:
        with self._lock:
            now = max(int(self._clock()) - EPOCH_MS, self._last_ms)
            if now == self._last_ms:
                self._seq = (self._seq + 1) & MAX_SEQUENCE
                if self._seq == 0:
                    # 4096 ids in one millisecond: borrow the next millisecond.
                    now = self._last_ms + 1
            else:
                self._seq = 0
            self._last_ms = now
            return (
                (now << (WORKER_BITS + SEQUENCE_BITS)) | (self._worker << SEQUENCE_BITS) | self._seq
            )


def snowflake_time(snowflake: int) -> datetime:
    """The creation time encoded in a snowflake id."""
    ms = (snowflake >> (WORKER_BITS + SEQUENCE_BITS)) + EPOCH_MS
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def snowflake_floor(ts: datetime) -> int:
    """The smallest snowflake id that could have been made at `ts`."""
    return (int(ts.timestamp() * 1000) - EPOCH_MS) << (WORKER_BITS + SEQUENCE_BITS)


_uuid7_lock = threading.Lock()
_uuid7_last = [0, 0]  # last millisecond, counter within it


def uuid7(now_ms: int | None = None) -> uuid.UUID:
    """A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, a 12-bit counter, 62 random bits.

    The counter (the RFC's "method 1") makes ids from one process strictly increasing even
    within a millisecond. Follow/block registers are last-writer-wins on this id, so a block
    issued right after a follow must compare greater.
    """
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    with _uuid7_lock:
        last_ms, counter = _uuid7_last
        if ms <= last_ms:
            ms, counter = last_ms, counter + 1
            if counter > 0xFFF:
                ms, counter = last_ms + 1, 0
        else:
            counter = 0
        _uuid7_last[:] = [ms, counter]
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version
    value |= counter << 64
    value |= 0b10 << 62  # variant
    value |= int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    return uuid.UUID(int=value)
