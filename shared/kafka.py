"""Kafka adapters: the event producer, the topic set-up, and positions.

A position is "<partition>:<offset>" of an acknowledged event. Commands return it; queries may
wait until the projector has passed it (read-your-writes, DESIGN.md §5).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable, Sequence
from typing import Final

import msgspec
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    KafkaError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    TopicAlreadyExistsError,
    UnknownProducerId,
)
from aiokafka.structs import RecordMetadata

from shared import codec
from shared.events import Event
from shared.settings import Settings

log = logging.getLogger("microblog.kafka")

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
        # No linger: the command service batches for the producer already (group commit:
        # every post of a flush is appended before any ack is awaited). Measured open loop at
        # 400 posts/s: linger 1 ms made the mean produce wait 2.7 ms and the POST p50 8 ms;
        # linger 0, 1.2 ms and 4 ms. Closed-loop maxima differed less than their noise.
        linger_ms=0,
        request_timeout_ms=int(settings.produce_timeout_s * 1000),
        max_batch_size=256 * 1024,
    )


# Errors after which an idempotent producer's sequence state is out of step with the broker's
# (seen after a broker restart): aiokafka does not recover by itself, so the publisher replaces
# the producer. Without this every later send fails until the process restarts.
_RESET_ERRORS: tuple[type[BaseException], ...] = (
    OutOfOrderSequenceNumber,
    UnknownProducerId,
    ProducerFenced,
)


class EventPublisher:
    """Appends events to the log and returns their position once the broker acknowledged."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        topic: str,
        timeout_s: float,
        factory: Callable[[], AIOKafkaProducer] | None = None,
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._timeout = timeout_s
        self._factory = factory
        self._reset_task: asyncio.Task[None] | None = None

    @property
    def producer(self) -> AIOKafkaProducer:
        return self._producer

    async def publish(self, event: Event) -> Position:
        producer = self._producer
        try:
            fut = await producer.send(
                self._topic,
                value=codec.encode(event),
                key=codec.partition_key(event),
                headers=codec.headers(event),
            )
            meta = await asyncio.wait_for(fut, self._timeout)
        except _RESET_ERRORS:
            self._replace(producer)
            raise
        return Position(meta.partition, meta.offset)

    async def publish_many(
        self, events: Sequence[Event], encoded: Sequence[bytes] | None = None
    ) -> list[Position | Exception]:
        """Append every event, then wait for all the acks: the group shares produce requests.

        `encoded`, when given, holds the events' `codec.encode` forms (a caller that stored
        them already need not encode twice).

        Each event gets its own outcome, so one refused record fails only itself. Events of
        one partition keep the given order (the idempotent producer keeps it on retries too).
        The whole call is bounded by the publisher's timeout, send()'s metadata wait included.
        """
        producer = self._producer
        deadline = asyncio.get_running_loop().time() + self._timeout
        values = encoded if encoded is not None else [codec.encode(e) for e in events]
        sent: list[asyncio.Future[RecordMetadata] | Exception] = []
        # send() only queues the record (it waits when the metadata or buffer space is missing):
        # one deadline covers the loop, and what it did not reach fails with the timeout.
        try:
            async with asyncio.timeout_at(deadline):
                for event, value in zip(events, values, strict=True):
                    try:
                        sent.append(
                            await producer.send(
                                self._topic,
                                value=value,
                                key=codec.partition_key(event),
                                headers=codec.headers(event),
                            )
                        )
                    except KafkaError as exc:
                        sent.append(exc)
        except TimeoutError as exc:
            sent.extend([exc] * (len(events) - len(sent)))
        waiting = [f for f in sent if isinstance(f, asyncio.Future)]
        if waiting:
            # asyncio.wait does not cancel what is still in flight: a late ack is just unread.
            await asyncio.wait(
                waiting, timeout=max(0.0, deadline - asyncio.get_running_loop().time())
            )
        outcomes: list[Position | Exception] = []
        for item in sent:
            if isinstance(item, Exception):
                outcomes.append(item)
            elif not item.done() or item.cancelled():
                outcomes.append(TimeoutError("no acknowledgement in time"))
            elif (error := item.exception()) is not None:
                outcomes.append(error if isinstance(error, Exception) else KafkaError(repr(error)))
            else:
                meta = item.result()
                outcomes.append(Position(meta.partition, meta.offset))
        if any(isinstance(o, _RESET_ERRORS) for o in outcomes):
            self._replace(producer)
        return outcomes

    def _replace(self, broken: AIOKafkaProducer) -> None:
        # In the background: the failing request answers now, the next ones get the fresh
        # producer.
        if self._factory is not None and self._reset_task is None:
            self._reset_task = asyncio.create_task(self._reset(broken))
            self._reset_task.add_done_callback(self._reset_done)

    def _reset_done(self, _task: asyncio.Task[None]) -> None:
        self._reset_task = None

    async def _reset(self, broken: AIOKafkaProducer) -> None:
        assert self._factory is not None
        log.warning("replacing the Kafka producer after a producer-sequence error")
        fresh = self._factory()
        try:
            await asyncio.wait_for(fresh.start(), self._timeout)
        except Exception:
            with contextlib.suppress(Exception):
                await fresh.stop()
            return  # broker still away: keep the old one, try again on the next error
        self._producer = fresh
        with contextlib.suppress(Exception):
            await asyncio.wait_for(broken.stop(), self._timeout)

    async def stop(self) -> None:
        if self._reset_task is not None:
            self._reset_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reset_task
        await self._producer.stop()


class _OncePerInterval(logging.Filter):
    """Lets each distinct message template through at most once per interval.

    While the broker is down aiokafka logs every reconnect attempt (tens of thousands of lines a
    second were measured in the fault tests), which would bury everything else.
    """

    def __init__(self, interval_s: float) -> None:
        super().__init__()
        self._interval = interval_s
        self._last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("aiokafka"):
            return True
        now = record.created
        key = f"{record.name}:{record.msg}"
        if now - self._last.get(key, float("-inf")) < self._interval:
            return False
        if len(self._last) > 1000:
            self._last.clear()
        self._last[key] = now
        return True


def quiet_client_logs(interval_s: float = 10.0) -> None:
    """Rate-limit the Kafka client's repeated messages in this process's logs.

    Call after logging is configured: the filter sits on the root handlers, where records of
    every aiokafka.* logger pass (a filter on a logger would not cover its children).
    """
    for handler in logging.getLogger().handlers:
        handler.addFilter(_OncePerInterval(interval_s))
