"""What every fault scenario shares: an HTTP client that records a history, load generators, a
synthetic event log, read-model checksums and catch-up waits. (The clean rebuild to compare
against is FaultStack.differences_from_clean_rebuild in conftest.py: it runs a process.)"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared import codec
from shared.events import (
    BlockCreated,
    BlockData,
    Event,
    FollowCreated,
    FollowData,
    FollowRemoved,
    PostCreated,
    PostCreatedData,
    PostDeleted,
    PostDeletedData,
    UserRegistered,
    UserRegisteredData,
    new_event,
)
from shared.settings import Settings
from tests.fault.history import History, Outcome, Verdict, check, classify_status

PASSWORD = "correct horse battery"

# ------------------------------------------------------------------ HTTP with a history


class Account(msgspec.Struct):
    username: str
    user_id: str
    token: str


def client_session(timeout_s: float) -> aiohttp.ClientSession:
    # A fresh connection per request: a keep-alive connection to a killed server would turn
    # a request that was never sent into a reset, which the history would have to call unknown.
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(force_close=True, limit=0),
        timeout=aiohttp.ClientTimeout(total=timeout_s),
    )


async def request(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    history: History | None = None,
    key: str = "",
    **kw: Any,
) -> tuple[int | None, Any, Outcome]:
    """Send one request and classify it; with a history, record it under `key`."""
    started = time.monotonic()
    status: int | None = None
    body: Any = None
    detail = ""
    try:
        async with http.request(method, url, **kw) as resp:
            status = resp.status
            body = await resp.json(content_type=None)
        outcome = classify_status(status)
    except aiohttp.ClientConnectorError as exc:
        # Refused before anything was sent: nothing can have happened.
        outcome, detail = Outcome.FAILED, f"connect: {exc.__class__.__name__}"
    except (TimeoutError, aiohttp.ClientError) as exc:
        outcome, detail = Outcome.UNKNOWN, exc.__class__.__name__
    if history is not None:
        history.record(key, outcome, status, started, detail)
    return status, body, outcome


async def register(http: aiohttp.ClientSession, command_url: str, username: str) -> Account:
    status, body, _ = await request(
        http,
        "POST",
        f"{command_url}/v1/accounts",
        json={"username": username, "password": PASSWORD},
    )
    assert status == 201, (status, body)
    status, body, _ = await request(
        http,
        "POST",
        f"{command_url}/v1/sessions",
        json={"username": username, "password": PASSWORD},
    )
    assert status == 200, (status, body)
    return Account(username, body["user_id"], body["token"])


async def follow(http: aiohttp.ClientSession, command_url: str, who: Account, whom: Account) -> str:
    status, body, _ = await request(
        http,
        "PUT",
        f"{command_url}/v1/users/{whom.user_id}/follow",
        headers={"Authorization": f"Bearer {who.token}"},
    )
    assert status == 202, (status, body)
    return str(body["position"])


async def create_post(
    http: aiohttp.ClientSession,
    command_url: str,
    author: Account,
    text: str,
    history: History,
    idempotency_key: str | None = None,
) -> tuple[int | None, Any, Outcome]:
    """POST /v1/posts; the text doubles as the operation's key in the history."""
    headers = {"Authorization": f"Bearer {author.token}"}
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    return await request(
        http,
        "POST",
        f"{command_url}/v1/posts",
        history=history,
        key=text,
        json={"text": text},
        headers=headers,
    )


async def stream_posts(
    http: aiohttp.ClientSession,
    command_url: str,
    authors: Sequence[Account],
    history: History,
    prefix: str,
    stop: asyncio.Event,
    *,
    max_per_author: int = 500,
    pause_s: float = 0.05,
) -> None:
    """One writer per author posting '<prefix> <author> <n>' until `stop` is set (or the
    bound is reached), every attempt recorded."""

    async def writer(author: Account) -> None:
        for n in range(max_per_author):
            if stop.is_set():
                return
            await create_post(http, command_url, author, f"{prefix} {author.username} {n}", history)
            await asyncio.sleep(pause_s)

    await asyncio.gather(*(writer(a) for a in authors))


