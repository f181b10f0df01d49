"""Hypothesis strategies for random histories of the microblog's events.

A history is drawn in two steps, as the real system makes one:
1. a *command order*: users act one after the other, each action made valid by the command
   service's rules against the reference model's state at that moment (reply only to a post
   you may view, repost only public/unlisted or own posts, approve only a pending request, …);
   event ids (UUIDv7) and post ids (snowflakes) are minted in this order, as the command
   service would;
2. a *log order*: an arbitrary interleaving that keeps each user's events in order (one
   partition per user, invariant 4), cut into batches of random sizes (the projector merges
   runs of posts within a batch).

Features switch groups of actions on, so the property test can run on the subset of the domain
the projector implements. Shrinking moves towards fewer actions, the first action kinds
(plain public posts), the command order itself and batches of one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, TypeVar, cast

from hypothesis import strategies as st

from shared.events import (
    AnyEvent,
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
from shared.ids import SnowflakeGenerator
from tests.model.reference import Model

# Register, follow/unfollow, block/unblock, public text posts, deletes.
CORE: Final = "core"
VISIBILITY: Final = "visibility"  # unlisted/followers/direct posts, with mentions
AUDIENCES: Final = "audiences"  # audiences, members, audience posts
REPLIES: Final = "replies"
MUTES: Final = "mutes"
LOCKS: Final = "locks"  # locked profiles, follow requests, approve/reject
REPOSTS: Final = "reposts"
LIKES: Final = "likes"
EDITS: Final = "edits"
HASHTAGS: Final = "hashtags"
# Posts delivered by pull as well as by push (hybrid fan-out): what readers see must not change.
PULL: Final = "pull"
ALL_FEATURES: Final = frozenset(
    (CORE, VISIBILITY, AUDIENCES, REPLIES, MUTES, LOCKS, REPOSTS, LIKES, EDITS, HASHTAGS, PULL)
)

TAGS: Final = ("cats", "Dogs", "news")
# A fixed "now" for mutes' expiry: one mute expired a day ago, one expires in a day.
DAY: Final = timedelta(days=1)

T = TypeVar("T")

# Worker 1003 is this module's own, so its ids never collide with other tests' generators.
_ids = SnowflakeGenerator(worker_id=1003)


@dataclass(frozen=True)
class History:
    users: tuple[int, ...]
    commands: tuple[AnyEvent, ...]  # the order the command service made them in
    log: tuple[AnyEvent, ...]  # one interleaving of `commands` that keeps per-user order
    batches: tuple[tuple[AnyEvent, ...], ...]  # `log` cut into consumer batches

    def describe(self, names: dict[int | None, str] | None = None) -> str:
        """One line per logged event (in log order, batches separated by `--`), with users
        and posts shown by short names, for failure reports."""
        names = self.names() if names is None else names
        lines = []
        for batch in self.batches:
            for ev in batch:
                fields = []
                for f in ev.data.__struct_fields__:
                    v = getattr(ev.data, f)
                    if f in ("text", "username", "display_name", "name") or v in (None, ()):
                        continue
                    if f == "mentions":
                        v = [names.get(m.user_id, m.user_id) for m in v]
                    elif isinstance(v, int) and not isinstance(v, bool):
                        v = names.get(v, v)
                    elif isinstance(v, datetime):
                        v = "past" if v < ev.time else "future"
                    fields.append(f"{f}={v}")
                lines.append(f"    {type(ev).__name__}({', '.join(fields)})")
            lines.append("    --")
        return "\n".join(lines[:-1])

    def names(self) -> dict[int | None, str]:
        """Short names by kind and creation order: users u0…, posts p0…, reposts r0…,
        audiences a0…."""
        names: dict[int | None, str] = {u: f"u{i}" for i, u in enumerate(self.users)}
        for prefix, attr in (("p", "post_id"), ("r", "repost_id"), ("a", "audience_id")):
            made = sorted({getattr(ev.data, attr, 0) or 0 for ev in self.commands} - {0})
            names.update({x: f"{prefix}{i}" for i, x in enumerate(made)})
        return names

    def __repr__(self) -> str:
        return f"History(\n{self.describe()}\n)"


def _actor(ev: AnyEvent) -> int:
    return int(ev.subject)


class _Builder:
    """Draws valid commands one at a time against the model's state in command order."""

    def __init__(self, draw: st.DrawFn, users: list[int], features: frozenset[str]):
        self.draw = draw
        self.users = users
        self.features = features
        self.model = Model()
        self.events: list[AnyEvent] = []
        self.now = datetime.now(UTC)

    def emit(self, event: Event) -> None:
        # new_event over a choice of event classes types as the base class.
        ev = cast(AnyEvent, event)
        self.model.apply(ev)
        self.events.append(ev)

    def pick(self, options: Sequence[T]) -> T:
        return self.draw(st.sampled_from(options))

    def two_users(self) -> tuple[int, int]:
        a = self.pick(self.users)
        b = self.pick([u for u in self.users if u != a])
        return a, b

    # ------------------------------------------------------------------ actions

    def post(self) -> None:
        author: int = self.pick(self.users)
        visibility: Visibility = "public"
        audience_id = None
        kinds: list[Visibility] = ["public"]
        if VISIBILITY in self.features:
            kinds += ["unlisted", "followers", "direct"]
        owned = [
            a
            for a, owner in self.model.audiences.items()
            if owner == author and a not in self.model.deleted_audiences
        ]
        if AUDIENCES in self.features and owned:
            kinds.append("audience")
        visibility = self.pick(kinds)
        if visibility == "audience":
            audience_id = self.pick(owned)
        mentions: tuple[int, ...] = ()
        if VISIBILITY in self.features:
            others = [u for u in self.users if u != author]
            mentions = tuple(self.draw(st.lists(st.sampled_from(others), max_size=2, unique=True)))
        tags: tuple[str, ...] = ()
        if HASHTAGS in self.features:
            tags = tuple(self.draw(st.lists(st.sampled_from(TAGS), max_size=2, unique=True)))
        reply_to = None
        if REPLIES in self.features and self.draw(st.booleans()):
            viewable = [
                p for p in self.model.live_posts() if self.model.can_view(author, p.post_id)
            ]
            if viewable:
                reply_to = self.pick(viewable)
        pid = _ids.next_id()
        text = " ".join([f"post {pid}", *(f"#{t}" for t in tags), *(f"@u{m}" for m in mentions)])
        data = PostCreatedData(
            post_id=pid,
            author_id=author,
            text=text,
            visibility=visibility,
            audience_id=audience_id,
            in_reply_to_id=reply_to.post_id if reply_to else None,
            in_reply_to_author_id=reply_to.author_id if reply_to else None,
            mentions=tuple(Mention(user_id=m, username=f"u{m}") for m in mentions),
            hashtags=tuple(t.lower() for t in tags),
            # Every other post, not drawn: the examples Hypothesis generates for a seed stay
            # the same with or without this feature.
            delivery="pull" if PULL in self.features and len(self.model.posts) % 2 else "push",
        )
        self.emit(new_event(PostCreated, actor_id=author, data=data))

    def delete(self) -> None:
        posts = self.model.live_posts()
        if posts:
            p = self.pick(posts)
            data = PostDeletedData(post_id=p.post_id, author_id=p.author_id)
            self.emit(new_event(PostDeleted, actor_id=data.author_id, data=data))

    def follow(self) -> None:
        a, b = self.two_users()
        if self.model.blocked_either_way(a, b):
            return  # the command service refuses follows between blocked people
        data = FollowData(follower_id=a, followee_id=b)
        # As the command service decides: a locked account's *new* follower asks first; an
        # existing follow stays a follow.
        locked = self.model.users[b].locked and not self.model.follows_actively(a, b)
        kind = FollowRequested if locked else FollowCreated
        self.emit(new_event(kind, actor_id=a, data=data))

    def unfollow(self) -> None:
        a, b = self.two_users()
        data = FollowData(follower_id=a, followee_id=b)
        self.emit(new_event(FollowRemoved, actor_id=a, data=data))

    def block(self) -> None:
        a, b = self.two_users()
        self.emit(new_event(BlockCreated, actor_id=a, data=BlockData(blocker_id=a, blocked_id=b)))

    def unblock(self) -> None:
        a, b = self.two_users()
        self.emit(new_event(BlockRemoved, actor_id=a, data=BlockData(blocker_id=a, blocked_id=b)))

    def mute(self) -> None:
        a, b = self.two_users()
        expires = self.pick([None, self.now - DAY, self.now + DAY])
        data = MuteData(muter_id=a, muted_id=b, expires_at=expires)
        self.emit(new_event(MuteCreated, actor_id=a, data=data))

    def unmute(self) -> None:
        a, b = self.two_users()
        self.emit(new_event(MuteRemoved, actor_id=a, data=MuteData(muter_id=a, muted_id=b)))

    def lock(self) -> None:
        a: int = self.pick(self.users)
        data = ProfileUpdatedData(user_id=a, locked=not self.model.users[a].locked)
        self.emit(new_event(ProfileUpdated, actor_id=a, data=data))

    def answer_request(self) -> None:
        b: int = self.pick(self.users)
        pending = sorted(self.model.pending_requests(b))
        if pending:
            a: int = self.pick(pending)
            kind = self.pick([FollowRequestApproved, FollowRequestRejected])
            data = FollowData(follower_id=a, followee_id=b)
            self.emit(new_event(kind, actor_id=b, data=data))

    def audience(self) -> None:
        owner: int = self.pick(self.users)
        data = AudienceData(audience_id=_ids.next_id(), owner_id=owner, name="close friends")
        self.emit(new_event(AudienceCreated, actor_id=owner, data=data))

    def delete_audience(self) -> None:
        live = [
            (a, o) for a, o in self.model.audiences.items() if a not in self.model.deleted_audiences
        ]
        if live:
            aid, owner = self.pick(live)
            data = AudienceData(audience_id=aid, owner_id=owner, name="close friends")
            self.emit(new_event(AudienceDeleted, actor_id=owner, data=data))

    def membership(self) -> None:
        live = [
            (a, o) for a, o in self.model.audiences.items() if a not in self.model.deleted_audiences
        ]
        if live:
            aid, owner = self.pick(live)
            member = self.pick([u for u in self.users if u != owner])
            kind = self.pick([AudienceMemberAdded, AudienceMemberAdded, AudienceMemberRemoved])
            data = AudienceMemberData(audience_id=aid, owner_id=owner, member_id=member)
            self.emit(new_event(kind, actor_id=owner, data=data))

    def repost(self) -> None:
        u: int = self.pick(self.users)
        mine = {r.post_id for r in self.model.live_reposts() if r.reposter_id == u}
        candidates = [
            p
            for p in self.model.live_posts()
            if p.post_id not in mine
            and (p.visibility in ("public", "unlisted") or p.author_id == u)
            and self.model.can_view(u, p.post_id)
        ]
        if candidates:
            p = self.pick(candidates)
            data = RepostData(
                repost_id=_ids.next_id(),
                post_id=p.post_id,
                author_id=p.author_id,
                reposter_id=u,
            )
            self.emit(new_event(PostReposted, actor_id=u, data=data))

    def unrepost(self) -> None:
        reposts = self.model.live_reposts()
        if reposts:
            r = self.pick(reposts)
            post = self.model.posts[r.post_id]
            data = RepostData(
                repost_id=r.repost_id,
                post_id=post.post_id,
                author_id=post.author_id,
                reposter_id=r.reposter_id,
            )
            self.emit(new_event(RepostRemoved, actor_id=data.reposter_id, data=data))

    def like(self) -> None:
        u: int = self.pick(self.users)
        candidates = [
            p
            for p in self.model.live_posts()
            if self.model.can_view(u, p.post_id)
            and not ((p.post_id, u) in self.model.likes and self.model.likes[(p.post_id, u)].value)
        ]
        if candidates:
            p = self.pick(candidates)
            data = LikeData(post_id=p.post_id, author_id=p.author_id, liker_id=u)
            self.emit(new_event(PostLiked, actor_id=u, data=data))

    def unlike(self) -> None:
        liked = [k for k, c in self.model.likes.items() if c.value is True]
        if liked:
            pid, u = self.pick(sorted(liked))
            post = self.model.posts[pid]
            data = LikeData(post_id=pid, author_id=post.author_id, liker_id=u)
            self.emit(new_event(LikeRemoved, actor_id=u, data=data))

    def edit(self) -> None:
        posts = self.model.live_posts()
        if posts:
            p = self.pick(posts)
            tags: tuple[str, ...] = ()
            if HASHTAGS in self.features:
                tags = tuple(self.draw(st.lists(st.sampled_from(TAGS), max_size=2, unique=True)))
            post = self.model.posts[p.post_id]
            # Mentions stay as they were: they decide who may see followers/direct posts,
            # and an edit never changes who may see a post.
            data = PostEditedData(
                post_id=post.post_id,
                author_id=post.author_id,
                text=" ".join([f"edited {post.post_id}", *(f"#{t}" for t in tags)]),
                mentions=tuple(Mention(user_id=m, username=f"u{m}") for m in post.mentions),
                hashtags=tuple(t.lower() for t in tags),
            )
            self.emit(new_event(PostEdited, actor_id=post.author_id, data=data))

    def actions(self) -> list[Callable[[], None]]:
        """Available actions; the first ones are what shrinking moves towards."""
        f = self.features
        acts: list[Callable[[], None]] = [self.post, self.follow, self.post, self.unfollow]
        acts += [self.block, self.unblock, self.delete]
        if MUTES in f:
            acts += [self.mute, self.unmute]
        if LOCKS in f:
            acts += [self.lock, self.answer_request, self.answer_request]
        if AUDIENCES in f:
            acts += [self.audience, self.membership, self.membership, self.delete_audience]
        if REPOSTS in f:
            acts += [self.repost, self.repost, self.unrepost]
        if LIKES in f:
            acts += [self.like, self.unlike]
        if EDITS in f:
            acts += [self.edit]
        return acts


