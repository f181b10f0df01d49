"""The reference model on its own: hand-written cases of schemas/semantics.md, and convergence
(invariant 4) over random histories replayed in random per-user-order-keeping interleavings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.events import (
    AnyEvent,
    AudienceCreated,
    AudienceData,
    AudienceMemberAdded,
    AudienceMemberData,
    AudienceMemberRemoved,
    BlockCreated,
    BlockData,
    BlockRemoved,
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
    RepostData,
    RepostRemoved,
    UserRegistered,
    UserRegisteredData,
    Visibility,
    new_event,
)
from tests.model.histories import ALL_FEATURES, History, histories, interleavings
from tests.model.reference import Entry, Model

NOW = datetime.now(UTC)
A, B, C, D = 1, 2, 3, 4


def model(*events: AnyEvent) -> Model:
    m = Model()
    for uid in (A, B, C, D):
        m.apply(reg(uid))
    for ev in events:
        m.apply(ev)
    return m


def reg(uid: int) -> UserRegistered:
    data = UserRegisteredData(user_id=uid, username=f"u{uid}")
    return new_event(UserRegistered, actor_id=uid, data=data)


def post(
    pid: int,
    author: int,
    visibility: Visibility = "public",
    mentions: tuple[int, ...] = (),
    audience: int | None = None,
    tags: tuple[str, ...] = (),
    reply_to: tuple[int, int] | None = None,
) -> PostCreated:
    data = PostCreatedData(
        post_id=pid,
        author_id=author,
        text=f"p{pid}",
        visibility=visibility,
        audience_id=audience,
        mentions=tuple(Mention(user_id=m, username=f"u{m}") for m in mentions),
        hashtags=tags,
        in_reply_to_id=reply_to[0] if reply_to else None,
        in_reply_to_author_id=reply_to[1] if reply_to else None,
    )
    return new_event(PostCreated, actor_id=author, data=data)


def follow(a: int, b: int) -> FollowCreated:
    return new_event(FollowCreated, actor_id=a, data=FollowData(follower_id=a, followee_id=b))


def unfollow(a: int, b: int) -> FollowRemoved:
    return new_event(FollowRemoved, actor_id=a, data=FollowData(follower_id=a, followee_id=b))


def block(a: int, b: int) -> BlockCreated:
    return new_event(BlockCreated, actor_id=a, data=BlockData(blocker_id=a, blocked_id=b))


def unblock(a: int, b: int) -> BlockRemoved:
    return new_event(BlockRemoved, actor_id=a, data=BlockData(blocker_id=a, blocked_id=b))


def delete(pid: int, author: int) -> PostDeleted:
    return new_event(
        PostDeleted, actor_id=author, data=PostDeletedData(post_id=pid, author_id=author)
    )


def repost(rid: int, pid: int, author: int, by: int) -> PostReposted:
    data = RepostData(repost_id=rid, post_id=pid, author_id=author, reposter_id=by)
    return new_event(PostReposted, actor_id=by, data=data)


def ids(entries: list[Entry]) -> list[int]:
    return [e.entry_id for e in entries]


# ---------------------------------------------------------------------- follows and home


def test_home_has_own_posts_and_followed_posts_newest_first() -> None:
    m = model(post(10, B), follow(A, B), post(11, B), post(12, A), post(13, C))
    assert ids(m.home(A, NOW)) == [12, 11, 10]  # the follow merged B's earlier post
    assert ids(m.home(C, NOW)) == [13]
    assert m.followers(B) == {A}
    m.apply(unfollow(A, B))
    assert ids(m.home(A, NOW)) == [12]


def test_block_ends_older_follows_whatever_the_arrival_order() -> None:
    f, blk, p = follow(A, B), block(B, A), post(10, B)
    orders: list[list[AnyEvent]] = [[f, blk, p], [blk, f, p], [p, blk, f]]
    for order in orders:
        m = model(*order)
        assert not m.follows_actively(A, B)
        assert m.home(A, NOW) == []
        assert not m.can_view(A, 10)
        assert m.user_posts(B, A) == []


def test_unblock_restores_visibility_but_not_the_follow() -> None:
    m = model(follow(A, B), post(10, B), block(B, A), unblock(B, A))
    assert m.can_view(A, 10)
    assert not m.follows_actively(A, B)
    assert m.home(A, NOW) == []
    m.apply(follow(A, B))  # a follow newer than the block is active again
    assert ids(m.home(A, NOW)) == [10]


def test_delete_removes_the_post_everywhere() -> None:
    m = model(follow(A, B), post(10, B), repost(20, 10, B, C), follow(D, C), delete(10, B))
    assert m.home(A, NOW) == [] and m.home(D, NOW) == []
    assert m.public(None, NOW) == []
    assert not m.can_view(B, 10)


# ---------------------------------------------------------------------- visibility


def test_visibility_kinds() -> None:
    m = model(
        follow(A, B),
        post(10, B, "public"),
        post(11, B, "unlisted"),
        post(12, B, "followers"),
        post(13, B, "followers", mentions=(C,)),
        post(14, B, "direct", mentions=(C,)),
    )
    seen = {v: [p for p in range(10, 15) if m.can_view(v, p)] for v in (None, A, B, C, D)}
    assert seen == {
        None: [10, 11],
        A: [10, 11, 12, 13],
        B: [10, 11, 12, 13, 14],
        C: [10, 11, 13, 14],
        D: [10, 11],
    }
    assert m.public(None, NOW) == [10]
    assert ids(m.home(A, NOW)) == [13, 12, 11, 10]
    # A direct post lands in the mentioned user's home; a followers-only one does not.
    assert ids(m.home(C, NOW)) == [14]


def test_audience_posts_follow_current_membership() -> None:
    aud = new_event(
        AudienceCreated, actor_id=B, data=AudienceData(audience_id=50, owner_id=B, name="x")
    )
    add = new_event(
        AudienceMemberAdded,
        actor_id=B,
        data=AudienceMemberData(audience_id=50, owner_id=B, member_id=A),
    )
    m = model(aud, add, post(10, B, "audience", audience=50))
    assert m.can_view(A, 10) and not m.can_view(C, 10) and not m.can_view(None, 10)
    assert ids(m.home(A, NOW)) == [10]
    m.apply(
        new_event(
            AudienceMemberRemoved,
            actor_id=B,
            data=AudienceMemberData(audience_id=50, owner_id=B, member_id=A),
        )
    )
    assert not m.can_view(A, 10)
    assert m.home(A, NOW) == []


def test_mute_hides_from_feeds_only_and_expires() -> None:
    mute = new_event(MuteCreated, actor_id=A, data=MuteData(muter_id=A, muted_id=B))
    m = model(follow(A, B), post(10, B), mute)
    assert m.can_view(A, 10)
    assert m.home(A, NOW) == [] and m.public(A, NOW) == []
    assert ids(m.user_posts(B, A)) == [10]
    expired = new_event(
        MuteCreated,
        actor_id=A,
        data=MuteData(muter_id=A, muted_id=B, expires_at=NOW - timedelta(seconds=1)),
    )
    m.apply(expired)
    assert ids(m.home(A, NOW)) == [10]


def test_locked_account_requests_then_approval() -> None:
    req = new_event(FollowRequested, actor_id=A, data=FollowData(follower_id=A, followee_id=B))
    m = model(post(10, B, "followers"), req)
    assert m.pending_requests(B) == {A} and not m.follows_actively(A, B)
    assert not m.can_view(A, 10)
    ok = new_event(FollowRequestApproved, actor_id=B, data=FollowData(follower_id=A, followee_id=B))
    m.apply(ok)
    assert m.follows_actively(A, B) and m.can_view(A, 10) and ids(m.home(A, NOW)) == [10]
    # Approval before the request arrives (other partition): the newer event still wins.
    assert model(post(10, B, "followers"), ok, req).follows_actively(A, B)


def test_rejected_or_blocked_request_ends() -> None:
    req = new_event(FollowRequested, actor_id=A, data=FollowData(follower_id=A, followee_id=B))
    no = new_event(FollowRequestRejected, actor_id=B, data=FollowData(follower_id=A, followee_id=B))
    assert model(req, no).pending_requests(B) == set()
    req2 = new_event(FollowRequested, actor_id=A, data=FollowData(follower_id=A, followee_id=B))
    assert model(req2, block(B, A)).pending_requests(B) == set()


# ---------------------------------------------------------------------- reposts, likes, edits


def test_a_post_appears_once_in_home() -> None:
    m = model(follow(A, B), follow(A, C), follow(A, D), post(10, B))
    m.apply(repost(20, 10, B, C))
    assert ids(m.home(A, NOW)) == [10]  # already there as itself
    m.apply(unfollow(A, B))
    m.apply(repost(21, 10, B, D))
    assert m.home(A, NOW) == [Entry(20, 10, C)]  # the oldest repost stands for it
    assert ids(m.user_posts(C, None)) == [20]


def test_repost_hidden_when_reposter_is_blocked() -> None:
    m = model(follow(A, C), post(10, B), repost(20, 10, B, C), block(A, C))
    assert m.home(A, NOW) == []
    assert m.user_posts(C, A) == []
    assert m.counters(10) == (0, 1, 0)
    m.apply(new_event(RepostRemoved, actor_id=C, data=repost(20, 10, B, C).data))
    assert m.counters(10) == (0, 0, 0)


def test_counters_and_edits() -> None:
    like = new_event(PostLiked, actor_id=A, data=LikeData(post_id=10, author_id=B, liker_id=A))
    m = model(post(10, B, tags=("cats",)), post(11, C, reply_to=(10, B)), like)
    assert m.counters(10) == (1, 0, 1)
    assert m.tag("#CATS", None, NOW) == [10]
    edit = new_event(
        PostEdited,
        actor_id=B,
        data=PostEditedData(post_id=10, author_id=B, text="dogs now", hashtags=("dogs",)),
    )
    m.apply(edit)
    m.apply(new_event(LikeRemoved, actor_id=A, data=like.data))
    m.apply(delete(11, C))
    assert m.tag("cats", None, NOW) == [] and m.tag("dogs", None, NOW) == [10]
    assert m.counters(10) == (0, 0, 0)
    assert m.posts[10].versions == 2


# ---------------------------------------------------------------------- notifications


def test_notifications_filtered_at_read_time() -> None:
    m = model(
        post(10, A),
        follow(B, A),
        post(11, B, mentions=(A,)),
        post(12, B, "direct", mentions=(A, A + 100)),
        post(13, C, reply_to=(10, A)),
        new_event(PostLiked, actor_id=C, data=LikeData(post_id=10, author_id=A, liker_id=C)),
        post(14, A, mentions=(A,)),  # one's own action notifies nobody
    )
    kinds = [(n.kind, n.actor_id, n.post_id) for n in m.notifications(A, NOW)]
    assert kinds == [
        ("like", C, 10),
        ("reply", C, 13),
        ("mention", B, 12),
        ("mention", B, 11),
        ("follow", B, None),
    ]
    m.apply(block(A, C))
    m.apply(delete(11, B))
    kinds = [(n.kind, n.actor_id, n.post_id) for n in m.notifications(A, NOW)]
    assert kinds == [("mention", B, 12), ("follow", B, None)]


def test_notifications_are_decided_as_of_their_event() -> None:
    mute = new_event(MuteCreated, actor_id=A, data=MuteData(muter_id=A, muted_id=B))
    mention = post(10, B, mentions=(A,))
    unmute = new_event(MuteRemoved, actor_id=A, data=MuteData(muter_id=A, muted_id=B))
    # Muted when B mentioned A: never notified, even after the unmute, and even when the
    # projector reads B's partition before A's.
    assert model(mute, mention, unmute).notifications(A, NOW) == []
    assert model(mention, mute, unmute).notifications(A, NOW) == []
    # A follow notification goes with the follow; a block deletes older notifications
    # between the two for good.
    m = model(follow(B, A), post(11, B, mentions=(A,)))
    assert [n.kind for n in m.notifications(A, NOW)] == ["mention", "follow"]
    m.apply(unfollow(B, A))
    assert [n.kind for n in m.notifications(A, NOW)] == ["mention"]
    m.apply(block(A, B))
    m.apply(unblock(A, B))
    assert m.notifications(A, NOW) == []


def test_like_and_repost_notifications_go_with_their_like_and_repost() -> None:
    def like(ev: type[PostLiked] | type[LikeRemoved]) -> AnyEvent:
        return new_event(ev, actor_id=B, data=LikeData(post_id=10, author_id=A, liker_id=B))

    m = model(post(10, A), like(PostLiked), like(LikeRemoved), like(PostLiked))
    m.apply(repost(20, 10, A, B))
    m.apply(new_event(RepostRemoved, actor_id=B, data=repost(20, 10, A, B).data))
    m.apply(repost(21, 10, A, B))
    assert [n.kind for n in m.notifications(A, NOW)] == ["repost", "like"]


# ---------------------------------------------------------------------- convergence


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.data())
def test_answers_do_not_depend_on_the_interleaving(data: st.DataObject) -> None:
    """Invariant 4 for the model itself: any merge of the per-user event sequences gives the
    same answers to every query as the order the commands were made in."""
    history = data.draw(histories(ALL_FEATURES, users=(3, 4), actions=(5, 40)))
    other = data.draw(interleavings(history.commands))
    now = datetime.now(UTC)
    answers = []
    for order in (history.commands, history.log, other):
        m = Model()
        for ev in order:
            m.apply(ev)
        answers.append(m.snapshot(history.users, now))
    assert answers[0] == answers[1] == answers[2]


@settings(max_examples=25, deadline=None, derandomize=True)
@given(histories(ALL_FEATURES))
def test_interleavings_keep_each_users_order(history: History) -> None:
    assert sorted(map(id, history.log)) == sorted(map(id, history.commands))
    assert [ev for b in history.batches for ev in b] == list(history.log)
    for u in history.users:
        mine = [ev for ev in history.commands if ev.subject == str(u)]
        assert [ev for ev in history.log if ev.subject == str(u)] == mine
