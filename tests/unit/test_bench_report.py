"""The benchmark report (bench/report.py): the mixed verdict and how ratios are taken."""

from __future__ import annotations

from bench.report import medians, mixed_met, targets, with_ratios


def _mixed(**over: float) -> dict[str, float]:
    return {"offered_rps": 1000, "achieved_rps": 997.0, "errors": 0, "p99_ms": 30.0, **over}


def test_every_request_answered_in_time_is_sustained() -> None:
    # 5,000 answers over 5 s plus the last one's latency: 997 req/s counted, all served.
    assert mixed_met(_mixed())


def test_slow_failed_short_or_underoffered_loads_are_not() -> None:
    assert not mixed_met(_mixed(p99_ms=50.5))
    assert not mixed_met(_mixed(errors=1))
    assert not mixed_met(_mixed(achieved_rps=980.0))
    assert not mixed_met(_mixed(offered_rps=900, achieved_rps=900.0))


def test_a_ratio_is_the_median_of_each_runs_own_ratio() -> None:
    # The machine slowed down in run 2: both of its figures dropped. Per run the projector
    # reached 0.5, 0.9 and 0.8 of its baseline; a ratio of medians (800 / 1000) would say 0.8
    # while pairing run 2's projector with run 3's baseline.
    runs = [
        {"projector_rows_per_s": 500.0, "bare_rows_per_s": 1000.0},
        {"projector_rows_per_s": 540.0, "bare_rows_per_s": 600.0},
        {"projector_rows_per_s": 800.0, "bare_rows_per_s": 1000.0},
    ]
    med = medians(with_ratios("fanout", runs))
    assert med["vs_bare"] == 0.8
    (row,) = targets({"fanout": med}, slo_rate=1000, mixed_rate=1000)
    assert row["ratio"] == 0.8 and row["value"] == 540.0 and not row["met"]
    runs[0]["projector_rows_per_s"] = 950.0
    med = medians(with_ratios("fanout", runs))
    (row,) = targets({"fanout": med}, slo_rate=1000, mixed_rate=1000)
    assert row["ratio"] == 0.9 and row["met"]


def test_a_run_missing_a_baseline_adds_no_ratio() -> None:
    runs = with_ratios("depth", [{"depth400_p99_ms": 4.0, "first_p99_ms": 0.0}, {"rate": 1.0}])
    assert runs[0]["vs_first_p99"] != runs[0]["vs_first_p99"]  # NaN: no baseline to divide by
    assert "vs_first_p99" not in runs[1]