class Read(msgspec.Struct, frozen=True):
    """One GET of a read loop: when it was sent, its answer's status (None: no answer), its
    outcome (failed when the connection was refused, unknown when it was cut), how long."""

    started: float
    status: int | None
    outcome: Outcome
    latency_s: float


async def read_loop(
    http: aiohttp.ClientSession, query_url: str, reader: Account, stop: asyncio.Event
) -> list[Read]:
    """The reader's home timeline, read every 50 ms until `stop` (bounded), every answer kept."""
    reads: list[Read] = []
    headers = {"Authorization": f"Bearer {reader.token}"}
    for _ in range(2000):
        if stop.is_set():
            break
        started = time.monotonic()
        status, _, outcome = await request(
            http, "GET", f"{query_url}/v1/timelines/home", headers=headers
        )
        reads.append(Read(started, status, outcome, time.monotonic() - started))
        await asyncio.sleep(0.05)
    return reads


async def post_counts(conn: asyncpg.Connection, prefix: str) -> Counter[str]:
    """How many rows of `posts` carry each text starting with prefix (the operations' keys)."""
    rows = await conn.fetch(
        "SELECT text, count(*) AS n FROM posts WHERE starts_with(text, $1) GROUP BY text", prefix
    )
    return Counter({r["text"]: r["n"] for r in rows})


# ------------------------------------------------------------------ a synthetic log


def synthetic_log(
    seed: int,
    users: int,
    follows: int,
    posts: int,
    *,
    unfollows: int = 0,
    deletes: int = 0,
    blocks: int = 0,
    replies: int = 0,
    id_base: int = 10**15,
) -> list[Event]:
    """A realistic mix of events, each user's in a plausible order: register first, then
    follow, post, unfollow, delete and block. Post texts are unique ('post <post_id>'). About
    `replies` of the posts reply to one of the first 20 (threads that draw many replies, from
    authors on every partition)."""
    rng = random.Random(seed)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    clock = iter(start + timedelta(milliseconds=i) for i in range(10**9))
    user_ids = [id_base + i for i in range(users)]
    log: list[Event] = [
        new_event(
            UserRegistered,
            actor_id=u,
            data=UserRegisteredData(user_id=u, username=f"f{seed}_{u - id_base}"),
            now=next(clock),
        )
        for u in user_ids
    ]
    edges: set[tuple[int, int]] = set()
    while len(edges) < follows:
        a, b = rng.sample(user_ids, 2)
        edges.add((a, b))
    body: list[Event] = [
        new_event(
            FollowCreated,
            actor_id=a,
            data=FollowData(follower_id=a, followee_id=b),
            now=next(clock),
        )
        for a, b in sorted(edges, key=lambda e: rng.random())
    ]
    post_ids: list[tuple[int, int]] = []
    for i in range(posts):
        author = rng.choice(user_ids)
        pid = id_base * 10 + i
        parent = None
        if replies and i >= 20 and rng.random() < replies / posts:
            parent = rng.choice(post_ids[:20])
        post_ids.append((pid, author))
        body.append(
            new_event(
                PostCreated,
                actor_id=author,
                data=PostCreatedData(
                    post_id=pid,
                    author_id=author,
                    text=f"post {pid}",
                    in_reply_to_id=parent[0] if parent else None,
                    in_reply_to_author_id=parent[1] if parent else None,
                ),
                now=next(clock),
            )
        )
    # Interleave follows and posts so fan-out and merges race across partitions.
    rng.shuffle(body)
    for a, b in rng.sample(sorted(edges), unfollows):
        body.append(
            new_event(
                FollowRemoved,
                actor_id=a,
                data=FollowData(follower_id=a, followee_id=b),
                now=next(clock),
            )
        )
    for pid, author in rng.sample(post_ids, deletes):
        body.append(
            new_event(
                PostDeleted,
                actor_id=author,
                data=PostDeletedData(post_id=pid, author_id=author),
                now=next(clock),
            )
        )
    for _ in range(blocks):
        a, b = rng.sample(user_ids, 2)
        body.append(
            new_event(
                BlockCreated,
                actor_id=a,
                data=BlockData(blocker_id=a, blocked_id=b),
                now=next(clock),
            )
        )
    return log + body


