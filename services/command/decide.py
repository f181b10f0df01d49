"""The command side's decisions, free of I/O.

Each function takes a command and the facts the shell fetched beforehand and returns the event
to append, or raises `ApiError` when the command must be refused. Refusals happen here, before
anything is written, so a refused command leaves no trace (invariant 8).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Final, Protocol

from msgspec import Struct

from shared.entities import extract
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
    LikeData,
    LikeRemoved,
    Media,
    Mention,
    MuteCreated,
    MuteData,
    MuteRemoved,
    PostCreated,
    PostCreatedData,
    PostDeleted,
    PostDeletedData,
    PostEdited,
    PostEditedData,
    PostLiked,
    PostReposted,
    ProfileUpdated,
    ProfileUpdatedData,
    RepostData,
    RepostRemoved,
    UserRegistered,
    UserRegisteredData,
    Visibility,
    new_event,
)
from shared.http import ApiError, not_found
from shared.policy import PostFacts, Relations, can_view

MUTE_MIN_S: Final = 60
MUTE_MAX_S: Final = 365 * 24 * 3600

# ---------------------------------------------------------------- commands


class RegisterAccount(Struct, frozen=True, kw_only=True):
    user_id: int
    username: str
    display_name: str = ""


class CreatePost(Struct, frozen=True, kw_only=True):
    actor_id: int
    post_id: int
    text: str
    visibility: Visibility = "public"
    audience_id: int | None = None
    in_reply_to_id: int | None = None
    quote_of_id: int | None = None
    media: tuple[Media, ...] = ()


class EditPost(Struct, frozen=True, kw_only=True):
    actor_id: int
    post_id: int
    text: str
    # None: keep the post's current media.
    media: tuple[Media, ...] | None = None


class PostAction(Struct, frozen=True, kw_only=True):
    """Repost, unrepost, like or unlike `post_id`; `repost_id` is the id a new repost gets."""

    actor_id: int
    post_id: int
    repost_id: int = 0


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
    visibility: Visibility = "public"
    audience_id: int | None = None
    mentions: frozenset[int] = frozenset()
    media: tuple[Media, ...] = ()

    def policy_facts(self) -> PostFacts:
        return PostFacts(
            author_id=self.author_id,
            visibility=self.visibility,
            audience_id=self.audience_id,
            mentions=self.mentions,
        )


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


class PostContext(Struct, frozen=True, kw_only=True):
    """What a new post or an edit depends on, fetched before deciding.

    `accounts` maps the lower-cased mention candidates that name existing users to them;
    `relations` are the actor's relations to the authors of `reply_to`/`quote_of` and to the
    mentioned users (blocks refuse mentions' notifications: a blocked name stays plain text).
    """

    audience: AudienceRecord | None = None
    reply_to: PostRecord | None = None
    quote_of: PostRecord | None = None
    accounts: Mapping[str, Mention] = {}
    relations: Relations = Relations()


NO_CONTEXT: Final = PostContext()


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


def _check_text(text: str) -> None:
    # Length limits are enforced by the input model; blank text passes them but is no post.
    if not text.strip():
        raise ApiError(422, "invalid_field", "text must not be only whitespace", "text")


def resolve_mentions(
    names: Sequence[str], accounts: Mapping[str, Mention], blocked: frozenset[int]
) -> tuple[Mention, ...]:
    """Candidates naming existing users, in text order; blocked pairs stay plain text."""
    resolved: list[Mention] = []
    for name in names:
        mention = accounts.get(name.lower())
        if mention is not None and mention.user_id not in blocked:
            resolved.append(mention)
    return tuple(resolved)


def _viewable(actor_id: int, post: PostRecord | None, relations: Relations) -> PostRecord | None:
    if post is None or post.deleted:
        return None
    return post if can_view(actor_id, post.policy_facts(), relations) else None


def _unknown_post(field: str) -> ApiError:
    # The same answer for a missing and an invisible post, so ids can't be probed.
    return ApiError(422, "not_found", "no such post, or you may not see it", field)


def create_post(
    cmd: CreatePost, ctx: PostContext = NO_CONTEXT, *, request_id: str | None = None
) -> PostCreated:
    _check_text(cmd.text)
    if cmd.visibility == "audience":
        if cmd.audience_id is None:
            raise ApiError(
                422, "invalid_field", "audience_id is required for audience posts", "audience_id"
            )
        audience = ctx.audience
        if audience is None or audience.deleted or audience.owner_id != cmd.actor_id:
            raise ApiError(422, "not_found", "no such audience of yours", "audience_id")
    elif cmd.audience_id is not None:
        raise ApiError(
            422, "invalid_field", 'audience_id needs visibility "audience"', "audience_id"
        )
    reply_to = None
    if cmd.in_reply_to_id is not None:
        reply_to = _viewable(cmd.actor_id, ctx.reply_to, ctx.relations)
        if reply_to is None:
            raise _unknown_post("in_reply_to_id")
    if cmd.quote_of_id is not None and _viewable(cmd.actor_id, ctx.quote_of, ctx.relations) is None:
        raise _unknown_post("quote_of_id")
    entities = extract(cmd.text)
    return new_event(
        PostCreated,
        actor_id=cmd.actor_id,
        data=PostCreatedData(
            post_id=cmd.post_id,
            author_id=cmd.actor_id,
            text=cmd.text,
            visibility=cmd.visibility,
            audience_id=cmd.audience_id,
            in_reply_to_id=cmd.in_reply_to_id,
            in_reply_to_author_id=reply_to.author_id if reply_to else None,
            quote_of_id=cmd.quote_of_id,
            mentions=resolve_mentions(entities.mention_names, ctx.accounts, ctx.relations.blocked),
            hashtags=entities.hashtags,
            links=entities.links,
            media=cmd.media,
        ),
        request_id=request_id,
    )


def edit_post(
    cmd: EditPost,
    post: PostRecord | None,
    ctx: PostContext = NO_CONTEXT,
    *,
    request_id: str | None = None,
) -> PostEdited:
    # Visibility, audience and reply target are not part of an edit (semantics.md).
    if post is None or post.deleted or post.author_id != cmd.actor_id:
        raise not_found("post")
    _check_text(cmd.text)
    entities = extract(cmd.text)
    return new_event(
        PostEdited,
        actor_id=cmd.actor_id,
        data=PostEditedData(
            post_id=cmd.post_id,
            author_id=cmd.actor_id,
            text=cmd.text,
            mentions=resolve_mentions(entities.mention_names, ctx.accounts, ctx.relations.blocked),
            hashtags=entities.hashtags,
            links=entities.links,
            media=post.media if cmd.media is None else cmd.media,
        ),
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


# ---------------------------------------------------------------- reposts and likes


def _seen_post(cmd: PostAction, post: PostRecord | None, relations: Relations) -> PostRecord:
    # Missing, deleted, invisible and blocked all answer alike: 404 (invariant 5).
    seen = _viewable(cmd.actor_id, post, relations)
    if seen is None:
        raise not_found("post")
    return seen


def repost(
    cmd: PostAction,
    post: PostRecord | None,
    relations: Relations,
    *,
    already: bool,
    request_id: str | None = None,
) -> PostReposted | None:
    """None: the actor reposted this post already; the first answer stands."""
    seen = _seen_post(cmd, post, relations)
    if seen.visibility not in ("public", "unlisted") and seen.author_id != cmd.actor_id:
        raise ApiError(
            422, "not_repostable", "only public or unlisted posts can be reposted", "post_id"
        )
    if already:
        return None
    return new_event(
        PostReposted,
        actor_id=cmd.actor_id,
        data=RepostData(
            repost_id=cmd.repost_id,
            post_id=cmd.post_id,
            author_id=seen.author_id,
            reposter_id=cmd.actor_id,
        ),
        request_id=request_id,
    )


def remove_repost(
    cmd: PostAction,
    post: PostRecord | None,
    repost_id: int | None,
    *,
    request_id: str | None = None,
) -> RepostRemoved:
    if post is None or repost_id is None:
        raise not_found("repost")
    return new_event(
        RepostRemoved,
        actor_id=cmd.actor_id,
        data=RepostData(
            repost_id=repost_id,
            post_id=cmd.post_id,
            author_id=post.author_id,
            reposter_id=cmd.actor_id,
        ),
        request_id=request_id,
    )


def like(
    cmd: PostAction,
    post: PostRecord | None,
    relations: Relations,
    *,
    already: bool,
    request_id: str | None = None,
) -> PostLiked | None:
    """None: the actor liked this post already; the first answer stands."""
    seen = _seen_post(cmd, post, relations)
    if already:
        return None
    return new_event(
        PostLiked,
        actor_id=cmd.actor_id,
        data=LikeData(post_id=cmd.post_id, author_id=seen.author_id, liker_id=cmd.actor_id),
        request_id=request_id,
    )


def remove_like(
    cmd: PostAction, post: PostRecord | None, *, liked: bool, request_id: str | None = None
) -> LikeRemoved:
    if post is None or not liked:
        raise not_found("like")
    return new_event(
        LikeRemoved,
        actor_id=cmd.actor_id,
        data=LikeData(post_id=cmd.post_id, author_id=post.author_id, liker_id=cmd.actor_id),
        request_id=request_id,
    )


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
        # The event type requires a name (AudienceName has min_length 1).
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
