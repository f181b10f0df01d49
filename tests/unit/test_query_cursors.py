"""Pure helpers of the query service: the stream cursor, UUID pages, Link headers that keep
other parameters, and the stream hub's wake-up routing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from yarl import URL

from services.query.pagination import Page, UuidPage, link_header, parse_uuid_page
from services.query.streaming import Cursor, StreamHub, micros, parse_cursor, sse
from shared.http import ApiError

NOTE = uuid.UUID("0190f3a2-1b2c-7d3e-8f40-123456789abc")


def test_cursor_round_trips() -> None:
    cursor = Cursor(home=123, notification=NOTE, tombstone_us=1_700_000_000_123_456, tombstone_id=9)
    assert parse_cursor(cursor.encode()) == cursor
    assert parse_cursor(Cursor().encode()) == Cursor()
    assert cursor.encode() == f"123.{NOTE}.1700000000123456.9"


def test_tombstone_time_is_exact_to_the_microsecond() -> None:
    at = datetime(2026, 11, 26, 13, 0, 0, 654321, tzinfo=UTC)
    assert Cursor(tombstone_us=micros(at)).tombstone_at == at


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "1.2.3",
        f"x.{NOTE}.0.0",
        f"1.{NOTE}.0",
        f"-1.{NOTE}.0.0",
        f"1.{NOTE}.0.0.0",
        "1.0190f3a21b2c7d3e8f40123456789abc.0.0",
        f"{1 << 63}.{NOTE}.0.0",
        f"1.{NOTE}.{10**30}.0",
    ],
)
def test_bad_cursors_are_400(bad: str) -> None:
    with pytest.raises(ApiError) as err:
        parse_cursor(bad)
    assert (err.value.status, err.value.field) == (400, "Last-Event-ID")


def test_sse_frame() -> None:
    frame = sse("delete", "42", Cursor(home=1, notification=NOTE))
    assert frame == f"event: delete\nid: 1.{NOTE}.0.0\ndata: 42\n\n".encode()


def test_uuid_pages() -> None:
    assert parse_uuid_page({}) == UuidPage()
    page = parse_uuid_page({"max_id": str(NOTE), "limit": "5"})
    assert (page.max_id, page.limit) == (NOTE, 5)
    for bad in ("12", "{" + str(NOTE)[:-2] + "}", "z" * 36):
        with pytest.raises(ApiError) as err:
            parse_uuid_page({"since_id": bad})
        assert err.value.field == "since_id"


def test_link_header_keeps_other_parameters() -> None:
    url = URL("http://h/v1/search?q=a%20b&type=posts&max_id=99&limit=2")
    assert link_header(url, Page(limit=2), [7, 5]) == (
        '<http://h/v1/search?q=a+b&type=posts&limit=2&max_id=5>; rel="next", '
        '<http://h/v1/search?q=a+b&type=posts&limit=2&since_id=7>; rel="prev"'
    )


async def test_hub_wakes_only_the_named_users() -> None:
    hub = StreamHub()
    with hub.subscribe(1) as one, hub.subscribe(2) as two, hub.subscribe(2) as two_again:
        hub.wake("2, 3")
        assert (one.is_set(), two.is_set(), two_again.is_set()) == (False, True, True)
        two.clear()
        two_again.clear()
        hub.wake("*")
        assert one.is_set() and two.is_set()
        one.clear()
        hub.wake("garbage")  # unreadable: everyone re-reads, which is always safe
        assert one.is_set()
    assert hub._subscribers == {}
    hub.close()
    assert hub.closing.is_set()
