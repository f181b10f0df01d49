"""Consumed Kafka records built by hand, for driving the projector's batch code directly."""

from __future__ import annotations

from aiokafka.structs import ConsumerRecord


def consumer_record(
    topic: str, partition: int, offset: int, value: bytes | None
) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic=topic,
        partition=partition,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=None,
        value=value,
        checksum=None,
        serialized_key_size=0,
        serialized_value_size=len(value or b""),
        headers=(),
    )
