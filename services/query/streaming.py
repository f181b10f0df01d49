"""`GET /v1/streaming/home`: Server-Sent Events of the signed-in user's home timeline and
notifications.

Events: `update` (a new home item, data = the item), `notification` (data = the notification),
`delete` (data = the id of a deleted post of the user or of someone they follow).

Each event's `id:` is a cursor over the three sources it reads, `<home key>.<notification
uuid>.<tombstone µs>.<tombstone post id>`: the last home key, notification and tombstone sent so
far. A client that reconnects with `Last-Event-ID` resumes after it, so nothing is sent twice.
Without the header the stream starts at "now". Home keys and notification ids are assigned when
the command is accepted, so a row the projector writes late with a key older than the cursor is
not sent (the client sees it on its next timeline read); everything committed in key order
arrives exactly once.

Wake-ups: the projector NOTIFYs `stream_wakeup` with the comma-separated ids of users whose home
or notifications changed (or `*`). The process's one LISTEN connection (shared/listener.py)
hands them to the `StreamHub`, which wakes the matching subscribers; they then
read from PostgreSQL through the shared pool. Every
subscriber also polls every `poll_s`, so streams work, only slower, without any NOTIFY.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Final

import msgspec
from aiohttp import web

from services.query import repository, stream_reads, views
from services.query.handlers import POOL, signed_in
from services.query.notifications import render
from shared.http import ApiError

log = logging.getLogger("microblog.query.streaming")

CHANNEL: Final = "stream_wakeup"
BATCH: Final = 40
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_encoder: Final = msgspec.json.Encoder()


# ------------------------------------------------------------------ the cursor (pure)


class Cursor(msgspec.Struct, frozen=True, kw_only=True):
    home: int = 0
    notification: uuid.UUID = uuid.UUID(int=0)
    tombstone_us: int = 0
    tombstone_id: int = 0

    def encode(self) -> str:
        return f"{self.home}.{self.notification}.{self.tombstone_us}.{self.tombstone_id}"

    @property
    def tombstone_at(self) -> datetime:
        return _EPOCH + timedelta(microseconds=self.tombstone_us)


def parse_cursor(value: str) -> Cursor:
    """A cursor from `Last-Event-ID`; anything malformed is a 400 naming the header."""
    parts = value.strip().split(".")
    try:
        if len(parts) != 4 or not all(p.isascii() and p.isdigit() for p in parts[::2] + parts[3:]):
            raise ValueError(value)
        if len(parts[1]) != 36:
            raise ValueError(value)
        cursor = Cursor(
            home=int(parts[0]),
            notification=uuid.UUID(parts[1]),
            tombstone_us=int(parts[2]),
            tombstone_id=int(parts[3]),
        )
        if cursor.home >= 1 << 63 or cursor.tombstone_id >= 1 << 63:
            raise ValueError(value)
        cursor.tombstone_at  # noqa: B018 - raises OverflowError when out of datetime's range
    except (ValueError, OverflowError):
        raise ApiError(
            400,
            "invalid_last_event_id",
            "Last-Event-ID is not a cursor of this stream",
            "Last-Event-ID",
        ) from None
    return cursor


def micros(at: datetime) -> int:
    return (at - _EPOCH) // timedelta(microseconds=1)


def sse(event: str, data: bytes | str, cursor: Cursor) -> bytes:
    """One SSE frame. `data` is single-line JSON or an id, so it needs no line splitting."""
    body = data if isinstance(data, bytes) else data.encode()
    return b"event: %s\nid: %s\ndata: %s\n\n" % (event.encode(), cursor.encode().encode(), body)


# ------------------------------------------------------------------ the hub: one LISTEN per process


class StreamHub:
    """Wakes the subscribers of the users a `stream_wakeup` notification names. It is fed by
    the process's shared `Listener`; `close` ends every open stream (graceful shutdown)."""

    def __init__(self, poll_s: float = 2.0, heartbeat_s: float = 15.0) -> None:
        self.poll_s = poll_s
        self.heartbeat_s = heartbeat_s
        self._subscribers: dict[int, set[asyncio.Event]] = {}
        self.closing = asyncio.Event()

    @contextlib.contextmanager
    def subscribe(self, user_id: int) -> Iterator[asyncio.Event]:
        wakeup = asyncio.Event()
        self._subscribers.setdefault(user_id, set()).add(wakeup)
        try:
            yield wakeup
        finally:
            events = self._subscribers.get(user_id)
            if events is not None:
                events.discard(wakeup)
                if not events:
                    del self._subscribers[user_id]

    def wake(self, payload: str) -> None:
        for item in payload.split(","):
            item = item.strip()
            if item.isascii() and item.isdigit():
                for event in self._subscribers.get(int(item), ()):
                    event.set()
            else:  # `*`, or a payload we can't read: waking everyone is always safe
                self.wake_all()
                return

    def wake_all(self) -> None:
        for events in self._subscribers.values():
            for event in events:
                event.set()

    def close(self) -> None:
        self.closing.set()
        self.wake_all()


