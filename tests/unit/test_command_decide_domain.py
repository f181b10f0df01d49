"""Every branch of the complete domain's decisions: posts with visibility, replies, quotes,
mentions and media; edits; reposts; likes; profiles; locked accounts; mutes; audiences."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.command import decide, decide_posts
from services.command.decide import AudienceRecord, Relate, TargetFacts
from services.command.decide_posts import PostAction, PostContext, PostRecord
from shared import codec
from shared.events import (
    AudienceCreated,
    AudienceDeleted,
    AudienceMemberAdded,
    AudienceMemberRemoved,
    FollowCreated,
    FollowRequestApproved,
    FollowRequested,
    FollowRequestRejected,
    LikeRemoved,
    Media,
    Mention,
    MuteCreated,
    MuteRemoved,
    PostEdited,
    PostLiked,
    PostReposted,
    ProfileUpdated,
    RepostRemoved,
)
from shared.http import ApiError
from shared.policy import Relations

ALICE, BOB, CAROL = 101, 202, 303
AUDIENCE = 55
NOW = datetime(2026, 1, 1, tzinfo=UTC)
PHOTO = Media(kind="image", url="https://img.example/1.png", alt_text="a cat")
EXISTS = TargetFacts(exists=True)


def refused(exc: pytest.ExceptionInfo[ApiError]) -> tuple[int, str, str | None]:
    return exc.value.status, exc.value.code, exc.value.field


def post(author: int = BOB, **kw: object) -> PostRecord:
    return PostRecord(author_id=author, deleted=False, **kw)  # type: ignore[arg-type]


def new_post(**kw: object) -> decide_posts.CreatePost:
    return decide_posts.CreatePost(actor_id=ALICE, post_id=7, text="hi", **kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------- create: visibility, audience


@pytest.mark.parametrize("visibility", ["public", "unlisted", "followers", "direct"])
def test_create_post_carries_visibility(visibility: str) -> None:
    event = decide_posts.create_post(new_post(visibility=visibility))
    assert event.data.visibility == visibility
    assert event.data.audience_id is None


@pytest.mark.parametrize(
    ("visibility", "wide", "delivery"),
    [
        ("public", True, "pull"),
        ("unlisted", True, "pull"),
        ("followers", True, "pull"),
        ("direct", True, "push"),  # its readers are the mentioned users, not followers
        ("public", False, "push"),
        ("followers", False, "push"),
    ],
)
def test_create_post_is_pulled_only_for_wide_authors_and_follower_readers(
    visibility: str, wide: bool, delivery: str
) -> None:
    event = decide_posts.create_post(new_post(visibility=visibility), wide_author=wide)
    assert event.data.delivery == delivery


def test_wide_authors_audience_posts_are_pushed() -> None:
    ctx = PostContext(audience=AudienceRecord(owner_id=ALICE, deleted=False))
    cmd = new_post(visibility="audience", audience_id=AUDIENCE)
    assert decide_posts.create_post(cmd, ctx, wide_author=True).data.delivery == "push"


def test_audience_post_to_own_audience() -> None:
    ctx = PostContext(audience=AudienceRecord(owner_id=ALICE, deleted=False))
    event = decide_posts.create_post(new_post(visibility="audience", audience_id=AUDIENCE), ctx)
    assert (event.data.visibility, event.data.audience_id) == ("audience", AUDIENCE)


def test_audience_post_needs_an_audience_id() -> None:
    with pytest.raises(ApiError) as exc:
        decide_posts.create_post(new_post(visibility="audience"))
    assert refused(exc) == (422, "invalid_field", "audience_id")


def test_audience_id_without_audience_visibility_is_refused() -> None:
    with pytest.raises(ApiError) as exc:
        decide_posts.create_post(new_post(audience_id=AUDIENCE))
    assert refused(exc) == (422, "invalid_field", "audience_id")


@pytest.mark.parametrize(
    "audience",
    [
        None,
        AudienceRecord(owner_id=BOB, deleted=False),
        AudienceRecord(owner_id=ALICE, deleted=True),
    ],
    ids=["unknown", "someone-elses", "deleted"],
)
def test_audience_post_to_a_bad_audience(audience: AudienceRecord | None) -> None:
    with pytest.raises(ApiError) as exc:
        decide_posts.create_post(
            new_post(visibility="audience", audience_id=AUDIENCE), PostContext(audience=audience)
        )
    assert refused(exc) == (422, "not_found", "audience_id")


# ---------------------------------------------------------------- create: replies and quotes


def test_reply_fills_the_reply_author() -> None:
    event = decide_posts.create_post(new_post(in_reply_to_id=9), PostContext(reply_to=post(BOB)))
    assert (event.data.in_reply_to_id, event.data.in_reply_to_author_id) == (9, BOB)


def test_quote_of_a_visible_post() -> None:
    event = decide_posts.create_post(new_post(quote_of_id=9), PostContext(quote_of=post(BOB)))
    assert event.data.quote_of_id == 9
    assert event.data.in_reply_to_author_id is None


INVISIBLE = [
    PostContext(),  # missing
    PostContext(reply_to=PostRecord(author_id=BOB, deleted=True), quote_of=None),
    PostContext(reply_to=post(BOB, visibility="followers")),  # not a follower
    PostContext(reply_to=post(BOB, visibility="direct", mentions=frozenset({CAROL}))),
    PostContext(reply_to=post(BOB, visibility="audience", audience_id=AUDIENCE)),
    PostContext(reply_to=post(BOB), relations=Relations(blocked=frozenset({BOB}))),
]
INVISIBLE_IDS = ["missing", "deleted", "followers", "direct", "audience", "blocked"]


@pytest.mark.parametrize("ctx", INVISIBLE, ids=INVISIBLE_IDS)
def test_reply_to_an_invisible_post_is_refused(ctx: PostContext) -> None:
    with pytest.raises(ApiError) as exc:
        decide_posts.create_post(new_post(in_reply_to_id=9), ctx)
    assert refused(exc) == (422, "not_found", "in_reply_to_id")


@pytest.mark.parametrize("ctx", INVISIBLE, ids=INVISIBLE_IDS)
def test_quote_of_an_invisible_post_is_refused(ctx: PostContext) -> None:
    quoted = PostContext(quote_of=ctx.reply_to, relations=ctx.relations)
    with pytest.raises(ApiError) as exc:
        decide_posts.create_post(new_post(quote_of_id=9), quoted)
    assert refused(exc) == (422, "not_found", "quote_of_id")


@pytest.mark.parametrize(
    "ctx",
    [
        PostContext(
            reply_to=post(BOB, visibility="followers"),
            relations=Relations(following=frozenset({BOB})),
        ),
        PostContext(reply_to=post(BOB, visibility="direct", mentions=frozenset({ALICE}))),
        PostContext(
            reply_to=post(BOB, visibility="audience", audience_id=AUDIENCE),
            relations=Relations(audiences=frozenset({AUDIENCE})),
        ),
        PostContext(reply_to=post(ALICE, visibility="direct")),  # one's own
    ],
    ids=["follower", "mentioned", "member", "own"],
)
def test_reply_to_a_post_the_actor_may_see(ctx: PostContext) -> None:
    assert decide_posts.create_post(new_post(in_reply_to_id=9), ctx).data.in_reply_to_id == 9


# ---------------------------------------------------------------- create: entities and media


def test_entities_are_extracted_and_mentions_resolved() -> None:
    ctx = PostContext(
        accounts={
            "bob": Mention(user_id=BOB, username="Bob"),
            "carol": Mention(user_id=CAROL, username="carol"),
        },
        relations=Relations(blocked=frozenset({CAROL})),
    )
    cmd = decide_posts.CreatePost(
        actor_id=ALICE,
        post_id=7,
        text="@BOB @nobody @carol #Tag https://x.org/a",
        media=(PHOTO,),
    )
    data = decide_posts.create_post(cmd, ctx).data
    # Unknown names stay plain text; a blocked pair gets no mention (and so no notification).
    assert data.mentions == (Mention(user_id=BOB, username="Bob"),)
    assert data.hashtags == ("tag",)
    assert data.links == ("https://x.org/a",)
    assert data.media == (PHOTO,)


# ---------------------------------------------------------------- edits


def test_edit_by_the_author_re_extracts_and_keeps_media_when_absent() -> None:
    mine = post(ALICE, media=(PHOTO,))
    event = decide_posts.edit_post(
        decide_posts.EditPost(actor_id=ALICE, post_id=7, text="now #Edited"),
        mine,
        PostContext(accounts={}),
    )
    assert isinstance(event, PostEdited)
    assert (event.data.text, event.data.hashtags, event.data.media) == (
        "now #Edited",
        ("edited",),
        (PHOTO,),
    )


def test_edit_may_replace_or_remove_media() -> None:
    cmd = decide_posts.EditPost(actor_id=ALICE, post_id=7, text="x", media=())
    assert decide_posts.edit_post(cmd, post(ALICE, media=(PHOTO,))).data.media == ()


@pytest.mark.parametrize(
    "record",
    [None, post(BOB), PostRecord(author_id=ALICE, deleted=True)],
    ids=["missing", "someone-elses", "deleted"],
)
def test_edit_of_a_post_not_yours_is_not_found(record: PostRecord | None) -> None:
    with pytest.raises(ApiError) as exc:
        decide_posts.edit_post(decide_posts.EditPost(actor_id=ALICE, post_id=7, text="x"), record)
    assert refused(exc) == (404, "not_found", None)


def test_edit_to_blank_text_is_refused() -> None:
    with pytest.raises(ApiError) as exc:
        decide_posts.edit_post(
            decide_posts.EditPost(actor_id=ALICE, post_id=7, text="  "), post(ALICE)
        )
    assert refused(exc) == (422, "invalid_field", "text")


# ---------------------------------------------------------------- reposts

ACT = PostAction(actor_id=ALICE, post_id=9, repost_id=77)


@pytest.mark.parametrize("visibility", ["public", "unlisted"])
def test_repost_of_a_public_or_unlisted_post(visibility: str) -> None:
    event = decide_posts.repost(ACT, post(BOB, visibility=visibility), Relations(), already=False)
    assert isinstance(event, PostReposted)
    assert (event.data.repost_id, event.data.post_id, event.data.author_id) == (77, 9, BOB)
    assert event.data.reposter_id == ALICE


def test_repost_of_ones_own_followers_post() -> None:
    event = decide_posts.repost(
        ACT, post(ALICE, visibility="followers"), Relations(), already=False
    )
    assert event is not None


def test_repeated_repost_appends_nothing() -> None:
    assert decide_posts.repost(ACT, post(BOB), Relations(), already=True) is None


def test_repost_of_a_visible_followers_only_post_is_refused() -> None:
    with pytest.raises(ApiError) as exc:
        decide_posts.repost(
            ACT,
            post(BOB, visibility="followers"),
            Relations(following=frozenset({BOB})),
            already=False,
        )
    assert refused(exc) == (422, "not_repostable", "post_id")


@pytest.mark.parametrize("ctx", INVISIBLE, ids=INVISIBLE_IDS)
def test_repost_and_like_of_an_invisible_post_are_not_found(ctx: PostContext) -> None:
    for decision in (decide_posts.repost, decide_posts.like):
        with pytest.raises(ApiError) as exc:
            decision(ACT, ctx.reply_to, ctx.relations, already=False)  # type: ignore[operator]
        assert refused(exc) == (404, "not_found", None)


def test_remove_repost() -> None:
    event = decide_posts.remove_repost(ACT, post(BOB), 77)
    assert isinstance(event, RepostRemoved)
    assert (event.data.repost_id, event.data.author_id) == (77, BOB)


@pytest.mark.parametrize(("record", "repost_id"), [(None, 77), (post(BOB), None)])
def test_remove_repost_when_none_is_not_found(
    record: PostRecord | None, repost_id: int | None
) -> None:
    with pytest.raises(ApiError) as exc:
        decide_posts.remove_repost(ACT, record, repost_id)
    assert refused(exc) == (404, "not_found", None)


# ---------------------------------------------------------------- likes


def test_like_of_a_visible_post_once() -> None:
    followers_post = post(BOB, visibility="followers")
    event = decide_posts.like(
        ACT, followers_post, Relations(following=frozenset({BOB})), already=False
    )
    assert isinstance(event, PostLiked)
    assert (event.data.post_id, event.data.author_id, event.data.liker_id) == (9, BOB, ALICE)
    assert decide_posts.like(ACT, post(BOB), Relations(), already=True) is None


def test_remove_like() -> None:
    assert isinstance(decide_posts.remove_like(ACT, post(BOB), liked=True), LikeRemoved)
    for record, liked in ((None, True), (post(BOB), False)):
        with pytest.raises(ApiError) as exc:
            decide_posts.remove_like(ACT, record, liked=liked)
        assert refused(exc) == (404, "not_found", None)


# ---------------------------------------------------------------- profiles


def test_profile_update_carries_only_the_given_fields() -> None:
    event = decide.update_profile(decide.UpdateProfile(actor_id=ALICE, bio="hi", locked=True))
    assert isinstance(event, ProfileUpdated)
    data = event.data
    assert (data.user_id, data.display_name, data.bio, data.avatar_url, data.locked) == (
        ALICE,
        None,
        "hi",
        None,
        True,
    )


def test_empty_profile_update_is_refused() -> None:
    with pytest.raises(ApiError) as exc:
        decide.update_profile(decide.UpdateProfile(actor_id=ALICE))
    assert refused(exc) == (422, "nothing_to_update", None)


# ---------------------------------------------------------------- locked accounts


def test_follow_of_a_locked_account_is_a_request() -> None:
    cmd = Relate(actor_id=ALICE, target_id=BOB)
    assert isinstance(decide.follow(cmd, TargetFacts(exists=True, locked=True)), FollowRequested)
    # Already following: following again stays a follow, no new request.
    already = TargetFacts(exists=True, locked=True, following=True)
    assert isinstance(decide.follow(cmd, already), FollowCreated)


@pytest.mark.parametrize(
    ("decision", "event_type"),
    [
        (decide.approve_follow_request, FollowRequestApproved),
        (decide.reject_follow_request, FollowRequestRejected),
    ],
)
def test_answering_a_follow_request(decision: object, event_type: type) -> None:
    cmd = Relate(actor_id=BOB, target_id=ALICE)  # Bob (locked) answers Alice's request
    event = decision(cmd, pending=True)  # type: ignore[operator]
    assert isinstance(event, event_type)
    assert (event.data.follower_id, event.data.followee_id) == (ALICE, BOB)
    assert event.subject == str(BOB)
    with pytest.raises(ApiError) as exc:
        decision(cmd, pending=False)  # type: ignore[operator]
    assert refused(exc) == (404, "not_found", None)


def test_unlocking_approves_every_pending_request() -> None:
    events = decide.approve_all_on_unlock(BOB, [ALICE, CAROL], request_id="r1")
    assert [type(e) for e in events] == [FollowRequestApproved, FollowRequestApproved]
    assert [(e.data.follower_id, e.data.followee_id) for e in events] == [
        (ALICE, BOB),
        (CAROL, BOB),
    ]
    # On the unlocked account's partition, after its profile change; distinct events.
    assert {e.subject for e in events} == {str(BOB)}
    assert len({e.id for e in events}) == 2
    assert decide.approve_all_on_unlock(BOB, []) == []


# ---------------------------------------------------------------- mutes


def test_mute_forever_and_for_a_while() -> None:
    forever = decide.mute(decide.Mute(actor_id=ALICE, target_id=BOB), EXISTS, now=NOW)
    assert isinstance(forever, MuteCreated)
    assert (forever.data.muter_id, forever.data.muted_id, forever.data.expires_at) == (
        ALICE,
        BOB,
        None,
    )
    timed = decide.mute(
        decide.Mute(actor_id=ALICE, target_id=BOB, expires_in_s=3600), EXISTS, now=NOW
    )
    assert timed.data.expires_at == NOW + timedelta(hours=1)


@pytest.mark.parametrize("seconds", [0, 59, 365 * 24 * 3600 + 1, -5])
def test_mute_duration_out_of_bounds(seconds: int) -> None:
    with pytest.raises(ApiError) as exc:
        decide.mute(
            decide.Mute(actor_id=ALICE, target_id=BOB, expires_in_s=seconds), EXISTS, now=NOW
        )
    assert refused(exc) == (422, "invalid_field", "expires_in_s")


def test_mute_targets_are_checked() -> None:
    with pytest.raises(ApiError) as exc:
        decide.mute(decide.Mute(actor_id=ALICE, target_id=ALICE), EXISTS, now=NOW)
    assert refused(exc) == (422, "cannot_target_self", "user_id")
    with pytest.raises(ApiError) as exc:
        decide.unmute(Relate(actor_id=ALICE, target_id=BOB), TargetFacts(exists=False))
    assert refused(exc) == (404, "not_found", None)
    assert isinstance(decide.unmute(Relate(actor_id=ALICE, target_id=BOB), EXISTS), MuteRemoved)


# ---------------------------------------------------------------- audiences

MINE = AudienceRecord(owner_id=ALICE, deleted=False)
NOT_MINE = [
    None,
    AudienceRecord(owner_id=BOB, deleted=False),
    AudienceRecord(owner_id=ALICE, deleted=True),
]
NOT_MINE_IDS = ["unknown", "someone-elses", "deleted"]
MEMBER = decide.AudienceMember(actor_id=ALICE, audience_id=AUDIENCE, member_id=BOB)


def test_create_audience() -> None:
    event = decide.create_audience(
        decide.CreateAudience(actor_id=ALICE, audience_id=AUDIENCE, name="close friends")
    )
    assert isinstance(event, AudienceCreated)
    assert (event.data.audience_id, event.data.owner_id, event.data.name) == (
        AUDIENCE,
        ALICE,
        "close friends",
    )
    with pytest.raises(ApiError) as exc:
        decide.create_audience(decide.CreateAudience(actor_id=ALICE, audience_id=1, name=" "))
    assert refused(exc) == (422, "invalid_field", "name")


def test_owner_manages_the_audience() -> None:
    assert isinstance(decide.delete_audience(MEMBER, MINE), AudienceDeleted)
    added = decide.add_audience_member(MEMBER, MINE, member_exists=True)
    assert isinstance(added, AudienceMemberAdded)
    assert (added.data.audience_id, added.data.owner_id, added.data.member_id) == (
        AUDIENCE,
        ALICE,
        BOB,
    )
    assert isinstance(
        decide.remove_audience_member(MEMBER, MINE, is_member=True), AudienceMemberRemoved
    )


@pytest.mark.parametrize("audience", NOT_MINE, ids=NOT_MINE_IDS)
def test_audience_not_yours_is_not_found(audience: AudienceRecord | None) -> None:
    for call in (
        lambda: decide.delete_audience(MEMBER, audience),
        lambda: decide.add_audience_member(MEMBER, audience, member_exists=True),
        lambda: decide.remove_audience_member(MEMBER, audience, is_member=True),
    ):
        with pytest.raises(ApiError) as exc:
            call()
        assert refused(exc) == (404, "not_found", None)


def test_member_must_exist_and_removal_must_be_of_a_member() -> None:
    with pytest.raises(ApiError) as exc:
        decide.add_audience_member(MEMBER, MINE, member_exists=False)
    assert refused(exc) == (404, "not_found", None)
    with pytest.raises(ApiError) as exc:
        decide.remove_audience_member(MEMBER, MINE, is_member=False)
    assert refused(exc) == (404, "not_found", None)


def test_every_decided_event_survives_the_codec() -> None:
    # The projector decodes with the event types' limits; an event it would call invalid must
    # never be produced (e.g. an audience.deleted without the required name).
    events = [
        decide_posts.create_post(new_post(visibility="direct", media=(PHOTO,))),
        decide_posts.edit_post(
            decide_posts.EditPost(actor_id=ALICE, post_id=7, text="x"), post(ALICE)
        ),
        decide_posts.repost(ACT, post(BOB), Relations(), already=False),
        decide_posts.remove_repost(ACT, post(BOB), 77),
        decide_posts.like(ACT, post(BOB), Relations(), already=False),
        decide_posts.remove_like(ACT, post(BOB), liked=True),
        decide.update_profile(
            decide.UpdateProfile(actor_id=ALICE, avatar_url="https://a.example/me.png")
        ),
        decide.follow(Relate(actor_id=ALICE, target_id=BOB), TargetFacts(exists=True, locked=True)),
        decide.approve_follow_request(Relate(actor_id=BOB, target_id=ALICE), pending=True),
        decide.reject_follow_request(Relate(actor_id=BOB, target_id=ALICE), pending=True),
        decide.mute(decide.Mute(actor_id=ALICE, target_id=BOB, expires_in_s=60), EXISTS, now=NOW),
        decide.unmute(Relate(actor_id=ALICE, target_id=BOB), EXISTS),
        decide.create_audience(decide.CreateAudience(actor_id=ALICE, audience_id=1, name="n")),
        decide.delete_audience(MEMBER, MINE),
        decide.add_audience_member(MEMBER, MINE, member_exists=True),
        decide.remove_audience_member(MEMBER, MINE, is_member=True),
    ]
    for event in events:
        assert event is not None
        assert codec.decode(codec.encode(event)) == event