@st.composite
def command_orders(
    draw: st.DrawFn,
    features: frozenset[str] = frozenset((CORE,)),
    users: tuple[int, int] = (3, 4),
    actions: tuple[int, int] = (4, 30),
) -> tuple[list[int], list[AnyEvent]]:
    """Users (registered first) and the events of a valid run of commands, in command order."""
    ids = [_ids.next_id() for _ in range(draw(st.integers(*users)))]
    b = _Builder(draw, ids, features)
    for uid in ids:
        data = UserRegisteredData(user_id=uid, username=f"u{uid}", display_name=f"User {uid}")
        b.emit(new_event(UserRegistered, actor_id=uid, data=data))
    acts = b.actions()
    low, high = actions
    n = 0
    # "Go on?" before each action, then the action with all its parameters as one draw: the
    # shrinker deletes whole actions anywhere in the run (a count drawn up front would only
    # let it drop actions from the end). One in 16 stops early past the minimum.
    while n < high and (n < low or draw(st.integers(0, 15)) > 0):
        draw(_action(b, acts))
        n += 1
    return ids, b.events


@st.composite
def _action(draw: st.DrawFn, builder: _Builder, acts: list[Callable[[], None]]) -> None:
    builder.draw = draw
    draw(st.sampled_from(acts))()


