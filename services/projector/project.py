"""What each event writes to the read models: typed operations, pure, no I/O.

`ops_for(event)` gives one event's operations; `runs.plan(events)` combines a batch's events
into the list the store applies in one transaction (runs of posts, registrations and follows
collapse into set-based operations there).

Every operation is state-based and idempotent, so the result does not depend on how partitions
interleave (invariant 4):
- follows, blocks and mutes are last-writer-wins registers versioned by the event id (UUIDv7);
  approvals, rejections and withdrawals of follow requests write the same follow register, so
  a request that arrives after its own answer stays answered;
- after a follow edge changes, the follower's timeline is reconciled with the edge's *current*
  state (merge the followee's recent viewable posts if active, remove them if not);
- a block deactivates every older follow edge and request between the two people, removes their
  follow-delivered posts from each other's timelines and deletes older notifications between
  them;
- counters move only when a row really appeared or disappeared, and a post that arrives after
  its likes, reposts or replies counts them when it is inserted;
- a reply whose parent is not projected yet takes the parent as its conversation root; when the
  parent arrives, the posts that assumed it as root move to the parent's root.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import msgspec

from shared.events import (
    FOLLOWER_VISIBILITIES,
    AnyEvent,
    AudienceCreated,
    AudienceDeleted,
    AudienceMemberAdded,
    AudienceMemberRemoved,
    BlockCreated,
    BlockRemoved,
    FollowCreated,
    FollowRemoved,
    FollowRequestApproved,
    FollowRequested,
    FollowRequestRejected,
    LikeRemoved,
    MuteCreated,
    MuteRemoved,
    PostCreated,
    PostDeleted,
    PostEdited,
    PostLiked,
    PostReposted,
    ProfileUpdated,
    RepostRemoved,
    UserRegistered,
)

_media_encoder = msgspec.json.Encoder()


class UpsertUser(msgspec.Struct, frozen=True):
    user_id: int
    username: str
    display_name: str
    created_at: datetime


class UpdateProfile(msgspec.Struct, frozen=True):
    """Only the non-None fields change."""

    user_id: int
    display_name: str | None = None
    bio: str | None = None
    avatar_url: str | None = None
    locked: bool | None = None


class NewPost(msgspec.Struct, frozen=True, kw_only=True):
    post_id: int
    author_id: int
    text: str
    created_at: datetime
    visibility: str = "public"
    audience_id: int | None = None
    in_reply_to_id: int | None = None
    in_reply_to_author_id: int | None = None
    quote_of_id: int | None = None
    # Known when the parent is in the same batch; else the store looks it up.
    conversation_id: int | None = None
    mentions: tuple[int, ...] = ()
    mention_names: tuple[str, ...] = ()
    hashtags: tuple[str, ...] = ()
    links: tuple[str, ...] = ()
    media_json: str = "[]"
    # Merged into followers' timelines at read time instead of written there (`pulled`).
    pulled: bool = False


def pulled(delivery: str, visibility: str) -> bool:
    """Whether a post reaches the author's followers at read time rather than by fan-out."""
    return delivery == "pull" and visibility in FOLLOWER_VISIBILITIES


class AddPosts(msgspec.Struct, frozen=True):
    """Insert posts and fan each out by visibility: the author's active followers (public,
    unlisted, followers), the audience's members (audience), the mentioned users (direct),
    and always the author."""

    posts: tuple[NewPost, ...]


class Notification(msgspec.Struct, frozen=True):
    user_id: int
    event_id: uuid.UUID
    kind: str
    actor_id: int
    post_id: int | None
    created_at: datetime


class Notify(msgspec.Struct, frozen=True):
    """Insert notifications the store still filters: never between blocked pairs, never from a
    muted account, never about a post the recipient may not view."""

    notifications: tuple[Notification, ...]


class EditPost(msgspec.Struct, frozen=True, kw_only=True):
    post_id: int
    author_id: int
    text: str
    mentions: tuple[int, ...]
    mention_names: tuple[str, ...]
    hashtags: tuple[str, ...]
    links: tuple[str, ...]
    media_json: str
    at: datetime


