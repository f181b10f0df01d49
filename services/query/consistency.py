"""Read-your-writes: hold a query until the projector has passed a position (DESIGN.md §5).

The truth is `projector_offsets.next_offset`, committed in the same transaction as the read
models (invariant 3): once it is greater than the event's offset, the event's effects are
visible to every later query. A waiter polls that row with a short, growing back-off.

A projector may also NOTIFY the channel `projector_progress` in the transaction that advances
its offsets (so delivery happens at commit). The payload is a comma-separated list of
`<partition>:<next_offset>` (the projector's own topic) or `<topic>:<partition>:<next_offset>`
items. The process's one LISTEN connection (shared/listener.py) then wakes the waiters
of those partitions at once, and they re-read the row. The notification is only a wake-up,
never trusted as the position itself (a replay from offset 0 moves the row backwards), so a
lost or missing NOTIFY costs at most one back-off interval and the service is correct without
any.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

import asyncpg

from shared.kafka import Position

CHANNEL: Final = "projector_progress"
_NEXT_OFFSET_SQL: Final = (
    "SELECT next_offset FROM projector_offsets WHERE topic = $1 AND partition = $2"
)


class ProgressWaiter:
    """Waits, bounded, until the projector's committed position passes a given one."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        topic: str,
        first_delay_s: float = 0.005,
        max_delay_s: float = 0.05,
    ) -> None:
        self._pool = pool
        self._topic = topic
        self._first_delay = first_delay_s
        self._max_delay = max_delay_s
        # One event per partition somebody waits on; a notification sets and drops it, so
        # every waiter of that partition wakes and the next round gets a fresh event.
        self._wakeups: dict[int, asyncio.Event] = {}

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

    # ------------------------------------------------------------------ wake-ups
    # Fed by the process's shared Listener (shared/listener.py).

    def notified(self, payload: str) -> None:
        """A `projector_progress` payload: wake the waiters of the partitions it names."""
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
                self.wake_all()  # a payload we can't read: waking everyone is always safe
                return
            event = self._wakeups.pop(int(partition), None)
            if event is not None:
                event.set()

    def wake_all(self) -> None:
        wakeups, self._wakeups = self._wakeups, {}
        for event in wakeups.values():
            event.set()
