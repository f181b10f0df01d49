"""Fault injection needs infrastructure it may kill: its own Kafka and PostgreSQL (never the
shared ones), started once for the session, plus a fresh database, topic and consumer group and
the three services as processes for every scenario.

Ports sit below Linux's ephemeral range (32768+), so a restart never finds its port taken by
some client's outgoing connection: MB_FAULT_KAFKA_PORT (28092; the controller takes the next
one) and MB_FAULT_PG_PORT (24432); state under MB_FAULT_STATE_DIR (var/test-fault/). Kafka and
PostgreSQL keep their data across stop()/start(), which is what the outage scenarios rely on.
"""

from __future__ import annotations

import asyncio
import faulthandler
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import msgspec
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from shared.db import migrate
from shared.devstack import Kafka, Postgres, StackError, free_port
from shared.kafka import ensure_topics
from shared.settings import REPO_ROOT, Settings
from shared.settings import load as load_settings
from tests.e2e.conftest import Service
from tests.fault.harness import checksums_of, drop_database, table_rows, wait_caught_up

STATE_DIR = Path(os.environ.get("MB_FAULT_STATE_DIR", REPO_ROOT / "var" / "test-fault"))
SUMMARY_FILE = STATE_DIR / "summary.txt"
_SUMMARIES = pytest.StashKey[list[str]]()


