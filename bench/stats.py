"""Latency summaries and the medians and ratios of several runs (pure functions)."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence

import numpy as np

PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p99.9": 99.9}


def summarize(latencies_ms: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/p99.9/max of a latency sample in milliseconds; NaN for an empty sample."""
    if len(latencies_ms) == 0:
        return {**{k: float("nan") for k in PERCENTILES}, "max": float("nan"), "n": 0}
    a = np.asarray(latencies_ms, dtype=np.float64)
    out = {k: float(np.percentile(a, q)) for k, q in PERCENTILES.items()}
    out["max"] = float(a.max())
    out["n"] = int(a.size)
    return out


def median(values: Iterable[float]) -> float:
    vals = [v for v in values if v == v]  # drop NaN
    return statistics.median(vals) if vals else float("nan")


def ratio(value: float, baseline: float) -> float:
    if baseline == 0 or baseline != baseline or value != value:
        return float("nan")
    return value / baseline