async def produce(settings: Settings, events: Sequence[Event]) -> None:
    """Append events as fast as the broker takes them; returns once every one is acked."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        enable_idempotence=True,
        acks="all",
        linger_ms=5,
        max_batch_size=512 * 1024,
    )
    await producer.start()
    try:
        futures = [
            await producer.send(
                settings.topic,
                value=codec.encode(e),
                key=codec.partition_key(e),
                headers=codec.headers(e),
            )
            for e in events
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def _partitions(settings: Settings) -> list[TopicPartition]:
    # ensure_topics created the topic with this many partitions.
    return [TopicPartition(settings.topic, p) for p in range(settings.topic_partitions)]


async def topic_records(settings: Settings) -> list[tuple[int, int, bytes]]:
    """Every record on the events topic as (partition, offset, value), read from offset 0."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = _partitions(settings)
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[tuple[int, int, bytes]] = []
        remaining = {tp for tp in tps if ends[tp] > 0}
        deadline = time.monotonic() + 60
        while remaining:
            assert time.monotonic() < deadline, f"could not read {remaining} to their ends {ends}"
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for recs in batch.values():
                out.extend((r.partition, r.offset, r.value or b"") for r in recs)
            # By position, not by the last record's offset: the log may end in offsets that
            # hold no data record (e.g. a control batch), which a consumer never returns.
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        return out
    finally:
        await consumer.stop()


async def end_offsets(settings: Settings) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
    async with asyncio.timeout(30):  # a broker that is not back yet fails here, not hangs
        await consumer.start()
    try:
        tps = _partitions(settings)
        async with asyncio.timeout(30):
            ends = await consumer.end_offsets(tps)
        return {tp.partition: off for tp, off in ends.items()}
    finally:
        await consumer.stop()


async def projected(conn: asyncpg.Connection, topic: str) -> dict[int, int]:
    rows = await conn.fetch(
        "SELECT partition, next_offset FROM projector_offsets WHERE topic = $1", topic
    )
    return {r["partition"]: r["next_offset"] for r in rows}


async def progress(dsn: str, topic: str) -> int:
    """Events the projector has committed, over all partitions (0 while the database is down)."""
    try:
        conn = await asyncpg.connect(dsn, timeout=3)
    except (OSError, asyncpg.PostgresError):
        return 0
    try:
        return sum((await projected(conn, topic)).values())
    finally:
        await conn.close()


async def wait_progress_beyond(dsn: str, topic: str, value: int, timeout_s: float) -> int:
    """Until the projector has committed more than `value` events; returns the new count."""
    deadline = time.monotonic() + timeout_s
    while (now := await progress(dsn, topic)) <= value:
        assert time.monotonic() < deadline, f"projector stuck at {now} events for {timeout_s}s"
        await asyncio.sleep(0.02)
    return now


async def wait_caught_up(settings: Settings, timeout_s: float) -> None:
    """Until the projector has committed every record now on the topic (fails after timeout_s)."""
    ends = await end_offsets(settings)
    deadline = time.monotonic() + timeout_s
    done: dict[int, int] = {}
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            conn = await asyncpg.connect(settings.database_url, timeout=3)
            try:
                done = await projected(conn, settings.topic)
            finally:
                await conn.close()
        if all(done.get(p, 0) >= end for p, end in ends.items()):
            return
        await asyncio.sleep(0.2)
    behind = {p: (done.get(p, 0), end) for p, end in ends.items() if done.get(p, 0) < end}
    raise AssertionError(
        f"projector did not catch up within {timeout_s}s: {behind}\n{await diagnose(settings)}"
    )


async def diagnose(settings: Settings) -> str:
    """What the database's sessions are doing, for a failure message."""
    try:
        conn = await asyncpg.connect(settings.database_url, timeout=3)
    except (OSError, asyncpg.PostgresError) as exc:
        return f"(database unreachable: {exc!r})"
    try:
        rows = await conn.fetch(
            "SELECT pid, state, wait_event_type, wait_event, xact_start, left(query, 160) AS q"
            " FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        offsets = await conn.fetch(
            "SELECT partition, next_offset, epoch FROM projector_offsets WHERE topic = $1"
            " ORDER BY partition",
            settings.topic,
        )
    finally:
        await conn.close()
    return (
        "sessions:\n"
        + "\n".join(str(dict(r)) for r in rows)
        + "\noffsets: "
        + str([tuple(r) for r in offsets])
    )


