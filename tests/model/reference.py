"""The reference model: schemas/semantics.md as a pure, in-memory fold over events.

`Model.apply(event)` takes events in any order that keeps each user's events in order (the
log's guarantee, invariant 4); the queries answer who sees what. Nothing here depends on the
cross-user interleaving:

- follow, block, mute and audience-membership edges are last-writer-wins registers on the
  event id (a UUIDv7, time-ordered), never on arrival order;
- a block ends every follow edge and pending request between the two people whose version is
  older than the newest block ever created between them (either direction), even when the
  follow event arrives after the block;
- timelines are computed from the final state at query time, and privacy is decided by
  shared.policy (can_view / shows_in_feed) over Relations built from the model's own state.

So the model is independent of SQL: it shares the policy rule with the services, not the
projection. Where the contract is silent, the choice made here is commented.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

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
    Visibility,
)
from shared.policy import PostFacts, Relations, can_view, shows_in_feed

FollowState = Literal["active", "requested", "none"]
NotificationKind = Literal["mention", "reply", "follow", "follow_request", "repost", "like"]
# Posts of followed accounts that fan out to followers' homes (semantics.md, "Home").
FOLLOWER_VISIBLE: frozenset[Visibility] = frozenset(("public", "unlisted", "followers"))


@dataclass(frozen=True)
class Entry:
    """One timeline row: `entry_id` orders it (a post id, or a repost's own id); `post_id` is
    the post it shows; `reposter_id` is set for a repost."""

    entry_id: int
    post_id: int
    reposter_id: int | None = None


@dataclass(frozen=True)
class Notification:
    kind: NotificationKind
    actor_id: int
    post_id: int | None
    event_id: uuid.UUID
    at: datetime  # the causing event's time, for mutes' expiry "when created"
    repost_id: int | None = None  # the repost a repost notification tells of


@dataclass
class User:
    user_id: int
    username: str
    display_name: str = ""
    bio: str = ""
    locked: bool = False


@dataclass
class Post:
    post_id: int
    author_id: int
    text: str
    visibility: Visibility
    audience_id: int | None
    mentions: frozenset[int]
    hashtags: frozenset[str]
    in_reply_to_id: int | None
    versions: int = 1

    def facts(self) -> PostFacts:
        return PostFacts(
            author_id=self.author_id,
            visibility=self.visibility,
            audience_id=self.audience_id,
            mentions=self.mentions,
        )


@dataclass
class Repost:
    repost_id: int
    post_id: int
    reposter_id: int


@dataclass
class Register:
    """A last-writer-wins cell: the value written by the greatest event id wins."""

    version: uuid.UUID
    value: object


def _value_at(history: list[tuple[uuid.UUID, object]], version: uuid.UUID) -> object:
    """The register's value as of `version`: written by the newest event older than it."""
    older = [(v, value) for v, value in history if v < version]
    return max(older, key=lambda x: x[0])[1] if older else None


def _write(
    cells: dict[tuple[int, int], Register], key: tuple[int, int], ev: AnyEvent, value: object
) -> None:
    cell = cells.get(key)
    if cell is None or cell.version < ev.id:
        cells[key] = Register(ev.id, value)


@dataclass
class Model:
    users: dict[int, User] = field(default_factory=dict)
    posts: dict[int, Post] = field(default_factory=dict)
    deleted: set[int] = field(default_factory=set)
    reposts: dict[int, Repost] = field(default_factory=dict)
    removed_reposts: set[int] = field(default_factory=set)
    # Likes by (post, user): a user's like and unlike share their partition, so arrival order
    # is their real order; a register anyway, for symmetry with the other edges.
    likes: dict[tuple[int, int], Register] = field(default_factory=dict)
    unlikes: dict[tuple[int, int], list[uuid.UUID]] = field(default_factory=dict)
    follows: dict[tuple[int, int], Register] = field(default_factory=dict)  # FollowState
    blocks: dict[tuple[int, int], Register] = field(default_factory=dict)  # bool
    # The newest block.created id per unordered pair, whether or not the block still stands:
    # follows older than it stay ended after an unblock (a block ends them, unblock restores
    # nothing).
    block_floor: dict[frozenset[int], uuid.UUID] = field(default_factory=dict)
    mutes: dict[tuple[int, int], Register] = field(default_factory=dict)  # datetime|None|False
    # Every write of the block and mute registers, to answer "as of event X" questions.
    block_history: dict[tuple[int, int], list[tuple[uuid.UUID, object]]] = field(
        default_factory=dict
    )
    mute_history: dict[tuple[int, int], list[tuple[uuid.UUID, object]]] = field(
        default_factory=dict
    )
    audiences: dict[int, int] = field(default_factory=dict)  # audience -> owner
    deleted_audiences: set[int] = field(default_factory=set)
    members: dict[tuple[int, int], Register] = field(default_factory=dict)  # bool
    # Relations per viewer, valid until the next event (queries ask for them a lot).
    _relations: dict[int | None, Relations] = field(default_factory=dict)
    # Candidate notifications, in no particular order; `notifications()` filters at read time.
    raw_notifications: dict[int, list[Notification]] = field(default_factory=dict)

    # ------------------------------------------------------------------ folding events

    def apply(self, event: AnyEvent) -> None:
        self._relations.clear()
        match event:
            case UserRegistered(data=d):
                self.users[d.user_id] = User(d.user_id, d.username, d.display_name)
            case ProfileUpdated(data=d):
                user = self.users.setdefault(d.user_id, User(d.user_id, ""))
                if d.display_name is not None:
                    user.display_name = d.display_name
                if d.bio is not None:
                    user.bio = d.bio
                if d.locked is not None:
                    user.locked = d.locked
            case PostCreated(data=d):
                self.posts[d.post_id] = Post(
                    post_id=d.post_id,
                    author_id=d.author_id,
                    text=d.text,
                    visibility=d.visibility,
                    audience_id=d.audience_id,
                    mentions=frozenset(m.user_id for m in d.mentions),
                    hashtags=frozenset(t.lower() for t in d.hashtags),
                    in_reply_to_id=d.in_reply_to_id,
                )
                # One notification per recipient and event (the read model's key): the parent's
                # author, mentioned in the reply too, gets the reply.
                for m in d.mentions:
                    if m.user_id != d.in_reply_to_author_id:
                        self._notify(m.user_id, "mention", d.author_id, d.post_id, event)
                if d.in_reply_to_author_id is not None:
                    self._notify(d.in_reply_to_author_id, "reply", d.author_id, d.post_id, event)
            case PostEdited(data=d):
                # Edits come from the author's partition, after the creation.
                post = self.posts.get(d.post_id)
                if post is not None:
                    post.text = d.text
                    post.hashtags = frozenset(t.lower() for t in d.hashtags)
                    post.mentions = frozenset(m.user_id for m in d.mentions)
                    post.versions += 1
            case PostDeleted(data=d):
                self.deleted.add(d.post_id)
            case PostReposted(data=d):
                self.reposts[d.repost_id] = Repost(d.repost_id, d.post_id, d.reposter_id)
                self._notify(d.author_id, "repost", d.reposter_id, d.post_id, event, d.repost_id)
            case RepostRemoved(data=d):
                self.removed_reposts.add(d.repost_id)
            case PostLiked(data=d):
                _write(self.likes, (d.post_id, d.liker_id), event, True)
                self._notify(d.author_id, "like", d.liker_id, d.post_id, event)
            case LikeRemoved(data=d):
                _write(self.likes, (d.post_id, d.liker_id), event, False)
                self.unlikes.setdefault((d.post_id, d.liker_id), []).append(event.id)
            case FollowCreated(data=d):
                _write(self.follows, (d.follower_id, d.followee_id), event, "active")
                self._notify(d.followee_id, "follow", d.follower_id, None, event)
            case FollowRequested(data=d):
                _write(self.follows, (d.follower_id, d.followee_id), event, "requested")
                self._notify(d.followee_id, "follow_request", d.follower_id, None, event)
            case FollowRequestApproved(data=d):
                _write(self.follows, (d.follower_id, d.followee_id), event, "active")
            case FollowRemoved(data=d) | FollowRequestRejected(data=d):
                _write(self.follows, (d.follower_id, d.followee_id), event, "none")
            case BlockCreated(data=d):
                _write(self.blocks, (d.blocker_id, d.blocked_id), event, True)
                self.block_history.setdefault((d.blocker_id, d.blocked_id), []).append(
                    (event.id, True)
                )
                pair = frozenset((d.blocker_id, d.blocked_id))
                if pair not in self.block_floor or self.block_floor[pair] < event.id:
                    self.block_floor[pair] = event.id
            case BlockRemoved(data=d):
                _write(self.blocks, (d.blocker_id, d.blocked_id), event, False)
                self.block_history.setdefault((d.blocker_id, d.blocked_id), []).append(
                    (event.id, False)
                )
            case MuteCreated(data=d):
                _write(self.mutes, (d.muter_id, d.muted_id), event, ("muted", d.expires_at))
                self.mute_history.setdefault((d.muter_id, d.muted_id), []).append(
                    (event.id, ("muted", d.expires_at))
                )
            case MuteRemoved(data=d):
                _write(self.mutes, (d.muter_id, d.muted_id), event, None)
                self.mute_history.setdefault((d.muter_id, d.muted_id), []).append((event.id, None))
            case AudienceCreated(data=d):
                self.audiences[d.audience_id] = d.owner_id
            case AudienceDeleted(data=d):
                self.deleted_audiences.add(d.audience_id)
            case AudienceMemberAdded(data=d):
                _write(self.members, (d.audience_id, d.member_id), event, True)
            case AudienceMemberRemoved(data=d):
                _write(self.members, (d.audience_id, d.member_id), event, False)

    def _notify(
        self,
        user: int,
        kind: NotificationKind,
        actor: int,
        post: int | None,
        ev: AnyEvent,
        repost_id: int | None = None,
    ) -> None:
        if user != actor:  # never for one's own actions
            note = Notification(kind, actor, post, ev.id, ev.time, repost_id)
            self.raw_notifications.setdefault(user, []).append(note)

    # ------------------------------------------------------------------ relations

    def follow_state(self, follower: int, followee: int) -> FollowState:
        cell = self.follows.get((follower, followee))
        if cell is None:
            return "none"
        floor = self.block_floor.get(frozenset((follower, followee)))
        if floor is not None and cell.version < floor:
            return "none"  # the edge is older than a block between the two: the block ended it
        state: FollowState = cell.value  # type: ignore[assignment]
        return state

    def follows_actively(self, follower: int, followee: int) -> bool:
        return self.follow_state(follower, followee) == "active"

    def blocks_user(self, blocker: int, blocked: int) -> bool:
        cell = self.blocks.get((blocker, blocked))
        return cell is not None and cell.value is True

    def blocked_either_way(self, a: int, b: int) -> bool:
        return self.blocks_user(a, b) or self.blocks_user(b, a)

    def followers(self, user: int) -> set[int]:
        return {a for (a, b) in self.follows if b == user and self.follows_actively(a, b)}

    def following(self, user: int) -> set[int]:
        return {b for (a, b) in self.follows if a == user and self.follows_actively(a, b)}

    def pending_requests(self, followee: int) -> set[int]:
        return {
            a for (a, b) in self.follows if b == followee and self.follow_state(a, b) == "requested"
        }

    def member_audiences(self, user: int) -> set[int]:
        """Audiences `user` is a member of now. A deleted audience has no members (the
        contract is silent; its posts stay visible to their author only)."""
        return {
            aid
            for (aid, member), cell in self.members.items()
            if member == user and cell.value is True and aid not in self.deleted_audiences
        }

    def audience_members(self, audience_id: int) -> set[int]:
        if audience_id in self.deleted_audiences:
            return set()
        return {m for (aid, m), c in self.members.items() if aid == audience_id and c.value is True}

    def relations(self, viewer: int | None) -> Relations:
        if viewer not in self._relations:
            self._relations[viewer] = self._compute_relations(viewer)
        return self._relations[viewer]

    def _compute_relations(self, viewer: int | None) -> Relations:
        if viewer is None:
            return Relations()
        everyone = set(self.users) | {a for pair in self.blocks for a in pair}
        muted: dict[int, datetime | None] = {}
        for (muter, target), cell in self.mutes.items():
            if muter == viewer and isinstance(cell.value, tuple):
                muted[target] = cell.value[1]  # ("muted", expires_at)
        return Relations(
            blocked=frozenset(u for u in everyone if self.blocked_either_way(viewer, u)),
            following=frozenset(self.following(viewer)),
            audiences=frozenset(self.member_audiences(viewer)),
            muted=muted,
        )

    # ------------------------------------------------------------------ posts

    def live_posts(self) -> list[Post]:
        return [p for pid, p in self.posts.items() if pid not in self.deleted]

    def live_reposts(self) -> list[Repost]:
        return [
            r
            for rid, r in self.reposts.items()
            if rid not in self.removed_reposts
            and r.post_id in self.posts
            and r.post_id not in self.deleted
        ]

    def can_view(self, viewer: int | None, post_id: int) -> bool:
        post = self.posts.get(post_id)
        if post is None or post_id in self.deleted:
            return False
        return can_view(viewer, post.facts(), self.relations(viewer))

    def _repost_visible(self, viewer: int | None, repost: Repost, rel: Relations) -> bool:
        """A repost is visible iff the original is, and the reposter isn't blocked either way."""
        post = self.posts[repost.post_id]
        if (
            viewer is not None
            and viewer != repost.reposter_id
            and repost.reposter_id in rel.blocked
        ):
            return False
        return can_view(viewer, post.facts(), rel)

    # ------------------------------------------------------------------ timelines

    def home(self, user: int, now: datetime) -> list[Entry]:
        """The home timeline, newest first, as the read path shows it (fan-out rules, then
        `shows_in_feed` at read time).

        A post appears once. When the post itself qualifies it shows as itself; otherwise the
        oldest qualifying repost of it shows. Choosing by id, not by arrival, keeps this
        independent of the interleaving. A user's own reposts are in their home (as in
        Mastodon; the contract lists "reposts by accounts they follow").
        """
        rel = self.relations(user)
        audiences = rel.audiences
        following = rel.following
        entries: dict[int, Entry] = {}
        for post in self.live_posts():
            if post.author_id == user:
                qualifies = True
            elif post.visibility == "audience":
                qualifies = post.audience_id is not None and post.audience_id in audiences
            elif post.visibility == "direct":
                qualifies = user in post.mentions
            else:
                qualifies = post.author_id in following and post.visibility in FOLLOWER_VISIBLE
            if qualifies and shows_in_feed(user, post.facts(), rel, now):
                entries[post.post_id] = Entry(post.post_id, post.post_id)
        for repost in sorted(self.live_reposts(), key=lambda r: r.repost_id):
            if repost.post_id in entries:
                continue
            if repost.reposter_id != user and repost.reposter_id not in following:
                continue
            post = self.posts[repost.post_id]
            if not self._repost_visible(user, repost, rel):
                continue
            # Feeds hide muted accounts, the reposter's reposts as well as the original's author.
            reposter_facts = PostFacts(author_id=repost.reposter_id)
            if not shows_in_feed(user, post.facts(), rel, now) or not shows_in_feed(
                user, reposter_facts, rel, now
            ):
                continue
            entries[repost.post_id] = Entry(repost.repost_id, repost.post_id, repost.reposter_id)
        return sorted(entries.values(), key=lambda e: e.entry_id, reverse=True)

    def user_posts(self, author: int, viewer: int | None) -> list[Entry]:
        """A profile: the author's posts and reposts the viewer may view, newest first. Mutes
        don't apply (a muted account's profile stays readable)."""
        rel = self.relations(viewer)
        out = [
            Entry(p.post_id, p.post_id)
            for p in self.live_posts()
            if p.author_id == author and can_view(viewer, p.facts(), rel)
        ]
        out += [
            Entry(r.repost_id, r.post_id, r.reposter_id)
            for r in self.live_reposts()
            if r.reposter_id == author and self._repost_visible(viewer, r, rel)
        ]
        return sorted(out, key=lambda e: e.entry_id, reverse=True)

    def public(self, viewer: int | None, now: datetime) -> list[int]:
        """`public` posts only (not unlisted), no reposts, newest first; a signed-in viewer
        doesn't see accounts they block, are blocked by, or mute."""
        rel = self.relations(viewer)
        return sorted(
            (
                p.post_id
                for p in self.live_posts()
                if p.visibility == "public" and shows_in_feed(viewer, p.facts(), rel, now)
            ),
            reverse=True,
        )

    def tag(self, tag: str, viewer: int | None, now: datetime) -> list[int]:
        wanted = tag.lower().lstrip("#")
        return [pid for pid in self.public(viewer, now) if wanted in self.posts[pid].hashtags]

    # ------------------------------------------------------------------ counters

    def counters(self, post_id: int) -> tuple[int, int, int]:
        """(replies, reposts, likes) of a live post, counting only live replies and reposts."""
        replies = sum(1 for p in self.live_posts() if p.in_reply_to_id == post_id)
        reposts = sum(1 for r in self.live_reposts() if r.post_id == post_id)
        likes = sum(1 for (pid, _), c in self.likes.items() if pid == post_id and c.value is True)
        return replies, reposts, likes

    # ------------------------------------------------------------------ notifications

    def notifications(self, user: int, now: datetime) -> list[Notification]:
        """Newest first. A notification from X to `user` shows when
        - at its event's time (by event id, not arrival) no block stood between the two and
          `user` did not mute X: "checked when created", decided by version so that the
          answer does not depend on which partition the projector read first;
        - no block between the two was created after it (a block deletes older
          notifications between the two, so an unblock does not bring them back);
        - now, X is not blocked either way nor muted, and the post, if any, is viewable.
        - what it tells of still holds: the follow is active, the request pending, the like
          and the repost not undone. The contract is silent here; this is Mastodon's choice,
          where such a notification goes with its follow, request, like or repost.
        """
        rel = self.relations(user)
        out: list[Notification] = []
        for n in self.raw_notifications.get(user, []):
            floor = self.block_floor.get(frozenset((user, n.actor_id)))
            if floor is not None and floor > n.event_id:
                continue
            if self._blocked_at(user, n.actor_id, n.event_id) or self._muted_at(
                user, n.actor_id, n.event_id, n.at
            ):
                continue
            if not shows_in_feed(user, PostFacts(author_id=n.actor_id), rel, now):
                continue  # the actor is blocked either way or muted now
            if n.post_id is not None and not self.can_view(user, n.post_id):
                continue
            if not self._still_holds(user, n):
                continue
            out.append(n)
        return sorted(out, key=lambda n: n.event_id, reverse=True)

    def _still_holds(self, user: int, n: Notification) -> bool:
        match n.kind:
            case "follow":
                return self.follow_state(n.actor_id, user) == "active"
            case "follow_request":
                # This request, still pending and not asked again since: a withdrawn one's
                # notification stays gone when the follower asks again, and a repeated request
                # shows once.
                cell = self.follows.get((n.actor_id, user))
                return (
                    self.follow_state(n.actor_id, user) == "requested"
                    and cell is not None
                    and cell.version == n.event_id
                )
            case "like":
                # This like, not a later one by the same user: no unlike since.
                undone = self.unlikes.get((n.post_id or 0, n.actor_id), [])
                return all(v < n.event_id for v in undone)
            case "repost":
                return n.repost_id not in self.removed_reposts
        return True

    def _blocked_at(self, a: int, b: int, version: uuid.UUID) -> bool:
        return any(
            _value_at(self.block_history.get(pair, []), version) is True
            for pair in ((a, b), (b, a))
        )

    def _muted_at(self, muter: int, muted: int, version: uuid.UUID, at: datetime) -> bool:
        value = _value_at(self.mute_history.get((muter, muted), []), version)
        if not isinstance(value, tuple):
            return False  # never muted, or unmuted, as of `version`
        expires: datetime | None = value[1]
        return expires is None or expires > at

    # ------------------------------------------------------------------ everything at once

    def snapshot(self, users: Sequence[int], now: datetime) -> dict[str, object]:
        """Every answer the model gives about `users` (and anonymous), for comparisons."""
        viewers: list[int | None] = [None, *users]
        return {
            "home": {u: self.home(u, now) for u in users},
            "user_posts": {(a, v): self.user_posts(a, v) for a in users for v in viewers},
            "public": {v: self.public(v, now) for v in viewers},
            "tags": {(t, v): self.tag(t, v, now) for t in self.all_tags() for v in viewers},
            "can_view": {(v, p): self.can_view(v, p) for v in viewers for p in sorted(self.posts)},
            "followers": {u: self.followers(u) for u in users},
            "pending": {u: self.pending_requests(u) for u in users},
            "counters": {p.post_id: self.counters(p.post_id) for p in self.live_posts()},
            "notifications": {u: self.notifications(u, now) for u in users},
        }

    def all_tags(self) -> list[str]:
        return sorted({t for p in self.posts.values() for t in p.hashtags})