class FaultService(Service):
    """A service process the scenarios may start without waiting, kill and signal."""

    def spawn(self) -> None:
        """Start without waiting for readiness (a restart races the fault on purpose)."""
        log = open(self.log_dir / f"{self.name}.log", "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module],
            cwd=REPO_ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    @property
    def module(self) -> str:
        return f"services.{self.name.split('-')[0]}"

    def wait_ready(self, timeout: float = 60.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready within {timeout}s")

    def start(self, timeout: float = 60.0) -> None:
        self.spawn()
        self.wait_ready(timeout)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def sigterm(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)


class FaultInfra(msgspec.Struct):
    kafka: Kafka
    postgres: Postgres

    @property
    def admin_url(self) -> str:
        return self.postgres.url

    def restart_kafka(self) -> None:
        _start_with_retries(self.kafka.start)

    def restart_postgres(self) -> None:
        _start_with_retries(self.postgres.start)


def _start_with_retries(start: Callable[[], None], attempts: int = 5) -> None:
    # The default ports lie inside Linux's ephemeral range (32768-60999): while a server is
    # down, a client's outgoing connection may briefly own its port, and the restart's bind
    # fails with "address in use". Such a holder is short-lived, so try again.
    for attempt in range(attempts):
        try:
            start()
            return
        except (StackError, subprocess.CalledProcessError):
            if attempt == attempts - 1:
                raise
            time.sleep(1.0)


class FaultStack:
    """One scenario's database, topic, group and service processes."""

    def __init__(self, infra: FaultInfra, settings: Settings, log_dir: Path) -> None:
        self.infra, self.settings, self.log_dir = infra, settings, log_dir
        self.services: list[FaultService] = []

    def env(self, **overrides: str) -> dict[str, str]:
        s = self.settings
        return {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": s.kafka_bootstrap_servers,
            "DATABASE_URL": s.database_url,
            "MB_TOPIC": s.topic,
            "MB_DEAD_LETTER_TOPIC": s.dead_letter_topic,
            "MB_PROJECTOR_GROUP": s.projector_group,
            "MB_TOKEN_SECRET": s.token_secret,
            **overrides,
        }

    def service(self, kind: str, name: str | None = None, **env: str) -> FaultService:
        """A service process (not started) on a port of its own; `env` overrides settings."""
        port = free_port()
        port_var = {
            "command": "MB_COMMAND_PORT",
            "query": "MB_QUERY_PORT",
            "projector": "MB_PROJECTOR_PORT",
        }[kind]
        svc = FaultService(
            name or kind,
            self.env(**{port_var: str(port), **env}),
            f"http://127.0.0.1:{port}",
            self.log_dir,
        )
        self.services.append(svc)
        return svc

    async def differences_from_clean_rebuild(
        self,
    ) -> dict[str, tuple[tuple[int, str] | None, tuple[int, str] | None]]:
        """Project the whole topic once, undisturbed, into a new database and compare every
        read model's (count, checksum) with this scenario's; returns the tables that differ.

        The clean projection runs as a projector process (the same code path as production,
        and on the other core) with a group of its own, so it starts from offset 0.
        """
        name = f"fault_clean_{uuid.uuid4().hex[:10]}"
        await _create_database(self.infra.admin_url, name)
        clean = msgspec.structs.replace(
            self.settings,
            database_url=_with_database(self.infra.admin_url, name),
            projector_group=f"fault_clean_{uuid.uuid4().hex[:10]}",
        )
        try:
            projector = self.service(
                "projector",
                "projector-clean",
                DATABASE_URL=clean.database_url,
                MB_PROJECTOR_GROUP=clean.projector_group,
            )
            await asyncio.to_thread(projector.start)
            try:
                await wait_caught_up(clean, 120)
            finally:
                projector.stop()
            theirs = await checksums_of(clean.database_url)
            ours = await checksums_of(self.settings.database_url)
            differing = {
                t: (ours.get(t), theirs.get(t))
                for t in sorted(set(ours) | set(theirs))
                if ours.get(t) != theirs.get(t)
            }
            for table in differing:
                # Which rows, for the failure message: only here / only in the clean rebuild.
                mine = await table_rows(self.settings.database_url, table)
                clean_rows = await table_rows(clean.database_url, table)
                print(
                    f"{table}: {len(mine - clean_rows)} rows only after the faults, e.g."
                    f" {sorted(mine - clean_rows)[:5]}; {len(clean_rows - mine)} rows only in"
                    f" the clean rebuild, e.g. {sorted(clean_rows - mine)[:5]}"
                )
        finally:
            await drop_database(self.infra.admin_url, clean.database_url)
        return differing

    def log_tails(self, chars: int = 2500) -> str:
        parts = []
        for path in sorted(self.log_dir.glob("*.log")):
            parts.append(f"----- {path.name} -----\n{path.read_text(errors='replace')[-chars:]}")
        return "\n".join(parts)


@pytest.fixture(scope="session")
def fault_infra() -> Iterator[FaultInfra]:
    kafka = Kafka(STATE_DIR / "kafka", int(os.environ.get("MB_FAULT_KAFKA_PORT", "28092")))
    pg = Postgres(STATE_DIR / "postgres", int(os.environ.get("MB_FAULT_PG_PORT", "24432")))
    try:
        try:
            _start_with_retries(kafka.start)
            _start_with_retries(pg.start)
        except Exception as exc:
            if os.environ.get("CI") == "true":
                raise  # under CI a broker or database that won't start fails the run
            pytest.skip(f"cannot start the fault suite's own Kafka/PostgreSQL: {exc}")
        yield FaultInfra(kafka=kafka, postgres=pg)
    finally:
        pg.stop()
        kafka.stop()


def _with_database(url: str, database: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{database}"


async def _create_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _drop(admin_url: str, name: str, settings: Settings) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
    # Topics pile up on a broker whose data survives between runs; delete this scenario's.
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    try:
        await admin.start()
        await admin.delete_topics([settings.topic, settings.dead_letter_topic])
    except Exception:  # best effort: a leftover topic costs disk, not correctness
        pass
    finally:
        await admin.close()


@pytest.fixture
def fault_stack(fault_infra: FaultInfra) -> Iterator[FaultStack]:
    suffix = uuid.uuid4().hex[:10]
    db_name = f"fault_{suffix}"
    asyncio.run(_create_database(fault_infra.admin_url, db_name))
    topic = f"fault_events_{suffix}"
    settings = msgspec.structs.replace(
        load_settings(),
        kafka_bootstrap_servers=fault_infra.kafka.bootstrap,
        database_url=_with_database(fault_infra.admin_url, db_name),
        topic=topic,
        dead_letter_topic=f"{topic}.dlq",
        projector_group=f"fault_projector_{suffix}",
        token_secret="fault-secret",
    )
    asyncio.run(migrate(settings.database_url))
    asyncio.run(ensure_topics(settings))
    # Logs under the suite's own state folder: /tmp/pytest-of-* is shared with other runs,
    # which prune it.
    log_dir = STATE_DIR / "logs" / suffix
    log_dir.mkdir(parents=True)
    stack = FaultStack(fault_infra, settings, log_dir)
    try:
        yield stack
    finally:
        for svc in reversed(stack.services):
            if svc.alive:
                assert svc.proc is not None
                svc.proc.kill()
                svc.proc.wait()
        print(stack.log_tails())
        asyncio.run(_drop(fault_infra.admin_url, db_name, settings))


@pytest.fixture(autouse=True)
def stack_dump_when_stuck() -> Iterator[None]:
    """A scenario that runs far beyond its budget prints every thread's stack, to show where
    it waits (every wait in the scenarios is bounded, so this is for diagnosis only)."""
    faulthandler.dump_traceback_later(180, exit=False)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Iterator[list[str]]:
    """Append a scenario's summary line; all of them are printed at the end of the run and
    written to var/test-fault/summary.txt."""
    lines: list[str] = []
    yield lines
    request.config.stash.setdefault(_SUMMARIES, []).extend(lines)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = terminalreporter.config.stash.get(_SUMMARIES, [])
    if not lines:
        return
    terminalreporter.section("fault scenarios")
    for line in lines:
        terminalreporter.write_line(line)
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    SUMMARY_FILE.write_text("\n".join(lines) + "\n")
