"""The query service under faults and abuse: PostgreSQL down (503, then recovery without a
restart), revoked tokens, oversize requests, rate limits, and a prompt clean exit on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

import aiohttp
import asyncpg
import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.query.app import create_app
from shared.auth import verify_token
from shared.devstack import free_port
from shared.ratelimit import RateLimits
from shared.revocations import REVOCATIONS
from shared.settings import REPO_ROOT, Settings
from tests.integration import test_query_api as api
from tests.integration.test_query_api import PROBLEM, Seed, assert_problem

pytestmark = pytest.mark.integration

client, seed, query_settings = api.client, api.seed, api.query_settings


async def test_postgres_unreachable_is_503_not_500_nor_a_hang(query_settings: Settings) -> None:
    dead = msgspec.structs.replace(
        query_settings, database_url=f"postgresql://nobody:x@127.0.0.1:{free_port()}/none"
    )
    # The service starts without PostgreSQL (its pool connects lazily) and says so.
    async with TestClient(TestServer(create_app(dead))) as c:
        async with asyncio.timeout(20):
            for path in ("/v1/posts/1", "/v1/timelines/public", "/v1/users/1/posts"):
                await assert_problem(await c.get(path), 503, "database_unavailable")
            await assert_problem(await c.get("/readyz"), 503, "not_ready")
            assert (await c.get("/healthz")).status == 200


async def test_recovers_by_itself_when_connections_die(
    client: Any, seed: Seed, db: asyncpg.Connection
) -> None:
    post = await seed.post(await seed.user())
    assert (await client.get(f"/v1/posts/{post}")).status == 200
    killed = await db.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE application_name = 'microblog-query' AND datname = current_database()"
    )
    assert killed >= 1
    statuses = []
    for _ in range(5):
        response = await client.get(f"/v1/posts/{post}")
        statuses.append(response.status)
        if response.status == 200:
            break
        assert response.content_type == PROBLEM
    # At most the requests that ran on a killed connection fail, and those with 503.
    assert statuses[-1] == 200
    assert set(statuses[:-1]) <= {503}


async def test_revoked_token_is_401(client: Any, seed: Seed, db: asyncpg.Connection) -> None:
    user = await seed.user()
    headers = seed.auth(user)
    assert (await client.get("/v1/timelines/home", headers=headers)).status == 200
    claims = verify_token(seed.secret, headers["Authorization"].split(" ", 1)[1])
    assert claims is not None
    await db.execute(
        "INSERT INTO cmd_revoked_tokens (nonce, expires_at) VALUES ($1, now() + interval '1 h')",
        claims.nonce,
    )
    # Other processes learn of a logout by NOTIFY, delivered shortly after the commit
    # (shared/revocations.py); the query service refuses the token from then on.
    for _ in range(1000):
        if claims.nonce in client.app[REVOCATIONS]:
            break
        await asyncio.sleep(0.01)
    for path in ("/v1/timelines/home", "/v1/timelines/public", "/v1/streaming/home"):
        await assert_problem(await client.get(path, headers=headers), 401, "invalid_token")


async def test_oversize_requests_are_refused(client: Any) -> None:
    await assert_problem(
        await client.get("/v1/timelines/public?q=" + "a" * 5000), 414, "query_too_long", "query"
    )
    headers = {f"X-Pad-{i}": "b" * 6000 for i in range(3)}
    await assert_problem(
        await client.get("/v1/timelines/public", headers=headers), 431, "headers_too_large"
    )


async def test_rate_limit_answers_429(query_settings: Settings, seed: Seed) -> None:
    app = create_app(query_settings, RateLimits(per_token=2, per_ip=0, window_s=60))
    headers = seed.auth(await seed.user())
    async with TestClient(TestServer(app)) as c:
        for _ in range(2):
            assert (await c.get("/v1/timelines/home", headers=headers)).status == 200
        limited = await c.get("/v1/timelines/home", headers=headers)
        await assert_problem(limited, 429, "rate_limited")
        assert "Retry-After" in limited.headers


async def test_sigterm_exits_0_promptly_with_an_open_stream(
    query_settings: Settings, seed: Seed
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": query_settings.database_url,
        "MB_TOPIC": query_settings.topic,
        "MB_TOKEN_SECRET": query_settings.token_secret,
        "MB_QUERY_PORT": str(port),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.query",
        cwd=REPO_ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            async with asyncio.timeout(30):
                while True:
                    try:
                        async with http.get(f"{base}/healthz") as r:
                            if r.status == 200:
                                break
                    except aiohttp.ClientConnectionError:
                        await asyncio.sleep(0.1)
            stream = await http.get(
                f"{base}/v1/streaming/home", headers=seed.auth(await seed.user())
            )
            assert stream.status == 200
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(10):
                assert await proc.wait() == 0
            stream.close()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
