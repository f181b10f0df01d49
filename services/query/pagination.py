"""Keyset pagination as Mastodon clients know it: `limit`, `max_id`, `since_id`, `Link`.

Ids are snowflakes, so "newest first" is `post_id DESC` and a page boundary is a plain index
range bound: no OFFSET, and a page costs the same however deep it is.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Final

import msgspec
from yarl import URL

from shared.http import ApiError, parse_id

DEFAULT_LIMIT: Final = 20
MAX_LIMIT: Final = 40
# Open bounds as values rather than NULLs keep the range condition sargable in a generic plan.
# An id equal to the bigint maximum could never be listed; snowflakes reach it in ~69 years.
NO_UPPER_BOUND: Final = (1 << 63) - 1
NO_LOWER_BOUND: Final = 0


class Page(msgspec.Struct, frozen=True, kw_only=True):
    """One requested page: ids strictly between `since_id` and `max_id`, newest first."""

    limit: int = DEFAULT_LIMIT
    max_id: int = NO_UPPER_BOUND
    since_id: int = NO_LOWER_BOUND


def parse_limit(value: str | None) -> int:
    if value is None:
        return DEFAULT_LIMIT
    if not (value.isascii() and value.isdigit()):
        raise ApiError(422, "invalid_field", "limit must be a positive integer", "limit")
    # A huge number of digits is just "more than the maximum"; don't convert it.
    n = int(value) if len(value) <= 6 else MAX_LIMIT
    if n < 1:
        raise ApiError(422, "invalid_field", "limit must be at least 1", "limit")
    return min(n, MAX_LIMIT)


def parse_page(query: Mapping[str, str]) -> Page:
    """The page a request asks for; a bad parameter is a 422 naming it."""
    max_id = query.get("max_id")
    since_id = query.get("since_id")
    return Page(
        limit=parse_limit(query.get("limit")),
        max_id=NO_UPPER_BOUND if max_id is None else parse_id(max_id, "max_id"),
        since_id=NO_LOWER_BOUND if since_id is None else parse_id(since_id, "since_id"),
    )


class UuidPage(msgspec.Struct, frozen=True, kw_only=True):
    """A page keyed by UUIDs (notifications: the causing event's UUIDv7, so time-ordered)."""

    limit: int = DEFAULT_LIMIT
    max_id: uuid.UUID = uuid.UUID(int=(1 << 128) - 1)
    since_id: uuid.UUID = uuid.UUID(int=0)


def parse_uuid(value: str, field: str) -> uuid.UUID:
    # The canonical 36-character form only: uuid.UUID also accepts braces and "urn:uuid:".
    if len(value) != 36:
        raise ApiError(422, "invalid_id", f"{field} must be a UUID", field)
    try:
        return uuid.UUID(value)
    except ValueError:
        raise ApiError(422, "invalid_id", f"{field} must be a UUID", field) from None


def parse_uuid_page(query: Mapping[str, str]) -> UuidPage:
    max_id = query.get("max_id")
    since_id = query.get("since_id")
    default = UuidPage()
    return UuidPage(
        limit=parse_limit(query.get("limit")),
        max_id=default.max_id if max_id is None else parse_uuid(max_id, "max_id"),
        since_id=default.since_id if since_id is None else parse_uuid(since_id, "since_id"),
    )


def link_header(url: URL, page: Page | UuidPage, ids: Sequence[object]) -> str | None:
    """The `Link` header for a page of `ids` (newest first) served from absolute `url`.

    "next" (older) only when the page is full: a short page proves nothing older is left.
    "prev" (newer) whenever the page has items, from its newest one.
    """
    if not ids:
        return None
    # Other parameters (a search's q, type) carry over; the paging ones are replaced.
    kept = [(k, v) for k, v in url.query.items() if k not in ("limit", "max_id", "since_id")]
    links = []
    if len(ids) >= page.limit:
        older = url.with_query([*kept, ("limit", str(page.limit)), ("max_id", str(ids[-1]))])
        links.append(f'<{older}>; rel="next"')
    newer = url.with_query([*kept, ("limit", str(page.limit)), ("since_id", str(ids[0]))])
    links.append(f'<{newer}>; rel="prev"')
    return ", ".join(links)
