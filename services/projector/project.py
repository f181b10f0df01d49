"""What a batch of events writes to the read models: a pure plan, no I/O.

`plan(events)` turns events, in log order per partition, into a list of typed operations the
store applies in one transaction. Consecutive `post.created` events collapse into one `AddPosts`,
which the store applies as a single set-based insert and fan-out (DESIGN.md §4: no per-row round
trips on the hot path).

Every operation is state-based and idempotent, so the result does not depend on how partitions
interleave (invariant 4):
- follows and blocks are last-writer-wins registers versioned by the event id (UUIDv7);
- after a follow edge changes, the follower's timeline is reconciled with the edge's *current*
  state (merge the followee's recent posts if active, remove them if not);
- a block deactivates every older follow edge between the two people and removes their posts
  from each other's timelines.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime

import msgspec

from shared.events import (
    AnyEvent,
    BlockCreated,
    BlockRemoved,
    FollowCreated,
    FollowRemoved,
    PostCreated,
    PostDeleted,
    UserRegistered,
)


class UpsertUser(msgspec.Struct, frozen=True):
    user_id: int
    username: str
    display_name: str
    created_at: datetime


class NewPost(msgspec.Struct, frozen=True):
    post_id: int
    author_id: int
    text: str
    created_at: datetime


class AddPosts(msgspec.Struct, frozen=True):
    """Insert posts and fan each out to its author's active followers and the author."""

    posts: tuple[NewPost, ...]


class DeletePost(msgspec.Struct, frozen=True):
    post_id: int
    author_id: int


class SetFollow(msgspec.Struct, frozen=True):
    follower_id: int
    followee_id: int
    active: bool
    version: uuid.UUID
    at: datetime


class SetBlock(msgspec.Struct, frozen=True):
    blocker_id: int
    blocked_id: int
    active: bool
    version: uuid.UUID
    at: datetime


Op = UpsertUser | AddPosts | DeletePost | SetFollow | SetBlock


def op_for(event: AnyEvent) -> Op:
    """The single operation one event asks for."""
    match event:
        case UserRegistered(data=d):
            return UpsertUser(d.user_id, d.username, d.display_name, event.time)
        case PostCreated(data=d):
            return AddPosts((NewPost(d.post_id, d.author_id, d.text, event.time),))
        case PostDeleted(data=d):
            return DeletePost(d.post_id, d.author_id)
        case FollowCreated(data=d):
            return SetFollow(d.follower_id, d.followee_id, True, event.id, event.time)
        case FollowRemoved(data=d):
            return SetFollow(d.follower_id, d.followee_id, False, event.id, event.time)
        case BlockCreated(data=d):
            return SetBlock(d.blocker_id, d.blocked_id, True, event.id, event.time)
        case BlockRemoved(data=d):
            return SetBlock(d.blocker_id, d.blocked_id, False, event.id, event.time)
    raise TypeError(f"no projection for {type(event).__name__}")  # pragma: no cover


def plan(events: Iterable[AnyEvent]) -> list[Op]:
    """Operations for a batch, in order, with runs of new posts merged into one AddPosts.

    Merging a run is safe because nothing between two post.created events of the run could
    change who follows whom: the run is contiguous in the batch's order.
    """
    ops: list[Op] = []
    run: list[NewPost] = []
    for event in events:
        op = op_for(event)
        if isinstance(op, AddPosts):
            run.extend(op.posts)
            continue
        if run:
            ops.append(AddPosts(tuple(run)))
            run = []
        ops.append(op)
    if run:
        ops.append(AddPosts(tuple(run)))
    return ops
