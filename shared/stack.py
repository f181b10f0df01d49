"""`make up`: the whole stack on this machine, in the foreground, until Ctrl-C.

    python -m shared.stack up      Kafka + PostgreSQL + command, projector and query services
    python -m shared.stack infra   only Kafka + PostgreSQL (for tests or benchmarks)

If KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL are set, those are used and nothing local is started
for them. Data lives under var/ (MB_STATE_DIR) and survives restarts.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from shared.db import migrate
from shared.devstack import Kafka, Postgres, StackError, log
from shared.kafka import ensure_topics
from shared.settings import REPO_ROOT, load

SERVICES = ("command", "projector", "query")


def start_infra(state: Path) -> tuple[list[Kafka | Postgres], dict[str, str]]:
    """Start whatever of Kafka/PostgreSQL the environment doesn't already name."""
    started: list[Kafka | Postgres] = []
    env: dict[str, str] = {}
    if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        kafka = Kafka(state / "kafka", int(os.environ.get("MB_KAFKA_PORT", "19092")))
        kafka.start()
        started.append(kafka)
        env["KAFKA_BOOTSTRAP_SERVERS"] = kafka.bootstrap
    if not os.environ.get("DATABASE_URL"):
        pg = Postgres(state / "postgres", int(os.environ.get("MB_PG_PORT", "15432")))
        pg.start()
        started.append(pg)
        env["DATABASE_URL"] = pg.url
    return started, env


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(f"{url}: process exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise StackError(f"{url}/readyz not ready after {timeout:.0f}s")


def main(argv: list[str]) -> int:
    mode = argv[1] if len(argv) > 1 else "up"
    if mode not in ("up", "infra"):
        print(__doc__)
        return 2
    state = Path(os.environ.get("MB_STATE_DIR", REPO_ROOT / "var"))
    stop = False

    def on_signal(_sig: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    procs: list[subprocess.Popen[bytes]] = []
    infra: list[Kafka | Postgres] = []
    try:
        infra, env_extra = start_infra(state)
        os.environ.update(env_extra)
        settings = load()
        asyncio.run(migrate(settings.database_url))
        asyncio.run(ensure_topics(settings))
        log(f"topic {settings.topic} ({settings.topic_partitions} partitions) ready")
        if mode == "up":
            (state / "logs").mkdir(parents=True, exist_ok=True)
            urls = {
                "command": settings.command_url,
                "projector": settings.projector_url,
                "query": settings.query_url,
            }
            for name in SERVICES:
                out = open(state / "logs" / f"{name}.log", "ab")  # noqa: SIM115
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", f"services.{name}"],
                        cwd=REPO_ROOT,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )
            for name, proc in zip(SERVICES, procs, strict=True):
                wait_ready(urls[name], proc)
            print("\nmicroblog is up:")
            print(f"  command service   {settings.command_url}")
            print(f"  query service     {settings.query_url}")
            print(f"  projector metrics {settings.projector_url}/metrics")
            print(f"  Kafka             {settings.kafka_bootstrap_servers}")
            print(f"  PostgreSQL        {settings.database_url}")
            print(f"  logs              {state / 'logs'}")
            print("Press Ctrl-C to stop.\n", flush=True)
        else:
            print(f"KAFKA_BOOTSTRAP_SERVERS={settings.kafka_bootstrap_servers}")
            print(f"DATABASE_URL={settings.database_url}", flush=True)
        while not stop:
            for name, proc in zip(SERVICES, procs, strict=False):
                if proc.poll() is not None:
                    raise StackError(f"{name} exited with code {proc.returncode}; see logs")
            time.sleep(0.5)
        return 0
    except StackError as exc:
        log(f"error: {exc}")
        return 1
    finally:
        log("stopping")
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        for component in reversed(infra):
            component.stop()
        log("stopped")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
