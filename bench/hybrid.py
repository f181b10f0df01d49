"""Hybrid fan-out against its threshold: write amplification and home-read latency.

Thresholds go from "push everything" down to one that pulls the top 2 % of authors.
1. Write side, for each threshold: `post.created` events with the delivery the command service
   would choose go through the real projector, once for uniformly drawn authors (a random
   post's author) and once for the top 0.1 % authors: timeline rows per post (write
   amplification) and the projector's time from the first produce until its offsets pass the
   log end. Then the bench waits until the projector's trims of those rows are done, so that
   they do not run under the reads.
2. Read side, for each threshold in turn: the read dataset is made what the projector would
   have made had those authors' posts been delivered by pull (their followers' rows deleted,
   posts flagged, pull_authors and pulled_follows filled; thresholds only go down, so nothing
   is put back), then the home timeline is read over HTTP, closed loop for the max and open
   loop at the SLO rate for the percentiles, for the same viewers as the reads figure.

It runs once per invocation (it changes the read dataset) and after every other read figure.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np

from bench import kafka_io, loadgen
from bench.figures import Ctx, Metrics, _get, _headers, quiet_database, wait_caught_up
from bench.graph import sample_authors
from shared.events import PostCreated, PostCreatedData, delivery_for, new_event

# Share of authors (by follower count) whose posts are pulled, per step; 0: push only.
PULL_SHARES = (0.0, 0.001, 0.005, 0.02)
TRIMMED_METRIC = "microblog_projector_timeline_rows_trimmed_total"
TOP_AUTHOR_POSTS = 100


def thresholds(followers: np.ndarray[Any, Any]) -> list[int | None]:
    """Follower counts from which the top PULL_SHARES of authors are pulled (None: never)."""
    ranked = np.sort(followers[1:])[::-1]
    out: list[int | None] = []
    for share in PULL_SHARES:
        out.append(None if share == 0 else int(ranked[max(int(len(ranked) * share) - 1, 0)]))
    return out


def _label(threshold: int | None) -> str:
    return "push only" if threshold is None else f">= {threshold:,} followers"


def _posts(ctx: Ctx, authors: list[int], threshold: int | None) -> list[PostCreated]:
    counts = ctx.graph.followers_count
    return [
        new_event(
            PostCreated,
            actor_id=a,
            data=PostCreatedData(
                post_id=ctx.ids.next_id(),
                author_id=a,
                text=f"hybrid post {i}",
                delivery=delivery_for("public", threshold is not None and counts[a] >= threshold),
            ),
        )
        for i, a in enumerate(authors)
    ]


async def _pull(ctx: Ctx, wide: list[int]) -> None:
    """The read dataset as if `wide`'s posts had been delivered by pull."""
    async with ctx.pool.acquire() as conn:
        await _idempotent(
            conn,
            "UPDATE posts SET pulled = true WHERE author_id = ANY($1::bigint[])"
            " AND visibility IN ('public', 'unlisted', 'followers') AND NOT pulled",
            wide,
        )
        await _idempotent(
            conn,
            "DELETE FROM home_timeline WHERE author_id = ANY($1::bigint[])"
            " AND user_id <> author_id AND reposted_post_id IS NULL",
            wide,
        )
        await _idempotent(
            conn,
            "INSERT INTO pull_authors SELECT unnest($1::bigint[]) ON CONFLICT DO NOTHING",
            wide,
        )
        await _idempotent(
            conn,
            "INSERT INTO pulled_follows SELECT follower_id, followee_id FROM follows"
            " WHERE followee_id = ANY($1::bigint[]) AND active ON CONFLICT DO NOTHING",
            wide,
        )
        # As the projector does: the query service starts merging pulled posts.
        await conn.execute("SELECT pg_notify('pull_authors', '')")
        for table in ("home_timeline", "posts", "pulled_follows", "pull_authors"):
            await conn.execute(f"VACUUM ANALYZE {table}")


async def _idempotent(conn: asyncpg.Connection, sql: str, *args: Any, attempts: int = 5) -> None:
    """Run a statement that can run again, again if PostgreSQL chose it as a deadlock's victim.

    The projectors' trimmers may still be deleting rows from home_timeline in another order
    (the 00:19 default invocation lost the whole figure to one such deadlock).
    """
    for attempt in range(attempts):
        try:
            await conn.execute(sql, *args)
            return
        except asyncpg.DeadlockDetectedError:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.1 * (attempt + 1))


async def _write(ctx: Ctx, events: list[PostCreated]) -> tuple[int, float]:
    """Timeline rows the events' fan-out wrote, and the projector's seconds."""
    t0 = time.perf_counter()
    ends = await kafka_io.publish(ctx.infra.bootstrap, ctx.topic, events)
    _, _, t_end = await wait_caught_up(ctx.pool, ctx.topic, ends, t0, limit_s=600)
    # New snowflakes are above every older post id; trims only cut old rows.
    rows = await ctx.pool.fetchval(
        "SELECT count(*) FROM home_timeline WHERE post_id >= $1", events[0].data.post_id
    )
    return int(rows), t_end - t0


