"""The figures of issue #5. Each `*_run` measures one figure and its same-run baseline once and
returns flat numbers (plus series for the plots); __main__ repeats them and takes medians.
This module: the shared context and load helpers, fan-out, the read dataset and rebuild;
figures_reads.py and figures_writes.py: the figures over HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import numpy as np

from bench import dataset, kafka_io, loadgen
from bench.graph import Graph, sample_authors
from bench.httpclient import Client
from bench.presets import Preset
from bench.stack import (
    TOKEN_SECRET,
    Infra,
    Process,
    projector_instance,
    service,
    service_env,
)
from shared.auth import issue_token
from shared.devstack import free_port
from shared.events import (
    FollowCreated,
    FollowData,
    PostCreated,
    PostCreatedData,
    UserRegistered,
    UserRegisteredData,
    new_event,
)
from shared.ids import SnowflakeGenerator

Metrics = dict[str, Any]
TIMELINE_CAP = 800  # the services' default MB_TIMELINE_CAP, which the bench does not override
POST_BODY = b'{"text":"benchmark post: hello, followers"}'
JSON = {"Content-Type": "application/json"}


@dataclass
class Ctx:
    preset: Preset
    infra: Infra
    graph: Graph
    db_name: str
    db_url: str
    topic: str
    logs: Path
    pool: asyncpg.Pool
    session: aiohttp.ClientSession  # single requests (visibility, metrics)
    client: Client  # the load loops (bench/httpclient.py)
    procs: dict[str, Process] = field(default_factory=dict)
    projectors: int = 1  # instances in the projector's consumer group
    tokens: dict[int, str] = field(default_factory=dict)
    ids: SnowflakeGenerator = field(default_factory=lambda: SnowflakeGenerator(1021))
    rss_samples: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    progress: Callable[[str], None] = print
    home_max_rps: float = 0.0  # from the reads figure; sizes the depth figure's rate

    def url(self, name: str) -> str:
        return self.procs[name].url

    def token(self, user_id: int) -> str:
        tok = self.tokens.get(user_id)
        if tok is None:
            tok = "Bearer " + issue_token(TOKEN_SECRET, user_id, 24 * 3600)[0]
            self.tokens[user_id] = tok
        return tok


# ------------------------------------------------------------------ helpers


async def offsets(pool: asyncpg.Pool, topic: str) -> dict[int, int]:
    try:
        rows = await pool.fetch(
            "SELECT partition, next_offset FROM projector_offsets WHERE topic = $1", topic
        )
    except (asyncpg.UndefinedTableError, asyncpg.InvalidCatalogNameError):
        return {}
    return {r["partition"]: r["next_offset"] for r in rows}


def remaining(done: dict[int, int], ends: dict[int, int]) -> int:
    return sum(max(0, end - done.get(p, 0)) for p, end in ends.items())


async def wait_caught_up(
    pool: asyncpg.Pool, topic: str, ends: dict[int, int], t0: float, limit_s: float
) -> tuple[list[tuple[float, int]], float | None, float]:
    """Poll the projector's stored offsets until it passed `ends`.

    Returns the lag series [(seconds since t0, events behind)], the time of the first observed
    progress and the time it caught up (both perf_counter).
    """
    series: list[tuple[float, int]] = []
    start = await offsets(pool, topic)
    first: float | None = None
    while True:
        now = time.perf_counter()
        done = await offsets(pool, topic)
        lag = remaining(done, ends)
        series.append((now - t0, lag))
        if first is None and any(done.get(p, 0) > start.get(p, 0) for p in ends):
            first = now
        if lag == 0:
            return series, first, now
        if now - t0 > limit_s:
            raise TimeoutError(f"projector still {lag} events behind after {limit_s:.0f}s")
        await asyncio.sleep(0.05)


def post_events(authors: list[int], ids: SnowflakeGenerator) -> list[PostCreated]:
    return [
        new_event(
            PostCreated,
            actor_id=a,
            data=PostCreatedData(post_id=ids.next_id(), author_id=a, text=f"fan-out post {i}"),
        )
        for i, a in enumerate(authors)
    ]


async def quiet_database(ctx: Ctx, limit_s: float = 60.0) -> float:
    """Wait (at most `limit_s`) until no statement is running in the bench's database except
    perhaps the projectors': work a figure left behind, such as requests the load generator
    gave up on, must not be measured as part of the next one. Seconds waited."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < limit_s:
        active = await ctx.pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND state = 'active' AND pid <> pg_backend_pid()"
        )
        if active <= ctx.projectors:
            break
        await asyncio.sleep(0.2)
    return time.perf_counter() - t0


