"""`python -m services.query` with MB_QUERY_WORKERS=2: two worker processes share the port, and
SIGTERM to the supervisor stops them all with exit status 0."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import aiohttp
import pytest

from shared.devstack import free_port
from shared.settings import REPO_ROOT, Settings

pytestmark = pytest.mark.integration


async def test_two_workers_serve_one_port_and_stop_on_sigterm(settings: Settings) -> None:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "MB_TOKEN_SECRET": settings.token_secret,
        "MB_QUERY_PORT": str(port),
        "MB_QUERY_WORKERS": "2",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.query",
        cwd=REPO_ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            async with asyncio.timeout(30):
                while True:
                    try:
                        async with http.get(f"{base}/healthz") as r:
                            if r.status == 200:
                                break
                    except aiohttp.ClientConnectionError:
                        await asyncio.sleep(0.1)
            for _ in range(10):  # fresh connections, spread over the workers by the kernel
                async with http.get(
                    f"{base}/v1/timelines/public", headers={"Connection": "close"}
                ) as r:
                    assert r.status == 200
        children = await asyncio.to_thread(_children, proc.pid)
        assert len(children) == 2
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            assert await proc.wait() == 0
        assert not any(_alive(pid) for pid in children)  # the supervisor reaped them
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(x) for x in f.read().split()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
