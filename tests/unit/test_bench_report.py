"""The benchmark report's verdict on the mixed load (bench/report.py)."""

from __future__ import annotations

from bench.report import mixed_met


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
