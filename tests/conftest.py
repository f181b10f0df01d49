"""Session-wide real infrastructure: one Kafka and one PostgreSQL for the test run.

Each test session gets a database and a topic of its own, so runs never see each other's data
(several developers' runs may share one broker).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator

import asyncpg
import msgspec
import pytest
import pytest_asyncio

from shared import settings as settings_mod
from shared.db import migrate
from shared.kafka import ensure_topics
from shared.settings import Settings
from tests.infra import infrastructure, unique_name


def _with_database(url: str, database: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{database}"


@pytest.fixture(scope="session")
def infra() -> Iterator[tuple[str, str]]:
    try:
        with infrastructure() as found:
            yield found
    except Exception as exc:
        if os.environ.get("CI") == "true":
            raise  # under CI a missing broker or database is a failure, never a skip
        pytest.skip(f"no Kafka/PostgreSQL available: {exc}")


@pytest.fixture(scope="session")
def settings(infra: tuple[str, str]) -> Iterator[Settings]:
    """Settings naming a fresh database and topics, migrated and created; dropped after."""
    bootstrap, admin_url = infra
    db_name = unique_name("mbtest")

    async def prepare() -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "{db_name}"')
        finally:
            await conn.close()

    asyncio.run(prepare())
    topic = unique_name("events")
    s = msgspec.structs.replace(
        settings_mod.load(),
        kafka_bootstrap_servers=bootstrap,
        database_url=_with_database(admin_url, db_name),
        topic=topic,
        dead_letter_topic=f"{topic}.dlq",
        projector_group=unique_name("projector"),
        token_secret="test-secret",
    )
    asyncio.run(migrate(s.database_url))
    asyncio.run(ensure_topics(s))
    yield s

    async def drop() -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(drop())


@pytest_asyncio.fixture
async def db(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(settings.database_url)
    try:
        yield conn
    finally:
        await conn.close()
