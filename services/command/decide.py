"""The command side's decisions, free of I/O.

Each function takes a command and the facts the shell fetched beforehand and returns the event
to append, or raises `ApiError` when the command must be refused. Refusals happen here, before
anything is written, so a refused command leaves no trace (invariant 8).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Final, Protocol

from msgspec import Struct

from shared.events import (
    AudienceCreated,
    AudienceData,
    AudienceDeleted,
    AudienceMemberAdded,
    AudienceMemberData,
    AudienceMemberRemoved,
    BlockCreated,
    BlockData,
    BlockRemoved,
    Event,
    FollowCreated,
    FollowData,
    FollowRemoved,
    FollowRequestApproved,
    FollowRequested,
    FollowRequestRejected,
    MuteCreated,
    MuteData,
    MuteRemoved,
    ProfileUpdated,
    ProfileUpdatedData,
    UserRegistered,
    UserRegisteredData,
    new_event,
)
from shared.http import ApiError, not_found

MUTE_MIN_S: Final = 60
MUTE_MAX_S: Final = 365 * 24 * 3600

# ---------------------------------------------------------------- commands


class RegisterAccount(Struct, frozen=True, kw_only=True):
    user_id: int
    username: str
    display_name: str = ""


class UpdateProfile(Struct, frozen=True, kw_only=True):
    actor_id: int
    display_name: str | None = None
    bio: str | None = None
    avatar_url: str | None = None
    locked: bool | None = None


class Mute(Struct, frozen=True, kw_only=True):
    actor_id: int
    target_id: int
    expires_in_s: int | None = None


class CreateAudience(Struct, frozen=True, kw_only=True):
    actor_id: int
    audience_id: int
    name: str


class AudienceMember(Struct, frozen=True, kw_only=True):
    """Delete an audience (member_id 0) or add/remove one member of it."""

    actor_id: int
    audience_id: int
    member_id: int = 0


class Relate(Struct, frozen=True, kw_only=True):
    """Follow, unfollow, block or unblock `target_id` on behalf of `actor_id`."""

    actor_id: int
    target_id: int


# ---------------------------------------------------------------- facts


class TargetFacts(Struct, frozen=True, kw_only=True):
    exists: bool
    # Read from the projector's `blocks` table, so it may lag the log by a moment; the query
    # side applies blocks again at read time (invariant 5), which closes that window.
    blocked_either_way: bool = False
    # Follow only: the target's account is locked (command side), and whether the actor
    # already follows it (read model).
    locked: bool = False
    following: bool = False


class AudienceRecord(Struct, frozen=True, kw_only=True):
    owner_id: int
    deleted: bool
    name: str = "audience"


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


def _check_target(cmd: Relate, facts: TargetFacts) -> None:
    if cmd.target_id == cmd.actor_id:
        raise ApiError(422, "cannot_target_self", "you cannot target yourself", "user_id")
    if not facts.exists:
        raise not_found("user")


def follow(
    cmd: Relate, facts: TargetFacts, *, request_id: str | None = None
) -> FollowCreated | FollowRequested:
    """A locked account's new follower asks first; an existing follow stays a follow."""
    _check_target(cmd, facts)
    if facts.blocked_either_way:
        raise ApiError(422, "blocked", "a block exists between you and this user", "user_id")
    event_type: type[FollowCreated] | type[FollowRequested] = (
        FollowRequested if facts.locked and not facts.following else FollowCreated
    )
    return new_event(
        event_type,
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


def _answer_request(
    event_type: type[FollowRequestApproved] | type[FollowRequestRejected],
    cmd: Relate,
    pending: bool,
    request_id: str | None,
) -> FollowRequestApproved | FollowRequestRejected:
    # The actor is the followee; `target_id` is the follower who asked.
    if not pending:
        raise not_found("follow request")
    return new_event(
        event_type,
        actor_id=cmd.actor_id,
        data=FollowData(follower_id=cmd.target_id, followee_id=cmd.actor_id),
        request_id=request_id,
    )


def approve_follow_request(
    cmd: Relate, *, pending: bool, request_id: str | None = None
) -> FollowRequestApproved | FollowRequestRejected:
    return _answer_request(FollowRequestApproved, cmd, pending, request_id)


def reject_follow_request(
    cmd: Relate, *, pending: bool, request_id: str | None = None
) -> FollowRequestApproved | FollowRequestRejected:
    return _answer_request(FollowRequestRejected, cmd, pending, request_id)


def approve_all_on_unlock(
    owner_id: int, followers: Sequence[int], *, request_id: str | None = None
) -> list[FollowRequestApproved]:
    """An account that stops being locked takes the requests still pending, one approval each
    (as Mastodon does): they would otherwise wait on an account that no longer asks."""
    return [
        new_event(
            FollowRequestApproved,
            actor_id=owner_id,
            data=FollowData(follower_id=f, followee_id=owner_id),
            request_id=request_id,
        )
        for f in followers
    ]


# ---------------------------------------------------------------- profiles and mutes


def update_profile(cmd: UpdateProfile, *, request_id: str | None = None) -> ProfileUpdated:
    if (cmd.display_name, cmd.bio, cmd.avatar_url, cmd.locked) == (None, None, None, None):
        raise ApiError(422, "nothing_to_update", "name at least one field to change")
    return new_event(
        ProfileUpdated,
        actor_id=cmd.actor_id,
        data=ProfileUpdatedData(
            user_id=cmd.actor_id,
            display_name=cmd.display_name,
            bio=cmd.bio,
            avatar_url=cmd.avatar_url,
            locked=cmd.locked,
        ),
        request_id=request_id,
    )


def mute(
    cmd: Mute, facts: TargetFacts, *, now: datetime, request_id: str | None = None
) -> MuteCreated:
    _check_target(Relate(actor_id=cmd.actor_id, target_id=cmd.target_id), facts)
    expires_at = None
    if cmd.expires_in_s is not None:
        if not MUTE_MIN_S <= cmd.expires_in_s <= MUTE_MAX_S:
            raise ApiError(
                422,
                "invalid_field",
                f"expires_in_s must be between {MUTE_MIN_S} and {MUTE_MAX_S}",
                "expires_in_s",
            )
        expires_at = now + timedelta(seconds=cmd.expires_in_s)
    return new_event(
        MuteCreated,
        actor_id=cmd.actor_id,
        data=MuteData(muter_id=cmd.actor_id, muted_id=cmd.target_id, expires_at=expires_at),
        request_id=request_id,
        now=now,
    )


def unmute(cmd: Relate, facts: TargetFacts, *, request_id: str | None = None) -> MuteRemoved:
    _check_target(cmd, facts)
    return new_event(
        MuteRemoved,
        actor_id=cmd.actor_id,
        data=MuteData(muter_id=cmd.actor_id, muted_id=cmd.target_id),
        request_id=request_id,
    )


# ---------------------------------------------------------------- audiences


def create_audience(cmd: CreateAudience, *, request_id: str | None = None) -> AudienceCreated:
    if not cmd.name.strip():
        raise ApiError(422, "invalid_field", "name must not be only whitespace", "name")
    return new_event(
        AudienceCreated,
        actor_id=cmd.actor_id,
        data=AudienceData(audience_id=cmd.audience_id, owner_id=cmd.actor_id, name=cmd.name),
        request_id=request_id,
    )


def _owned(cmd: AudienceMember, audience: AudienceRecord | None) -> AudienceRecord:
    # Someone else's audience is as invisible as a missing one: only the owner sees it.
    if audience is None or audience.deleted or audience.owner_id != cmd.actor_id:
        raise not_found("audience")
    return audience


def delete_audience(
    cmd: AudienceMember, audience: AudienceRecord | None, *, request_id: str | None = None
) -> AudienceDeleted:
    owned = _owned(cmd, audience)
    return new_event(
        AudienceDeleted,
        actor_id=cmd.actor_id,
        # Carry the name, so analytics consumers know which audience went without a lookup.
        data=AudienceData(audience_id=cmd.audience_id, owner_id=cmd.actor_id, name=owned.name),
        request_id=request_id,
    )


def add_audience_member(
    cmd: AudienceMember,
    audience: AudienceRecord | None,
    *,
    member_exists: bool,
    request_id: str | None = None,
) -> AudienceMemberAdded:
    _owned(cmd, audience)
    if not member_exists:
        raise not_found("user")
    return new_event(
        AudienceMemberAdded,
        actor_id=cmd.actor_id,
        data=AudienceMemberData(
            audience_id=cmd.audience_id, owner_id=cmd.actor_id, member_id=cmd.member_id
        ),
        request_id=request_id,
    )


def remove_audience_member(
    cmd: AudienceMember,
    audience: AudienceRecord | None,
    *,
    is_member: bool,
    request_id: str | None = None,
) -> AudienceMemberRemoved:
    _owned(cmd, audience)
    if not is_member:
        raise not_found("audience member")
    return new_event(
        AudienceMemberRemoved,
        actor_id=cmd.actor_id,
        data=AudienceMemberData(
            audience_id=cmd.audience_id, owner_id=cmd.actor_id, member_id=cmd.member_id
        ),
        request_id=request_id,
    )
