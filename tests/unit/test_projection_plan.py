"""plan() for every event type: pure, no Kafka or PostgreSQL."""

from datetime import UTC, datetime

import msgspec
import pytest

from services.projector.project import (
    AddPosts,
    AddRepost,
    DeleteAudience,
    DeletePost,
    EditPost,
    Notification,
    Notify,
    RemoveRepost,
    RequestFollow,
    SetAudienceMember,
    SetBlock,
    SetFollow,
    SetFollows,
    SetLike,
    SetMute,
    UpdateProfile,
    UpsertAudience,
    UpsertUser,
    ops_for,
)
from services.projector.runs import plan
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
    new_event,
)

NOW = datetime(2026, 11, 26, tzinfo=UTC)


def post(pid: int, author: int = 1, **fields: object) -> PostCreated:
    return new_event(
        PostCreated,
        actor_id=author,
        data=PostCreatedData(post_id=pid, author_id=author, text=f"p{pid}", **fields),  # type: ignore[arg-type]
        now=NOW,
    )


def follow(a: int, b: int) -> FollowCreated:
    return new_event(FollowCreated, actor_id=a, data=FollowData(follower_id=a, followee_id=b))


def test_registration_and_profile() -> None:
    reg = new_event(UserRegistered, actor_id=1, data=UserRegisteredData(user_id=1, username="a"))
    assert ops_for(reg) == [UpsertUser(1, "a", "", reg.time)]
    upd = new_event(
        ProfileUpdated, actor_id=1, data=ProfileUpdatedData(user_id=1, bio="hi", locked=True)
    )
    assert ops_for(upd) == [UpdateProfile(1, None, "hi", None, True)]


def test_post_carries_every_field_and_notifies_reply_and_mentions() -> None:
    e = post(
        10,
        author=1,
        visibility="followers",
        in_reply_to_id=5,
        in_reply_to_author_id=2,
        mentions=(Mention(user_id=2, username="b"), Mention(user_id=3, username="c")),
        hashtags=("Tag", "tag", "x"),
        links=("https://a.example/",),
        media=(Media(kind="image", url="https://img.example/1.png", alt_text="cat"),),
    )
    add, notify = ops_for(e)
    assert isinstance(add, AddPosts)
    p = add.posts[0]
    assert (p.post_id, p.visibility, p.in_reply_to_id, p.in_reply_to_author_id) == (
        10,
        "followers",
        5,
        2,
    )
    assert p.conversation_id is None  # the store looks the parent's root up
    assert p.mentions == (2, 3) and p.mention_names == ("b", "c")
    assert p.hashtags == ("tag", "x")
    assert msgspec.json.decode(p.media_json)[0]["alt_text"] == "cat"
    assert isinstance(notify, Notify)
    # The parent's author gets one notification (reply), not a second one for the mention.
    assert [(n.user_id, n.kind) for n in notify.notifications] == [(2, "reply"), (3, "mention")]
    assert all(n.event_id == e.id and n.post_id == 10 for n in notify.notifications)


def test_a_root_post_is_its_own_conversation_and_self_mentions_do_not_notify() -> None:
    e = post(7, author=1, mentions=(Mention(user_id=1, username="me"),))
    add, notify = ops_for(e)
    assert isinstance(add, AddPosts) and add.posts[0].conversation_id == 7
    assert notify == Notify(())


@pytest.mark.parametrize(
    ("visibility", "delivery", "pulled"),
    [
        ("public", "pull", True),
        ("unlisted", "pull", True),
        ("followers", "pull", True),
        ("public", "push", False),
        # A log that says pull for a post whose readers are not followers is still written.
        ("direct", "pull", False),
        ("audience", "pull", False),
    ],
)
def test_a_post_is_pulled_as_its_event_says_when_followers_read_it(
    visibility: str, delivery: str, pulled: bool
) -> None:
    fields: dict[str, object] = {"visibility": visibility, "delivery": delivery}
    if visibility == "audience":
        fields["audience_id"] = 9
    add = ops_for(post(11, **fields))[0]
    assert isinstance(add, AddPosts) and add.posts[0].pulled is pulled


def test_runs_of_posts_become_one_set_based_fanout() -> None:
    ops = plan([post(1), post(2, author=3), post(3)])
    assert len(ops) == 1 and isinstance(ops[0], AddPosts)
    assert [p.post_id for p in ops[0].posts] == [1, 2, 3]


def test_a_run_collects_its_notifications_after_the_fanout() -> None:
    m = (Mention(user_id=9, username="n"),)
    ops = plan([post(1, mentions=m), post(2), post(3, author=4, mentions=m)])
    assert [type(o) for o in ops] == [AddPosts, Notify]
    assert [n.post_id for n in ops[1].notifications] == [1, 3]  # type: ignore[union-attr]


def test_reply_to_a_post_of_the_same_run_gets_its_root_in_the_plan() -> None:
    ops = plan(
        [
            post(1),
            post(2, in_reply_to_id=1, in_reply_to_author_id=1),
            post(3, in_reply_to_id=2, in_reply_to_author_id=1),
        ]
    )
    assert [p.conversation_id for p in ops[0].posts] == [1, 1, 1]  # type: ignore[union-attr]