# ------------------------------------------------------------------ checksums and rebuilds

# Columns that record when a row was written, not what the log says.
_VOLATILE = {("dead_letters", "id"), ("dead_letters", "recorded_at")}
# Not read models: the command side's own tables and the projector's bookkeeping.
_NOT_READ_MODELS = ("cmd_", "schema_migrations", "projector_offsets")


async def read_model_checksums(conn: asyncpg.Connection) -> dict[str, tuple[int, str]]:
    """(row count, md5) of every read-model table, rows ordered by primary key. Tables are
    discovered, so a read model added later is compared without touching this code."""
    tables = [
        r["table_name"]
        for r in await conn.fetch(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY table_name"
        )
        if not r["table_name"].startswith(_NOT_READ_MODELS)
    ]
    sums: dict[str, tuple[int, str]] = {}
    for table in tables:
        columns = [
            r["column_name"]
            for r in await conn.fetch(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position",
                table,
            )
            if (table, r["column_name"]) not in _VOLATILE
        ]
        pk = [
            r["attname"]
            for r in await conn.fetch(
                "SELECT a.attname FROM pg_index i"
                " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
                " WHERE i.indrelid = $1::regclass AND i.indisprimary ORDER BY a.attnum",
                table,
            )
            if (table, r["attname"]) not in _VOLATILE
        ]
        cols = ", ".join(f'"{c}"' for c in columns)
        # After the key, the whole row: a total order even where the key was left out.
        order = ", ".join([*(f'"{c}"' for c in pk), "r::text"])
        row = await conn.fetchrow(
            f"SELECT count(*) AS n, md5(coalesce(string_agg(r::text, E'\\n' ORDER BY {order}),"
            f" '')) AS sum FROM (SELECT {cols} FROM \"{table}\") r"
        )
        assert row is not None
        sums[table] = (row["n"], row["sum"])
    return sums


async def drop_database(admin_url: str, url: str) -> None:
    name = url.rpartition("/")[2]
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def table_rows(url: str, table: str) -> set[str]:
    """Every row of a (small) table as text, for showing how two databases differ."""
    conn = await asyncpg.connect(url)
    try:
        return {r[0] for r in await conn.fetch(f'SELECT t::text FROM "{table}" t')}
    finally:
        await conn.close()


async def checksums_of(url: str) -> dict[str, tuple[int, str]]:
    conn = await asyncpg.connect(url)
    try:
        return await read_model_checksums(conn)
    finally:
        await conn.close()


async def check_events(url: str, events: Sequence[Event]) -> Verdict:
    """Check a log of events, all acknowledged by the broker (so all ok operations), against
    the read model: posts are keyed by their text, deletes by the post they remove (visible
    once when the post is gone), registrations by user id."""
    deleted = {e.data.post_id for e in events if isinstance(e, PostDeleted)}
    outcomes: dict[str, Outcome] = {}
    for e in events:
        if isinstance(e, PostCreated) and e.data.post_id not in deleted:
            outcomes[e.data.text] = Outcome.OK
        elif isinstance(e, PostDeleted):
            outcomes[f"delete {e.data.post_id}"] = Outcome.OK
        elif isinstance(e, UserRegistered):
            outcomes[f"user {e.data.user_id}"] = Outcome.OK
    conn = await asyncpg.connect(url)
    try:
        seen: dict[str, int] = dict(await post_counts(conn, "post "))
        present = {r["post_id"] for r in await conn.fetch("SELECT post_id FROM posts")}
        for row in await conn.fetch("SELECT user_id, count(*) AS n FROM users GROUP BY user_id"):
            seen[f"user {row['user_id']}"] = row["n"]
    finally:
        await conn.close()
    for post_id in deleted:
        # A delete is visible once when its post is gone; the deleted post's text then is too.
        seen[f"delete {post_id}"] = 0 if post_id in present else 1
        seen.pop(f"post {post_id}", None)
    return check(outcomes, seen)
