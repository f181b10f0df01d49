"""The load generator's HTTP client (bench/httpclient.py) against a real aiohttp server:
answers, kept-alive connections, closes, timeouts, and what it refuses to read."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from bench.httpclient import Client, HttpError


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, list[int]]]:
    """Base URL, and the client port of every request (a new port is a new connection)."""
    ports: list[int] = []

    async def echo(request: web.Request) -> web.Response:
        ports.append(request.transport.get_extra_info("peername")[1])  # type: ignore[union-attr]
        body = await request.read()
        return web.Response(
            status=201 if body else 200,
            body=request.method.encode() + b" " + request.path_qs.encode() + b" " + body,
            headers={"X-Token": request.headers.get("Authorization", "")},
        )

    async def closing(_request: web.Request) -> web.Response:
        return web.Response(text="bye", headers={"Connection": "close"})

    async def slow(_request: web.Request) -> web.Response:
        await asyncio.sleep(1.0)
        return web.Response(text="late")

    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(b"part")
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/closing", closing)
    app.router.add_get("/slow", slow)
    app.router.add_get("/chunked", chunked)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", ports
    finally:
        await runner.cleanup()


async def test_answers_status_and_body_and_keeps_the_connection(
    server: tuple[str, list[int]],
) -> None:
    base, ports = server
    async with Client() as client:
        assert await client.request("GET", f"{base}/echo?x=1", {"Authorization": "t"}) == (
            200,
            b"GET /echo?x=1 ",
        )
        status, body = await client.request("POST", f"{base}/echo", {}, b'{"a":1}')
        assert (status, body) == (201, b'POST /echo {"a":1}')
        assert (await client.request("GET", f"{base}/nowhere", {}))[0] == 404
        assert len(set(ports)) == 1  # one connection, kept alive


async def test_concurrent_requests_use_their_own_connections(
    server: tuple[str, list[int]],
) -> None:
    base, ports = server
    async with Client(limit=4) as client:
        answers = await asyncio.gather(
            *(client.request("GET", f"{base}/echo?i={i}", {}) for i in range(12))
        )
        assert sorted(body for _, body in answers) == sorted(
            f"GET /echo?i={i} ".encode() for i in range(12)
        )
        assert 1 < len(set(ports)) <= 4  # never more than the limit


async def test_a_closed_connection_is_not_reused(server: tuple[str, list[int]]) -> None:
    base, ports = server
    async with Client() as client:
        assert await client.request("GET", f"{base}/closing", {}) == (200, b"bye")
        await client.request("GET", f"{base}/echo", {})
        await client.request("GET", f"{base}/echo", {})
        assert len(ports) == 2 and ports[0] == ports[1]


async def test_slow_answers_time_out_and_unreadable_ones_fail(
    server: tuple[str, list[int]],
) -> None:
    base, _ = server
    async with Client(timeout_s=0.2) as client:
        with pytest.raises(TimeoutError):
            await client.request("GET", f"{base}/slow", {})
        with pytest.raises(HttpError, match="Content-Length"):
            await client.request("GET", f"{base}/chunked", {})
        assert (await client.request("GET", f"{base}/echo", {}))[0] == 200
