"""The load generator's HTTP/1.1 client: keep-alive connections over asyncio protocols, one
request in flight per connection, bodies delimited by Content-Length.

It shares the machine's 2 cores with everything it measures. aiohttp's client took ~0.3 cores
at the mixed load's 1,000 req/s (per-second CPU samples of the bench process), CPU that the
services and PostgreSQL did not get; this one does the little a load generator needs (no
cookies, redirects, decompression or header objects) and leaves the rest to the services.
Every figure and its baseline go through it alike.
"""

from __future__ import annotations

import asyncio
from functools import lru_cache
from typing import cast
from urllib.parse import urlsplit


class HttpError(Exception):
    """A request that got no usable answer: the connection closed or timed out before the
    whole response arrived, or the response was not one this client reads."""


@lru_cache(maxsize=4096)
def _target(url: str) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    host = parts.hostname or "127.0.0.1"
    return host, parts.port or 80, path.encode()


def _request_bytes(
    method: str, host: str, port: int, path: bytes, headers: dict[str, str], body: bytes | None
) -> bytes:
    lines = [f"{method} ".encode() + path + b" HTTP/1.1", f"Host: {host}:{port}".encode()]
    lines.extend(f"{k}: {v}".encode() for k, v in headers.items())
    if body is not None:
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._buf = bytearray()
        self._answer: asyncio.Future[tuple[int, bytes]] | None = None
        self._keep_alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; they have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(HttpError(f"connection closed: {exc!r}"))

    def send(self, data: bytes) -> asyncio.Future[tuple[int, bytes]]:
        assert self.transport is not None
        self._buf.clear()
        self._answer = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self._answer

    def data_received(self, data: bytes) -> None:
        self._buf += data
        buf = self._buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(buf[:end]).lower()
        start = head.find(b"\r\ncontent-length:")
        if start < 0:
            self._fail("response without Content-Length")
            return
        stop = head.find(b"\r\n", start + 2)
        length = int(head[start + 17 : stop if stop >= 0 else len(head)])
        if len(buf) < end + 4 + length:
            return
        self._keep_alive = b"\r\nconnection: close" not in head
        answer = self._answer
        self._answer = None
        if answer is not None and not answer.done():
            answer.set_result((int(head[9:12]), bytes(buf[end + 4 : end + 4 + length])))

    def _fail(self, why: str) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(HttpError(why))
        self.close()

    @property
    def reusable(self) -> bool:
        return not self.closed and self._keep_alive and self._answer is None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Client:
    """`request` answers (status, body); at most `limit` connections, idle ones kept per
    host and port; a request over `timeout_s` fails (and its connection is dropped)."""

    def __init__(self, limit: int = 512, timeout_s: float = 15.0) -> None:
        self._slots = asyncio.Semaphore(limit)
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._timeout_s = timeout_s

    async def request(
        self, method: str, url: str, headers: dict[str, str], body: bytes | None = None
    ) -> tuple[int, bytes]:
        host, port, path = _target(url)
        data = _request_bytes(method, host, port, path, headers, body)
        # The timeout counts the wait for a connection too, as aiohttp's total timeout did.
        async with asyncio.timeout(self._timeout_s), self._slots:
            conn, reused = await self._connection(host, port)
            try:
                answer = await conn.send(data)
            except HttpError:
                conn.close()
                if not reused:
                    raise
                # A kept-alive connection the server closed as this request went out (it
                # closes idle ones between figures): once more on a new one, as browsers do.
                conn, _ = await self._connection(host, port, fresh=True)
                answer = await conn.send(data)
            except BaseException:
                conn.close()
                raise
            if conn.reusable:
                self._idle[(host, port)].append(conn)
            else:
                conn.close()
            return answer

    async def _connection(
        self, host: str, port: int, fresh: bool = False
    ) -> tuple[_Connection, bool]:
        idle = self._idle.setdefault((host, port), [])
        while idle and not fresh:
            conn = idle.pop()
            if conn.reusable:
                return conn, True
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(_Connection, host, port)
        return conn, False

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()