class DeletePost(msgspec.Struct, frozen=True):
    post_id: int
    author_id: int
    at: datetime | None = None


class AddRepost(msgspec.Struct, frozen=True):
    repost_id: int
    post_id: int
    reposter_id: int
    at: datetime


class RemoveRepost(msgspec.Struct, frozen=True):
    repost_id: int
    post_id: int
    reposter_id: int


class SetLike(msgspec.Struct, frozen=True):
    post_id: int
    user_id: int
    active: bool
    at: datetime


class SetFollow(msgspec.Struct, frozen=True):
    """Write the follow register; also ends older pending requests of the pair and their
    follow_request notifications."""

    follower_id: int
    followee_id: int
    active: bool
    version: uuid.UUID
    at: datetime


class SetFollows(msgspec.Struct, frozen=True):
    """A run of follow-register writes applied set-based: one per (follower, followee) pair,
    the pair's last writer (see `latest_follows`), sorted by pair."""

    follows: tuple[SetFollow, ...]


class UpsertUsers(msgspec.Struct, frozen=True):
    """A run of registrations applied set-based: the first per user id (see `first_users`)."""

    users: tuple[UpsertUser, ...]


class RequestFollow(msgspec.Struct, frozen=True):
    follower_id: int
    followee_id: int
    version: uuid.UUID
    at: datetime


class SetBlock(msgspec.Struct, frozen=True):
    blocker_id: int
    blocked_id: int
    active: bool
    version: uuid.UUID
    at: datetime


class SetMute(msgspec.Struct, frozen=True):
    muter_id: int
    muted_id: int
    active: bool
    expires_at: datetime | None
    version: uuid.UUID


class UpsertAudience(msgspec.Struct, frozen=True):
    audience_id: int
    owner_id: int
    name: str
    at: datetime


class DeleteAudience(msgspec.Struct, frozen=True):
    audience_id: int
    owner_id: int
    at: datetime


class SetAudienceMember(msgspec.Struct, frozen=True):
    audience_id: int
    owner_id: int
    member_id: int
    active: bool


Op = (
    UpsertUser
    | UpsertUsers
    | UpdateProfile
    | AddPosts
    | Notify
    | EditPost
    | DeletePost
    | AddRepost
    | RemoveRepost
    | SetLike
    | SetFollow
    | SetFollows
    | RequestFollow
    | SetBlock
    | SetMute
    | UpsertAudience
    | DeleteAudience
    | SetAudienceMember
)


def _note(
    user_id: int, event: AnyEvent, kind: str, actor_id: int, post_id: int | None
) -> Notification:
    return Notification(user_id, event.id, kind, actor_id, post_id, event.time)


def _media(media: tuple[msgspec.Struct, ...]) -> str:
    return _media_encoder.encode(media).decode()


def post_notifications(event: PostCreated) -> tuple[Notification, ...]:
    """A reply notifies the parent's author; mentions notify the mentioned. One notification
    per recipient (the key is recipient + event): a reply that also mentions is a reply.
    Never for one's own post."""
    d = event.data
    notes: dict[int, Notification] = {}
    if d.in_reply_to_author_id is not None and d.in_reply_to_author_id != d.author_id:
        notes[d.in_reply_to_author_id] = _note(
            d.in_reply_to_author_id, event, "reply", d.author_id, d.post_id
        )
    for m in d.mentions:
        if m.user_id != d.author_id and m.user_id not in notes:
            notes[m.user_id] = _note(m.user_id, event, "mention", d.author_id, d.post_id)
    return tuple(notes.values())


def new_post(event: PostCreated) -> NewPost:
    d = event.data
    return NewPost(
        post_id=d.post_id,
        author_id=d.author_id,
        text=d.text,
        created_at=event.time,
        visibility=d.visibility,
        audience_id=d.audience_id,
        in_reply_to_id=d.in_reply_to_id,
        in_reply_to_author_id=d.in_reply_to_author_id,
        quote_of_id=d.quote_of_id,
        conversation_id=None if d.in_reply_to_id is not None else d.post_id,
        mentions=tuple(m.user_id for m in d.mentions),
        mention_names=tuple(m.username for m in d.mentions),
        hashtags=tuple(dict.fromkeys(t.lower() for t in d.hashtags)),
        links=d.links,
        media_json=_media(d.media),
        pulled=pulled(d.delivery, d.visibility),
    )


