"""Pagination parameters and the Link header (services/query/pagination.py)."""

from __future__ import annotations

import pytest
from yarl import URL

from services.query.pagination import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    NO_LOWER_BOUND,
    NO_UPPER_BOUND,
    Page,
    link_header,
    parse_limit,
    parse_page,
)
from shared.http import ApiError

BASE = URL("http://example.test:8002/v1/timelines/home")


def test_defaults() -> None:
    assert parse_page({}) == Page(limit=DEFAULT_LIMIT, max_id=NO_UPPER_BOUND, since_id=0)
    assert NO_LOWER_BOUND == 0


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1", 1), ("20", 20), ("40", 40), ("41", MAX_LIMIT), ("1000", 40), ("9" * 400, 40)],
)
def test_limit_is_clamped(raw: str, expected: int) -> None:
    assert parse_limit(raw) == expected


@pytest.mark.parametrize("raw", ["0", "-1", "", "abc", "1.5", " 5", "+5", "²", "00"])
def test_bad_limit_is_422_naming_limit(raw: str) -> None:
    with pytest.raises(ApiError) as err:
        parse_limit(raw)
    assert (err.value.status, err.value.field) == (422, "limit")


def test_ids() -> None:
    page = parse_page({"limit": "5", "max_id": "900", "since_id": "100"})
    assert page == Page(limit=5, max_id=900, since_id=100)


@pytest.mark.parametrize("field", ["max_id", "since_id"])
@pytest.mark.parametrize("raw", ["x", "-3", "0", "", str(1 << 63), "1e3"])
def test_bad_id_is_422_naming_field(field: str, raw: str) -> None:
    with pytest.raises(ApiError) as err:
        parse_page({field: raw})
    assert (err.value.status, err.value.field) == (422, field)


def test_no_link_for_an_empty_page() -> None:
    assert link_header(BASE, Page(limit=2), []) is None


def test_full_page_links_next_and_prev() -> None:
    link = link_header(BASE.with_query(limit="2", max_id="999"), Page(limit=2), [50, 40])
    assert link == (
        '<http://example.test:8002/v1/timelines/home?limit=2&max_id=40>; rel="next", '
        '<http://example.test:8002/v1/timelines/home?limit=2&since_id=50>; rel="prev"'
    )


def test_short_page_links_only_prev() -> None:
    link = link_header(BASE, Page(limit=3), [50, 40])
    assert link == '<http://example.test:8002/v1/timelines/home?limit=3&since_id=50>; rel="prev"'
