"""A process's one LISTEN connection, shared by everything that wants notifications.

Each channel registers a callback; one connection carries them all, so the number of
connections does not grow with the number of waiting requests, open streams or caches. What a
notification means is up to its receiver, and so is what to do about notifications that were
missed while the connection was down:

- a *wake-up* channel (consistency waits, streams) re-reads PostgreSQL anyway, so it only needs
  `on_reconnect` to make everyone re-read once;
- a *cache* channel (revoked tokens) must know the moment it stops hearing (`on_lost`, called
  synchronously as soon as the connection is known to be gone, before anything else may run on
  stale data) and must reload before trusting itself again (`on_connect`, awaited on the
  listening connection after every LISTEN is in place, so nothing committed from then on can be
  missed).

A half-open TCP connection would look alive while delivering nothing, so the connection is
probed every `ping_s`; a probe that fails or hangs counts as a lost connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Final

import asyncpg

log = logging.getLogger("microblog.listener")

ConnectHook = Callable[[asyncpg.Connection], Awaitable[None]]
PING_S: Final = 5.0
PING_TIMEOUT_S: Final = 2.0


class Listener:
    def __init__(
        self,
        dsn: str,
        retry_s: float = 1.0,
        ping_s: float = PING_S,
        application_name: str = "microblog-listener",
    ) -> None:
        self._dsn = dsn
        self._application_name = application_name
        self._retry_s = retry_s
        self._ping_s = ping_s
        self._channels: dict[str, Callable[[str], None]] = {}
        self._on_reconnect: list[Callable[[], None]] = []
        self._on_connect: list[ConnectHook] = []
        self._on_lost: list[Callable[[], None]] = []
        self._task: asyncio.Task[None] | None = None
        # Set while a connection is listening and every on_connect hook has finished.
        self.ready = asyncio.Event()

    def on(
        self,
        channel: str,
        callback: Callable[[str], None],
        on_reconnect: Callable[[], None] | None = None,
        *,
        on_connect: ConnectHook | None = None,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        """Call `callback(payload)` for each notification on `channel`; register before start."""
        self._channels[channel] = callback
        if on_reconnect is not None:
            self._on_reconnect.append(on_reconnect)
        if on_connect is not None:
            self._on_connect.append(on_connect)
        if on_lost is not None:
            self._on_lost.append(on_lost)

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen_forever(), name="listener")

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
                log.warning("LISTEN unavailable (%r); retrying", exc)
            await asyncio.sleep(self._retry_s)

    def _lost(self) -> None:
        self.ready.clear()
        for hook in self._on_lost:
            hook()

    async def _listen_once(self) -> None:
        conn = await asyncpg.connect(
            self._dsn, timeout=5, server_settings={"application_name": self._application_name}
        )
        closed = asyncio.Event()

        def terminated(_conn: object) -> None:
            self._lost()
            closed.set()

        try:
            conn.add_termination_listener(terminated)
            for channel, callback in self._channels.items():
                await conn.add_listener(channel, _adapt(callback))
            for load in self._on_connect:
                await load(conn)
                if closed.is_set():  # lost during the load: undo what the hook just trusted
                    return
            # Notifications sent while we were not listening are lost: make everyone re-read.
            for hook in self._on_reconnect:
                hook()
            self.ready.set()
            while not closed.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(closed.wait(), self._ping_s)
                if not closed.is_set():
                    await conn.fetchval("SELECT 1", timeout=PING_TIMEOUT_S)
        finally:
            # Whatever ended this connection (an error, a failed probe, a cancel), the caches
            # stop trusting themselves before the next statement of anyone runs.
            self._lost()
            try:
                await asyncio.wait_for(conn.close(), PING_TIMEOUT_S)
            except (OSError, TimeoutError, asyncpg.InterfaceError):
                conn.terminate()


def _adapt(callback: Callable[[str], None]) -> Callable[[object, int, str, str], None]:
    """asyncpg's listener signature (connection, pid, channel, payload) to payload only."""
    return lambda _conn, _pid, _channel, payload: callback(payload)
