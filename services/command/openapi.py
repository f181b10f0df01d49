"""The command service's API, described once from the structs the handlers use.

`document()` is served at /openapi.json and written to schemas/openapi/command.json by
`make schemas`; tests check every route is documented and the committed file is current.
"""

from __future__ import annotations

from typing import Any

from services.command.audiences import AudienceAccepted, NewAudience
from services.command.handlers import (
    AccountCreated,
    FollowAccepted,
    Login,
    MuteOptions,
    NewAccount,
    ProfileChange,
    SessionCreated,
)
from services.command.pipeline import EventAccepted, PostAccepted
from services.command.posting import NewPost, PostEdit, RepostAccepted
from shared.openapi import IDEMPOTENCY, Operation, build, write_document


def _op(method: str, path: str, summary: str, tag: str, **kw: Any) -> Operation:
    if method == "POST":
        kw["params"] = (*kw.get("params", ()), IDEMPOTENCY)
    return Operation(method=method, path=path, summary=summary, tag=tag, **kw)


OPERATIONS = [
    _op("GET", "/healthz", "Liveness", "ops"),
    _op("GET", "/readyz", "Readiness: PostgreSQL and Kafka reachable", "ops"),
    _op("GET", "/metrics", "Prometheus metrics", "ops", content_type="text/plain"),
    _op("GET", "/openapi.json", "This document", "ops"),
    _op(
        "POST",
        "/v1/accounts",
        "Register an account",
        "accounts",
        request=NewAccount,
        response=AccountCreated,
        ok_status=201,
        errors=(409,),
    ),
    _op(
        "PATCH",
        "/v1/accounts/me",
        "Update my profile",
        "accounts",
        request=ProfileChange,
        response=EventAccepted,
        ok_status=202,
        auth=True,
    ),
    _op(
        "POST",
        "/v1/sessions",
        "Log in: a bearer token",
        "accounts",
        request=Login,
        response=SessionCreated,
        errors=(401,),
    ),
    _op(
        "DELETE",
        "/v1/sessions/current",
        "Log out: revoke this token",
        "accounts",
        ok_status=204,
        auth=True,
    ),
    _op(
        "POST",
        "/v1/posts",
        "Publish a post",
        "posts",
        request=NewPost,
        response=PostAccepted,
        ok_status=202,
        auth=True,
    ),
    _op(
        "PATCH",
        "/v1/posts/{post_id}",
        "Edit my post",
        "posts",
        request=PostEdit,
        response=PostAccepted,
        ok_status=202,
        auth=True,
        errors=(404,),
    ),
    _op(
        "DELETE",
        "/v1/posts/{post_id}",
        "Delete my post",
        "posts",
        response=PostAccepted,
        ok_status=202,
        auth=True,
        errors=(404,),
    ),
    _op(
        "PUT",
        "/v1/posts/{post_id}/repost",
        "Repost",
        "posts",
        response=RepostAccepted,
        ok_status=202,
        also_ok=(200,),
        auth=True,
        errors=(404,),
    ),
    _op(
        "DELETE",
        "/v1/posts/{post_id}/repost",
        "Undo a repost",
        "posts",
        response=EventAccepted,
        ok_status=202,
        auth=True,
        errors=(404,),
    ),
    _op(
        "PUT",
        "/v1/posts/{post_id}/like",
        "Like",
        "posts",
        response=EventAccepted,
        ok_status=202,
        also_ok=(200,),
        auth=True,
        errors=(404,),
    ),
    _op(
        "DELETE",
        "/v1/posts/{post_id}/like",
        "Undo a like",
        "posts",
        response=EventAccepted,
        ok_status=202,
        auth=True,
        errors=(404,),
    ),
    _op(
        "PUT",
        "/v1/users/{user_id}/follow",
        "Follow (or request to follow a locked account)",
        "relations",
        response=FollowAccepted,
        ok_status=202,
        auth=True,
        errors=(404,),
    ),
    _op(
        "DELETE",
        "/v1/users/{user_id}/follow",
        "Unfollow or withdraw a request",
        "relations",
        response=EventAccepted,
        ok_status=202,
        auth=True,
        errors=(404,),
    ),
    _op(
        "PUT",
        "/v1/users/{user_id}/block",
        "Block",
        "relations",
        response=EventAccepted,
        ok_status=202,
        auth=True,
        errors=(404,),
    ),
    _op(
        "DELETE",
        "/v1/users/{user_id}/block",
        "Unblock",
        "relations",
        response=EventAccepted,
        ok_status=202,
        auth=True,
        errors=(404,),
    ),
    _op(
        "PUT",
        "/v1/users/{user_id}/mute",
        "Mute, optionally for a while",
        "relations",
        request=MuteOptions,
        request_required=False,
        response=EventAccepted,
        ok_status=202,
        auth=True,
        errors=(404,),
    ),
    _op(
        "DELETE",
        "/v1/users/{user_id}/mute",
        "Unmute",
        "relations",
        response=EventAccepted,
        ok_status=202,
        auth=True,
        errors=(404,),
    ),
    _op(
        "POST",
        "/v1/follow_requests/{user_id}/approve",
        "Approve a follow request",
        "relations",
        response=EventAccepted,
        ok_status=202,
        auth=True,
        errors=(404,),
    ),
    _op(
        "POST",
        "/v1/follow_requests/{user_id}/reject",
        "Reject a follow request",
        "relations",
        response=EventAccepted,
        ok_status=202,
        auth=True,
        errors=(404,),
    ),
    _op(
        "POST",
        "/v1/audiences",
        "Create an audience",
        "audiences",
        request=NewAudience,
        response=AudienceAccepted,
        ok_status=201,
        auth=True,
    ),
    _op(
        "DELETE",
        "/v1/audiences/{audience_id}",
        "Delete my audience",
        "audiences",
        response=EventAccepted,
        ok_status=202,
        auth=True,
        errors=(404,),
    ),
    _op(
        "PUT",
        "/v1/audiences/{audience_id}/members/{user_id}",
        "Add a member",
        "audiences",
        response=EventAccepted,
        ok_status=202,
        auth=True,
        errors=(404,),
    ),
    _op(
        "DELETE",
        "/v1/audiences/{audience_id}/members/{user_id}",
        "Remove a member",
        "audiences",
        response=EventAccepted,
        ok_status=202,
        auth=True,
        errors=(404,),
    ),
]


def document() -> dict[str, Any]:
    return build("Microblog command service", "1.0.0", OPERATIONS)


if __name__ == "__main__":
    write_document("command", document())
