"""What a batch of events writes to the read models: a pure plan, no I/O.

`plan(events)` turns events, in log order per partition, into a list of typed operations the
store applies in one transaction. Consecutive `post.created` events collapse into one `AddPosts`
(and one `Notify` for their mentions and replies), which the store applies as a single
set-based insert and fan-out (DESIGN.md §4: no per-row round trips on the hot path); runs of
registrations and of follow-register writes collapse likewise (`merge`), and `interleave`
orders a batch's partitions so that such runs are long.

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
from collections.abc import Iterable
from datetime import datetime

import msgspec

from shared.events import (
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


def latest_follows(writes: Iterable[SetFollow]) -> tuple[SetFollow, ...]:
    """The last writer of each (follower, followee) register among `writes`: the highest
    version (UUIDv7 event ids order by time), whatever order the writes came in.

    Applying only the winner is what applying all of them in turn would leave: the register
    keeps its highest version, and the winner ends every request any loser would have ended
    (theirs are older). Sorted by pair, so concurrent batches lock rows in one order; a pair
    also may appear only once in one INSERT … ON CONFLICT DO UPDATE.
    """
    best: dict[tuple[int, int], SetFollow] = {}
    for w in writes:
        key = (w.follower_id, w.followee_id)
        held = best.get(key)
        if held is None or w.version > held.version:
            best[key] = w
    return tuple(best[k] for k in sorted(best))


def first_users(registrations: Iterable[UpsertUser]) -> tuple[UpsertUser, ...]:
    """The first registration of each user id, in log order: a registration never overwrites
    (ON CONFLICT DO NOTHING), so later ones for the same id are no-ops anyway."""
    first: dict[int, UpsertUser] = {}
    for r in registrations:
        first.setdefault(r.user_id, r)
    return tuple(first.values())


# Kinds of events whose consecutive runs collapse into one set-based operation.
_POSTS, _USERS, _FOLLOWS = "posts", "users", "follows"
_RUN_ORDER: tuple[str | None, ...] = (_USERS, _FOLLOWS, None, _POSTS)


def run_kind(event_ops: list[Op]) -> str | None:
    """Which run an event's operations join (None: it is applied on its own)."""
    if not event_ops:
        return None
    match event_ops[0]:
        case AddPosts():
            return _POSTS
        case UpsertUser():
            return _USERS
        case SetFollow():
            return _FOLLOWS
    return None


def interleave(streams: Iterable[Iterable[list[Op]]]) -> list[list[Op]]:
    """One order for the events of several partitions (each stream in its log order) that
    keeps runs of the same kind together, so `merge` makes few, large set-based operations.

    Any interleaving of partitions is a valid order (invariant 4: the read models do not depend
    on it), only each partition's own order must hold. Greedy: of the kinds at the streams'
    heads take the first in _RUN_ORDER, then every stream's leading events of that kind, and
    repeat. Posts come last: their runs are the costly fan-outs, and waiting lets the other
    partitions' posts join the same run.
    """
    queues = [list(s) for s in streams]
    heads = [0] * len(queues)
    out: list[list[Op]] = []
    while True:
        live = [i for i, q in enumerate(queues) if heads[i] < len(q)]
        if not live:
            return out
        kind = min((run_kind(queues[i][heads[i]]) for i in live), key=_RUN_ORDER.index)
        for i in live:
            q, h = queues[i], heads[i]
            while h < len(q) and run_kind(q[h]) == kind:
                out.append(q[h])
                h += 1
            heads[i] = h


def merge(per_event: Iterable[list[Op]]) -> list[Op]:
    """Concatenate per-event operations, collapsing each run of post.created into one AddPosts,
    each run of user.registered into one UpsertUsers and each run of follow-register writes
    into one SetFollows, each followed by one Notify for the run's notifications.

    Merging a run of posts is safe because nothing between two post.created events of the run
    could change who follows whom: the run is contiguous in the batch's order. Within a run, a
    reply to a post of the same run gets its conversation root here, since the set-based insert
    cannot see its own rows. A run of follows keeps each pair's last writer (`latest_follows`);
    its notifications move after it, which changes nothing: a follow-register write only ends
    follow_request notifications, and those never come from a follow-register write.
    """
    ops: list[Op] = []
    posts: list[NewPost] = []
    users: list[UpsertUser] = []
    follows: list[SetFollow] = []
    notes: list[Notification] = []
    roots: dict[int, int] = {}
    current: str | None = None

    def flush() -> None:
        if posts:
            ops.append(AddPosts(tuple(posts)))
        if users:
            ops.append(UpsertUsers(first_users(users)))
        if follows:
            ops.append(SetFollows(latest_follows(follows)))
        if notes:
            ops.append(Notify(tuple(notes)))
        posts.clear()
        users.clear()
        follows.clear()
        notes.clear()

    for event_ops in per_event:
        kind = run_kind(event_ops)
        if kind != current or kind is None:
            flush()
            current = kind
        if kind is None:
            ops.extend(event_ops)
            continue
        for op in event_ops:
            match op:
                case AddPosts():
                    for p in op.posts:
                        if p.conversation_id is None and p.in_reply_to_id in roots:
                            p = msgspec.structs.replace(p, conversation_id=roots[p.in_reply_to_id])
                        if p.conversation_id is not None:
                            roots[p.post_id] = p.conversation_id
                        posts.append(p)
                case UpsertUser():
                    users.append(op)
                case SetFollow():
                    follows.append(op)
                case Notify():
                    notes.extend(op.notifications)
    flush()
    return ops


def plan(events: Iterable[AnyEvent]) -> list[Op]:
    """Operations for a batch, in order, with runs of new posts merged (see `merge`)."""
    return merge(ops_for(e) for e in events)


# Advisory-lock slots a batch takes before it writes (runner.apply_batch). Two projector
# instances own different partitions, so one may fan out author X's new post while the other
# activates a follow of X and merges X's posts; under READ COMMITTED neither sees the other's
# uncommitted row and the follower would miss the post forever. Every op that fans out a user's
# content or changes who receives it locks that user's slot, so such pairs run one after the
# other and the second sees the first's rows. Slots, not user ids, bound the locks per
# transaction (PostgreSQL's shared lock table is finite); a collision only serialises more.
LOCK_SLOTS = 1024


def lock_slots(ops: Iterable[Op]) -> list[int]:
    """The sorted advisory-lock slots `ops` need (sorted, so concurrent batches can't deadlock)."""
    users: set[int] = set()
    for op in ops:
        match op:
            case AddPosts(posts=posts):
                for p in posts:
                    users.add(p.author_id)
                    if p.in_reply_to_author_id is not None:
                        users.add(p.in_reply_to_author_id)
            case EditPost() | DeletePost():
                users.add(op.author_id)
            case AddRepost() | RemoveRepost():
                users.add(op.reposter_id)
            case SetFollow() | RequestFollow():
                users.update((op.follower_id, op.followee_id))
            case SetFollows(follows=follows):
                for f in follows:
                    users.update((f.follower_id, f.followee_id))
            case SetBlock():
                users.update((op.blocker_id, op.blocked_id))
            case UpsertAudience() | DeleteAudience():
                users.add(op.owner_id)
            case SetAudienceMember():
                users.update((op.owner_id, op.member_id))
    return sorted({u % LOCK_SLOTS for u in users})
