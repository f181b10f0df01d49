"""Set-based runs in the plan: last writer per follow pair, first registration per user, and
the interleaving of partitions that lines runs up. Pure, no Kafka or PostgreSQL."""

import uuid
from datetime import UTC, datetime

from services.projector.project import (
    AddPosts,
    NewPost,
    Notification,
    Notify,
    Op,
    SetBlock,
    SetFollow,
    SetFollows,
    UpsertUser,
    UpsertUsers,
)
from services.projector.runs import (
    LOCK_SLOTS,
    first_users,
    interleave,
    interleave_order,
    latest_follows,
    lock_slots,
    merge,
    segments,
    slot,
    slot_mode,
)
from shared.ids import SnowflakeGenerator

NOW = datetime(2026, 11, 26, tzinfo=UTC)


def v(n: int) -> uuid.UUID:
    # UUIDv7 ids compare by time first; small integers keep the same order.
    return uuid.UUID(int=n)


def fw(a: int, b: int, active: bool, n: int) -> SetFollow:
    return SetFollow(a, b, active, v(n), NOW)


def follow_event(a: int, b: int, n: int) -> list[Op]:
    note = Notification(b, v(n), "follow", a, None, NOW)
    return [fw(a, b, True, n), Notify((note,))]


def user(u: int, name: str = "") -> list[Op]:
    return [UpsertUser(u, name or f"u{u}", "", NOW)]


def post(pid: int, author: int = 1) -> list[Op]:
    return [AddPosts((NewPost(post_id=pid, author_id=author, text="t", created_at=NOW),))]


def other(n: int) -> list[Op]:
    return [SetBlock(1, 2, True, v(n), NOW)]


def test_the_highest_version_of_a_pair_wins_whatever_the_order() -> None:
    writes = [fw(1, 2, True, 5), fw(1, 2, False, 9), fw(1, 2, True, 7)]
    assert latest_follows(writes) == (fw(1, 2, False, 9),)
    assert latest_follows(reversed(writes)) == (fw(1, 2, False, 9),)


def test_pairs_are_independent_and_sorted() -> None:
    writes = [fw(3, 1, True, 1), fw(1, 2, True, 2), fw(2, 1, False, 3), fw(1, 2, False, 1)]
    assert latest_follows(writes) == (fw(1, 2, True, 2), fw(2, 1, False, 3), fw(3, 1, True, 1))


def test_a_redelivered_write_counts_once() -> None:
    assert latest_follows([fw(1, 2, True, 4), fw(1, 2, True, 4)]) == (fw(1, 2, True, 4),)


def test_the_first_registration_of_a_user_wins() -> None:
    regs = [UpsertUser(1, "a", "", NOW), UpsertUser(2, "b", "", NOW), UpsertUser(1, "z", "", NOW)]
    assert first_users(regs) == (regs[0], regs[1])


def test_runs_of_users_and_follows_collapse_with_their_notifications_after() -> None:
    ops = merge([user(1), user(2), follow_event(1, 2, 1), follow_event(2, 1, 2), post(10)])
    assert [type(o) for o in ops] == [UpsertUsers, SetFollows, Notify, AddPosts]
    assert [u.user_id for u in ops[0].users] == [1, 2]  # type: ignore[union-attr]
    assert ops[1] == SetFollows((fw(1, 2, True, 1), fw(2, 1, True, 2)))
    assert [n.user_id for n in ops[2].notifications] == [2, 1]  # type: ignore[union-attr]


def test_a_follow_then_unfollow_in_one_run_leaves_the_unfollow() -> None:
    ops = merge([follow_event(1, 2, 1), [fw(1, 2, False, 2)]])
    assert ops[0] == SetFollows((fw(1, 2, False, 2),))
    assert isinstance(ops[1], Notify)  # the follow happened: its notification stays


def test_other_events_split_runs() -> None:
    ops = merge([follow_event(1, 2, 1), other(2), follow_event(3, 2, 3)])
    assert [type(o) for o in ops] == [SetFollows, Notify, SetBlock, SetFollows, Notify]


