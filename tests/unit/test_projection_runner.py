"""Pure helpers of the projector loop: the streaming wake-up payload, the batch metrics, and
which statement stores a post."""

from datetime import UTC, datetime

import msgspec

from services.projector.batch_size import (
    BATCH_TARGET_ROWS,
    MAX_BATCH_RECORDS,
    MAX_BATCH_RECORDS_BEHIND,
    MIN_BATCH_RECORDS,
    BatchSizer,
)
from services.projector.project import NewPost
from services.projector.stats import LATENCY_BUCKETS, Stats
from services.projector.store import Applied, pg_array, plain, wakeup_payload
from services.projector.trimmer import TRIM_CHUNK_PAUSE_S, trim_pause


def applied(users: set[int], overflow: bool = False) -> Applied:
    a = Applied()
    a.users = users
    a.overflow = overflow
    return a


def test_wakeup_names_few_users_and_says_star_for_many() -> None:
    assert wakeup_payload(applied(set())) is None
    assert wakeup_payload(applied({3, 1, 2})) == "1,2,3"
    assert wakeup_payload(applied(set(range(1, 502)))) == "*"
    assert wakeup_payload(applied({1}, overflow=True)) == "*"
    # NOTIFY payloads must stay under 8000 bytes: 500 nineteen-digit ids would not.
    big = {(1 << 62) + i for i in range(450)}
    assert wakeup_payload(applied(big)) == "*"


def test_stats_histogram_and_rate() -> None:
    s = Stats()
    s.observe_batch(0.003, 10, now=100.0)
    s.observe_batch(0.2, 30, now=102.0)
    assert s.events_applied == 40 and s.batches == 2
    assert s.latency_counts[0] == 1  # <= 5 ms
    assert s.latency_counts[LATENCY_BUCKETS.index(0.25)] == 2  # cumulative buckets
    assert s.events_per_second(now=102.0) == 15.0  # 30 events in the 2 s after the first
    assert s.events_per_second(now=200.0) == 0.0  # idle


def test_pg_array_literals_quote_every_element() -> None:
    assert pg_array([]) == "{}"
    assert pg_array([1, 2]) == '{"1","2"}'
    assert pg_array(['a"b', "c\\d", "NULL"]) == '{"a\\"b","c\\\\d","NULL"}'


def test_batches_are_sized_by_the_rows_a_record_writes() -> None:
    sizer = BatchSizer()
    assert sizer.records() == MAX_BATCH_RECORDS  # nothing learned yet
    sizer.observe(1000, 100 * 1000)  # ~100 timeline rows per record
    assert sizer.records() == BATCH_TARGET_ROWS // 100
    sizer.observe(0, 0)  # an empty batch teaches nothing
    assert sizer.records() == BATCH_TARGET_ROWS // 100
    # A moving average: one batch of wide fan-outs shrinks the next batches, not to one record.
    sizer.observe(1000, 1000 * 1000)
    assert MIN_BATCH_RECORDS < sizer.records() < BATCH_TARGET_ROWS // 100
    for _ in range(20):
        sizer.observe(1000, 10**9)
    assert sizer.records() == MIN_BATCH_RECORDS
    # Records that write nothing (likes, profile edits) still make bounded batches.
    for _ in range(50):
        sizer.observe(1000, 0)
    assert sizer.records() == MAX_BATCH_RECORDS_BEHIND


def test_trim_chunks_fill_at_most_their_duty_of_a_visit() -> None:
    # A chunk of 50 ms at 10 % waits 450 ms: chunk / (chunk + pause) == duty.
    pause = trim_pause(0.05, duty=0.1)
    assert abs(0.05 / (0.05 + pause) - 0.1) < 1e-9
    # Quick chunks still leave the floor between them.
    assert trim_pause(0.0) == TRIM_CHUNK_PAUSE_S
    # A chunk slowed by a busy machine stretches the pause with it.
    assert trim_pause(0.2) > trim_pause(0.05)


def test_only_a_post_with_nothing_but_text_is_stored_as_plain() -> None:
    p = NewPost(post_id=7, author_id=1, text="hi", created_at=datetime.now(UTC), conversation_id=7)
    assert plain(p)
    assert plain(msgspec.structs.replace(p, visibility="followers"))
    for change in (
        {"conversation_id": 3},
        {"conversation_id": None},
        {"audience_id": 4},
        {"in_reply_to_id": 3, "conversation_id": 3},
        {"in_reply_to_author_id": 2},
        {"quote_of_id": 3},
        {"mentions": (2,), "mention_names": ("b",)},
        {"hashtags": ("x",)},
        {"links": ("https://example.com",)},
        {"media_json": '[{"kind":"photo"}]'},
    ):
        assert not plain(msgspec.structs.replace(p, **change)), change
