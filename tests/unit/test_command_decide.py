"""Every branch of the command service's pure decisions, without Kafka or PostgreSQL."""

from __future__ import annotations

import pytest

from services.command import decide, decide_posts
from services.command.decide import Relate, TargetFacts
from services.command.decide_posts import PostRecord
from shared import codec
from shared.events import (
    BlockCreated,
    BlockRemoved,
    FollowCreated,
    FollowRemoved,
    PostCreated,
    PostDeleted,
    UserRegistered,
)
from shared.http import ApiError

ALICE, BOB = 101, 202
EXISTS = TargetFacts(exists=True)
MISSING = TargetFacts(exists=False)
BLOCKED = TargetFacts(exists=True, blocked_either_way=True)


def refused(exc: pytest.ExceptionInfo[ApiError]) -> tuple[int, str, str | None]:
    return exc.value.status, exc.value.code, exc.value.field


# ---------------------------------------------------------------- accounts


def test_register_emits_user_registered_without_secrets() -> None:
    cmd = decide.RegisterAccount(user_id=ALICE, username="Alice_1", display_name="Alice")
    event = decide.register_account(cmd, username_taken=False, request_id="req-1")
    assert isinstance(event, UserRegistered)
    assert event.subject == str(ALICE)
    assert event.requestid == "req-1"
    assert (event.data.user_id, event.data.username, event.data.display_name) == (
        ALICE,
        "Alice_1",
        "Alice",
    )
    assert b"password" not in codec.encode(event)  # invariant 6


def test_register_refuses_a_taken_username() -> None:
    cmd = decide.RegisterAccount(user_id=ALICE, username="alice")
    with pytest.raises(ApiError) as exc:
        decide.register_account(cmd, username_taken=True)
    assert refused(exc) == (409, "username_taken", "username")


# ---------------------------------------------------------------- posts


def test_create_post_emits_post_created_by_the_actor() -> None:
    event = decide_posts.create_post(
        decide_posts.CreatePost(actor_id=ALICE, post_id=7, text=" hi ")
    )
    assert isinstance(event, PostCreated)
    assert (event.data.post_id, event.data.author_id, event.data.text) == (7, ALICE, " hi ")
    assert event.subject == str(ALICE)  # partition key: the author's events stay in order


@pytest.mark.parametrize("text", [" ", "\n\t  ", "\u3000\u2003"])
def test_create_post_refuses_blank_text(text: str) -> None:
    with pytest.raises(ApiError) as exc:
        decide_posts.create_post(decide_posts.CreatePost(actor_id=ALICE, post_id=7, text=text))
    assert refused(exc) == (422, "invalid_field", "text")


def test_delete_post_by_its_author() -> None:
    event = decide_posts.delete_post(
        decide_posts.DeletePost(actor_id=ALICE, post_id=7),
        PostRecord(author_id=ALICE, deleted=False),
    )
    assert isinstance(event, PostDeleted)
    assert (event.data.post_id, event.data.author_id) == (7, ALICE)


@pytest.mark.parametrize(
    "post",
    [
        None,  # never existed
        PostRecord(author_id=BOB, deleted=False),  # someone else's: 404, never 403
        PostRecord(author_id=ALICE, deleted=True),  # already deleted
    ],
    ids=["missing", "not-author", "already-deleted"],
)
def test_delete_post_answers_not_found(post: PostRecord | None) -> None:
    with pytest.raises(ApiError) as exc:
        decide_posts.delete_post(decide_posts.DeletePost(actor_id=ALICE, post_id=7), post)
    assert refused(exc) == (404, "not_found", None)


# ---------------------------------------------------------------- follows and blocks

RELATIONS = [
    (decide.follow, FollowCreated),
    (decide.unfollow, FollowRemoved),
    (decide.block, BlockCreated),
    (decide.unblock, BlockRemoved),
]


@pytest.mark.parametrize(("decision", "event_type"), RELATIONS)
def test_relation_emits_its_event(decision: decide.Decision, event_type: type) -> None:
    event = decision(Relate(actor_id=ALICE, target_id=BOB), EXISTS, request_id="r")
    assert isinstance(event, event_type)
    assert event.subject == str(ALICE)
    assert event.requestid == "r"


def test_follow_and_block_payloads_name_actor_then_target() -> None:
    cmd = Relate(actor_id=ALICE, target_id=BOB)
    f = decide.follow(cmd, EXISTS)
    assert (f.data.follower_id, f.data.followee_id) == (ALICE, BOB)
    b = decide.block(cmd, EXISTS)
    assert (b.data.blocker_id, b.data.blocked_id) == (ALICE, BOB)


@pytest.mark.parametrize(("decision", "_event_type"), RELATIONS)
def test_relation_to_self_is_refused(decision: decide.Decision, _event_type: type) -> None:
    with pytest.raises(ApiError) as exc:
        decision(Relate(actor_id=ALICE, target_id=ALICE), EXISTS)
    assert refused(exc) == (422, "cannot_target_self", "user_id")


@pytest.mark.parametrize(("decision", "_event_type"), RELATIONS)
def test_relation_to_unknown_user_is_not_found(
    decision: decide.Decision, _event_type: type
) -> None:
    with pytest.raises(ApiError) as exc:
        decision(Relate(actor_id=ALICE, target_id=BOB), MISSING)
    assert refused(exc) == (404, "not_found", None)


def test_follow_across_a_block_is_refused() -> None:
    with pytest.raises(ApiError) as exc:
        decide.follow(Relate(actor_id=ALICE, target_id=BOB), BLOCKED)
    assert refused(exc) == (422, "blocked", "user_id")


@pytest.mark.parametrize("decision", [decide.unfollow, decide.block, decide.unblock])
def test_only_follow_cares_about_blocks(decision: decide.Decision) -> None:
    # Unfollowing, blocking back and unblocking must stay possible while a block exists.
    assert decision(Relate(actor_id=ALICE, target_id=BOB), BLOCKED) is not None
