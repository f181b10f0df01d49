"""The history checker itself (pure; no infrastructure)."""

from __future__ import annotations

import pytest

from tests.fault.history import Attempt, History, Outcome, check, classify_status, fold_outcomes


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, Outcome.OK),
        (202, Outcome.OK),
        (409, Outcome.FAILED),
        (422, Outcome.FAILED),
        (429, Outcome.FAILED),
        (503, Outcome.UNKNOWN),
        (500, Outcome.UNKNOWN),
        (504, Outcome.UNKNOWN),
    ],
)
def test_classify_status(status: int, outcome: Outcome) -> None:
    assert classify_status(status) is outcome


def _attempt(key: str, outcome: Outcome) -> Attempt:
    return Attempt(key, outcome, None, 0.0, 0.0)


def test_retries_fold_to_the_strongest_outcome() -> None:
    attempts = [
        _attempt("a", Outcome.UNKNOWN),
        _attempt("a", Outcome.OK),
        _attempt("b", Outcome.FAILED),
        _attempt("b", Outcome.UNKNOWN),
        _attempt("c", Outcome.FAILED),
        _attempt("c", Outcome.FAILED),
    ]
    assert fold_outcomes(attempts) == {
        "a": Outcome.OK,
        "b": Outcome.UNKNOWN,
        "c": Outcome.FAILED,
    }


def test_check_counts_lost_duplicated_and_phantom_effects() -> None:
    outcomes = {
        "ok-once": Outcome.OK,
        "ok-lost": Outcome.OK,
        "ok-twice": Outcome.OK,
        "failed-absent": Outcome.FAILED,
        "failed-visible": Outcome.FAILED,
        "unknown-absent": Outcome.UNKNOWN,
        "unknown-once": Outcome.UNKNOWN,
        "unknown-twice": Outcome.UNKNOWN,
    }
    seen = {
        "ok-once": 1,
        "ok-twice": 2,
        "failed-visible": 1,
        "unknown-once": 1,
        "unknown-twice": 2,
        "nobody-asked": 1,
    }
    verdict = check(outcomes, seen)
    assert (verdict.ok, verdict.failed, verdict.unknown) == (3, 2, 3)
    assert verdict.lost == ("ok-lost",)
    assert verdict.duplicated == ("nobody-asked", "ok-twice", "unknown-twice")
    assert verdict.failed_visible == ("failed-visible",)
    assert verdict.unknown_visible == 2
    assert not verdict.valid
    assert verdict.summary(7).startswith(
        "scenario 7: ok=3 failed=2 unknown=3 lost=1 duplicated=3 failed_visible=1"
    )


def test_a_clean_history_is_valid() -> None:
    history = History()
    history.record("x", Outcome.OK, 202, started=0.0)
    history.record("y", Outcome.FAILED, 400, started=0.0)
    history.record("z", Outcome.UNKNOWN, None, started=0.0)
    verdict = check(history.outcomes(), {"x": 1})
    assert verdict.valid
    assert history.keys(Outcome.OK) == ["x"]
