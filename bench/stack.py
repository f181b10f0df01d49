"""The benchmark's own Kafka, PostgreSQL and service processes.

Kafka on 59092 and PostgreSQL on 55432 with state under var/bench/ (never the dev or test
ports), unless KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL name running ones. Each invocation
uses a fresh database and fresh topics, dropped at the end, so runs never see each other's data.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from shared.devstack import Kafka, Postgres
from shared.settings import REPO_ROOT

BENCH_STATE = REPO_ROOT / "var" / "bench"
KAFKA_PORT = 59092
PG_PORT = 55432
TOKEN_SECRET = "bench-only-secret"


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


class Infra:
    """Kafka and PostgreSQL: ours if none were named in the environment."""

    def __init__(self) -> None:
        self.kafka: Kafka | None = None
        self.pg: Postgres | None = None
        self.bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "")
        self.admin_url = os.environ.get("DATABASE_URL", "")

    def start(self) -> None:
        if not self.bootstrap:
            self.kafka = Kafka(BENCH_STATE / "kafka", KAFKA_PORT)
            self.kafka.start()
            self.bootstrap = self.kafka.bootstrap
        if not self.admin_url:
            self.pg = Postgres(BENCH_STATE / "pg", PG_PORT)
            self.pg.start()
            self.admin_url = self.pg.url

    def stop(self) -> None:
        if self.kafka is not None:
            self.kafka.stop()
        if self.pg is not None:
            self.pg.stop()

    async def create_database(self, name: str) -> str:
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return with_database(self.admin_url, name)

    async def drop_database(self, name: str) -> None:
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


def peak_rss_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) in MiB from /proc; the peak is the kernel's high-water mark."""
    cur = peak = 0.0
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                cur = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
    return cur, peak


class Process:
    """One service (or the baseline server) as a child process, ready when /readyz says 200."""

    def __init__(
        self, name: str, module: str, env: dict[str, str], url: str, logs: Path, args: list[str]
    ) -> None:
        self.name, self.module, self.env, self.url, self.logs = name, module, env, url, logs
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90.0) -> None:
        log = open(self.logs / f"{self.name}.log", "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module, *self.args],
            cwd=REPO_ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see its log")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as resp,
            ):
                if resp.status == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready within {timeout}s")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rss(self) -> tuple[float, float]:
        return peak_rss_mb(self.pid)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def service_env(
    bootstrap: str, database_url: str, topic: str, group: str, ports: dict[str, int]
) -> dict[str, str]:
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "DATABASE_URL": database_url,
        "MB_TOPIC": topic,
        "MB_DEAD_LETTER_TOPIC": topic + ".dlq",
        "MB_PROJECTOR_GROUP": group,
        "MB_TOKEN_SECRET": TOKEN_SECRET,
        "MB_COMMAND_PORT": str(ports.get("command", 0)),
        "MB_PROJECTOR_PORT": str(ports.get("projector", 0)),
        "MB_QUERY_PORT": str(ports.get("query", 0)),
        # Rate limits would throttle a load generator that is one client on one IP.
        "MB_RATE_LIMIT_PER_TOKEN": "0",
        "MB_RATE_LIMIT_PER_IP": "0",
        "PYTHONUNBUFFERED": "1",
    }


def service(name: str, env: dict[str, str], port: int, logs: Path, *args: str) -> Process:
    return Process(name, f"services.{name}", env, f"http://127.0.0.1:{port}", logs, list(args))


def projector_instance(env: dict[str, str], name: str, port: int, logs: Path) -> Process:
    """One more projector in the same consumer group (the partitions are split among them)."""
    env = {**env, "MB_PROJECTOR_PORT": str(port)}
    return Process(name, "services.projector", env, f"http://127.0.0.1:{port}", logs, [])


def baseline_server(env: dict[str, str], port: int, logs: Path) -> Process:
    env = {**env, "BENCH_BASELINE_PORT": str(port)}
    return Process("baseline", "bench.baseline_server", env, f"http://127.0.0.1:{port}", logs, [])
