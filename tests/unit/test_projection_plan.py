from datetime import UTC, datetime

from services.projector.project import (
    AddPosts,
    DeletePost,
    SetBlock,
    SetFollow,
    UpsertUser,
    op_for,
    plan,
)
from shared.events import (
    BlockCreated,
    BlockData,
    BlockRemoved,
    FollowCreated,
    FollowData,
    FollowRemoved,
    PostCreated,
    PostCreatedData,
    PostDeleted,
    PostDeletedData,
    UserRegistered,
    UserRegisteredData,
    new_event,
)

NOW = datetime(2026, 11, 26, tzinfo=UTC)


def post(pid: int, author: int = 1) -> PostCreated:
    return new_event(
        PostCreated,
        actor_id=author,
        data=PostCreatedData(post_id=pid, author_id=author, text=f"p{pid}"),
        now=NOW,
    )


def follow(a: int, b: int) -> FollowCreated:
    return new_event(FollowCreated, actor_id=a, data=FollowData(follower_id=a, followee_id=b))


def test_each_event_maps_to_its_operation() -> None:
    reg = new_event(UserRegistered, actor_id=1, data=UserRegisteredData(user_id=1, username="a"))
    assert op_for(reg) == UpsertUser(1, "a", "", reg.time)
    f = follow(1, 2)
    assert op_for(f) == SetFollow(1, 2, True, f.id, f.time)
    unf = new_event(FollowRemoved, actor_id=1, data=FollowData(follower_id=1, followee_id=2))
    assert op_for(unf) == SetFollow(1, 2, False, unf.id, unf.time)
    blk = new_event(BlockCreated, actor_id=1, data=BlockData(blocker_id=1, blocked_id=2))
    assert op_for(blk) == SetBlock(1, 2, True, blk.id, blk.time)
    unb = new_event(BlockRemoved, actor_id=1, data=BlockData(blocker_id=1, blocked_id=2))
    assert op_for(unb) == SetBlock(1, 2, False, unb.id, unb.time)
    d = new_event(PostDeleted, actor_id=1, data=PostDeletedData(post_id=5, author_id=1))
    assert op_for(d) == DeletePost(5, 1)


def test_runs_of_posts_become_one_set_based_fanout() -> None:
    ops = plan([post(1), post(2, author=3), post(3)])
    assert len(ops) == 1 and isinstance(ops[0], AddPosts)
    assert [p.post_id for p in ops[0].posts] == [1, 2, 3]


def test_other_events_split_runs_and_keep_order() -> None:
    f = follow(4, 1)
    ops = plan([post(1), post(2), f, post(3)])
    assert [type(o) for o in ops] == [AddPosts, SetFollow, AddPosts]
    assert [p.post_id for p in ops[0].posts] == [1, 2]  # type: ignore[union-attr]
    assert [p.post_id for p in ops[2].posts] == [3]  # type: ignore[union-attr]


def test_empty_batch_plans_nothing() -> None:
    assert plan([]) == []
