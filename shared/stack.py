"""`make up`: the whole stack on this machine, in the foreground, until Ctrl-C.

    python -m shared.stack up      Kafka + PostgreSQL + command, projector (MB_PROJECTORS of
                                   them, default 2) and query services
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
from typing import NamedTuple

from shared.db import migrate
from shared.devstack import Kafka, Postgres, StackError, log
from shared.kafka import ensure_topics
from shared.settings import REPO_ROOT, Settings, load

# Projector instances `up` starts in one consumer group (they split the topic's partitions):
# on 2 cores two fan out ~1.35x the rows/s of one (bench/README.md); instance i serves its
# health and metrics on MB_PROJECTOR_PORT + 10 * (i - 1).
PROJECTORS_ENV = "MB_PROJECTORS"
DEFAULT_PROJECTORS = 2


class Service(NamedTuple):
    name: str
    module: str
    url: str
    env: dict[str, str]


def services(settings: Settings, projectors: int) -> list[Service]:
    """The service processes `up` starts, in start order."""
    out = [Service("command", "services.command", settings.command_url, {})]
    for i in range(max(1, projectors)):
        port = settings.projector_port + 10 * i
        out.append(
            Service(
                "projector" if i == 0 else f"projector-{i + 1}",
                "services.projector",
                f"http://{settings.projector_host}:{port}",
                {"MB_PROJECTOR_PORT": str(port)},
            )
        )
    out.append(Service("query", "services.query", settings.query_url, {}))
    return out


def projector_count() -> int:
    """How many projectors `up` starts (MB_PROJECTORS); a clear error for a bad value."""
    raw = os.environ.get(PROJECTORS_ENV) or str(DEFAULT_PROJECTORS)
    if not raw.isdigit() or int(raw) < 1:
        raise StackError(f"{PROJECTORS_ENV} must be a whole number of at least 1, not {raw!r}")
    return int(raw)


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
        # Checked before anything starts; `infra` starts no service.
        projectors = projector_count() if mode == "up" else 0
        infra, env_extra = start_infra(state)
        os.environ.update(env_extra)
        settings = load()
        asyncio.run(migrate(settings.database_url))
        asyncio.run(ensure_topics(settings))
        log(f"topic {settings.topic} ({settings.topic_partitions} partitions) ready")
        plan = services(settings, projectors) if mode == "up" else []
        if mode == "up":
            (state / "logs").mkdir(parents=True, exist_ok=True)
            for svc in plan:
                out = open(state / "logs" / f"{svc.name}.log", "ab")  # noqa: SIM115
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", svc.module],
                        cwd=REPO_ROOT,
                        env={**os.environ, **svc.env},
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )
            for svc, proc in zip(plan, procs, strict=True):
                wait_ready(svc.url, proc)
            print("\nmicroblog is up:")
            lines = [
                ("command service", settings.command_url),
                ("query service", settings.query_url),
            ]
            lines += [
                (f"{svc.name} metrics", f"{svc.url}/metrics")
                for svc in plan
                if svc.module == "services.projector"
            ]
            lines += [
                ("Kafka", settings.kafka_bootstrap_servers),
                ("PostgreSQL", settings.database_url),
                ("logs", str(state / "logs")),
            ]
            width = max(len(label) for label, _ in lines)
            for label, value in lines:
                print(f"  {label:<{width}}  {value}")
            print("Press Ctrl-C to stop.\n", flush=True)
        else:
            print(f"KAFKA_BOOTSTRAP_SERVERS={settings.kafka_bootstrap_servers}")
            print(f"DATABASE_URL={settings.database_url}", flush=True)
        while not stop:
            for svc, proc in zip(plan, procs, strict=False):
                if proc.poll() is not None:
                    raise StackError(f"{svc.name} exited with code {proc.returncode}; see logs")
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
