import uuid
from datetime import UTC, datetime

import msgspec
import pytest

from shared import codec
from shared.codec import PoisonEvent
from shared.events import (
    EVENT_TYPES,
    FollowCreated,
    FollowData,
    PostCreated,
    PostCreatedData,
    new_event,
    type_tag,
)


def make_post(text: str = "hello") -> PostCreated:
    return new_event(
        PostCreated, actor_id=7, data=PostCreatedData(post_id=11, author_id=7, text=text)
    )


def test_round_trip_keeps_every_field() -> None:
    event = make_post()
    assert codec.decode(codec.encode(event)) == event


def test_envelope_uses_cloudevents_names_and_explicit_tags() -> None:
    doc = msgspec.json.decode(codec.encode(make_post()))
    assert doc["type"] == "post.created" and doc["specversion"] == "1.0"
    assert {"id", "source", "time", "subject", "dataschema", "data"} <= doc.keys()
    assert uuid.UUID(doc["id"]).version == 7
    assert doc["subject"] == "7"
    tags = [type_tag(t) for t in EVENT_TYPES]
    assert all("." in t for t in tags) and len(set(tags)) == len(tags)


def test_headers_carry_type_and_id_for_consumers_that_do_not_decode() -> None:
    event = make_post()
    headers = dict(codec.headers(event))
    assert headers["ce_type"] == b"post.created"
    assert headers["ce_id"] == str(event.id).encode()
    assert codec.partition_key(event) == b"7"


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    doc = msgspec.json.decode(codec.encode(make_post()))
    doc["brand_new_attribute"] = 1
    doc["data"]["brand_new_field"] = {"x": 1}
    decoded = codec.decode(msgspec.json.encode(doc))
    assert isinstance(decoded, PostCreated) and decoded.data.text == "hello"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "empty"),
        (b"", "empty"),
        (b"\xff\xfe", "undecodable"),
        (b"[1, 2]", "undecodable"),
        (b'{"type": "post.exploded"}', "unknown_type"),
        (b'{"type": "post.created", "schemaversion": 99}', "future_version"),
        (b'{"type": "post.created", "id": "nope"}', "invalid"),
    ],
)
def test_poison_is_classified(raw: bytes | None, reason: str) -> None:
    with pytest.raises(PoisonEvent) as info:
        codec.decode(raw)
    assert info.value.reason == reason


def test_invalid_payload_is_poison() -> None:
    doc = msgspec.json.decode(codec.encode(make_post()))
    doc["data"]["text"] = "x" * 501
    with pytest.raises(PoisonEvent) as info:
        codec.decode(msgspec.json.encode(doc))
    assert info.value.reason == "invalid"


def test_naive_time_is_rejected() -> None:
    doc = msgspec.json.decode(codec.encode(make_post()))
    doc["time"] = datetime(2026, 1, 1).isoformat()
    with pytest.raises(PoisonEvent):
        codec.decode(msgspec.json.encode(doc))
    doc["time"] = datetime(2026, 1, 1, tzinfo=UTC).isoformat()
    assert codec.decode(msgspec.json.encode(doc))


def test_follow_event_decodes_to_its_type() -> None:
    e = new_event(FollowCreated, actor_id=1, data=FollowData(follower_id=1, followee_id=2))
    assert type(codec.decode(codec.encode(e))) is FollowCreated
