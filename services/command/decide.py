"""The command side's decisions, free of I/O.

Each function takes a command and the facts the shell fetched beforehand and returns the event
to append, or raises `ApiError` when the command must be refused. Refusals happen here, before
anything is written, so a refused command leaves no trace (invariant 8).
"""

from __future__ import annotations

from typing import Protocol

from msgspec import Struct

from shared.events import (
    BlockCreated,
    BlockData,
    BlockRemoved,
    Event,
    FollowCreated,
    FollowData,
    FollowRemoved,
    PostCreated,
    PostCreatedData,
    PostDeleted,
    PostDeletedData,
    UserRegistered,
    UserRegisteredData,
    new_event,
)
from shared.http import ApiError, not_found

# ---------------------------------------------------------------- commands


class RegisterAccount(Struct, frozen=True, kw_only=True):
    user_id: int
    username: str
    display_name: str = ""


class CreatePost(Struct, frozen=True, kw_only=True):
    actor_id: int
    post_id: int
    text: str


class DeletePost(Struct, frozen=True, kw_only=True):
    actor_id: int
    post_id: int


class Relate(Struct, frozen=True, kw_only=True):
    """Follow, unfollow, block or unblock `target_id` on behalf of `actor_id`."""

    actor_id: int
    target_id: int


# ---------------------------------------------------------------- facts


class PostRecord(Struct, frozen=True, kw_only=True):
    author_id: int
    deleted: bool


class TargetFacts(Struct, frozen=True, kw_only=True):
    exists: bool
    # Read from the projector's `blocks` table, so it may lag the log by a moment; the query
    # side applies blocks again at read time (invariant 5), which closes that window.
    blocked_either_way: bool = False


class Decision(Protocol):
    """The shape shared by follow, unfollow, block and unblock."""

    def __call__(
        self, cmd: Relate, facts: TargetFacts, *, request_id: str | None = None
    ) -> Event: ...


# ---------------------------------------------------------------- decisions


def register_account(
    cmd: RegisterAccount, *, username_taken: bool, request_id: str | None = None
) -> UserRegistered:
    if username_taken:
        raise username_taken_error()
    return new_event(
        UserRegistered,
        actor_id=cmd.user_id,
        data=UserRegisteredData(
            user_id=cmd.user_id, username=cmd.username, display_name=cmd.display_name
        ),
        request_id=request_id,
    )


def username_taken_error() -> ApiError:
    return ApiError(409, "username_taken", "this username is already taken", "username")


def create_post(cmd: CreatePost, *, request_id: str | None = None) -> PostCreated:
    # Length limits are enforced by the input model; blank text passes them but is no post.
    if not cmd.text.strip():
        raise ApiError(422, "invalid_field", "text must not be only whitespace", "text")
    return new_event(
        PostCreated,
        actor_id=cmd.actor_id,
        data=PostCreatedData(post_id=cmd.post_id, author_id=cmd.actor_id, text=cmd.text),
        request_id=request_id,
    )


def delete_post(
    cmd: DeletePost, post: PostRecord | None, *, request_id: str | None = None
) -> PostDeleted:
    # Someone else's post answers exactly like a missing one, so ids can't be probed (404, not
    # 403: invariant 5).
    if post is None or post.deleted or post.author_id != cmd.actor_id:
        raise not_found("post")
    return new_event(
        PostDeleted,
        actor_id=cmd.actor_id,
        data=PostDeletedData(post_id=cmd.post_id, author_id=cmd.actor_id),
        request_id=request_id,
    )


def _check_target(cmd: Relate, facts: TargetFacts) -> None:
    if cmd.target_id == cmd.actor_id:
        raise ApiError(422, "cannot_target_self", "you cannot target yourself", "user_id")
    if not facts.exists:
        raise not_found("user")


def follow(cmd: Relate, facts: TargetFacts, *, request_id: str | None = None) -> FollowCreated:
    _check_target(cmd, facts)
    if facts.blocked_either_way:
        raise ApiError(422, "blocked", "a block exists between you and this user", "user_id")
    return new_event(
        FollowCreated,
        actor_id=cmd.actor_id,
        data=FollowData(follower_id=cmd.actor_id, followee_id=cmd.target_id),
        request_id=request_id,
    )


def unfollow(cmd: Relate, facts: TargetFacts, *, request_id: str | None = None) -> FollowRemoved:
    _check_target(cmd, facts)
    return new_event(
        FollowRemoved,
        actor_id=cmd.actor_id,
        data=FollowData(follower_id=cmd.actor_id, followee_id=cmd.target_id),
        request_id=request_id,
    )


def block(cmd: Relate, facts: TargetFacts, *, request_id: str | None = None) -> BlockCreated:
    _check_target(cmd, facts)
    return new_event(
        BlockCreated,
        actor_id=cmd.actor_id,
        data=BlockData(blocker_id=cmd.actor_id, blocked_id=cmd.target_id),
        request_id=request_id,
    )


def unblock(cmd: Relate, facts: TargetFacts, *, request_id: str | None = None) -> BlockRemoved:
    _check_target(cmd, facts)
    return new_event(
        BlockRemoved,
        actor_id=cmd.actor_id,
        data=BlockData(blocker_id=cmd.actor_id, blocked_id=cmd.target_id),
        request_id=request_id,
    )
