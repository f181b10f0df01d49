"""The event log's vocabulary.

Every event is a CloudEvents 1.0 structured-mode JSON object: the envelope attributes (`id`,
`source`, `type`, `time`, `subject`, `specversion`, `dataschema`, `datacontenttype`) beside a
typed `data` payload. `type` is the union's tag, so decoding picks the right struct in one pass.

Evolution rules (DESIGN.md §3): a new field gets a default; readers ignore unknown fields (so no
`forbid_unknown_fields` here); a breaking change is a new `schemaversion` with an upcaster.
Tags are explicit strings, never class names, because analytics consumers key on them.
"""

from __future__ import annotations

import functools
import uuid
from datetime import UTC, datetime
from typing import Annotated, Final, Literal, TypeVar

import msgspec
from msgspec import Meta, Struct

from shared.ids import uuid7

SPEC_VERSION: Final = "1.0"
SOURCE: Final = "/microblog/command"
DATA_CONTENT_TYPE: Final = "application/json"

Id = Annotated[int, Meta(ge=1, le=(1 << 63) - 1)]
Username = Annotated[str, Meta(min_length=1, max_length=30, pattern=r"^[A-Za-z0-9_]+$")]
DisplayName = Annotated[str, Meta(max_length=60)]
PostText = Annotated[str, Meta(min_length=1, max_length=500)]
# Times are always timezone-aware UTC on the log.
Timestamp = Annotated[datetime, Meta(tz=True, extra_json_schema={"format": "date-time"})]


class Payload(Struct, frozen=True, kw_only=True):
    """Base of every `data` payload."""


class UserRegisteredData(Payload, frozen=True, kw_only=True):
    user_id: Id
    username: Username
    display_name: DisplayName = ""


Visibility = Literal["public", "unlisted", "followers", "audience", "direct"]
# How the author's followers receive a post (public, unlisted and followers posts only): `push`
# writes it into each follower's home timeline (fan-out on write); `pull` merges it into their
# timelines when they read (authors with very many followers; the command service decides, so
# the choice is a fact of the log and a rebuild makes the same one).
Delivery = Literal["push", "pull"]
# The visibilities whose readers are the author's followers: only these can be pulled; audience
# members and mentioned users always get the row written.
FOLLOWER_VISIBILITIES: frozenset[str] = frozenset({"public", "unlisted", "followers"})


def delivery_for(visibility: str, wide_author: bool) -> Delivery:
    """How a new post reaches the author's followers: pulled for an author with at least the
    pull threshold's followers (`wide_author`), when its readers are followers at all."""
    return "pull" if wide_author and visibility in FOLLOWER_VISIBILITIES else "push"


MediaKind = Literal["image", "video", "gif"]
Url = Annotated[str, Meta(min_length=8, max_length=2048, pattern=r"^https?://[^\s]+$")]
AltText = Annotated[str, Meta(max_length=1500)]
Hashtag = Annotated[str, Meta(min_length=1, max_length=100)]
Bio = Annotated[str, Meta(max_length=500)]
AudienceName = Annotated[str, Meta(min_length=1, max_length=60)]


class Media(Struct, frozen=True, kw_only=True):
    """Attachment metadata only; the bytes live elsewhere (no upload store yet)."""

    kind: MediaKind
    url: Url
    alt_text: AltText = ""
    width: Annotated[int, Meta(ge=1, le=100_000)] | None = None
    height: Annotated[int, Meta(ge=1, le=100_000)] | None = None


class Mention(Struct, frozen=True, kw_only=True):
    """A resolved `@username` in a post's text."""

    user_id: Id
    username: Username


class PostCreatedData(Payload, frozen=True, kw_only=True):
    post_id: Id
    author_id: Id
    text: PostText
    # Added after v1 shipped, all with defaults, so v1 readers and old events still work.
    visibility: Visibility = "public"
    audience_id: Id | None = None
    in_reply_to_id: Id | None = None
    in_reply_to_author_id: Id | None = None
    quote_of_id: Id | None = None
    mentions: tuple[Mention, ...] = ()
    hashtags: tuple[Hashtag, ...] = ()
    links: tuple[Url, ...] = ()
    media: Annotated[tuple[Media, ...], Meta(max_length=4)] = ()
    delivery: Delivery = "push"


