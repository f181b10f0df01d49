"""Planning a batch of records (services/projector/batch.py): pure, no Kafka or PostgreSQL."""

from aiokafka.structs import ConsumerRecord

from services.projector import batch
from services.projector.project import AddPosts, Notify, SetFollows, UpsertUsers
from services.projector.runner import plan_record
from shared import codec
from shared.codec import PoisonEvent
from shared.events import (
    FollowCreated,
    FollowData,
    PostCreated,
    PostCreatedData,
    UserRegistered,
    UserRegisteredData,
    new_event,
)
from tests.records import consumer_record


def rec(partition: int, offset: int, value: bytes | None) -> ConsumerRecord[bytes, bytes]:
    return consumer_record("t", partition, offset, value)


def user(u: int) -> bytes:
    data = UserRegisteredData(user_id=u, username=f"u{u}", display_name="")
    return codec.encode(new_event(UserRegistered, actor_id=u, data=data))


def post(pid: int, author: int) -> bytes:
    data = PostCreatedData(post_id=pid, author_id=author, text="hi")
    return codec.encode(new_event(PostCreated, actor_id=author, data=data))


def follow(a: int, b: int) -> bytes:
    return codec.encode(
        new_event(FollowCreated, actor_id=a, data=FollowData(follower_id=a, followee_id=b))
    )


# Two partitions, each registering a user and then posting; partition 1 also holds poison.
RECORDS = [
    rec(0, 10, user(1)),
    rec(0, 11, post(100, 1)),
    rec(1, 5, user(2)),
    rec(1, 6, b"{not json"),
    rec(1, 7, post(200, 2)),
]


def test_offsets_poison_and_runs_across_partitions() -> None:
    planned = batch.plan(RECORDS, plan_record)
    assert planned.partitions == [0, 1]
    assert planned.first_offsets == {0: 10, 1: 5}
    assert planned.next_offsets == {0: 12, 1: 8}
    assert planned.events == 4
    assert [(r.offset, why.reason) for r, why in planned.poison] == [(6, "undecodable")]
    # Both registrations before both posts: one set-based operation each.
    assert [type(o) for o in planned.ops] == [UpsertUsers, AddPosts]
    assert [p.post_id for p in planned.ops[1].posts] == [100, 200]  # type: ignore[union-attr]


def test_a_failed_batch_is_all_poison() -> None:
    why = PoisonEvent("projection_failed", "boom")
    planned = batch.plan(RECORDS[:2], plan_record, failed=why)
    assert planned.ops == [] and planned.events == 0
    assert [w for _, w in planned.poison] == [why, why]
    assert planned.next_offsets == {0: 12}


async def test_planning_in_chunks_plans_the_same() -> None:
    many = [rec(i % 3, i, post(1000 + i, i % 3 + 1)) for i in range(batch.CHUNK * 2 + 7)]
    a, b = batch.plan(many, plan_record), await batch.plan_async(many, plan_record)
    assert (a.ops, a.events, a.next_offsets, a.first_offsets) == (
        b.ops,
        b.events,
        b.next_offsets,
        b.first_offsets,
    )


async def test_planning_piece_by_piece_plans_the_same() -> None:
    # The runner tops the next batch up with whatever arrives while the previous one is
    # written: records added in pieces plan as one batch of them all.
    many = [rec(i % 3, i, post(1000 + i, i % 3 + 1)) for i in range(batch.CHUNK + 13)]
    planner = batch.Planner(plan_record)
    for piece in (many[:5], [], many[5:60], many[60:]):
        await planner.add(piece)
    assert len(planner) == len(many)
    a, b = batch.plan(many, plan_record), planner.done()
    assert list(b.records) == many
    assert (a.ops, a.events, a.next_offsets, a.first_offsets) == (
        b.ops,
        b.events,
        b.next_offsets,
        b.first_offsets,
    )


def replay(posts_per_partition: int) -> list[ConsumerRecord[bytes, bytes]]:
    """What a replay fetches: each partition's registrations, follows, then posts."""
    out = []
    for p in (0, 1):
        events = [user(10 + p), user(20 + p), follow(10 + p, 20 + p), follow(20 + p, 10 + p)]
        events += [post(1000 * (p + 1) + i, 10 + p) for i in range(posts_per_partition)]
        out += [rec(p, 50 + i, e) for i, e in enumerate(events)]
    return out


def test_follows_and_a_long_run_of_posts_are_written_in_two_transactions() -> None:
    records = replay(batch.MIN_SHARED_RUN // 2)
    planned = batch.plan(records, plan_record)
    first, second = planned.parts
    assert [type(o) for o in first.ops] == [UpsertUsers, SetFollows, Notify]
    assert [type(o) for o in second.ops] == [AddPosts]
    # The second starts where the first ended, in every partition, and ends with the batch.
    assert first.first_offsets == planned.first_offsets == {0: 50, 1: 50}
    assert first.next_offsets == second.first_offsets == {0: 54, 1: 54}
    assert second.next_offsets == planned.next_offsets
    assert sorted(r.offset for r in first.records) == [50, 50, 51, 51, 52, 52, 53, 53]
    assert len(first.records) + len(second.records) == len(records)
    assert (first.events, second.events) == (8, planned.events - 8)
    # The whole batch still plans as one (the rebuild's replay writes it so).
    assert [type(o) for o in planned.ops] == [UpsertUsers, SetFollows, Notify, AddPosts]


def test_a_short_run_of_posts_stays_with_the_follows() -> None:
    planned = batch.plan(replay(batch.MIN_SHARED_RUN // 2 - 1), plan_record)
    assert planned.parts == [planned]


def test_a_batch_holding_poison_is_not_cut() -> None:
    records = replay(batch.MIN_SHARED_RUN)
    records[-1] = rec(1, records[-1].offset, b"{not json")
    planned = batch.plan(records, plan_record)
    assert planned.parts == [planned] and len(planned.poison) == 1
