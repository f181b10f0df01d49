"""Producing synthetic events, and the broker-only baselines (no service involved)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from shared import codec
from shared.events import Event


def producer(bootstrap: str, linger_ms: int = 20) -> AIOKafkaProducer:
    # The command service's guarantees (idempotent, acks=all) with batching for bulk loading.
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=True,
        acks="all",
        linger_ms=linger_ms,
        max_batch_size=512 * 1024,
    )


async def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    except TopicAlreadyExistsError:
        pass
    finally:
        await admin.close()


async def publish(bootstrap: str, topic: str, events: Iterable[Event]) -> dict[int, int]:
    """Append events (acks=all) and return the next offset per partition after them."""
    prod = producer(bootstrap)
    await prod.start()
    ends: dict[int, int] = {}
    try:
        futs = []
        for ev in events:
            futs.append(
                await prod.send(
                    topic,
                    value=codec.encode(ev),
                    key=codec.partition_key(ev),
                    headers=codec.headers(ev),
                )
            )
            if len(futs) >= 20_000:
                for md in await asyncio.gather(*futs):
                    ends[md.partition] = max(ends.get(md.partition, 0), md.offset + 1)
                futs = []
        for md in await asyncio.gather(*futs):
            ends[md.partition] = max(ends.get(md.partition, 0), md.offset + 1)
    finally:
        await prod.stop()
    return ends


async def consume_all(bootstrap: str, topic: str, total: int) -> tuple[int, float]:
    """The rebuild baseline: read `total` records from offset 0, no decoding, no writes.

    Returns (records, seconds from the first fetch to the last record).
    """
    # No group: every partition, from the beginning (nothing committed), as a rebuild reads.
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    try:
        n, t0 = 0, time.perf_counter()
        while n < total:
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            n += sum(len(v) for v in batch.values())
        return n, time.perf_counter() - t0
    finally:
        await consumer.stop()


async def produce_consume_latency(bootstrap: str, topic: str, samples: int) -> list[float]:
    """Bare broker latency: send one record (acks=all), time until a consumer sees it (ms)."""
    await create_topic(bootstrap, topic, 1)
    # One record at a time: lingering would only add its own delay to every sample.
    prod = producer(bootstrap, linger_ms=0)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="latest"
    )
    await prod.start()
    await consumer.start()
    out: list[float] = []
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_end(tp)
        await consumer.position(tp)
        for i in range(samples):
            t0 = time.perf_counter()
            await (await prod.send(topic, value=str(i).encode()))
            while True:
                rec = await consumer.getone()
                if rec.value == str(i).encode():
                    break
            out.append((time.perf_counter() - t0) * 1000)
            await asyncio.sleep(0.01)
    finally:
        await consumer.stop()
        await prod.stop()
    return out


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """The log end offset of every partition of `topic`."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        await consumer.topics()  # refreshes metadata
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in parts]
        ends = await consumer.end_offsets(tps)
        return {tp.partition: off for tp, off in ends.items() if off > 0}
    finally:
        await consumer.stop()
