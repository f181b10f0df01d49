"""The read-side figures: home reads against the raw SQL loop and the naive JOIN, the page at
depth 400, and the mixed load. Shared setup and load helpers are in bench/figures.py."""

from __future__ import annotations

import asyncio
import time

import asyncpg

from bench import loadgen
from bench.figures import (
    JSON,
    POST_BODY,
    SLICES,
    Ctx,
    Metrics,
    Tally,
    _get,
    _headers,
    _rates,
    alternate,
    at_rate,
    drain,
    quiet_database,
    sweep,
)
from bench.stats import summarize
from services.query import repository
from services.query.app import create_query_pool
from services.query.pagination import Page


async def pg_home_loop(
    pool: asyncpg.Pool, viewers: list[int], concurrency: int, secs: float, offset: int = 0
) -> tuple[list[float], float]:
    """The baseline: the query service's own home-timeline statement in a raw asyncpg loop.
    Latencies (ms) and the elapsed seconds."""
    lat: list[float] = []
    # The statement the service picks (services/query/pull_state.py).
    pulls = bool(await pool.fetchval("SELECT EXISTS (SELECT 1 FROM pull_authors)"))

    async def worker(w: int) -> None:
        i = offset + w
        while time.perf_counter() < end:
            t = time.perf_counter()
            await repository.home_timeline(pool, viewers[i % len(viewers)], Page(), pulls)
            lat.append((time.perf_counter() - t) * 1000)
            i += concurrency

    with loadgen.quiet_gc():
        t0 = time.perf_counter()
        end = t0 + secs
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        return lat, time.perf_counter() - t0


# A figure and its baseline run in alternating slices (A B B A A B B A), so that background
# work that comes and goes (a checkpoint, autovacuum, the projector's trims, other processes
# on the 2 shared cores) lands on both sides instead of on whichever ran second. Single 5 s
# runs one after the other gave per-run ratios of 0.38, 0.30 and 0.19 in one default run.
async def reads_run(ctx: Ctx, viewers: list[int]) -> Metrics:
    p = ctx.preset
    await quiet_database(ctx)
    headers = _headers(ctx, viewers)
    home = _get(f"{ctx.url('query')}/v1/timelines/home", headers)
    naive = _get(f"{ctx.url('baseline')}/naive_home", headers)
    m: Metrics = {}
    ctx.progress("home reads: closed loop and raw asyncpg baseline, alternating")
    # The baseline's pool is built exactly like the service's (create_query_pool: same size,
    # same release without a reset query), so the ratio measures the HTTP path and nothing
    # the pool configuration could hide.
    pool = await create_query_pool(ctx.db_url)
    http, pg_lat, pg_s = Tally(), list[float](), 0.0

    async def http_slice() -> None:
        http.add(await loadgen.closed_loop(ctx.client, p.concurrency, p.closed_s / SLICES, home))

    async def pg_slice() -> None:
        nonlocal pg_s
        lat, secs = await pg_home_loop(
            pool, viewers, p.concurrency, p.closed_s / SLICES, offset=len(pg_lat)
        )
        pg_lat.extend(lat)
        pg_s += secs

    try:
        await alternate(SLICES, http_slice, pg_slice)
    finally:
        await pool.close()
    m["home_max_rps"] = round(http.rps, 1)
    ctx.home_max_rps = http.rps
    m["home_max_errors"] = http.errors
    m["pg_max_rps"] = round(len(pg_lat) / pg_s, 1)
    m["pg_p99_ms"] = round(summarize(pg_lat)["p99"], 3)
    ctx.progress("naive fan-out-on-read: closed loop")
    res = await loadgen.closed_loop(ctx.client, p.concurrency, p.closed_s, naive)
    m["naive_max_rps"] = round(res.achieved, 1)
    m["_home_sweep"] = await sweep(
        ctx, home, _rates(p.read_rates, m["home_max_rps"]), m["home_max_rps"], "home"
    )
    m["_naive_sweep"] = await sweep(
        ctx, naive, _rates(p.read_rates, m["naive_max_rps"]), m["naive_max_rps"], "naive"
    )
    await quiet_database(ctx)
    m["home_p99_at_slo_ms"] = at_rate(m["_home_sweep"], p.slo_read_rate)
    m["naive_p99_at_slo_ms"] = at_rate(m["_naive_sweep"], p.slo_read_rate)
    return m


