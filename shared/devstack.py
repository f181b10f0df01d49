"""Brings up real Apache Kafka and PostgreSQL on this machine, without Docker.

Kafka runs from the jars Maven fetches (infra/pom.xml) as one KRaft broker+controller; PostgreSQL
runs from the machine's server binaries. Both keep their data under a state folder so a restart
keeps the data. Used by `make up` (python -m shared.stack) and by the test suite's fixtures.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from shared.settings import REPO_ROOT

KAFKA_VERSION = "4.1.2"
CACHE_DIR = Path(os.environ.get("MB_CACHE_DIR", Path.home() / ".cache" / "microblog"))


class StackError(RuntimeError):
    """Infrastructure could not be installed or started; the message says what to do."""


def log(msg: str) -> None:
    print(f"[stack] {msg}", flush=True)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port nothing listens on now and that this process has not handed out before.

    Two binds to port 0 in a row can get the same port from the kernel: a scenario that gave
    its projector and its query service one port left the query service unable to bind, while
    its readiness probe reached the projector's /readyz (tests/fault s6's reads then got the
    projector's 404s). The tests and the bench start their services on such ports.
    """
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def wait_port(host: str, port: int, timeout: float, proc: subprocess.Popen[bytes] | None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(host, port):
            return
        if proc is not None and proc.poll() is not None:
            raise StackError(f"process for port {port} exited with code {proc.returncode}")
        time.sleep(0.2)
    raise StackError(f"nothing listens on {host}:{port} after {timeout:.0f}s")


# --------------------------------------------------------------------------- Kafka


def kafka_libs() -> Path:
    """Return the folder of Kafka's jars, fetching them from Maven Central on first use."""
    libs = CACHE_DIR / f"kafka-{KAFKA_VERSION}" / "libs"
    if (libs / f"kafka_2.13-{KAFKA_VERSION}.jar").exists():
        return libs
    if shutil.which("mvn") is None:
        raise StackError("Maven (mvn) is needed to fetch Kafka's jars; install it")
    log(f"fetching Kafka {KAFKA_VERSION} jars from Maven Central into {libs}")
    tmp = libs.with_name("libs.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run(
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(REPO_ROOT / "infra" / "pom.xml"),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-Dkafka.version={KAFKA_VERSION}",
            f"-DoutputDirectory={tmp}",
        ],
        check=True,
    )
    shutil.rmtree(libs, ignore_errors=True)
    tmp.rename(libs)
    return libs


KAFKA_PROPERTIES = """\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs={data}
num.partitions=12
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.retention.hours=-1
log.retention.bytes=-1
# One node with a 512 MB heap: the cleaner's default 128 MB dedupe buffer is too large.
log.cleaner.dedupe.buffer.size=8388608
num.network.threads=2
num.io.threads=4
"""


