"""The pure parts of the group-committed post path: which posts need lookups, the rows a batch
records, and the answers it gives."""

from __future__ import annotations

import msgspec
import pytest

from services.command import decide_posts, post_batch, post_store
from shared import codec
from shared.events import Media, Mention, PostCreated, PostCreatedData, new_event
from shared.kafka import Position


def cmd(**overrides: object) -> decide_posts.CreatePost:
    fields: dict[str, object] = {"actor_id": 7, "post_id": 100, "text": "hello"}
    fields.update(overrides)
    return decide_posts.CreatePost(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "names", "needed"),
    [
        ({}, (), False),
        ({"visibility": "followers"}, (), False),
        ({}, ("bob",), True),
        ({"in_reply_to_id": 5}, (), True),
        ({"quote_of_id": 5}, (), True),
        ({"visibility": "audience", "audience_id": 9}, (), True),
    ],
)
def test_only_posts_that_refer_to_something_need_lookups(
    overrides: dict[str, object], names: tuple[str, ...], needed: bool
) -> None:
    assert decide_posts.needs_context(cmd(**overrides), names) is needed


def event(post_id: int = 100, mentions: tuple[Mention, ...] = ()) -> PostCreated:
    return new_event(
        PostCreated,
        actor_id=7,
        data=PostCreatedData(
            post_id=post_id,
            author_id=7,
            text="hi @bob",
            visibility="followers",
            mentions=mentions,
            media=(Media(kind="image", url="https://example.com/a.png"),),
        ),
    )


def test_a_row_carries_the_post_its_event_and_a_placeholder_answer() -> None:
    e = event(mentions=(Mention(user_id=3, username="bob"),))
    row = post_batch.new_post_row(e, "k1")
    assert (row.post_id, row.author_id, row.visibility, row.mentions) == (100, 7, "followers", (3,))
    assert row.key == "k1" and codec.decode(row.event) == e
    answer = msgspec.json.decode(row.body)
    assert answer == {"post_id": "100", "event_id": str(e.id), "position": "0:0"}


def test_the_answer_names_the_events_position() -> None:
    e = event()
    answer = msgspec.json.decode(post_batch.accepted(e, Position(3, 41)))
    assert answer == {"post_id": "100", "event_id": str(e.id), "position": "3:41"}


def test_columns_put_ragged_fields_in_their_text_forms() -> None:
    rows = [
        post_batch.new_post_row(event(1, (Mention(user_id=3, username="b"),)), "a"),
        post_batch.new_post_row(event(2), "b"),
    ]
    cols = post_store.new_post_columns(rows)
    post_ids, authors, _, audiences, mentions, media, keys, bodies, events = cols
    assert post_ids == [1, 2] and authors == [7, 7] and audiences == [None, None]
    assert mentions == ["{3}", "{}"]
    assert msgspec.json.decode(media[0], type=tuple[Media, ...]) == rows[0].media
    assert keys == ["a", "b"] and bodies == [r.body for r in rows]
    assert events == [r.event for r in rows]