def test_interleave_keeps_each_partition_in_order_and_groups_kinds() -> None:
    p0 = [user(1), follow_event(1, 2, 1), post(10, 1), post(11, 1)]
    p1 = [user(2), user(3), follow_event(2, 1, 2), post(20, 2)]
    p2 = [post(30, 4), other(5), post(31, 4)]
    order = interleave([p0, p1, p2])
    assert sorted(map(id, order)) == sorted(map(id, p0 + p1 + p2))
    for stream in (p0, p1, p2):
        positions = [next(i for i, e in enumerate(order) if e is x) for x in stream]
        assert positions == sorted(positions)
    ops = merge(order)
    # Users, then follows, then every partition's leading posts, the block, the last post.
    kinds = [type(o).__name__ for o in ops]
    assert kinds == ["UpsertUsers", "SetFollows", "Notify", "AddPosts", "SetBlock", "AddPosts"]
    assert [p.post_id for p in ops[3].posts] == [10, 11, 20, 30]  # type: ignore[union-attr]
    assert [p.post_id for p in ops[5].posts] == [31]  # type: ignore[union-attr]


def test_interleave_of_nothing() -> None:
    assert interleave([]) == []
    assert interleave([[], []]) == []


def slots(*pairs: tuple[int, bool]) -> list[tuple[int, bool]]:
    return sorted((slot(u), exclusive) for u, exclusive in pairs)


def test_lock_slots_cover_every_pair_of_a_run() -> None:
    ops = [SetFollows((fw(1, 2, True, 1), fw(4, 3, False, 2)))]
    assert lock_slots(ops) == slots((1, True), (2, True), (3, True), (4, True))


def test_new_posts_take_their_authors_slots_shared_and_a_reply_its_parents_exclusive() -> None:
    reply = NewPost(post_id=9, author_id=4, text="t", created_at=NOW, in_reply_to_author_id=7)
    assert lock_slots([*post(8, author=5), AddPosts((reply,))]) == slots(
        (4, False), (5, False), (7, True)
    )


def test_an_exclusive_need_wins_over_a_shared_one_in_the_same_batch() -> None:
    # Two users sharing a slot: author 1's post and a block by the other one (of user 2).
    twin = next(u for u in range(2, 10**6) if slot(u) == slot(1) and u != 2)
    ops = [*post(8, author=1), *post(9, author=2), *other(1)]
    assert lock_slots(ops) == slots((1, True), (2, True))
    ops = [*post(8, author=1), SetBlock(twin, 3, True, v(1), NOW)]
    assert lock_slots(ops) == slots((1, True), (3, True))
    # One lock per slot.
    assert lock_slots([*post(8, author=twin), *post(9, author=1)]) == slots((1, False))


def test_snowflake_user_ids_spread_over_the_slots() -> None:
    # Accounts registered in different milliseconds: every id's sequence bits are 0.
    ms = iter(range(10**12, 10**12 + 4000))
    gen = SnowflakeGenerator(worker_id=3, clock_ms=lambda: next(ms))
    used = {slot(gen.next_id()) for _ in range(2000)}
    assert len(used) > 0.7 * LOCK_SLOTS
    assert all(0 <= s < LOCK_SLOTS for s in used)


def test_slot_mode_of_follows_posts_replies_and_registrations() -> None:
    reply = NewPost(post_id=9, author_id=2, text="t", created_at=NOW, in_reply_to_author_id=1)
    assert slot_mode(follow_event(1, 2, 1)) is True
    assert slot_mode(post(5)) is False
    assert slot_mode([AddPosts((reply,))]) is True
    assert slot_mode(user(1)) is None
    assert slot_mode([]) is None


def test_interleave_order_names_each_event_once_in_each_streams_order() -> None:
    streams = [[user(1), post(10)], [follow_event(2, 1, 1), post(20), post(21)]]
    order = interleave_order(streams)
    assert sorted(order) == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)]
    assert [streams[i][j] for i, j in order] == interleave(streams)
    for s in (0, 1):
        mine = [j for i, j in order if i == s]
        assert mine == sorted(mine)


X, S, N = True, False, None


def test_a_long_run_of_shared_slots_is_a_transaction_of_its_own() -> None:
    # Registrations and follows, then 3 posts, then a follow, then 2 posts.
    modes = [N, X, X, S, N, S, S, X, S, S]
    assert segments(modes, 3) == [range(0, 3), range(3, 7), range(7, 10)]
    # A run too short to stand alone stays with what is around it.
    assert segments(modes, 4) == [range(0, 10)]


def test_a_batch_without_exclusive_slots_or_long_runs_is_not_cut() -> None:
    assert segments([S] * 8, 3) == [range(0, 8)]
    assert segments([X, N, S, X], 2) == [range(0, 4)]
    assert segments([], 1) == []


def test_runs_at_either_end_are_cut_off() -> None:
    assert segments([S, S, X], 2) == [range(0, 2), range(2, 3)]
    assert segments([X, N, S, S], 2) == [range(0, 1), range(1, 4)]