async def depth_run(ctx: Ctx, deep: list[tuple[int, int]]) -> Metrics:
    """Pages at depth 400 against first pages of the same viewers, interleaved in one open loop
    (even requests first pages, odd ones deep pages), so both see the same moments of the
    machine: measured one after the other, a stall in either step alone moved the ratio (the
    13:36 default run: 3.3x, 1.3x and 0.6x per run)."""
    p = ctx.preset
    await quiet_database(ctx)
    url = f"{ctx.url('query')}/v1/timelines/home"
    first_h = _headers(ctx, [u for u, _ in deep])
    # Well inside capacity: the figure compares the cost of a page, not queueing.
    cap = int(ctx.home_max_rps / 2) if ctx.home_max_rps else p.slo_read_rate // 2
    rate = max(20, min(p.slo_read_rate // 2, cap))
    deep_urls = [f"{url}?max_id={mx}" for _, mx in deep]
    n = len(deep)

    def make(i: int) -> loadgen.Request:
        j = (i // 2) % n
        return ("GET", url if i % 2 == 0 else deep_urls[j], first_h[j], None)

    ctx.progress(f"page depth: first pages and pages at depth 400, interleaved, {rate} req/s")
    # Twice a step: each kind gets as many requests as a step of its own would have had.
    res = await loadgen.open_loop(
        ctx.client, rate, 2 * p.step_s, make, classify=lambda i: "first" if i % 2 == 0 else "deep"
    )
    f, d = summarize(res.by_class.get("first", [])), summarize(res.by_class.get("deep", []))
    return {
        "rate": rate,
        "viewers": n,
        "errors": res.errors,
        "first_p99_ms": f["p99"],
        "depth400_p99_ms": d["p99"],
        "first_p50_ms": f["p50"],
        "depth400_p50_ms": d["p50"],
    }


# The mixed load runs this long before it is measured, at the same rate and mix. The first run
# of an invocation otherwise measured a cold start: the client opened ~120 new connections
# (the query service closes kept-alive ones after 15 s idle, and the earlier figures left them
# idle) and the services' pools grew, at the peak of the load, and every request queued behind
# that (p50 150-200 ms in its first 0.5 s; run 2, on warm connections, had none of it). The
# warm-up's p99 is kept in the results (warmup_p99_ms) so the cold start stays visible. Since the
# mixed load runs before the POST figure, the command service meets its first posts here: its
# pool's connections open and introspect their types (pg_stat_activity: `WITH RECURSIVE
# typeinfo_tree` in the load's first seconds), and 2 s left the first run the worst of three.
MIXED_WARMUP_S = 5.0


async def mixed_run(ctx: Ctx, viewers: list[int], authors: list[int]) -> Metrics:
    p = ctx.preset
    q, c = ctx.url("query"), ctx.url("command")
    vh = _headers(ctx, viewers)
    ah = [{**JSON, "Authorization": ctx.token(a)} for a in authors]
    kinds = ["home"] * 6 + ["user"] * 3 + ["post"]

    def make(i: int) -> loadgen.Request:
        k = kinds[i % 10]
        if k == "home":
            return ("GET", f"{q}/v1/timelines/home", vh[i % len(vh)], None)
        if k == "user":
            target = authors[(i * 7) % len(authors)]
            return ("GET", f"{q}/v1/users/{target}/posts", vh[i % len(vh)], None)
        return ("POST", f"{c}/v1/posts", ah[i % len(ah)], POST_BODY)

    await drain(ctx)
    ctx.progress(f"mixed load at {p.mixed_rate} req/s: warm-up")
    warm = await loadgen.open_loop(ctx.client, p.mixed_rate, MIXED_WARMUP_S, make)
    ctx.progress(f"mixed load at {p.mixed_rate} req/s")
    res = await loadgen.open_loop(
        ctx.client, p.mixed_rate, max(p.step_s, 5.0), make, classify=lambda i: kinds[i % 10]
    )
    s = res.summary()
    out: Metrics = {
        "offered_rps": p.mixed_rate,
        "achieved_rps": s["achieved_rps"],
        "errors": s["errors"],
        "p50_ms": s["p50"],
        "p99_ms": s["p99"],
        "warmup_p99_ms": warm.summary()["p99"],
    }
    for k, xs in res.by_class.items():
        out[f"{k}_p99_ms"] = round(summarize(xs)["p99"], 3)
    return out