async def drain(ctx: Ctx) -> float:
    """Wait until the projector has applied everything on the main topic; returns seconds."""
    t0 = time.perf_counter()
    ends = await kafka_io.end_offsets(ctx.infra.bootstrap, ctx.topic)
    await wait_caught_up(ctx.pool, ctx.topic, ends, t0, limit_s=900)
    return time.perf_counter() - t0


# ------------------------------------------------------------------ fan-out


async def fanout_run(ctx: Ctx, run: int) -> Metrics:
    """Projector fan-out of real post.created events vs a bare INSERT … SELECT of the same posts
    from the same follows (timelines emptied before each)."""
    p = ctx.preset
    authors = [int(a) for a in sample_authors(ctx.graph, p.fanout_posts, seed=1000 + run)]
    events = post_events(authors, ctx.ids)
    async with ctx.pool.acquire() as conn:
        await dataset.truncate_posts(conn)
        await conn.copy_records_to_table(
            "posts",
            records=[(e.data.post_id, e.data.author_id, e.data.text, e.time) for e in events],
            columns=["post_id", "author_id", "text", "created_at"],
        )
        await conn.execute("ANALYZE posts")
        with loadgen.quiet_gc():
            bare_rows, bare_s = await dataset.bare_fanout(conn)
        await dataset.truncate_posts(conn)
        await conn.execute("CHECKPOINT")
    with loadgen.quiet_gc():
        t0 = time.perf_counter()
        publish = asyncio.create_task(kafka_io.publish(ctx.infra.bootstrap, ctx.topic, events))
        ends = await publish
        produced_s = time.perf_counter() - t0
        series, _, t_end = await wait_caught_up(ctx.pool, ctx.topic, ends, t0, limit_s=900)
    rows = await ctx.pool.fetchval("SELECT count(*) FROM home_timeline")
    proj_s = t_end - t0
    return {
        "posts": len(events),
        "bare_rows": bare_rows,
        "bare_s": round(bare_s, 3),
        "bare_rows_per_s": round(bare_rows / bare_s),
        "projector_rows": rows,
        "projector_s": round(proj_s, 3),
        "produce_s": round(produced_s, 3),
        "projector_rows_per_s": round(rows / proj_s),
        "projector_events_per_s": round(len(events) / proj_s),
        "write_amplification": round(rows / len(events), 1),
        "_lag": series,
    }


async def load_read_dataset(ctx: Ctx, now_ms: int) -> Metrics:
    from bench.graph import bulk_posts

    ids, authors, created = bulk_posts(ctx.graph, ctx.preset.posts_per_user, now_ms)
    async with ctx.pool.acquire() as conn:
        await dataset.truncate_posts(conn)
        await dataset.load_posts(conn, ids, authors, created)
        rows, secs = await dataset.bare_fanout(conn)
        # Without statistics of the freshly filled table, the trim was once planned for an
        # empty one and ran for over 17 minutes instead of seconds.
        await conn.execute("ANALYZE home_timeline")
        trimmed = await dataset.trim_to_cap(conn, TIMELINE_CAP)
        await conn.execute("VACUUM ANALYZE home_timeline")
        await conn.execute("VACUUM ANALYZE posts")
        # The load wrote ~1 GB of WAL: its checkpoint now, not spread over the read figures.
        await conn.execute("CHECKPOINT")
    return {
        "posts": int(ids.size),
        "timeline_rows": rows - trimmed,
        "trimmed_to_cap": trimmed,
        "bulk_fanout_s": round(secs, 2),
    }


# ------------------------------------------------------------------ load helpers


SLICES = 4


async def alternate(
    slices: int, first: Callable[[], Awaitable[None]], second: Callable[[], Awaitable[None]]
) -> None:
    for k in range(slices):
        for step in (first, second) if k % 2 == 0 else (second, first):
            await step()


class Tally:
    """Closed-loop slices added up."""

    def __init__(self) -> None:
        self.latencies_ms: list[float] = []
        self.seconds = 0.0
        self.errors = 0

    def add(self, res: loadgen.Result) -> None:
        self.latencies_ms += res.latencies_ms
        self.seconds += res.duration_s
        self.errors += res.errors

    @property
    def rps(self) -> float:
        return len(self.latencies_ms) / self.seconds if self.seconds else 0.0


def _get(url: str, headers: list[dict[str, str]]) -> loadgen.MakeRequest:
    return lambda i: ("GET", url, headers[i % len(headers)], None)


def _headers(ctx: Ctx, users: list[int]) -> list[dict[str, str]]:
    return [{"Authorization": ctx.token(u)} for u in users]