def test_other_events_split_runs_and_keep_order() -> None:
    f = follow(4, 1)
    ops = plan([post(1), post(2), f, post(3)])
    assert [type(o) for o in ops] == [AddPosts, SetFollows, Notify, AddPosts]
    assert [p.post_id for p in ops[0].posts] == [1, 2]  # type: ignore[union-attr]
    assert [p.post_id for p in ops[3].posts] == [3]  # type: ignore[union-attr]


def test_edit_and_delete() -> None:
    ed = new_event(
        PostEdited,
        actor_id=1,
        data=PostEditedData(post_id=5, author_id=1, text="new", hashtags=("A",)),
        now=NOW,
    )
    (op,) = ops_for(ed)
    assert isinstance(op, EditPost)
    assert (op.post_id, op.text, op.hashtags, op.at) == (5, "new", ("a",), NOW)
    d = new_event(PostDeleted, actor_id=1, data=PostDeletedData(post_id=5, author_id=1))
    assert ops_for(d) == [DeletePost(5, 1, d.time)]


def test_repost_and_like_notify_the_author() -> None:
    data = RepostData(repost_id=20, post_id=5, author_id=1, reposter_id=2)
    rp = new_event(PostReposted, actor_id=2, data=data)
    assert ops_for(rp) == [
        AddRepost(20, 5, 2, rp.time),
        Notify((Notification(1, rp.id, "repost", 2, 5, rp.time),)),
    ]
    un = new_event(RepostRemoved, actor_id=2, data=data)
    assert ops_for(un) == [RemoveRepost(20, 5, 2)]
    like = new_event(PostLiked, actor_id=2, data=LikeData(post_id=5, author_id=1, liker_id=2))
    assert ops_for(like) == [
        SetLike(5, 2, True, like.time),
        Notify((Notification(1, like.id, "like", 2, 5, like.time),)),
    ]
    unlike = new_event(LikeRemoved, actor_id=2, data=LikeData(post_id=5, author_id=1, liker_id=2))
    assert ops_for(unlike) == [SetLike(5, 2, False, unlike.time)]


def test_follow_family_writes_the_same_register() -> None:
    d = FollowData(follower_id=1, followee_id=2)
    f = follow(1, 2)
    assert ops_for(f) == [
        SetFollow(1, 2, True, f.id, f.time),
        Notify((Notification(2, f.id, "follow", 1, None, f.time),)),
    ]
    unf = new_event(FollowRemoved, actor_id=1, data=d)
    assert ops_for(unf) == [SetFollow(1, 2, False, unf.id, unf.time)]
    req = new_event(FollowRequested, actor_id=1, data=d)
    assert ops_for(req) == [
        RequestFollow(1, 2, req.id, req.time),
        Notify((Notification(2, req.id, "follow_request", 1, None, req.time),)),
    ]
    ok = new_event(FollowRequestApproved, actor_id=2, data=d)
    assert ops_for(ok) == [SetFollow(1, 2, True, ok.id, ok.time)]
    no = new_event(FollowRequestRejected, actor_id=2, data=d)
    assert ops_for(no) == [SetFollow(1, 2, False, no.id, no.time)]


def test_blocks_and_mutes_are_registers() -> None:
    blk = new_event(BlockCreated, actor_id=1, data=BlockData(blocker_id=1, blocked_id=2))
    assert ops_for(blk) == [SetBlock(1, 2, True, blk.id, blk.time)]
    unb = new_event(BlockRemoved, actor_id=1, data=BlockData(blocker_id=1, blocked_id=2))
    assert ops_for(unb) == [SetBlock(1, 2, False, unb.id, unb.time)]
    mute = new_event(MuteCreated, actor_id=1, data=MuteData(muter_id=1, muted_id=2, expires_at=NOW))
    assert ops_for(mute) == [SetMute(1, 2, True, NOW, mute.id)]
    unm = new_event(MuteRemoved, actor_id=1, data=MuteData(muter_id=1, muted_id=2))
    assert ops_for(unm) == [SetMute(1, 2, False, None, unm.id)]


def test_audiences() -> None:
    a = new_event(
        AudienceCreated, actor_id=1, data=AudienceData(audience_id=3, owner_id=1, name="x")
    )
    assert ops_for(a) == [UpsertAudience(3, 1, "x", a.time)]
    gone = new_event(AudienceDeleted, actor_id=1, data=AudienceData(audience_id=3, owner_id=1))
    assert ops_for(gone) == [DeleteAudience(3, 1, gone.time)]
    md = AudienceMemberData(audience_id=3, owner_id=1, member_id=4)
    add = new_event(AudienceMemberAdded, actor_id=1, data=md)
    assert ops_for(add) == [SetAudienceMember(3, 1, 4, True)]
    rm = new_event(AudienceMemberRemoved, actor_id=1, data=md)
    assert ops_for(rm) == [SetAudienceMember(3, 1, 4, False)]


def test_an_event_without_a_rule_raises() -> None:
    with pytest.raises(TypeError):
        ops_for("not an event")  # type: ignore[arg-type]


def test_empty_batch_plans_nothing() -> None:
    assert plan([]) == []