async def _trims_settled(ctx: Ctx, quiet_s: float = 3.0, limit_s: float = 180.0) -> float:
    """Wait until the projector's trimmed-rows counter stood still for `quiet_s`: the writes'
    timelines went over the cap, and their trims must not run under the reads. Seconds."""
    t0 = last_change = time.perf_counter()
    seen = None
    while time.perf_counter() - t0 < limit_s:
        async with ctx.session.get(f"{ctx.url('projector')}/metrics") as r:
            text = await r.text()
        value = next(
            (ln.split()[-1] for ln in text.splitlines() if ln.startswith(TRIMMED_METRIC)), None
        )
        now = time.perf_counter()
        if value != seen:
            seen, last_change = value, now
        elif now - last_change >= quiet_s:
            break
        await asyncio.sleep(0.5)
    return time.perf_counter() - t0


async def hybrid_run(ctx: Ctx, viewers: list[int]) -> list[Metrics]:
    p, g = ctx.preset, ctx.graph
    counts = g.followers_count
    top = [int(u) for u in g.top_authors(0.001)]
    uniform = [int(a) for a in sample_authors(g, max(p.fanout_posts // 4, 200), seed=4242)]
    steps = thresholds(counts)
    out: list[Metrics] = []
    # Writes first, for every threshold (the delivery is in the events, not in the dataset).
    for threshold in steps:
        label = _label(threshold)
        m: Metrics = {"threshold": threshold}
        await quiet_database(ctx)
        ctx.progress(f"hybrid {label}: fan-out of uniformly drawn authors' posts")
        rows, secs = await _write(ctx, _posts(ctx, uniform, threshold))
        m["uniform_rows_per_post"] = round(rows / len(uniform), 1)
        m["uniform_posts_per_s"] = round(len(uniform) / secs)
        ctx.progress(f"hybrid {label}: fan-out of the top 0.1 % authors' posts")
        authors = [top[i % len(top)] for i in range(TOP_AUTHOR_POSTS)]
        rows, secs = await _write(ctx, _posts(ctx, authors, threshold))
        m["top_rows_per_post"] = round(rows / len(authors), 1)
        m["top_projector_s"] = round(secs, 2)
        out.append(m)
    ctx.progress("hybrid: waiting for the projector's trims")
    settle_s = await _trims_settled(ctx)
    headers = _headers(ctx, viewers)
    home = _get(f"{ctx.url('query')}/v1/timelines/home", headers)
    async with ctx.pool.acquire() as conn:
        pairs = await conn.fetch(
            "SELECT follower_id, followee_id FROM follows WHERE active"
            " AND follower_id = ANY($1::bigint[])",
            viewers,
        )
    for m in out:
        threshold = m["threshold"]
        label = _label(threshold)
        wide = [] if threshold is None else [int(u) for u in np.flatnonzero(counts >= threshold)]
        ctx.progress(f"hybrid {label}: pulling {len(wide)} authors' posts")
        if wide:
            await _pull(ctx, wide)
        wide_set = set(wide)
        m["pull_authors"] = len(wide)
        m["pulled_edge_share"] = round(float(counts[wide].sum() / max(g.edges, 1)), 4)
        m["viewers_following_a_pull_author"] = round(
            len({r["follower_id"] for r in pairs if r["followee_id"] in wide_set}) / len(viewers),
            3,
        )
        m["trims_settled_s"] = round(settle_s, 1)
        await quiet_database(ctx)
        ctx.progress(f"hybrid {label}: home reads")
        res = await loadgen.closed_loop(ctx.client, p.concurrency, p.closed_s, home)
        m["home_max_rps"] = round(res.achieved, 1)
        res = await loadgen.open_loop(ctx.client, p.slo_read_rate, p.step_s, home)
        at = res.summary()
        m["home_rps_offered"] = p.slo_read_rate
        m["home_p50_ms"] = at["p50"]
        m["home_p99_ms"] = at["p99"]
        m["home_errors"] = at["errors"]
    return out


def markdown(rows: list[Metrics], slo: int) -> str:
    lines = [
        "",
        "## Hybrid fan-out against its threshold (one run, read dataset of the figures above)",
        "",
        "| pulled from | pull authors | follow edges to them | viewers following one |"
        f" rows/post, uniform authors | rows/post, top 0.1 % | home max req/s |"
        f" home p50 / p99 at {slo:,} req/s (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        t = "never (push only)" if r["threshold"] is None else f"{r['threshold']:,} followers"
        lines.append(
            f"| {t} | {r['pull_authors']:,} | {r['pulled_edge_share']:.1%} |"
            f" {r['viewers_following_a_pull_author']:.0%} | {r['uniform_rows_per_post']:,.1f} |"
            f" {r['top_rows_per_post']:,.1f} | {r['home_max_rps']:,.0f} |"
            f" {r['home_p50_ms']:.1f} / {r['home_p99_ms']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def plot(out: Path, rows: list[Metrics]) -> str | None:
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["push only" if r["threshold"] is None else f"≥{r['threshold']:,}" for r in rows]
    x = range(len(rows))
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar([i - 0.2 for i in x], [r["top_rows_per_post"] for r in rows], 0.4, label="rows/post")
    ax.set_ylabel("timeline rows per post, top 0.1 % authors")
    ax.set_xticks(list(x), labels)
    ax.set_xlabel("posts pulled from (followers)")
    ax2 = ax.twinx()
    ax2.plot(list(x), [r["home_p99_ms"] for r in rows], "o-", color="C3", label="home p99")
    ax2.set_ylabel("home read p99 (ms)")
    ax2.set_ylim(bottom=0)
    fig.legend(loc="upper center", ncol=2)
    fig.tight_layout()
    name = "hybrid_threshold.png"
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name
