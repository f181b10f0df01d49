"""The write-side figures over HTTP: POST /v1/posts against a no-op handler, and post → visible
against the broker's bare latency. Shared setup and load helpers are in bench/figures.py."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import asyncpg

from bench import kafka_io, loadgen
from bench.figures import (
    JSON,
    POST_BODY,
    SLICES,
    Ctx,
    Metrics,
    Tally,
    alternate,
    drain,
    quiet_database,
    sweep,
)
from bench.stats import summarize


async def posts_run(ctx: Ctx, authors: list[int]) -> Metrics:
    p = ctx.preset
    await quiet_database(ctx)
    headers = [{**JSON, "Authorization": ctx.token(a)} for a in authors]
    post_url, noop_url = f"{ctx.url('command')}/v1/posts", f"{ctx.url('baseline')}/noop"

    def post(i: int) -> loadgen.Request:
        return ("POST", post_url, headers[i % len(headers)], POST_BODY)

    def noop(i: int) -> loadgen.Request:
        return ("POST", noop_url, headers[i % len(headers)], POST_BODY)

    m: Metrics = {}
    ctx.progress("no-op handler and POST /v1/posts: closed loops, alternating")
    noops, posts = Tally(), Tally()

    async def noop_slice() -> None:
        noops.add(await loadgen.closed_loop(ctx.client, p.concurrency, p.closed_s / SLICES, noop))

    async def post_slice() -> None:
        posts.add(await loadgen.closed_loop(ctx.client, p.concurrency, p.closed_s / SLICES, post))

    await alternate(SLICES, noop_slice, post_slice)
    m["noop_max_rps"] = round(noops.rps, 1)
    m["post_max_rps"] = round(posts.rps, 1)
    m["post_max_errors"] = posts.errors
    half = max(10, int(m["post_max_rps"] / 2))
    ctx.progress(f"POST /v1/posts: open loop at half of max ({half} req/s)")
    res = await loadgen.open_loop(ctx.client, half, p.step_s, post)
    m["post_half_rate"] = half
    m["post_p99_at_half_ms"] = res.summary()["p99"]
    nhalf = max(10, int(m["noop_max_rps"] / 2))
    ctx.progress(f"no-op handler: open loop at half of max ({nhalf} req/s)")
    res = await loadgen.open_loop(ctx.client, nhalf, p.step_s, noop)
    m["noop_p99_at_half_ms"] = res.summary()["p99"]
    m["_post_sweep"] = await sweep(ctx, post, p.post_rates, m["post_max_rps"], "posts")
    ctx.progress("waiting for the projector to drain the posts")
    m["projector_drain_after_s"] = round(await drain(ctx), 2)
    return m


class _Progress:
    """Follows the projector's commits (NOTIFY projector_progress) to time visibility."""

    def __init__(self) -> None:
        self.done: dict[int, int] = {}
        self.waiters: list[tuple[int, int, asyncio.Future[float]]] = []

    def on_notify(self, _c: object, _pid: int, _ch: str, payload: str) -> None:
        now = time.perf_counter()
        for part in payload.split(","):
            ps, _, os_ = part.partition(":")
            if ps and os_:
                self.done[int(ps)] = max(self.done.get(int(ps), 0), int(os_))
        keep = []
        for p, o, fut in self.waiters:
            if self.done.get(p, 0) > o:
                if not fut.done():
                    fut.set_result(now)
            else:
                keep.append((p, o, fut))
        self.waiters = keep

    def wait(self, partition: int, offset: int) -> asyncio.Future[float]:
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        if self.done.get(partition, 0) > offset:
            fut.set_result(time.perf_counter())
        else:
            self.waiters.append((partition, offset, fut))
        return fut


VISIBILITY_LIMIT_S = 30.0


