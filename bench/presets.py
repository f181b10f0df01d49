"""Sizes and load levels of a run. Every figure reads its knobs from one `Preset`."""

from __future__ import annotations

import msgspec


class Preset(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    users: int
    follows: int  # target number of follow edges (a few are lost to de-duplication)
    posts_per_user: float  # bulk-loaded posts for the read figures
    fanout_posts: int  # post.created events the projector fans out (per run)
    read_rates: tuple[int, ...]  # offered loads (req/s) for the open-loop read sweep
    post_rates: tuple[int, ...]  # offered loads (req/s) for POST /v1/posts
    step_s: float  # duration of one open-loop step
    closed_s: float  # duration of one closed-loop (max throughput) step
    concurrency: int  # in-flight requests of a closed loop
    slo_read_rate: int  # the "at 1 K req/s" of the targets
    mixed_rate: int
    visibility_samples: int  # posts per author class in the post -> visible figure
    rebuild_follows: int  # follow.created events on the rebuild topic
    rebuild_posts: int  # post.created events on the rebuild topic
    broker_samples: int


PRESETS: dict[str, Preset] = {
    # CI smoke: the whole run in well under two minutes, stack start-up included.
    "small": Preset(
        name="small",
        users=1_000,
        follows=30_000,
        posts_per_user=15,
        fanout_posts=1_500,
        read_rates=(100, 400),
        post_rates=(50,),
        step_s=1.5,
        closed_s=1.5,
        concurrency=32,
        slo_read_rate=400,
        mixed_rate=300,
        visibility_samples=8,
        rebuild_follows=500,
        rebuild_posts=3_000,
        broker_samples=50,
    ),
    "default": Preset(
        name="default",
        users=10_000,
        follows=1_000_000,
        posts_per_user=5,
        fanout_posts=20_000,
        read_rates=(250, 500, 1000, 1500, 2000),
        post_rates=(100, 250, 500),
        step_s=5.0,
        closed_s=5.0,
        concurrency=64,
        slo_read_rate=1000,
        mixed_rate=1000,
        visibility_samples=30,
        rebuild_follows=10_000,
        rebuild_posts=50_000,
        broker_samples=300,
    ),
    "large": Preset(
        name="large",
        users=100_000,
        follows=5_000_000,
        posts_per_user=3,
        fanout_posts=50_000,
        read_rates=(250, 500, 1000, 1500, 2000),
        post_rates=(100, 250, 500),
        step_s=8.0,
        closed_s=8.0,
        concurrency=64,
        slo_read_rate=1000,
        mixed_rate=1000,
        visibility_samples=30,
        rebuild_follows=200_000,
        rebuild_posts=300_000,
        broker_samples=300,
    ),
}