class PostEditedData(Payload, frozen=True, kw_only=True):
    """The new content of a post; visibility, audience and reply target cannot change."""

    post_id: Id
    author_id: Id
    text: PostText
    mentions: tuple[Mention, ...] = ()
    hashtags: tuple[Hashtag, ...] = ()
    links: tuple[Url, ...] = ()
    media: Annotated[tuple[Media, ...], Meta(max_length=4)] = ()


class RepostData(Payload, frozen=True, kw_only=True):
    """`repost_id` is a snowflake of its own: the repost's place in timelines."""

    repost_id: Id
    post_id: Id
    author_id: Id
    reposter_id: Id


class LikeData(Payload, frozen=True, kw_only=True):
    post_id: Id
    author_id: Id
    liker_id: Id


class ProfileUpdatedData(Payload, frozen=True, kw_only=True):
    """Only the fields present change; None means "leave as it is"."""

    user_id: Id
    display_name: DisplayName | None = None
    bio: Bio | None = None
    avatar_url: Url | None = None
    locked: bool | None = None


class MuteData(Payload, frozen=True, kw_only=True):
    muter_id: Id
    muted_id: Id
    expires_at: Annotated[datetime, Meta(tz=True)] | None = None


class AudienceData(Payload, frozen=True, kw_only=True):
    audience_id: Id
    owner_id: Id
    # Empty on audience.deleted, so no minimum length here (creation validates its own input).
    name: Annotated[str, Meta(max_length=60)] = ""


class AudienceMemberData(Payload, frozen=True, kw_only=True):
    audience_id: Id
    owner_id: Id
    member_id: Id


class PostDeletedData(Payload, frozen=True, kw_only=True):
    post_id: Id
    author_id: Id


class FollowData(Payload, frozen=True, kw_only=True):
    follower_id: Id
    followee_id: Id


class BlockData(Payload, frozen=True, kw_only=True):
    blocker_id: Id
    blocked_id: Id


class Event(Struct, frozen=True, kw_only=True, tag_field="type"):
    """CloudEvents envelope; subclasses fix `type` (the tag) and the `data` payload type.

    `subject` is the acting user's id as a decimal string. It is also the Kafka partition key,
    which keeps one user's events in order (invariant 4).
    """

    id: uuid.UUID
    source: str = SOURCE
    specversion: str = SPEC_VERSION
    time: Timestamp
    subject: str
    dataschema: str = ""
    datacontenttype: str = DATA_CONTENT_TYPE
    # CloudEvents extension attributes (lower-case alphanumerics only, per the spec).
    schemaversion: int = 1
    requestid: str | None = None


class UserRegistered(Event, frozen=True, kw_only=True, tag="user.registered"):
    data: UserRegisteredData


class PostCreated(Event, frozen=True, kw_only=True, tag="post.created"):
    data: PostCreatedData


class PostDeleted(Event, frozen=True, kw_only=True, tag="post.deleted"):
    data: PostDeletedData


class FollowCreated(Event, frozen=True, kw_only=True, tag="follow.created"):
    data: FollowData


class FollowRemoved(Event, frozen=True, kw_only=True, tag="follow.removed"):
    data: FollowData


class BlockCreated(Event, frozen=True, kw_only=True, tag="block.created"):
    data: BlockData


class BlockRemoved(Event, frozen=True, kw_only=True, tag="block.removed"):
    data: BlockData


class ProfileUpdated(Event, frozen=True, kw_only=True, tag="profile.updated"):
    data: ProfileUpdatedData


class PostEdited(Event, frozen=True, kw_only=True, tag="post.edited"):
    data: PostEditedData


class PostReposted(Event, frozen=True, kw_only=True, tag="post.reposted"):
    data: RepostData


class RepostRemoved(Event, frozen=True, kw_only=True, tag="repost.removed"):
    data: RepostData


class PostLiked(Event, frozen=True, kw_only=True, tag="post.liked"):
    data: LikeData


