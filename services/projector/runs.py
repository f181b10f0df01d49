"""How a batch's per-event operations become the batch's operations (still pure, no I/O).

Runs of the same kind collapse into one set-based operation (`merge`): consecutive
`post.created` into one `AddPosts` and one `Notify` (DESIGN.md §4: no per-row round trips on
the hot path), registrations into one `UpsertUsers`, follow-register writes into one
`SetFollows`. `interleave` orders a batch's partitions so those runs are long,
`lock_slots` names the advisory locks a batch takes before it writes, and `segments` cuts a
batch into the transactions it is written in.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import pairwise

import msgspec

from services.projector.project import (
    AddPosts,
    AddRepost,
    DeleteAudience,
    DeletePost,
    EditPost,
    NewPost,
    Notification,
    Notify,
    Op,
    RemoveRepost,
    RequestFollow,
    SetAudienceMember,
    SetBlock,
    SetFollow,
    SetFollows,
    UpsertAudience,
    UpsertUser,
    UpsertUsers,
    ops_for,
)
from shared.events import AnyEvent


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
    return [queues[i][j] for i, j in interleave_order(queues)]


def interleave_order(streams: Sequence[Sequence[list[Op]]]) -> list[tuple[int, int]]:
    """`interleave`'s order as (stream index, index within the stream) of each event."""
    heads = [0] * len(streams)
    out: list[tuple[int, int]] = []
    while True:
        live = [i for i, q in enumerate(streams) if heads[i] < len(q)]
        if not live:
            return out
        kind = min((run_kind(streams[i][heads[i]]) for i in live), key=_RUN_ORDER.index)
        for i in live:
            q, h = streams[i], heads[i]
            while h < len(q) and run_kind(q[h]) == kind:
                out.append((i, h))
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
# other and the second sees the first's rows. New posts take their authors' slots shared: two
# fan-outs never need each other's rows, so instances fanning out posts run side by side (the
# hot path uses both cores), while a change of who receives them (exclusive) waits for both.
# Slots, not user ids, bound the locks per transaction (PostgreSQL's shared lock table is
# finite); a collision only serialises more.
LOCK_SLOTS = 1024
_SLOT_BITS = LOCK_SLOTS.bit_length() - 1
# Fibonacci hashing: 2^64 over the golden ratio, odd.
_SPREAD = 0x9E3779B97F4A7C15


def slot(user_id: int) -> int:
    """A user's lock slot: the top bits of a multiplicative hash of the id. Not the id modulo
    LOCK_SLOTS: user ids are snowflakes whose low bits are a per-millisecond sequence, 0 for
    nearly every account (registrations rarely share a millisecond), so nearly every user
    would share slot 0 and two instances would never write side by side."""
    return ((user_id * _SPREAD) & 0xFFFF_FFFF_FFFF_FFFF) >> (64 - _SLOT_BITS)


_NO_USERS: tuple[tuple[int, ...], tuple[int, ...]] = ((), ())


def _slot_users(op: Op) -> tuple[Iterable[int], Iterable[int]]:
    """The users whose slots `op` takes: (shared, exclusive)."""
    match op:
        case AddPosts(posts=posts):
            # A reply recounts its parent's replies (RECOUNT_REPLIES) and may re-root its
            # descendants: two replies to one post recounting side by side would each miss
            # the other's row, so a reply serialises on the parent's author.
            replied = [
                p.in_reply_to_author_id for p in posts if p.in_reply_to_author_id is not None
            ]
            return [p.author_id for p in posts], replied
        case Notify() | UpsertUser() | UpsertUsers():
            return _NO_USERS
        case EditPost() | DeletePost():
            return (), (op.author_id,)
        case AddRepost() | RemoveRepost():
            return (), (op.reposter_id,)
        case SetFollow() | RequestFollow():
            return (), (op.follower_id, op.followee_id)
        case SetFollows(follows=follows):
            return (), [u for f in follows for u in (f.follower_id, f.followee_id)]
        case SetBlock():
            return (), (op.blocker_id, op.blocked_id)
        case UpsertAudience() | DeleteAudience():
            return (), (op.owner_id,)
        case SetAudienceMember():
            return (), (op.owner_id, op.member_id)
    return _NO_USERS


def lock_slots(ops: Iterable[Op]) -> list[tuple[int, bool]]:
    """The advisory-lock slots `ops` need, each with whether it is taken exclusively; sorted
    by slot, so concurrent batches take them in one order and can't deadlock."""
    shared: set[int] = set()
    exclusive: set[int] = set()
    for op in ops:
        s, x = _slot_users(op)
        shared.update(s)
        exclusive.update(x)
    slots = {slot(u): False for u in shared}
    slots.update((slot(u), True) for u in exclusive)
    return sorted(slots.items())


def slot_mode(event_ops: list[Op]) -> bool | None:
    """How an event's operations lock (see `lock_slots`): True if any slot exclusively,
    False if only shared slots (a new post), None if they take none (a registration)."""
    mode = None
    for op in event_ops:
        s, x = _slot_users(op)
        if x:
            return True
        if s:
            mode = False
    return mode


def segments(modes: Sequence[bool | None], min_run: int) -> list[range]:
    """Consecutive transactions for a batch's events (in the order they are written), given
    each event's `slot_mode`: every run of events that take no slot exclusively and of which
    at least `min_run` take shared slots is a transaction of its own; the rest stays together
    around such runs.

    A transaction holds its slots until it commits. A batch of some follows and thousands of
    new posts (a replay: each partition's follows sit between its registrations and its
    posts) would hold the follows' exclusive slots, most of the slots, through the posts' long
    fan-out, and another instance's posts could only wait; cut apart, the follows commit
    first and the posts run beside the other instance's. Any cut is a valid batch boundary:
    each side holds a prefix of every partition's events (invariant 3 holds per transaction).
    """
    n = len(modes)
    cuts = {0, n}
    i = 0
    while i < n:
        if modes[i]:
            i += 1
            continue
        j, shared = i, 0
        while j < n and not modes[j]:
            shared += modes[j] is False
            j += 1
        if shared >= min_run:
            cuts.update((i, j))
        i = j
    return [range(a, b) for a, b in pairwise(sorted(cuts))]
