"""Planning a batch of records (services/projector/batch.py): pure, no Kafka or PostgreSQL."""

from aiokafka.structs import ConsumerRecord

from services.projector import batch
from services.projector.project import AddPosts, UpsertUsers
from services.projector.runner import plan_record
from shared import codec
from shared.codec import PoisonEvent
from shared.events import (
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