@st.composite
def interleavings(draw: st.DrawFn, events: Sequence[AnyEvent]) -> list[AnyEvent]:
    """An arbitrary merge of the per-user subsequences of `events`, each kept in order.

    Choice 0 is always the queue whose head comes first in `events`, so shrinking leads back
    to the original order.
    """
    queues: dict[int, list[AnyEvent]] = {}
    for ev in events:
        queues.setdefault(_actor(ev), []).append(ev)
    position = {id(ev): i for i, ev in enumerate(events)}
    out: list[AnyEvent] = []
    while queues:
        heads = sorted(queues, key=lambda u: position[id(queues[u][0])])
        actor = heads[draw(st.integers(0, len(heads) - 1))]
        out.append(queues[actor].pop(0))
        if not queues[actor]:
            del queues[actor]
    return out


@st.composite
def batchings(draw: st.DrawFn, log: Sequence[AnyEvent]) -> list[tuple[AnyEvent, ...]]:
    out: list[tuple[AnyEvent, ...]] = []
    i = 0
    while i < len(log):
        n = draw(st.integers(1, 4))
        out.append(tuple(log[i : i + n]))
        i += n
    return out


@st.composite
def histories(
    draw: st.DrawFn,
    features: frozenset[str] = frozenset((CORE,)),
    users: tuple[int, int] = (3, 4),
    actions: tuple[int, int] = (4, 30),
) -> History:
    ids, commands = draw(command_orders(features, users, actions))
    log = draw(interleavings(commands))
    batches = draw(batchings(log))
    return History(tuple(ids), tuple(commands), tuple(log), tuple(batches))
