"""Read-your-writes: hold a query until the projector has passed a position (DESIGN.md §5).

The truth is `projector_offsets.next_offset`, committed in the same transaction as the read
models (invariant 3): once it is greater than the event's offset, the event's effects are
visible to every later query. A waiter polls that row with a short, growing back-off.

A projector may also NOTIFY the channel `projector_progress` in the transaction that advances
its offsets (so delivery happens at commit). The payload is a comma-separated list of
`<partition>:<next_offset>` (the projector's own topic) or `<topic>:<partition>:<next_offset>`
items. One LISTEN connection per process then wakes the waiters of those partitions at once,
and they re-read the row. The notification is only a wake-up, never trusted as the position
itself (a replay from offset 0 moves the row backwards), so a lost or missing NOTIFY costs at
most one back-off interval and the service is correct without any.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final

import asyncpg

from shared.kafka import Position

log = logging.getLogger("microblog.query.consistency")

CHANNEL: Final = "projector_progress"
_NEXT_OFFSET_SQL: Final = (
    "SELECT next_offset FROM projector_offsets WHERE topic = $1 AND partition = $2"
)


class ProgressWaiter:
    """Waits, bounded, until the projector's committed position passes a given one."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        dsn: str,
        topic: str,
        first_delay_s: float = 0.005,
        max_delay_s: float = 0.05,
    ) -> None:
        self._pool = pool
        self._dsn = dsn
        self._topic = topic
        self._first_delay = first_delay_s
        self._max_delay = max_delay_s
        # One event per partition somebody waits on; a notification sets and drops it, so
        # every waiter of that partition wakes and the next round gets a fresh event.
        self._wakeups: dict[int, asyncio.Event] = {}
        self._listener: asyncio.Task[None] | None = None

    async def passed(self, position: Position, timeout_s: float) -> bool:
        """True once the projector's next offset for the partition exceeds position.offset;
        False if that did not happen within timeout_s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        delay = self._first_delay
        while True:
            # Take the event before reading, so a notification that lands during the read
            # still cuts the following sleep short.
            wakeup = self._wakeups.setdefault(position.partition, asyncio.Event())
            next_offset = await self._pool.fetchval(
                _NEXT_OFFSET_SQL, self._topic, position.partition
            )
            if next_offset is not None and next_offset > position.offset:
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(delay, remaining)):
                    await wakeup.wait()
            delay = min(delay * 2, self._max_delay)

    # ------------------------------------------------------------------ LISTEN side

    def start(self) -> None:
        self._listener = asyncio.create_task(self._listen_forever(), name="projector-progress")

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        for item in payload.split(","):
            parts = item.strip().split(":")
            if len(parts) == 3:
                topic, partition, _next_offset = parts
                if topic != self._topic:
                    continue
            elif len(parts) == 2:
                partition, _next_offset = parts  # the projector's own topic, implied
            else:
                partition = ""
            if not (partition.isascii() and partition.isdigit()):
                self._wake_all()  # a payload we can't read: waking everyone is always safe
                return
            event = self._wakeups.pop(int(partition), None)
            if event is not None:
                event.set()

    def _wake_all(self) -> None:
        wakeups, self._wakeups = self._wakeups, {}
        for event in wakeups.values():
            event.set()

    async def _listen_forever(self) -> None:
        while True:
            try:
                await self._listen_once()
                log.warning("LISTEN %s connection closed; reconnecting", CHANNEL)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("LISTEN %s unavailable (%s); polling only, retrying", CHANNEL, exc)
            await asyncio.sleep(1.0)

    async def _listen_once(self) -> None:
        """Listen on one connection until it closes."""
        conn = await asyncpg.connect(self._dsn)
        try:
            closed = asyncio.Event()
            conn.add_termination_listener(lambda _conn: closed.set())
            await conn.add_listener(CHANNEL, self._on_notify)
            # Notifications sent while we were not listening are lost: make waiters re-read.
            self._wake_all()
            await closed.wait()
        finally:
            await conn.close()
