"""The query service's API, described once from the structs the handlers encode.

`document()` is served at /openapi.json and written to schemas/openapi/query.json by
`make schemas`; tests check every route is documented and the committed file is current.
"""

from __future__ import annotations

from typing import Any

from services.query.views import (
    Account,
    AudienceView,
    Context,
    Item,
    Notification,
    Relationship,
    SearchResults,
    UserProfile,
    Version,
)
from shared.openapi import CONSISTENCY, PAGINATION, Operation, Param, build, write_document

LINK = ("Link",)
UUID_PAGINATION = (
    Param("limit", "query", {"type": "integer", "minimum": 1}, "page size (max 40)"),
    Param("max_id", "query", {"type": "string", "format": "uuid"}, "older than this id"),
    Param("since_id", "query", {"type": "string", "format": "uuid"}, "newer than this id"),
)


def _op(path: str, summary: str, tag: str, **kw: Any) -> Operation:
    # Every read may wait for the projector (read-your-writes), so every read takes the header.
    kw["params"] = (*kw.get("params", ()), CONSISTENCY)
    return Operation(method="GET", path=path, summary=summary, tag=tag, **kw)


def _list(path: str, summary: str, tag: str, item: Any, **kw: Any) -> Operation:
    kw.setdefault("params", PAGINATION)
    return _op(path, summary, tag, response=list[item], response_headers=LINK, **kw)


OPERATIONS = [
    Operation(method="GET", path="/healthz", summary="Liveness", tag="ops"),
    Operation(method="GET", path="/readyz", summary="Readiness: PostgreSQL reachable", tag="ops"),
    Operation(
        method="GET",
        path="/metrics",
        summary="Prometheus metrics",
        tag="ops",
        content_type="text/plain",
    ),
    Operation(method="GET", path="/openapi.json", summary="This document", tag="ops"),
    _list("/v1/timelines/home", "My home timeline", "timelines", Item, auth=True),
    _list(
        "/v1/timelines/public", "Public posts, newest first", "timelines", Item, auth_optional=True
    ),
    _list(
        "/v1/timelines/tag/{tag}",
        "Public posts with a hashtag",
        "timelines",
        Item,
        auth_optional=True,
    ),
    _op(
        "/v1/posts/{post_id}",
        "One post",
        "posts",
        response=Item,
        auth_optional=True,
        errors=(401, 404),
    ),
    _op(
        "/v1/posts/{post_id}/context",
        "Thread: ancestors and descendants",
        "posts",
        response=Context,
        auth_optional=True,
        errors=(401, 404),
    ),
    _op(
        "/v1/posts/{post_id}/history",
        "Edit history",
        "posts",
        response=list[Version],
        auth_optional=True,
        errors=(401, 404),
    ),
    _op(
        "/v1/users/by-username/{username}",
        "A profile by username",
        "accounts",
        response=UserProfile,
        auth_optional=True,
        errors=(401, 404),
    ),
    _op(
        "/v1/users/{user_id}",
        "A profile",
        "accounts",
        response=UserProfile,
        auth_optional=True,
        errors=(401, 404),
    ),
    _list(
        "/v1/users/{user_id}/posts",
        "A user's posts and reposts",
        "accounts",
        Item,
        auth_optional=True,
        errors=(401, 404),
    ),
    _list(
        "/v1/users/{user_id}/followers",
        "Followers",
        "accounts",
        Account,
        auth_optional=True,
        errors=(401, 404),
    ),
    _list(
        "/v1/users/{user_id}/following",
        "Following",
        "accounts",
        Account,
        auth_optional=True,
        errors=(401, 404),
    ),
    _op(
        "/v1/relationships",
        "My relationships with these users",
        "accounts",
        response=list[Relationship],
        auth=True,
        params=(
            Param(
                "id",
                "query",
                {"type": "array", "items": {"type": "string"}},
                "user ids (repeat the parameter)",
                required=True,
            ),
        ),
    ),
    _list("/v1/follow_requests", "Pending requests to follow me", "accounts", Account, auth=True),
    _op("/v1/audiences", "My audiences", "audiences", response=list[AudienceView], auth=True),
    _list(
        "/v1/audiences/{audience_id}/members",
        "Members of my audience",
        "audiences",
        Account,
        auth=True,
        errors=(404,),
    ),
    _list(
        "/v1/notifications",
        "My notifications",
        "notifications",
        Notification,
        auth=True,
        params=UUID_PAGINATION,
    ),
    _op(
        "/v1/search",
        "Search posts or accounts",
        "search",
        response=SearchResults,
        auth_optional=True,
        params=(
            Param(
                "q", "query", {"type": "string", "minLength": 1, "maxLength": 200}, required=True
            ),
            Param("type", "query", {"enum": ["posts", "accounts"]}),
            *PAGINATION,
        ),
        response_headers=LINK,
        errors=(401,),
    ),
    _op(
        "/v1/streaming/home",
        "Server-sent events: my home timeline and notifications",
        "streaming",
        response=str,
        content_type="text/event-stream",
        auth=True,
        params=(Param("Last-Event-ID", "header", {"type": "string"}, "resume after this"),),
    ),
]


def document() -> dict[str, Any]:
    return build("Microblog query service", "1.0.0", OPERATIONS)


if __name__ == "__main__":
    write_document("query", document())
