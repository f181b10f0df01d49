"""`python -m bench [--preset small|default|large] [--runs N] [--only figure,...]`

Starts its own Kafka (59092) and PostgreSQL (55432) under var/bench/ unless
KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL are set, a fresh database and topics, the three
services as processes plus the baseline server, loads the synthetic graph, measures every
figure against its same-run baseline `--runs` times, and writes bench/results/<timestamp>/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import numpy as np
import uvloop
from aiokafka.admin import AIOKafkaAdminClient
from tqdm import tqdm

from bench import dataset, figures, figures_reads, figures_writes, hybrid, kafka_io, loadgen, report
from bench.figures import Ctx, Metrics
from bench.graph import make_graph
from bench.httpclient import Client
from bench.presets import PRESETS
from bench.stack import (
    Infra,
    Process,
    baseline_server,
    projector_instance,
    service,
    service_env,
)
from shared.db import SESSION_SETTINGS, migrate
from shared.devstack import free_port

FIGURES = ("fanout", "reads", "depth", "mixed", "posts", "visibility", "hybrid", "rebuild")
RESULTS = Path(__file__).resolve().parent / "results"


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="default")
    ap.add_argument(
        "--projectors",
        type=int,
        default=2,
        help="projector instances in the consumer group (default 2: one per core here)",
    )
    ap.add_argument("--runs", type=int, default=None, help="repeats (default: 1 small, else 3)")
    ap.add_argument("--only", default="", help="comma-separated subset of " + ",".join(FIGURES))
    args = ap.parse_args(argv)
    if args.projectors < 1:
        ap.error("--projectors must be at least 1")
    args.only = [f for f in args.only.split(",") if f] or list(FIGURES)
    unknown = set(args.only) - set(FIGURES)
    if unknown:
        ap.error(f"unknown figure(s): {', '.join(sorted(unknown))}")
    if args.runs is None:
        args.runs = 1 if args.preset == "small" else 3
    return args


async def sample_rss(
    procs: dict[str, Process], samples: dict[str, list[tuple[float, float]]]
) -> None:
    t0 = time.perf_counter()
    while True:
        for name, p in procs.items():
            if p.proc is not None and p.proc.poll() is None:
                samples.setdefault(name, []).append((time.perf_counter() - t0, p.rss()[0]))
        await asyncio.sleep(0.5)


async def run(args: argparse.Namespace, infra: Infra) -> str:
    preset = PRESETS[args.preset]
    started = datetime.now(UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / stamp
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    db_name = f"bench_{stamp.lower()}"
    topic = f"bench-{stamp}.events"
    db_url = await infra.create_database(db_name)
    await migrate(db_url)
    await kafka_io.create_topic(infra.bootstrap, topic, 12)

    tqdm.write(f"[bench] preset {preset.name}: generating the graph")
    graph = make_graph(preset.users, preset.follows)
    # Baselines run with the session settings the services use (jit off): same SQL, same plan.
    pool = await asyncpg.create_pool(
        db_url, min_size=2, max_size=4, server_settings=SESSION_SETTINGS
    )
    assert pool is not None
    async with pool.acquire() as conn:
        await dataset.load_users(conn, graph)
        with tqdm(total=graph.edges, desc="COPY follows", unit="edge", unit_scale=True) as bar:
            await dataset.load_follows(conn, graph, bar)
        await conn.execute("VACUUM ANALYZE follows")
        await conn.execute("ANALYZE users")
        pg_version = await conn.fetchval("SHOW server_version")

    ports = {n: free_port() for n in ("command", "projector", "query", "baseline")}
    env = service_env(infra.bootstrap, db_url, topic, topic + ".projector", ports)
    procs = {n: service(n, env, ports[n], logs) for n in ("command", "projector", "query")}
    for i in range(2, args.projectors + 1):
        procs[f"projector{i}"] = projector_instance(env, f"projector{i}", free_port(), logs)
    procs["baseline"] = baseline_server(env, ports["baseline"], logs)
    rss_samples: dict[str, list[tuple[float, float]]] = {}
    runs: dict[str, list[Metrics]] = {f: [] for f in args.only}
    meta: Metrics = {
        "preset": preset.name,
        "runs": args.runs,
        "started": started.isoformat(timespec="seconds"),
        "users": graph.users,
        "edges": graph.edges,
        "followers_median": float(np.median(graph.followers_count[1:])),
        "followers_max": int(graph.followers_count.max()),
        "machine": report.machine(pg_version),
        "notes": [],
        "loadavg_start": _loadavg(),
        "_cpu_start": _cpu_ticks(),
    }
    sampler: asyncio.Task[None] | None = None
    session = loadgen.session()
    client = Client()
    try:
        for p in procs.values():
            tqdm.write(f"[bench] starting {p.name}")
            await asyncio.to_thread(p.start)
        sampler = asyncio.create_task(sample_rss(procs, rss_samples))
        total_steps = len(args.only) * args.runs + 1
        bar = tqdm(total=total_steps, desc="figures", unit="step")
        ctx = Ctx(
            preset=preset,
            infra=infra,
            graph=graph,
            db_name=db_name,
            db_url=db_url,
            topic=topic,
            logs=logs,
            pool=pool,
            session=session,
            client=client,
            procs=procs,
            projectors=args.projectors,
            progress=lambda msg: bar.set_postfix_str(msg[:60]),
        )

        async def measure(name: str, coro_fn, *a) -> None:  # type: ignore[no-untyped-def]
            for r in range(args.runs):
                bar.set_description(f"{name} run {r + 1}/{args.runs}")
                try:
                    runs[name].append(await coro_fn(*a, *([r] if name in ("fanout",) else [])))
                except Exception as exc:  # a broken figure must not lose the others
                    tqdm.write(f"[bench] {name} failed: {exc!r}")
                    meta["notes"].append(f"{name} run {r + 1} failed: {exc!r}")
                bar.update(1)

        if "fanout" in args.only:
            await measure("fanout", figures.fanout_run, ctx)
        bar.set_description("loading read dataset")
        meta["read_dataset"] = await figures.load_read_dataset(ctx, int(time.time() * 1000))
        bar.update(1)
        async with pool.acquire() as conn:
            deep = await dataset.deep_viewers(conn, 400, 500)
        viewers = dataset.np_sample(np.arange(1, graph.users + 1, dtype=np.int64), 2000, 5)
        authors = dataset.np_sample(np.arange(1, graph.users + 1, dtype=np.int64), 2000, 6)
        if "reads" in args.only:
            await measure("reads", figures_reads.reads_run, ctx, viewers)
        if "depth" in args.only:
            if deep:
                await measure("depth", figures_reads.depth_run, ctx, deep)
            else:
                meta["notes"].append("depth: no timeline deeper than 440 rows at this preset")
        # The mixed load runs before the POST figure, whose closed loop (~1,200 posts/s) leaves
        # every timeline past the cap: the trims and autovacuum cleaning up after it ran through
        # the mixed load's 5 s windows (pg_stat_activity: the trim in about a fifth of the
        # samples). A figure measures its own load, not another's aftermath (bench/README.md).
        if "mixed" in args.only:
            await measure("mixed", figures_reads.mixed_run, ctx, viewers, authors)
        if "posts" in args.only:
            await measure("posts", figures_writes.posts_run, ctx, authors)
        if "visibility" in args.only:
            await measure("visibility", figures_writes.visibility_run, ctx)
        rss = {n: round(p.rss()[1], 1) for n, p in procs.items()}
        if "hybrid" in args.only:
            # Once, last of the read figures: it turns the read dataset's timelines hybrid.
            bar.set_description("hybrid fan-out")
            try:
                meta["hybrid"] = await hybrid.hybrid_run(ctx, viewers)
            except Exception as exc:
                tqdm.write(f"[bench] hybrid failed: {exc!r}")
                meta["notes"].append(f"hybrid failed: {exc!r}")
            bar.update(args.runs)
        if "rebuild" in args.only:
            bar.set_description("rebuild: producing the topic")
            rtopic, ends, total = await figures.rebuild_prepare(ctx)
            meta["rebuild_topic_events"] = total
            for r in range(args.runs):
                bar.set_description(f"rebuild run {r + 1}/{args.runs}")
                try:
                    runs["rebuild"].append(await figures.rebuild_run(ctx, rtopic, ends, total, r))
                except Exception as exc:
                    tqdm.write(f"[bench] rebuild failed: {exc!r}")
                    meta["notes"].append(f"rebuild run {r + 1} failed: {exc!r}")
                bar.update(1)
            if runs["rebuild"]:
                rss["projector (rebuild)"] = max(
                    x["rebuild_projector_peak_rss_mb"] for x in runs["rebuild"]
                )
        bar.close()
        meta["rss_timeline_mb"] = {
            n: [(round(t, 1), round(v, 1)) for t, v in s[:: max(1, len(s) // 200)]]
            for n, s in rss_samples.items()
        }
    finally:
        if sampler is not None:
            sampler.cancel()
        await session.close()
        await client.close()
        for p in procs.values():
            p.stop()
        await pool.close()
        await infra.drop_database(db_name)
        await _delete_topics(infra.bootstrap, topic)
    meta["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    meta["loadavg_end"] = _loadavg()
    meta["cpu_steal_pct"] = _steal_pct(meta.pop("_cpu_start"), _cpu_ticks())
    md = report.write(out, meta, runs, rss, preset.slo_read_rate, preset.mixed_rate)
    return md + f"\nresults: {out}\n"


def _cpu_ticks() -> list[int]:
    # /proc/stat's first line: user nice system idle iowait irq softirq steal ...
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:9]]


def _steal_pct(start: list[int], end: list[int]) -> float:
    """Share of CPU time the hypervisor gave to other guests during the run: on a shared VM
    the baselines and the services both slow down with it."""
    delta = [b - a for a, b in zip(start, end, strict=True)]
    return round(100 * delta[7] / max(sum(delta), 1), 1)


def _loadavg() -> str:
    # The machine is shared: the load average says how much else ran during the measurement.
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


async def _delete_topics(bootstrap: str, prefix: str) -> None:
    with contextlib.suppress(Exception):
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            names = [t for t in await admin.list_topics() if t.startswith(prefix)]
            if names:
                await admin.delete_topics(names)
        finally:
            await admin.close()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str]) -> int:
    args = parse(argv)
    # SIGTERM (and SIGINT, which a background shell ignores) unwind like Ctrl-C, so the
    # services, the database and our Kafka/PostgreSQL are stopped and dropped on the way out.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    infra = Infra()
    t0 = time.monotonic()
    infra.start()
    try:
        md = uvloop.run(run(args, infra))
    finally:
        infra.stop()
    print(md)
    print(f"[bench] done in {time.monotonic() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
