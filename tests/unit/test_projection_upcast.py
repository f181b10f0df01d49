"""Schema evolution: old post.created v1 documents still decode, via the upcaster registry."""

import msgspec
import pytest

from shared import codec
from shared.codec import PoisonEvent
from shared.events import CURRENT_VERSION, PostCreated, PostCreatedData, new_event
from shared.upcast import UpcastError, upcast, upcaster

V1 = {
    "id": "0190d3a0-0000-7000-8000-000000000001",
    "type": "post.created",
    "source": "/microblog/command",
    "specversion": "1.0",
    "time": "2025-01-01T00:00:00Z",
    "subject": "7",
    "dataschema": "/schemas/events/post.created.json#v1",
    "schemaversion": 1,
    "data": {
        "post_id": 11,
        "author_id": 7,
        "text": "#Hi #hi #There",
        "hashtags": ["Hi", "hi", "There"],
    },
}


def test_current_post_created_is_v2() -> None:
    assert CURRENT_VERSION["post.created"] == 2
    event = new_event(
        PostCreated, actor_id=1, data=PostCreatedData(post_id=1, author_id=1, text="x")
    )
    assert event.schemaversion == 2 and event.dataschema.endswith("#v2")


def test_v1_event_decodes_with_normalised_hashtags() -> None:
    event = codec.decode(msgspec.json.encode(V1))
    assert isinstance(event, PostCreated)
    assert event.schemaversion == 2 and event.dataschema.endswith("#v2")
    assert event.data.hashtags == ("hi", "there")
    assert event.data.visibility == "public"  # fields added later take their defaults


def test_v1_without_hashtags_upcasts() -> None:
    doc = {**V1, "data": {"post_id": 11, "author_id": 7, "text": "plain"}}
    event = codec.decode(msgspec.json.encode(doc))
    assert isinstance(event, PostCreated) and event.data.hashtags == ()


def test_a_broken_v1_document_is_invalid_poison() -> None:
    doc = {**V1, "data": {**V1["data"], "hashtags": "not a list"}}  # type: ignore[dict-item]
    with pytest.raises(PoisonEvent) as info:
        codec.decode(msgspec.json.encode(doc))
    assert info.value.reason == "invalid"


def test_future_versions_are_poison() -> None:
    doc = {**V1, "schemaversion": 3}
    with pytest.raises(PoisonEvent) as info:
        codec.decode(msgspec.json.encode(doc))
    assert info.value.reason == "future_version"


def test_missing_step_is_an_error_and_steps_register_once() -> None:
    with pytest.raises(UpcastError):
        upcast({"type": "follow.created", "schemaversion": 1}, 2)
    with pytest.raises(ValueError):
        upcaster("post.created", 1)(lambda d: d)


def test_newer_optional_fields_are_ignored() -> None:
    event = new_event(
        PostCreated, actor_id=1, data=PostCreatedData(post_id=1, author_id=1, text="x")
    )
    doc = msgspec.json.decode(codec.encode(event))
    doc["data"]["language"] = "en"
    assert codec.decode(msgspec.json.encode(doc)) == event
