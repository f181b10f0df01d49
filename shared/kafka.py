"""Kafka adapters: the event producer, the topic set-up, and positions.

A position is "<partition>:<offset>" of an acknowledged event. Commands return it; queries may
wait until the projector has passed it (read-your-writes, DESIGN.md §5).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Final

import msgspec
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from shared import codec
from shared.events import Event
from shared.settings import Settings

_POSITION = re.compile(r"^(\d{1,5}):(\d{1,19})$")


class Position(msgspec.Struct, frozen=True):
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.partition}:{self.offset}"

    @classmethod
    def parse(cls, text: str) -> Position:
        m = _POSITION.match(text.strip())
        if not m:
            raise ValueError("position must look like '<partition>:<offset>'")
        return cls(int(m.group(1)), int(m.group(2)))


# Retention -1: the log is the system of record and must never age out (invariant 1).
EVENTS_TOPIC_CONFIG: Final = {
    "retention.ms": "-1",
    "retention.bytes": "-1",
    "cleanup.policy": "delete",
    "min.insync.replicas": "1",
}


async def ensure_topics(settings: Settings, timeout_s: float = 60.0) -> None:
    """Create the events and dead-letter topics if missing, with explicit settings."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers, request_timeout_ms=10_000
    )
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            await admin.start()
            break
        except Exception:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.5)
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                settings.topic, settings.topic_partitions, 1, topic_configs=EVENTS_TOPIC_CONFIG
            ),
            NewTopic(settings.dead_letter_topic, 1, 1, topic_configs=EVENTS_TOPIC_CONFIG),
        ]
        missing = [t for t in wanted if t.name not in existing]
        if missing:
            # Another process may create them between our list and create.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
    finally:
        await admin.close()


async def kafka_ready(settings: Settings) -> bool:
    """Readiness: the broker answers a cluster description."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers, request_timeout_ms=3000
    )
    try:
        await asyncio.wait_for(admin.start(), 5)
        await asyncio.wait_for(admin.describe_cluster(), 5)
        return True
    except Exception:
        return False
    finally:
        await admin.close()


def make_producer(settings: Settings) -> AIOKafkaProducer:
    """Idempotent producer with acks=all: an acknowledged event is durable (invariant 2)."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        enable_idempotence=True,
        acks="all",
        linger_ms=1,
        request_timeout_ms=int(settings.produce_timeout_s * 1000),
        max_batch_size=256 * 1024,
    )


class EventPublisher:
    """Appends events to the log and returns their position once the broker acknowledged."""

    def __init__(self, producer: AIOKafkaProducer, topic: str, timeout_s: float) -> None:
        self._producer = producer
        self._topic = topic
        self._timeout = timeout_s

    async def publish(self, event: Event) -> Position:
        fut = await self._producer.send(
            self._topic,
            value=codec.encode(event),
            key=codec.partition_key(event),
            headers=codec.headers(event),
        )
        meta = await asyncio.wait_for(fut, self._timeout)
        return Position(meta.partition, meta.offset)
