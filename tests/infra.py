"""Where the tests get real Kafka and PostgreSQL from (DESIGN.md §6, in this order):

1. `KAFKA_BOOTSTRAP_SERVERS` and `DATABASE_URL` from the environment;
2. testcontainers, when a Docker engine answers;
3. the project's own local Kafka and PostgreSQL (shared/devstack.py), started for the session.

Under CI=true a missing broker or database fails the run; it is never a skip.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from shared.devstack import Kafka, Postgres
from shared.settings import REPO_ROOT


def _docker_answers() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


@contextlib.contextmanager
def infrastructure() -> Iterator[tuple[str, str]]:
    """Yield (kafka_bootstrap, postgres_admin_url) for the whole test session."""
    env_kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    env_db = os.environ.get("DATABASE_URL")
    if env_kafka and env_db:
        yield env_kafka, env_db
        return
    if os.environ.get("MB_TEST_USE_DOCKER", "auto") != "never" and _docker_answers():
        from testcontainers.kafka import KafkaContainer
        from testcontainers.postgres import PostgresContainer

        with (
            KafkaContainer("confluentinc/cp-kafka:7.6.1").with_kraft() as kafka,
            PostgresContainer("postgres:16", driver=None) as pg,
        ):
            yield kafka.get_bootstrap_server(), pg.get_connection_url()
        return
    state = Path(os.environ.get("MB_TEST_STATE_DIR", REPO_ROOT / "var" / "test"))
    kafka = Kafka(state / "kafka", int(os.environ.get("MB_TEST_KAFKA_PORT", "29092")))
    pg = Postgres(state / "postgres", int(os.environ.get("MB_TEST_PG_PORT", "25432")))
    try:
        kafka.start()
        pg.start()
        yield kafka.bootstrap, pg.url
    finally:
        pg.stop()
        kafka.stop()


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"