class LikeRemoved(Event, frozen=True, kw_only=True, tag="like.removed"):
    data: LikeData


class FollowRequested(Event, frozen=True, kw_only=True, tag="follow.requested"):
    """The followee is locked: the follow waits for approval. Actor: the follower."""

    data: FollowData


class FollowRequestApproved(Event, frozen=True, kw_only=True, tag="follow.request.approved"):
    """Actor: the followee. The follow becomes active."""

    data: FollowData


class FollowRequestRejected(Event, frozen=True, kw_only=True, tag="follow.request.rejected"):
    """Actor: the followee. The request ends; no follow."""

    data: FollowData


class MuteCreated(Event, frozen=True, kw_only=True, tag="mute.created"):
    data: MuteData


class MuteRemoved(Event, frozen=True, kw_only=True, tag="mute.removed"):
    data: MuteData


class AudienceCreated(Event, frozen=True, kw_only=True, tag="audience.created"):
    data: AudienceData


class AudienceDeleted(Event, frozen=True, kw_only=True, tag="audience.deleted"):
    data: AudienceData


class AudienceMemberAdded(Event, frozen=True, kw_only=True, tag="audience.member.added"):
    data: AudienceMemberData


class AudienceMemberRemoved(Event, frozen=True, kw_only=True, tag="audience.member.removed"):
    data: AudienceMemberData


AnyEvent = (
    UserRegistered
    | ProfileUpdated
    | PostCreated
    | PostEdited
    | PostDeleted
    | PostReposted
    | RepostRemoved
    | PostLiked
    | LikeRemoved
    | FollowCreated
    | FollowRemoved
    | FollowRequested
    | FollowRequestApproved
    | FollowRequestRejected
    | BlockCreated
    | BlockRemoved
    | MuteCreated
    | MuteRemoved
    | AudienceCreated
    | AudienceDeleted
    | AudienceMemberAdded
    | AudienceMemberRemoved
)

EVENT_TYPES: Final[tuple[type[Event], ...]] = (
    UserRegistered,
    ProfileUpdated,
    PostCreated,
    PostEdited,
    PostDeleted,
    PostReposted,
    RepostRemoved,
    PostLiked,
    LikeRemoved,
    FollowCreated,
    FollowRemoved,
    FollowRequested,
    FollowRequestApproved,
    FollowRequestRejected,
    BlockCreated,
    BlockRemoved,
    MuteCreated,
    MuteRemoved,
    AudienceCreated,
    AudienceDeleted,
    AudienceMemberAdded,
    AudienceMemberRemoved,
)

# Types past version 1; shared/upcast.py lifts older documents (post.created v2: hashtags
# lower-cased and unique).
_NEWER_VERSIONS: Final[dict[str, int]] = {"post.created": 2}

# The newest schema version of each event type this code understands.
CURRENT_VERSION: Final[dict[str, int]] = {
    tag: _NEWER_VERSIONS.get(tag, 1)
    for tag in (msgspec.inspect.type_info(t).tag for t in EVENT_TYPES)  # type: ignore[attr-defined]
}


@functools.cache
def type_tag(event_type: type[Event]) -> str:
    """The `type` string of an event class, e.g. "post.created"."""
    return msgspec.inspect.type_info(event_type).tag  # type: ignore[attr-defined, no-any-return]


def dataschema_for(tag: str, version: int = 1) -> str:
    return f"/schemas/events/{tag}.json#v{version}"


E = TypeVar("E", bound=Event)


def new_event(
    event_type: type[E],
    *,
    actor_id: int,
    data: Payload,
    request_id: str | None = None,
    now: datetime | None = None,
) -> E:
    """Build an event with a fresh time-ordered id, the current UTC time and its dataschema."""
    tag = type_tag(event_type)
    return event_type(
        id=uuid7(),
        time=now or datetime.now(UTC),
        subject=str(actor_id),
        dataschema=dataschema_for(tag, CURRENT_VERSION[tag]),
        schemaversion=CURRENT_VERSION[tag],
        requestid=request_id,
        data=data,  # type: ignore[call-arg]
    )
