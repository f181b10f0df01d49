"""Configuration from environment variables, read once per process.

Every port, URL and limit is configurable so that several stacks (a developer's `make up`, a
CI run, a benchmark) can share one machine.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

REPO_ROOT = Path(__file__).resolve().parent.parent


def _env(name: str, default: str) -> str:
    value = os.environ.get(name)
    return value if value else default


def _env_int(name: str, default: int) -> int:
    return int(_env(name, str(default)))


def _env_float(name: str, default: float) -> float:
    return float(_env(name, str(default)))


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    kafka_bootstrap_servers: str
    database_url: str
    topic: str
    topic_partitions: int
    dead_letter_topic: str
    command_host: str
    command_port: int
    query_host: str
    query_port: int
    projector_host: str
    projector_port: int
    token_secret: str
    token_ttl_s: int
    consistency_timeout_s: float
    projector_group: str
    worker_id: int
    timeline_cap: int
    max_body_bytes: int
    produce_timeout_s: float
    access_log: str = "errors"  # shared.metrics.ACCESS_LOG_MODES
    # Followers from which an author's new posts are delivered by pull (hybrid fan-out); 0: never.
    pull_threshold: int = 10_000
    # How long a live projector's fetch waits for 64 KB of records before it returns fewer:
    # each fetch that returns to an idle projector is a batch and its transaction (runner.py says
    # why 50).
    projector_fetch_wait_ms: int = 50

    @property
    def command_url(self) -> str:
        return f"http://{self.command_host}:{self.command_port}"

    @property
    def projector_url(self) -> str:
        return f"http://{self.projector_host}:{self.projector_port}"

    @property
    def query_url(self) -> str:
        return f"http://{self.query_host}:{self.query_port}"


def load() -> Settings:
    """Read the settings; defaults match the stack `make up` starts."""
    kafka_port = _env_int("MB_KAFKA_PORT", 19092)
    pg_port = _env_int("MB_PG_PORT", 15432)
    return Settings(
        kafka_bootstrap_servers=_env("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{kafka_port}"),
        database_url=_env(
            "DATABASE_URL", f"postgresql://microblog:microblog@127.0.0.1:{pg_port}/microblog"
        ),
        topic=_env("MB_TOPIC", "microblog.events"),
        topic_partitions=_env_int("MB_TOPIC_PARTITIONS", 12),
        dead_letter_topic=_env("MB_DEAD_LETTER_TOPIC", "microblog.events.dlq"),
        command_host=_env("MB_COMMAND_HOST", "127.0.0.1"),
        command_port=_env_int("MB_COMMAND_PORT", 8001),
        query_host=_env("MB_QUERY_HOST", "127.0.0.1"),
        query_port=_env_int("MB_QUERY_PORT", 8002),
        projector_host=_env("MB_PROJECTOR_HOST", "127.0.0.1"),
        projector_port=_env_int("MB_PROJECTOR_PORT", 8003),
        # The default secret is for local development only; deployments must set their own.
        token_secret=_env("MB_TOKEN_SECRET", "dev-only-secret-change-me"),
        token_ttl_s=_env_int("MB_TOKEN_TTL_S", 7 * 24 * 3600),
        consistency_timeout_s=_env_float("MB_CONSISTENCY_TIMEOUT_S", 5.0),
        projector_group=_env("MB_PROJECTOR_GROUP", "microblog-projector"),
        worker_id=_env_int("MB_WORKER_ID", os.getpid() % 1024),
        timeline_cap=_env_int("MB_TIMELINE_CAP", 800),
        max_body_bytes=_env_int("MB_MAX_BODY_BYTES", 64 * 1024),
        produce_timeout_s=_env_float("MB_PRODUCE_TIMEOUT_S", 10.0),
        access_log=_env("MB_ACCESS_LOG", "errors"),
        pull_threshold=_env_int("MB_PULL_THRESHOLD", 10_000),
        projector_fetch_wait_ms=_env_int("MB_PROJECTOR_FETCH_WAIT_MS", 50),
    )
