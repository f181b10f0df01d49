from datetime import UTC, datetime

import pytest

from shared.ids import EPOCH_MS, SnowflakeGenerator, snowflake_floor, snowflake_time, uuid7


def test_snowflakes_increase_and_encode_their_time() -> None:
    gen = SnowflakeGenerator(worker_id=3)
    ids = [gen.next_id() for _ in range(10_000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(0 < i < (1 << 63) for i in ids)
    assert abs((snowflake_time(ids[0]) - datetime.now(UTC)).total_seconds()) < 5


def test_sequence_overflow_borrows_the_next_millisecond() -> None:
    gen = SnowflakeGenerator(worker_id=1, clock_ms=lambda: EPOCH_MS + 1000)
    ids = [gen.next_id() for _ in range(5000)]
    assert len(set(ids)) == 5000 and ids == sorted(ids)


def test_clock_going_back_never_repeats_ids() -> None:
    now = [EPOCH_MS + 10_000]
    gen = SnowflakeGenerator(worker_id=1, clock_ms=lambda: now[0])
    first = gen.next_id()
    now[0] -= 5000
    assert gen.next_id() > first


def test_workers_never_collide() -> None:
    clock = lambda: EPOCH_MS + 42  # noqa: E731
    a = {SnowflakeGenerator(1, clock).next_id() for _ in range(1)}
    b = {SnowflakeGenerator(2, clock).next_id() for _ in range(1)}
    assert not a & b


def test_worker_range_is_checked() -> None:
    with pytest.raises(ValueError):
        SnowflakeGenerator(worker_id=1024)


def test_floor_orders_with_ids() -> None:
    gen = SnowflakeGenerator(worker_id=7)
    before = snowflake_floor(datetime.now(UTC))
    assert gen.next_id() >= before


def test_uuid7_is_version_7_and_strictly_increasing() -> None:
    ids = [uuid7() for _ in range(5000)]
    assert all(u.version == 7 and u.variant == "specified in RFC 4122" for u in ids)
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
