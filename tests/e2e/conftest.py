"""The three services as real processes, configured for the test session's Kafka, database
and topic. Tests talk to them over HTTP only."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from shared.devstack import free_port
from shared.settings import REPO_ROOT, Settings


class Service:
    def __init__(self, name: str, env: dict[str, str], url: str, log_dir: Path) -> None:
        self.name, self.env, self.url, self.log_dir = name, env, url, log_dir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        log = open(self.log_dir / f"{self.name}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"services.{self.name}"],
            cwd=REPO_ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
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
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready within {timeout}s")

    def kill(self) -> None:
        """SIGKILL: no chance to finish anything (a crash)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


class Stack(msgspec.Struct):
    settings: Settings
    command: Service
    projector: Service
    query: Service


@pytest.fixture(scope="module")
def stack(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    ports = {name: free_port() for name in ("command", "projector", "query")}
    s = msgspec.structs.replace(
        settings,
        command_port=ports["command"],
        projector_port=ports["projector"],
        query_port=ports["query"],
    )
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": s.kafka_bootstrap_servers,
        "DATABASE_URL": s.database_url,
        "MB_TOPIC": s.topic,
        "MB_DEAD_LETTER_TOPIC": s.dead_letter_topic,
        "MB_PROJECTOR_GROUP": s.projector_group,
        "MB_TOKEN_SECRET": s.token_secret,
        "MB_COMMAND_PORT": str(s.command_port),
        "MB_PROJECTOR_PORT": str(s.projector_port),
        "MB_QUERY_PORT": str(s.query_port),
    }
    log_dir = tmp_path_factory.mktemp("service-logs")
    services = Stack(
        settings=s,
        command=Service("command", env, s.command_url, log_dir),
        projector=Service("projector", env, s.projector_url, log_dir),
        query=Service("query", env, s.query_url, log_dir),
    )
    started: list[Service] = []
    try:
        for svc in (services.command, services.projector, services.query):
            svc.start()
            started.append(svc)
        yield services
    finally:
        for svc in reversed(started):
            svc.stop()
        for path in sorted(log_dir.glob("*.log")):
            tail = path.read_text(errors="replace")[-3000:]
            print(f"----- {path.name} (tail) -----\n{tail}")
