"""The event log's vocabulary.

Every event is a CloudEvents 1.0 structured-mode JSON object: the envelope attributes (`id`,
`source`, `type`, `time`, `subject`, `specversion`, `dataschema`, `datacontenttype`) beside a
typed `data` payload. `type` is the union's tag, so decoding picks the right struct in one pass.

Evolution rules (DESIGN.md §3): a new field gets a default; readers ignore unknown fields (so no
`forbid_unknown_fields` here); a breaking change is a new `schemaversion` with an upcaster.
Tags are explicit strings, never class names, because analytics consumers key on them.
"""

from __future__ import annotations

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


class PostCreatedData(Payload, frozen=True, kw_only=True):
    post_id: Id
    author_id: Id
    text: PostText


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


AnyEvent = (
    UserRegistered
    | PostCreated
    | PostDeleted
    | FollowCreated
    | FollowRemoved
    | BlockCreated
    | BlockRemoved
)

EVENT_TYPES: Final[tuple[type[Event], ...]] = (
    UserRegistered,
    PostCreated,
    PostDeleted,
    FollowCreated,
    FollowRemoved,
    BlockCreated,
    BlockRemoved,
)

# The newest schema version of each event type this code understands.
CURRENT_VERSION: Final[dict[str, int]] = {
    msgspec.inspect.type_info(t).tag: 1  # type: ignore[attr-defined]
    for t in EVENT_TYPES
}


def type_tag(event_type: type[Event]) -> str:
    """The `type` string of an event class, e.g. "post.created"."""
    return msgspec.inspect.type_info(event_type).tag  # type: ignore[attr-defined, no-any-return]


def dataschema_for(tag: str, version: int = 1) -> str:
    return f"/schemas/events/{tag}.json#v{version}"


E = TypeVar("E", bound=Event)

EventKind = Literal[
    "user.registered",
    "post.created",
    "post.deleted",
    "follow.created",
    "follow.removed",
    "block.created",
    "block.removed",
]


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
