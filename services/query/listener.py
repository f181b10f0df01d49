"""The query process's one LISTEN connection, shared by everything that wants wake-ups.

Consistency waits (`projector_progress`) and streams (`stream_wakeup`) register a callback per
channel; one connection carries them all, so the number of connections does not grow with the
number of waiting requests or open streams. A notification is only ever a wake-up: whoever
receives it re-reads PostgreSQL, so notifications lost while the connection is down cost a
poll interval, and every reconnect calls the `on_reconnect` hooks to make everyone re-read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import asyncpg

log = logging.getLogger("microblog.query.listener")


class Listener:
    def __init__(self, dsn: str, retry_s: float = 1.0) -> None:
        self._dsn = dsn
        self._retry_s = retry_s
        self._channels: dict[str, Callable[[str], None]] = {}
        self._on_reconnect: list[Callable[[], None]] = []
        self._task: asyncio.Task[None] | None = None

    def on(
        self, channel: str, callback: Callable[[str], None], on_reconnect: Callable[[], None]
    ) -> None:
        """Call `callback(payload)` for each notification on `channel`; register before start."""
        self._channels[channel] = callback
        self._on_reconnect.append(on_reconnect)

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen_forever(), name="query-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _listen_forever(self) -> None:
        while True:
            try:
                await self._listen_once()
                log.warning("LISTEN connection closed; reconnecting")
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("LISTEN unavailable (%s); polling only, retrying", exc)
            await asyncio.sleep(self._retry_s)

    async def _listen_once(self) -> None:
        conn = await asyncpg.connect(self._dsn, timeout=5)
        try:
            closed = asyncio.Event()
            conn.add_termination_listener(lambda _conn: closed.set())
            for channel, callback in self._channels.items():
                await conn.add_listener(channel, _adapt(callback))
            # Notifications sent while we were not listening are lost: make everyone re-read.
            for hook in self._on_reconnect:
                hook()
            await closed.wait()
        finally:
            await conn.close()


def _adapt(callback: Callable[[str], None]) -> Callable[[object, int, str, str], None]:
    """asyncpg's listener signature (connection, pid, channel, payload) to payload only."""
    return lambda _conn, _pid, _channel, payload: callback(payload)
