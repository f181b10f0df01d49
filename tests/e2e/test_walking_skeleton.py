"""End to end, through HTTP only, against the three services running as processes on real
Kafka and PostgreSQL. Reads use X-Consistency-Position instead of sleeps."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, TopicPartition

from tests.e2e.conftest import Stack

pytestmark = pytest.mark.e2e


class Client:
    def __init__(self, http: aiohttp.ClientSession, stack: Stack) -> None:
        self.http, self.stack = http, stack
        self.token: str | None = None
        self.user_id: str | None = None
        self.name = f"u{uuid.uuid4().hex[:12]}"

    def _auth(self, position: str | None = None) -> dict[str, str]:
        h = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        if position:
            h["X-Consistency-Position"] = position
        return h

    async def command(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        headers = {**self._auth(), **kw.pop("headers", {})}
        async with self.http.request(
            method, f"{self.stack.command.url}{path}", json=body, headers=headers, **kw
        ) as resp:
            return resp.status, await resp.json(content_type=None)

    async def query(self, path: str, position: str | None = None) -> tuple[int, Any]:
        async with self.http.get(
            f"{self.stack.query.url}{path}", headers=self._auth(position)
        ) as resp:
            return resp.status, await resp.json(content_type=None)

    async def register(self) -> str:
        status, body = await self.command(
            "POST", "/v1/accounts", {"username": self.name, "password": "correct horse"}
        )
        assert status == 201, body
        self.user_id = body["user_id"]
        status, body = await self.command(
            "POST", "/v1/sessions", {"username": self.name, "password": "correct horse"}
        )
        assert status == 200, body
        self.token = body["token"]
        return str(body["user_id"])

    async def ok(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        status, answer = await self.command(method, path, body)
        assert 200 <= status < 300, (status, answer)
        assert ":" in answer["position"]
        return dict(answer)

    async def home(self, position: str) -> list[str]:
        status, body = await self.query("/v1/timelines/home?limit=40", position)
        assert status == 200, body
        return [item["post_id"] for item in body]


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


async def end_offsets(stack: Stack) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.settings.kafka_bootstrap_servers)
    await consumer.start()
    try:
        parts = [
            TopicPartition(stack.settings.topic, p) for p in range(stack.settings.topic_partitions)
        ]
        ends = await consumer.end_offsets(parts)
        return {tp.partition: off for tp, off in ends.items()}
    finally:
        await consumer.stop()


async def test_follow_post_block_delete_flow(stack: Stack, http: aiohttp.ClientSession) -> None:
    a, b, c = Client(http, stack), Client(http, stack), Client(http, stack)
    for client in (a, b, c):
        await client.register()

    await a.ok("PUT", f"/v1/users/{b.user_id}/follow")
    await b.ok("PUT", f"/v1/users/{a.user_id}/follow")
    # The follow is on A's partition, the post on B's: wait for both before reading.
    f = await a.ok("PUT", f"/v1/users/{b.user_id}/follow")
    await a.home(f["position"])
    posted = await b.ok("POST", "/v1/posts", {"text": "hello from B"})

    assert posted["post_id"] in await a.home(posted["position"])
    assert posted["post_id"] not in await c.home(posted["position"])
    status, item = await c.query(f"/v1/posts/{posted['post_id']}", posted["position"])
    assert status == 200 and item["text"] == "hello from B"
    assert item["author"]["username"] == b.name

    # A blocks B: B's posts leave A's timeline and B's follow of A is gone.
    blocked = await a.ok("PUT", f"/v1/users/{b.user_id}/block")
    assert posted["post_id"] not in await a.home(blocked["position"])
    status, profile = await a.query(f"/v1/users/{a.user_id}", blocked["position"])
    assert status == 200 and profile["followers_count"] == 0
    status, _ = await a.query(f"/v1/posts/{posted['post_id']}", blocked["position"])
    assert status == 404

    # B deletes a post that C sees: gone from every timeline, and the post itself is 404.
    f = await c.ok("PUT", f"/v1/users/{b.user_id}/follow")
    await c.home(f["position"])
    doomed = await b.ok("POST", "/v1/posts", {"text": "soon gone"})
    assert doomed["post_id"] in await c.home(doomed["position"])
    assert doomed["post_id"] in await b.home(doomed["position"])
    deleted = await b.ok("DELETE", f"/v1/posts/{doomed['post_id']}")
    assert doomed["post_id"] not in await c.home(deleted["position"])
    assert doomed["post_id"] not in await b.home(deleted["position"])
    status, _ = await c.query(f"/v1/posts/{doomed['post_id']}", deleted["position"])
    assert status == 404


async def test_bad_input_is_rejected_and_writes_nothing(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    a = Client(http, stack)
    await a.register()
    before = await end_offsets(stack)
    cases = [
        ({"text": ""}, "text"),
        ({"text": "x" * 501}, "text"),
        ({"text": "hi", "author_id": "1"}, "author_id"),
        ({"txt": "hi"}, None),
    ]
    for body, field in cases:
        status, problem = await a.command("POST", "/v1/posts", body)
        assert status in (400, 422), (body, status, problem)
        if field:
            assert problem["field"] == field, problem
    status, problem = await a.command(
        "POST", "/v1/posts", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert status == 400
    status, problem = await a.command("PUT", f"/v1/users/{a.user_id}/follow")
    assert status == 422
    assert await end_offsets(stack) == before


async def test_projector_restarted_mid_stream_neither_loses_nor_duplicates(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    author, reader = Client(http, stack), Client(http, stack)
    await author.register()
    await reader.register()
    f = await reader.ok("PUT", f"/v1/users/{author.user_id}/follow")
    await reader.home(f["position"])

    async def post_many(n: int) -> list[dict[str, Any]]:
        return [await author.ok("POST", "/v1/posts", {"text": f"post {i}"}) for i in range(n)]

    writer = asyncio.create_task(post_many(300))
    await asyncio.sleep(0.5)
    stack.projector.kill()  # a crash in the middle of the stream
    await asyncio.sleep(0.5)
    stack.projector.start()
    answers = await writer
    last = answers[-1]["position"]

    await reader.home(last)  # waits until the restarted projector passed the last post
    conn = await asyncpg.connect(stack.settings.database_url)
    try:
        rows = await conn.fetch(
            "SELECT post_id FROM home_timeline WHERE user_id = $1 AND author_id = $2",
            int(reader.user_id or 0),
            int(author.user_id or 0),
        )
        posts = await conn.fetchval(
            "SELECT count(*) FROM posts WHERE author_id = $1", int(author.user_id or 0)
        )
    finally:
        await conn.close()
    expected = {int(a["post_id"]) for a in answers}
    assert {r["post_id"] for r in rows} == expected
    assert len(rows) == len(expected) == posts == 300


async def test_services_stop_cleanly_on_sigterm(stack: Stack) -> None:
    # Run last in this module: it stops and restarts each service.
    for svc in (stack.query, stack.projector, stack.command):
        assert svc.stop() == 0, f"{svc.name} did not exit 0 on SIGTERM"
        svc.start()