async def _post_once(ctx: Ctx, url: str, author: int) -> Any:
    """POST a post; one retry when a kept-alive connection was closed under us (the server
    may drop idle keep-alive connections between figures)."""
    headers = {**JSON, "Authorization": ctx.token(author)}
    for attempt in range(2):
        try:
            async with ctx.session.post(url, data=POST_BODY, headers=headers) as resp:
                return await resp.json()
        except aiohttp.ClientOSError:
            if attempt:
                raise
    raise AssertionError("unreachable")


async def _visible_at(ctx: Ctx, prog: _Progress, partition: int, offset: int) -> float | None:
    """When the projector committed past (partition, offset): the NOTIFY, or else the stored
    offset polled every 20 ms (a lost or late notification must not pose as latency)."""
    fut = prog.wait(partition, offset)
    deadline = time.perf_counter() + VISIBILITY_LIMIT_S
    while time.perf_counter() < deadline:
        done, _ = await asyncio.wait({fut}, timeout=0.02)
        if done:
            return fut.result()
        stored = await ctx.pool.fetchval(
            "SELECT next_offset FROM projector_offsets WHERE topic = $1 AND partition = $2",
            ctx.topic,
            partition,
        )
        if stored is not None and stored > offset:
            return time.perf_counter()
    fut.cancel()
    return None


async def visibility_run(ctx: Ctx) -> Metrics:
    """Post -> committed into every follower's home timeline, for median and top-0.1 % authors.

    The projector commits a batch's timeline rows and offsets in one transaction and NOTIFYs
    at commit, so the first notification past the post's position is the moment every
    follower can read it.
    """
    p = ctx.preset
    n = p.visibility_samples
    classes = {
        "median": [int(a) for a in ctx.graph.median_authors(n)],
        "top0.1%": [int(a) for a in ctx.graph.top_authors()],
    }
    await drain(ctx)  # measure latency, not a backlog left by an earlier figure
    listener = await asyncpg.connect(ctx.db_url)
    prog = _Progress()
    await listener.add_listener("projector_progress", prog.on_notify)
    lat: dict[str, list[float]] = {k: [] for k in classes}
    accept: dict[str, list[float]] = {k: [] for k in classes}
    timeouts = 0
    url = f"{ctx.url('command')}/v1/posts"
    try:
        with loadgen.quiet_gc():
            for i in range(n):
                for cls, authors in classes.items():
                    author = authors[i % len(authors)]
                    t0 = time.perf_counter()
                    body = await _post_once(ctx, url, author)
                    accept[cls].append((time.perf_counter() - t0) * 1000)
                    part, off = (int(x) for x in body["position"].split(":"))
                    t_vis = await _visible_at(ctx, prog, part, off)
                    if t_vis is None:
                        timeouts += 1
                        t_vis = t0 + VISIBILITY_LIMIT_S
                    lat[cls].append((t_vis - t0) * 1000)
                    await asyncio.sleep(0.05)
    finally:
        await listener.close()
    ctx.progress("broker baseline: bare produce -> consume")
    with loadgen.quiet_gc():
        broker = await kafka_io.produce_consume_latency(
            ctx.infra.bootstrap, ctx.topic + ".ping", p.broker_samples
        )
    out: Metrics = {}
    for cls, xs in lat.items():
        s = summarize(xs)
        out[f"{cls}_p50_ms"] = round(s["p50"], 2)
        out[f"{cls}_p99_ms"] = round(s["p99"], 2)
        out[f"{cls}_over_1s"] = sum(1 for x in xs if x > 1000)
        out[f"{cls}_post_answer_p99_ms"] = round(summarize(accept[cls])["p99"], 2)
        out[f"_{cls}_samples_ms"] = [round(x, 1) for x in xs]
    b = summarize(broker)
    out["broker_p50_ms"] = round(b["p50"], 2)
    out["broker_p99_ms"] = round(b["p99"], 2)
    out["timeouts"] = timeouts
    out["top_followers"] = int(ctx.graph.followers_count[classes["top0.1%"][0]])
    out["median_followers"] = int(ctx.graph.followers_count[classes["median"][0]])
    return out