def ops_for(event: AnyEvent) -> list[Op]:
    """The operations one event asks for (post.created: AddPosts then Notify)."""
    match event:
        case UserRegistered(data=d):
            return [UpsertUser(d.user_id, d.username, d.display_name, event.time)]
        case ProfileUpdated(data=d):
            return [UpdateProfile(d.user_id, d.display_name, d.bio, d.avatar_url, d.locked)]
        case PostCreated():
            return [AddPosts((new_post(event),)), Notify(post_notifications(event))]
        case PostEdited(data=d):
            return [
                EditPost(
                    post_id=d.post_id,
                    author_id=d.author_id,
                    text=d.text,
                    mentions=tuple(m.user_id for m in d.mentions),
                    mention_names=tuple(m.username for m in d.mentions),
                    hashtags=tuple(dict.fromkeys(t.lower() for t in d.hashtags)),
                    links=d.links,
                    media_json=_media(d.media),
                    at=event.time,
                )
            ]
        case PostDeleted(data=d):
            return [DeletePost(d.post_id, d.author_id, event.time)]
        case PostReposted(data=d):
            return [
                AddRepost(d.repost_id, d.post_id, d.reposter_id, event.time),
                Notify((_note(d.author_id, event, "repost", d.reposter_id, d.post_id),)),
            ]
        case RepostRemoved(data=d):
            return [RemoveRepost(d.repost_id, d.post_id, d.reposter_id)]
        case PostLiked(data=d):
            return [
                SetLike(d.post_id, d.liker_id, True, event.time),
                Notify((_note(d.author_id, event, "like", d.liker_id, d.post_id),)),
            ]
        case LikeRemoved(data=d):
            return [SetLike(d.post_id, d.liker_id, False, event.time)]
        case FollowCreated(data=d):
            return [
                SetFollow(d.follower_id, d.followee_id, True, event.id, event.time),
                Notify((_note(d.followee_id, event, "follow", d.follower_id, None),)),
            ]
        case FollowRequestApproved(data=d):
            # LWW by the approval's id: an unfollow or block after the approval still wins.
            return [SetFollow(d.follower_id, d.followee_id, True, event.id, event.time)]
        case FollowRemoved(data=d) | FollowRequestRejected(data=d):
            return [SetFollow(d.follower_id, d.followee_id, False, event.id, event.time)]
        case FollowRequested(data=d):
            return [
                RequestFollow(d.follower_id, d.followee_id, event.id, event.time),
                Notify((_note(d.followee_id, event, "follow_request", d.follower_id, None),)),
            ]
        case BlockCreated(data=d):
            return [SetBlock(d.blocker_id, d.blocked_id, True, event.id, event.time)]
        case BlockRemoved(data=d):
            return [SetBlock(d.blocker_id, d.blocked_id, False, event.id, event.time)]
        case MuteCreated(data=d):
            return [SetMute(d.muter_id, d.muted_id, True, d.expires_at, event.id)]
        case MuteRemoved(data=d):
            return [SetMute(d.muter_id, d.muted_id, False, None, event.id)]
        case AudienceCreated(data=d):
            return [UpsertAudience(d.audience_id, d.owner_id, d.name, event.time)]
        case AudienceDeleted(data=d):
            return [DeleteAudience(d.audience_id, d.owner_id, event.time)]
        case AudienceMemberAdded(data=d):
            return [SetAudienceMember(d.audience_id, d.owner_id, d.member_id, True)]
        case AudienceMemberRemoved(data=d):
            return [SetAudienceMember(d.audience_id, d.owner_id, d.member_id, False)]
    raise TypeError(f"no projection for {type(event).__name__}")
