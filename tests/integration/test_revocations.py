"""Logout across services with the in-memory revoked-token sets (shared/revocations.py), and
their fallback to the database while the LISTEN connection is down, against real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from services.command.app import create_app as create_command_app
from services.query.app import create_app as create_query_app
from shared.auth import issue_token, verify_token
from shared.listener import Listener
from shared.revocations import REVOCATIONS, Revocations
from shared.settings import Settings
from tests.infra import unique_name
from tests.integration.test_command_domain import user

pytestmark = pytest.mark.integration

BOUND_S = 10.0  # a bound for waits on another connection, not a timing assertion


async def until(condition: Any, what: str) -> None:
    for _ in range(int(BOUND_S / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not within {BOUND_S} s: {what}")


@pytest.fixture(scope="module")
def query_settings(settings: Settings) -> Settings:
    return msgspec.structs.replace(settings, topic=unique_name("revocation_events"))


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def command(settings: Settings) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(create_command_app(settings))) as c:
        yield c


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def query(query_settings: Settings) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(create_query_app(query_settings))) as c:
        yield c


def revocations(client: TestClient[Any, Any]) -> Revocations:
    assert client.app is not None
    return client.app[REVOCATIONS]


async def test_logout_refuses_the_token_in_both_services(
    command: TestClient[Any, Any], query: TestClient[Any, Any]
) -> None:
    alice = await user(command)
    auth = {"Authorization": f"Bearer {alice.token}"}
    await until(lambda: revocations(command).live and revocations(query).live, "sets loaded")
    assert (await query.get("/v1/timelines/home", headers=auth)).status == 200

    assert (await command.delete("/v1/sessions/current", headers=auth)).status == 204
    # The process that logged out knows at once, without waiting for its own NOTIFY.
    refused = await command.post("/v1/posts", json={"text": "hi"}, headers=auth)
    assert refused.status == 401
    nonce = alice.token.split(".")[2]
    await until(lambda: nonce in revocations(query), "the query service heard the NOTIFY")
    response = await query.get("/v1/timelines/home", headers=auth)
    assert response.status == 401
    assert (await response.json())["code"] == "invalid_token"


async def test_reload_loads_what_was_revoked_before(
    settings: Settings, db: asyncpg.Connection
) -> None:
    nonce = unique_name("n")
    await db.execute(
        "INSERT INTO cmd_revoked_tokens (nonce, expires_at) VALUES ($1, now() + interval '1 h')",
        nonce,
    )
    fresh = Revocations()
    await fresh.reload(db)
    assert fresh.live and nonce in fresh


async def test_a_dropped_listener_falls_back_to_the_database_and_recovers(
    query: TestClient[Any, Any], query_settings: Settings, db: asyncpg.Connection
) -> None:
    memory = revocations(query)
    await until(lambda: memory.live, "set loaded")
    token, _ = issue_token(query_settings.token_secret, 42, 3600)
    claims = verify_token(query_settings.token_secret, token)
    assert claims is not None
    auth = {"Authorization": f"Bearer {token}"}
    assert (await query.get("/v1/timelines/home", headers=auth)).status == 200

    killed = await db.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE application_name = 'microblog-query-listener' AND datname = current_database()"
    )
    assert killed >= 1
    await until(lambda: not memory.live, "the drop is noticed")
    # Revoked while nobody listens: its NOTIFY is lost, yet the token is refused at once
    # (database fallback) and stays refused once the set is trusted again (reload).
    await db.execute(
        "INSERT INTO cmd_revoked_tokens (nonce, expires_at) VALUES ($1, now() + interval '1 h')",
        claims.nonce,
    )
    assert (await query.get("/v1/timelines/home", headers=auth)).status == 401
    await until(lambda: memory.live, "the listener reconnects and reloads")
    assert claims.nonce in memory
    assert (await query.get("/v1/timelines/home", headers=auth)).status == 401


async def test_listener_reports_loss_and_readiness(
    settings: Settings, db: asyncpg.Connection
) -> None:
    memory = Revocations()
    listener = Listener(settings.database_url, retry_s=0.05, application_name="revocation-test")
    memory.listen(listener)
    listener.start()
    try:
        await until(listener.ready.is_set, "listening")
        nonce = unique_name("n")
        await db.execute(
            "INSERT INTO cmd_revoked_tokens (nonce, expires_at)"
            " VALUES ($1, now() + interval '1 h')",
            nonce,
        )
        await until(lambda: nonce in memory, "notified")
        await db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'revocation-test' AND datname = current_database()"
        )
        await until(lambda: not memory.live, "loss noticed")
        await until(lambda: memory.live and listener.ready.is_set(), "back")
    finally:
        await listener.stop()
    assert not memory.live
