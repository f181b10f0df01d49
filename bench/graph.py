"""A deterministic synthetic social graph with a heavy tail.

Users are 1..n. Each follow edge picks its followee half the time uniformly and half the time
from a Zipf(1) popularity ranking, so follower counts are power-law: the top accounts are
followed by most users while the median account has a few dozen followers. Out-degrees are
log-normal around the preset's mean. Everything comes from one seeded generator, so a preset
always yields the same graph, posts and sample of viewers.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from shared.ids import EPOCH_MS, SEQUENCE_BITS, WORKER_BITS

SEED = 20_251_126
# Bulk-loaded posts use their own snowflake worker id so they never collide with the services'.
BULK_WORKER = 1023
I64 = npt.NDArray[np.int64]


class Graph:
    def __init__(self, users: int, follower: I64, followee: I64) -> None:
        self.users = users
        self.follower = follower
        self.followee = followee
        self.followers_count = np.bincount(followee, minlength=users + 1).astype(np.int64)
        self.following_count = np.bincount(follower, minlength=users + 1).astype(np.int64)

    @property
    def edges(self) -> int:
        return int(self.follower.size)

    def authors_by_followers(self) -> I64:
        """User ids sorted by follower count, most followed first."""
        ids = np.arange(1, self.users + 1, dtype=np.int64)
        return ids[np.argsort(-self.followers_count[1:], kind="stable")]

    def median_authors(self, k: int) -> I64:
        """k users whose follower count is closest to the median."""
        counts = self.followers_count[1:]
        med = np.median(counts)
        order = np.argsort(np.abs(counts - med), kind="stable")
        return (order[:k] + 1).astype(np.int64)

    def top_authors(self, fraction: float = 0.001) -> I64:
        return self.authors_by_followers()[: max(1, int(self.users * fraction))]


def make_graph(users: int, target_edges: int, seed: int = SEED) -> Graph:
    rng = np.random.default_rng(seed)
    mean = target_edges / users
    # Log-normal out-degree with the wanted mean (sigma 1 gives a long but tame tail).
    sigma = 1.0
    out = rng.lognormal(np.log(mean) - sigma**2 / 2, sigma, users)
    out = np.clip(np.round(out), 1, users - 1).astype(np.int64)
    ranks = np.arange(1, users + 1, dtype=np.float64)
    zipf = 1.0 / ranks
    zipf /= zipf.sum()
    popularity_order = rng.permutation(users) + 1  # who holds popularity rank 1, 2, ...
    keys = np.empty(0, dtype=np.int64)
    need = out.copy()
    for _ in range(6):
        total = int(need.sum())
        if total == 0:
            break
        src = np.repeat(np.arange(1, users + 1, dtype=np.int64), need.astype(np.int64))
        uniform = rng.integers(1, users + 1, total, dtype=np.int64)
        skewed = popularity_order[rng.choice(users, total, p=zipf)]
        dst = np.where(rng.random(total) < 0.5, uniform, skewed)
        ok = src != dst
        keys = np.unique(np.concatenate([keys, src[ok] * (users + 1) + dst[ok]]))
        have = np.bincount(keys // (users + 1), minlength=users + 1)[1:]
        # A user cannot follow more accounts than exist; stop asking once close enough.
        need = np.maximum(out - have, 0)
        if need.sum() < 0.002 * target_edges:
            break
    return Graph(users, keys // (users + 1), keys % (users + 1))


def bulk_posts(
    graph: Graph, posts_per_user: float, now_ms: int, seed: int = SEED
) -> tuple[I64, I64, I64]:
    """(post_id, author_id, created_ms) of the bulk-loaded posts, oldest first.

    Spread over the last 30 days, one distinct millisecond each, so ids are valid snowflakes
    that sort before anything the services create during the run.
    """
    rng = np.random.default_rng(seed + 1)
    n = int(graph.users * posts_per_user)
    authors = rng.integers(1, graph.users + 1, n, dtype=np.int64)
    span = 30 * 24 * 3600 * 1000
    start = now_ms - span
    created = start + np.arange(n, dtype=np.int64) * max(1, span // max(n, 1))
    ids = ((created - EPOCH_MS) << (WORKER_BITS + SEQUENCE_BITS)) | (BULK_WORKER << SEQUENCE_BITS)
    return ids, authors, created


def sample_authors(graph: Graph, n: int, seed: int) -> I64:
    """Authors of new posts, uniformly among users (a random post's author)."""
    rng = np.random.default_rng(seed)
    return rng.integers(1, graph.users + 1, n, dtype=np.int64)