STREAM_HUB: Final = web.AppKey("stream_hub", StreamHub)


# ------------------------------------------------------------------ reading and the handler


async def start_cursor(db: repository.Db, viewer: int) -> Cursor:
    row = await stream_reads.stream_start(db, viewer)
    at = row["tombstone_at"]
    return Cursor(
        home=row["home"] or 0,
        notification=row["notification"] or uuid.UUID(int=0),
        tombstone_us=0 if at is None else micros(at),
        tombstone_id=row["tombstone_id"] or 0,
    )


async def catch_up(
    db: repository.Db, viewer: int, cursor: Cursor
) -> tuple[list[bytes], Cursor, bool]:
    """Frames for what happened after `cursor`, the cursor after them, and whether more may
    be waiting (a batch came back full)."""
    frames: list[bytes] = []
    home = await repository.home_after(db, viewer, cursor.home, BATCH)
    for row in home:
        cursor = msgspec.structs.replace(cursor, home=row["key"])
        frames.append(sse("update", _encoder.encode(views.item(row, viewer)), cursor))
    notes = await stream_reads.notifications_after(db, viewer, cursor.notification, BATCH)
    rendered = {n.id: n for n in await render(db, notes, viewer)}
    for row in notes:
        cursor = msgspec.structs.replace(cursor, notification=row["event_id"])
        note = rendered.get(str(row["event_id"]))
        if note is not None:
            frames.append(sse("notification", _encoder.encode(note), cursor))
    tombs = await stream_reads.tombstones_after(
        db, viewer, cursor.tombstone_at, cursor.tombstone_id, BATCH
    )
    for row in tombs:
        cursor = msgspec.structs.replace(
            cursor, tombstone_us=micros(row["deleted_at"]), tombstone_id=row["post_id"]
        )
        frames.append(sse("delete", str(row["post_id"]), cursor))
    more = BATCH in (len(home), len(notes), len(tombs))
    return frames, cursor, more


def _gone(request: web.Request) -> bool:
    return request.transport is None or request.transport.is_closing()


async def home_stream(request: web.Request) -> web.StreamResponse:
    viewer = await signed_in(request)
    hub = request.app[STREAM_HUB]
    pool = request.app[POOL]
    last = request.headers.get("Last-Event-ID")
    cursor = parse_cursor(last) if last else await start_cursor(pool, viewer)
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    loop = asyncio.get_running_loop()
    with hub.subscribe(viewer) as wakeup:
        try:
            await response.write(b": connected\n\n")
            beat_at = loop.time() + hub.heartbeat_s
            # A client that went away is noticed here at the next wake-up or poll, not only
            # when a write fails, so it stops costing reads within one poll interval.
            while not hub.closing.is_set() and not _gone(request):
                # Cleared before reading, so a wake-up that lands during the read is kept.
                wakeup.clear()
                more = False
                try:
                    frames, cursor, more = await catch_up(pool, viewer, cursor)
                except repository.UNAVAILABLE as exc:
                    # PostgreSQL away: keep the client, retry on the next poll.
                    log.warning("stream read failed (%s); retrying", exc)
                    frames = []
                for frame in frames:
                    await response.write(frame)
                if more:
                    continue
                if loop.time() >= beat_at:
                    await response.write(b": heartbeat\n\n")
                    beat_at = loop.time() + hub.heartbeat_s
                timeout = min(hub.poll_s, max(0.0, beat_at - loop.time()))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await wakeup.wait()
        except ConnectionError:
            pass  # the client went away
    return response
