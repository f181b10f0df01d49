"""Operating the command service: rate limits, login throttling, metrics, header caps, JSON
logs and a clean SIGTERM — against real Kafka and PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from services.command.app import create_app
from services.command.throttle import LoginLimits
from shared.auth import issue_token
from shared.devstack import free_port
from shared.ratelimit import RateLimits
from shared.settings import REPO_ROOT, Settings
from tests.integration.test_command_api import PASSWORD, Client, call, new_name

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def tight(settings: Settings) -> AsyncIterator[Client]:
    """An app whose limits are low enough to hit in a test."""
    app = create_app(
        settings,
        rate_limits=RateLimits(per_token=3, per_ip=8, window_s=60),
        login_limits=LoginLimits(per_username=2, per_ip=100, window_s=60),
    )
    async with TestClient(TestServer(app)) as c:
        yield c


async def test_rate_limits_per_token_then_per_ip(tight: Client, settings: Settings) -> None:
    token, _ = issue_token(settings.token_secret, 12345, 600)
    seen = []
    for _ in range(4):
        status, _, headers = await call(tight, "PATCH", "/v1/accounts/me", {}, token=token)
        seen.append((status, headers["X-RateLimit-Limit"], headers["X-RateLimit-Remaining"]))
    # Answers of every kind (here 422s) carry the headers; the token's 4th request is refused.
    assert seen == [(422, "3", "2"), (422, "3", "1"), (422, "3", "0"), (429, "3", "0")]
    status, problem, headers = await call(tight, "PATCH", "/v1/accounts/me", {}, token=token)
    assert (status, problem["code"]) == (429, "rate_limited")
    assert 1 <= int(headers["Retry-After"]) <= 20
    assert int(headers["X-RateLimit-Reset"]) >= int(headers["Retry-After"])
    # Without a token only the address counts: 8 per window, 5 already spent.
    statuses = [(await call(tight, "POST", "/v1/posts", {"text": "x"}))[0] for _ in range(4)]
    assert statuses == [401, 401, 401, 429]
    # Probes are never limited.
    assert (await tight.get("/healthz")).status == 200
    metrics = await (await tight.get("/metrics")).text()
    assert 'microblog_command_rate_limited_total{scope="token"} 2.0' in metrics
    assert 'microblog_command_rate_limited_total{scope="ip"} 1.0' in metrics


async def test_login_is_throttled_per_username(settings: Settings) -> None:
    app = create_app(
        settings,
        rate_limits=RateLimits(per_token=0, per_ip=0),
        login_limits=LoginLimits(per_username=2, per_ip=100),
    )
    async with TestClient(TestServer(app)) as client:
        name = new_name()
        status, _, _ = await call(
            client, "POST", "/v1/accounts", {"username": name, "password": PASSWORD}
        )
        assert status == 201
        wrong = {"username": name, "password": "wrong password"}
        for _ in range(2):
            status, problem, _ = await call(client, "POST", "/v1/sessions", wrong)
            assert (status, problem["code"]) == (401, "invalid_credentials")
        # Guessing stops here, whatever the password (in any case of the name).
        right = {"username": name.upper(), "password": PASSWORD}
        status, problem, headers = await call(client, "POST", "/v1/sessions", right)
        assert (status, problem["code"], problem["field"]) == (429, "rate_limited", "username")
        assert int(headers["Retry-After"]) >= 1
        metrics = await (await client.get("/metrics")).text()
        assert 'microblog_command_rate_limited_total{scope="login_username"} 1.0' in metrics


async def test_metrics_count_requests_produces_and_events(settings: Settings) -> None:
    async with TestClient(TestServer(create_app(settings))) as client:
        token, _ = issue_token(settings.token_secret, 54321, 600)
        status, body, _ = await call(client, "POST", "/v1/posts", {"text": "hi"}, token=token)
        assert status == 202, body
        await call(client, "DELETE", "/v1/posts/1", token=token)
        metrics = await (await client.get("/metrics")).text()
    assert 'microblog_command_request_seconds_count{route="/v1/posts",status="202"} 1.0' in metrics
    # Route templates, not raw paths.
    assert 'route="/v1/posts/{post_id}",status="404"' in metrics
    assert "microblog_command_produce_seconds_count 1.0" in metrics
    assert 'microblog_command_events_produced_total{type="post.created"} 1.0' in metrics


async def test_oversize_headers_are_refused(settings: Settings) -> None:
    async with TestClient(TestServer(create_app(settings))) as client:
        response = await client.get("/healthz", headers={"X-Big": "a" * 9000})
        assert response.status in (400, 431)
        response = await client.get("/healthz", headers={"X-Ok": "a" * 1000})
        assert response.status == 200


# ---------------------------------------------------------------- the process


def _get(url: str, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_process_logs_json_and_stops_cleanly_on_sigterm(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "DATABASE_URL": settings.database_url,
        "MB_TOPIC": settings.topic,
        "MB_DEAD_LETTER_TOPIC": settings.dead_letter_topic,
        "MB_TOKEN_SECRET": settings.token_secret,
        "MB_COMMAND_PORT": str(port),
    }
    log_path = tmp_path / "command.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.command"],
            cwd=REPO_ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, log_path.read_text()
                try:
                    if _get(f"{url}/healthz") == 200:
                        break
                except OSError:
                    pass
                assert time.monotonic() < deadline, "command service did not start"
                time.sleep(0.2)
            assert _get(f"{url}/v1/posts/1/like", {"X-Request-Id": "trace-me-42"}) == 405
            # A command in flight when SIGTERM arrives (here a registration, whose argon2 hash
            # takes a good fraction of a second) still gets its answer: the service stops
            # accepting, drains, then exits 0 within 10 s. (aiohttp stops reading sockets at
            # shutdown, so a request whose body is still arriving is not drained.)
            body = json.dumps({"username": new_name(), "password": PASSWORD}).encode()
            with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
                conn.sendall(
                    b"POST /v1/accounts HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Type: application/json\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                time.sleep(0.1)
                started = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                answer = conn.recv(4096)
            assert answer.startswith(b"HTTP/1.1 201"), answer
            assert proc.wait(15) == 0
            assert time.monotonic() - started < 10
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= set(entry) for entry in lines)
    traced = [entry for entry in lines if entry.get("request_id") == "trace-me-42"]
    assert traced and traced[0]["status"] == 405