async def sweep(
    ctx: Ctx, make: loadgen.MakeRequest, rates: tuple[int, ...], max_rps: float, label: str
) -> list[Metrics]:
    out: list[Metrics] = []
    for rate in rates:
        # The SLO rate always runs: its p99 is a target even when the server saturates below it.
        if max_rps and rate > 1.5 * max_rps and rate != ctx.preset.slo_read_rate:
            # Far past saturation the backlog only grows; the step would tell nothing new.
            out.append(
                {"offered_rps": rate, "skipped": f"above 1.5x the closed-loop max {max_rps:.0f}"}
            )
            continue
        ctx.progress(f"{label}: open loop at {rate} req/s")
        res = await loadgen.open_loop(ctx.client, rate, ctx.preset.step_s, make)
        out.append(res.summary())
    return out


def _rates(preset_rates: tuple[int, ...], max_rps: float) -> tuple[int, ...]:
    """The preset's rates plus half and 90 % of the measured maximum, so the curve has points
    below saturation even on a machine far slower than the preset assumed."""
    extra = {int(max_rps * f) for f in (0.5, 0.9) if int(max_rps * f) >= 5}
    return tuple(sorted(set(preset_rates) | extra))


def at_rate(steps: list[Metrics], rate: int, key: str = "p99") -> float:
    for s in steps:
        if s.get("offered_rps") == rate and key in s:
            return float(s[key])
    return float("nan")


# ------------------------------------------------------------------ rebuild


def rebuild_events(graph: Graph, preset: Preset, ids: SnowflakeGenerator) -> list[Any]:
    rng = np.random.default_rng(77)
    evs: list[Any] = [
        new_event(
            UserRegistered,
            actor_id=u,
            data=UserRegisteredData(user_id=u, username=f"user{u}", display_name=f"User {u}"),
        )
        for u in range(1, graph.users + 1)
    ]
    k = min(preset.rebuild_follows, graph.edges)
    for e in rng.choice(graph.edges, k, replace=False).tolist():
        a, b = int(graph.follower[e]), int(graph.followee[e])
        evs.append(
            new_event(FollowCreated, actor_id=a, data=FollowData(follower_id=a, followee_id=b))
        )
    authors = [int(a) for a in rng.integers(1, graph.users + 1, preset.rebuild_posts)]
    evs.extend(post_events(authors, ids))
    return evs


async def rebuild_prepare(ctx: Ctx) -> tuple[str, dict[int, int], int]:
    topic = ctx.topic + ".rebuild"
    await kafka_io.create_topic(ctx.infra.bootstrap, topic, 12)
    evs = rebuild_events(ctx.graph, ctx.preset, ctx.ids)
    ends = await kafka_io.publish(ctx.infra.bootstrap, topic, evs)
    return topic, ends, len(evs)


async def rebuild_run(ctx: Ctx, topic: str, ends: dict[int, int], total: int, run: int) -> Metrics:
    """Replay the rebuild topic from offset 0 into a fresh database with a fresh consumer group
    (what a rebuild does), against a consume-only loop over the same topic."""
    ctx.progress("rebuild baseline: consume-only loop")
    with loadgen.quiet_gc():
        n, secs = await kafka_io.consume_all(ctx.infra.bootstrap, topic, total)
    name = f"{ctx.db_name}_rebuild{run}"
    url = await ctx.infra.create_database(name)
    port = free_port()
    env = service_env(ctx.infra.bootstrap, url, topic, f"{topic}.group{run}", {"projector": port})
    procs = [service("projector", env, port, ctx.logs)] + [
        projector_instance(env, f"projector{i}", free_port(), ctx.logs)
        for i in range(2, ctx.projectors + 1)
    ]
    ctx.progress("rebuild: projector replaying from offset 0")
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    assert pool is not None
    ready: list[float] = []

    def start(proc: Process) -> None:
        proc.start()
        ready.append(time.perf_counter())

    try:
        with loadgen.quiet_gc():
            t0 = time.perf_counter()
            # Ready means migrated and assigned partitions: replay starts with the first one
            # ready (the others join the group while it runs).
            await asyncio.gather(*(asyncio.to_thread(start, p) for p in procs))
            t_ready = min(ready)
            series, _, t_end = await wait_caught_up(pool, topic, ends, t0, limit_s=1800)
        rss = max(p.rss()[1] for p in procs)
    finally:
        for p in procs:
            p.stop()
        await pool.close()
        await ctx.infra.drop_database(name)
    span = max(t_end - t_ready, 1e-3)
    return {
        "events": total,
        "consume_only_events_per_s": round(n / secs),
        "rebuild_events_per_s": round(total / span),
        "rebuild_wall_s": round(t_end - t0, 2),
        "rebuild_projector_peak_rss_mb": round(rss, 1),
        "_lag": series,
    }