@dataclass
class Kafka:
    state: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> None:
        if port_open("127.0.0.1", self.port):
            raise StackError(f"port {self.port} is taken; set MB_KAFKA_PORT to a free port")
        libs = kafka_libs()
        java = shutil.which("java")
        if java is None:
            raise StackError("Java 17+ is needed to run Kafka; install a JDK")
        self.state = self.state.resolve()
        data = self.state / "data"
        props = self.state / "server.properties"
        self.state.mkdir(parents=True, exist_ok=True)
        props.write_text(
            KAFKA_PROPERTIES.format(port=self.port, controller_port=self.port + 1, data=data)
        )
        classpath = f"{libs}/*"
        env = {**os.environ, "KAFKA_HEAP_OPTS": "-Xmx512m"}
        if not (data / "meta.properties").exists():
            log(f"formatting Kafka log directory {data}")
            fmt_log = open(self.state / "format.log", "ab")  # noqa: SIM115
            subprocess.run(
                [
                    java,
                    "-cp",
                    classpath,
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    str(uuid.uuid4()).replace("-", "")[:22],
                    "-c",
                    str(props),
                ],
                check=True,
                stdout=fmt_log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        log_file = open(self.state / "kafka.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [
                java,
                "-Xms256m",
                "-Xmx512m",
                "-XX:+UseG1GC",
                "-cp",
                classpath,
                "-Dslf4j.internal.verbosity=WARN",
                "kafka.Kafka",
                str(props),
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        wait_port("127.0.0.1", self.port, timeout, self.proc)
        log(f"Kafka listening on {self.bootstrap} (log: {self.state / 'kafka.log'})")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --------------------------------------------------------------------------- PostgreSQL


def pg_bin_dir() -> Path:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for c in candidates:
        if (c / "pg_ctl").exists():
            return c
    raise StackError("PostgreSQL server binaries not found; apt-get install postgresql")


def _runs_as_root() -> bool:
    return os.geteuid() == 0


def _as_pg_user(cmd: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root; CI and sessions here are root.
    return ["runuser", "-u", "postgres", "--", *cmd] if _runs_as_root() else cmd


def _pg_can_reach(path: Path) -> bool:
    if not _runs_as_root():
        return True
    probe = path if path.exists() else path.parent
    return subprocess.run(_as_pg_user(["test", "-w", str(probe)]), check=False).returncode == 0


# Memory and checkpoints, given on the command line so that a data directory made before a
# change gets it too. With 512 MB of shared buffers the default benchmark's timelines (~550 MB
# with their indexes) did not fit: a live fan-out of 20 posts (~1,600 rows) took 120-170 ms
# reading and evicting pages, 21 ms once they were cached. Checkpoints every 1 GB of WAL ran
# back to back under the benchmark's writes, each making the next writes log full pages again.
PG_TUNING: tuple[str, ...] = (
    "shared_buffers=2GB",
    "max_wal_size=8GB",
    "checkpoint_timeout=15min",
)


@dataclass
class Postgres:
    state: Path
    port: int
    user: str = "microblog"
    password: str = "microblog"
    database: str = "microblog"

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    def _data_dir(self) -> Path:
        self.state = self.state.resolve()
        data = self.state / "pgdata"
        if _runs_as_root():
            self.state.mkdir(parents=True, exist_ok=True)
            subprocess.run(["chown", "postgres:postgres", str(self.state)], check=True)
            if not _pg_can_reach(self.state):
                # A parent folder (e.g. /root) is closed to the postgres user: keep the data in
                # a folder of its own, one per checkout so two clones don't share a cluster.
                key = uuid.uuid5(uuid.NAMESPACE_URL, str(self.state)).hex[:12]
                fallback = Path("/var/tmp/microblog") / key
                fallback.mkdir(parents=True, exist_ok=True)
                subprocess.run(["chown", "-R", "postgres:postgres", str(fallback)], check=True)
                return fallback / "pgdata"
        return data

    def start(self, timeout: float = 60.0) -> None:
        if port_open("127.0.0.1", self.port):
            raise StackError(f"port {self.port} is taken; set MB_PG_PORT to a free port")
        bindir = pg_bin_dir()
        data = self._data_dir()
        self.data = data
        if not (data / "PG_VERSION").exists():
            log(f"initdb {data}")
            pwfile = data.parent / "pwfile"
            pwfile.write_text(self.password + "\n")
            if _runs_as_root():
                subprocess.run(["chown", "postgres:postgres", str(pwfile)], check=True)
            subprocess.run(
                _as_pg_user(
                    [
                        str(bindir / "initdb"),
                        "-D",
                        str(data),
                        "-U",
                        self.user,
                        "--pwfile",
                        str(pwfile),
                        "-A",
                        "scram-sha-256",
                        "-E",
                        "UTF8",
                        "--no-locale",
                    ]
                ),
                check=True,
                stdout=subprocess.DEVNULL,
            )
            pwfile.unlink()
            with open(data / "postgresql.conf", "a") as conf:
                conf.write(
                    "\n# microblog dev stack\n"
                    "listen_addresses = '127.0.0.1'\n"
                    "unix_socket_directories = ''\n"
                    "max_connections = 200\n"
                    "work_mem = 16MB\n"
                    # Durability stays on: acknowledged projections must survive a crash.
                    "synchronous_commit = on\n"
                    "wal_level = minimal\n"
                    "max_wal_senders = 0\n"
                )
        subprocess.run(
            _as_pg_user(
                [
                    str(bindir / "pg_ctl"),
                    "-D",
                    str(data),
                    "-o",
                    " ".join([f"-p {self.port}", *(f"-c {t}" for t in PG_TUNING)]),
                    "-l",
                    str(data.parent / "postgres.log"),
                    "-w",
                    "-t",
                    str(int(timeout)),
                    "start",
                ]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        wait_port("127.0.0.1", self.port, timeout, None)
        self._ensure_database()
        log(f"PostgreSQL listening on 127.0.0.1:{self.port} (data: {data})")

    def _ensure_database(self) -> None:
        env = {**os.environ, "PGPASSWORD": self.password}
        psql = str(pg_bin_dir() / "psql") if (pg_bin_dir() / "psql").exists() else "psql"
        base = [psql, "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, "-tA"]
        out = subprocess.run(
            [
                *base,
                "-d",
                "postgres",
                "-c",
                f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'",
            ],
            check=True,
            capture_output=True,
            env=env,
            text=True,
        ).stdout
        if out.strip() != "1":
            subprocess.run(
                [*base, "-d", "postgres", "-c", f'CREATE DATABASE "{self.database}"'],
                check=True,
                stdout=subprocess.DEVNULL,
                env=env,
            )

    def stop(self) -> None:
        data = getattr(self, "data", None)
        if data is None:
            return
        subprocess.run(
            _as_pg_user(
                [str(pg_bin_dir() / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]
            ),
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
