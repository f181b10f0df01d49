"""HTTP load: open loop (arrivals scheduled in advance) and closed loop (max throughput).

Open loop: request i is due at t0 + i/rate whatever happened before, and its latency is
measured from that due time, so a stall of the server (or of this client) shows up as latency
of every request that should have started during it, instead of silently lowering the rate
(coordinated omission). Requests that cannot be sent on time still count from their due time.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import aiohttp

from bench.httpclient import Client, HttpError
from bench.stats import summarize

# (method, url, headers, body)
Request = tuple[str, str, dict[str, str], bytes | None]
MakeRequest = Callable[[int], Request]


@dataclass
class Result:
    offered: float  # req/s asked for (0 for a closed loop)
    duration_s: float
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    by_class: dict[str, list[float]] = field(default_factory=dict)

    @property
    def achieved(self) -> float:
        return len(self.latencies_ms) / self.duration_s if self.duration_s else 0.0

    def summary(self) -> dict[str, float]:
        s = summarize(self.latencies_ms)
        return {
            "offered_rps": self.offered,
            "achieved_rps": round(self.achieved, 1),
            "errors": self.errors,
            **{k: round(v, 3) for k, v in s.items()},
        }


@contextmanager
def quiet_gc() -> Iterator[None]:
    """No collector pauses of this client during a measurement: collect and freeze what the
    process holds (`gc.freeze`), then switch automatic collection off until the block ends.

    The bench process keeps the graph, the events it produced and earlier results alive, and an
    open loop keeps thousands of request tasks until it ends; in one reads run this client
    paused 105 times over 2 ms inside its load loops, the longest 50-270 ms, and every request
    due meanwhile counted the client's pause as the server's latency. Reference counting still
    frees what the block drops; cycles wait for the collection at its end."""
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()
        gc.collect()


def session(limit: int = 512) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit, force_close=False)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=15),
        skip_auto_headers=("User-Agent",),
    )


async def _one(
    s: Client,
    req: Request,
    due: float,
    res: Result,
    ok: Callable[[int], bool],
    cls: str | None = None,
) -> None:
    method, url, headers, body = req
    try:
        status, _ = await s.request(method, url, headers, body)
    except (HttpError, OSError, TimeoutError):
        res.errors += 1
        return
    res.statuses[status] = res.statuses.get(status, 0) + 1
    if ok(status):
        ms = (time.perf_counter() - due) * 1000
        res.latencies_ms.append(ms)
        if cls is not None:
            res.by_class.setdefault(cls, []).append(ms)
    else:
        res.errors += 1


def _is_2xx(status: int) -> bool:
    return 200 <= status < 300


async def open_loop(
    s: Client,
    rate: float,
    duration_s: float,
    make: MakeRequest,
    ok: Callable[[int], bool] = _is_2xx,
    classify: Callable[[int], str] | None = None,
) -> Result:
    n = max(1, int(rate * duration_s))
    res = Result(offered=rate, duration_s=duration_s)
    tasks: list[asyncio.Task[None]] = []
    with quiet_gc():
        t0 = time.perf_counter() + 0.05
        for i in range(n):
            due = t0 + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            cls = classify(i) if classify is not None else None
            tasks.append(asyncio.create_task(_one(s, make(i), due, res, ok, cls)))
        await asyncio.gather(*tasks)
        # Throughput over the whole span including the tail of late answers.
        res.duration_s = max(duration_s, time.perf_counter() - t0)
    return res


async def closed_loop(
    s: Client,
    concurrency: int,
    duration_s: float,
    make: MakeRequest,
    ok: Callable[[int], bool] = _is_2xx,
) -> Result:
    res = Result(offered=0, duration_s=duration_s)
    counter = iter(range(1 << 62))

    async def worker() -> None:
        while time.perf_counter() < end:
            await _one(s, make(next(counter)), time.perf_counter(), res, ok)

    with quiet_gc():
        t0 = time.perf_counter()
        end = t0 + duration_s
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        res.duration_s = time.perf_counter() - t0
    return res
