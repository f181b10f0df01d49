"""A small Jepsen-style history: every client operation ends ok, failed or unknown, and the
final read model is checked against it.

- ok: the service acknowledged (2xx); the effect must be visible exactly once.
- failed: the service refused for sure (4xx, or the connection was refused before a byte
  was sent); the effect must not be visible.
- unknown: anything else (a timeout, a reset connection, a 5xx): the request may or may not
  have taken effect, so it may be visible at most once. That includes 503 `log_unavailable`:
  the produce timed out, but the record may already sit in the Kafka client's queue, and the
  command service keeps the decided event for the retry or its relay (pipeline.py).

A logical operation may be attempted several times (a client retrying with the same
Idempotency-Key); it is ok if any attempt was, unknown if none was ok but one was unknown, and
failed only if every attempt failed for sure.

Everything here is pure: the scenarios do the I/O and hand over what they observed.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping
from dataclasses import dataclass, field


class Outcome(enum.StrEnum):
    OK = "ok"
    FAILED = "failed"
    UNKNOWN = "unknown"


def classify_status(status: int) -> Outcome:
    """An HTTP answer's outcome: 2xx ok, 4xx failed, any 5xx unknown (see the module doc)."""
    if 200 <= status < 300:
        return Outcome.OK
    if 400 <= status < 500:
        return Outcome.FAILED
    return Outcome.UNKNOWN


@dataclass(frozen=True)
class Attempt:
    key: str
    outcome: Outcome
    status: int | None
    started: float  # time.monotonic() when the request was sent
    latency_s: float
    detail: str = ""

    @property
    def ended(self) -> float:
        return self.started + self.latency_s


@dataclass
class History:
    """The attempts of one scenario, in completion order."""

    attempts: list[Attempt] = field(default_factory=list)

    def record(
        self, key: str, outcome: Outcome, status: int | None, started: float, detail: str = ""
    ) -> Attempt:
        """`started` is a time.monotonic() reading taken just before the request was sent."""
        attempt = Attempt(key, outcome, status, started, time.monotonic() - started, detail)
        self.attempts.append(attempt)
        return attempt

    def outcomes(self) -> dict[str, Outcome]:
        """The outcome of each logical operation over all of its attempts."""
        return fold_outcomes(self.attempts)

    def keys(self, outcome: Outcome) -> list[str]:
        return [k for k, o in self.outcomes().items() if o is outcome]

    def within(self, start: float, end: float) -> list[Attempt]:
        """Attempts sent at or after `start` that completed by `end` (monotonic times)."""
        return [a for a in self.attempts if a.started >= start and a.ended <= end]


def fold_outcomes(attempts: list[Attempt]) -> dict[str, Outcome]:
    rank = {Outcome.FAILED: 0, Outcome.UNKNOWN: 1, Outcome.OK: 2}
    folded: dict[str, Outcome] = {}
    for a in attempts:
        prior = folded.get(a.key)
        if prior is None or rank[a.outcome] > rank[prior]:
            folded[a.key] = a.outcome
    return folded


@dataclass(frozen=True)
class Verdict:
    ok: int
    failed: int
    unknown: int
    lost: tuple[str, ...]  # ok, but not visible
    duplicated: tuple[str, ...]  # visible more than once, whatever the outcome
    failed_visible: tuple[str, ...]  # failed for sure, yet visible
    unknown_visible: int  # how many unknown operations did take effect (informative)

    @property
    def valid(self) -> bool:
        return not (self.lost or self.duplicated or self.failed_visible)

    def summary(self, scenario: int) -> str:
        return (
            f"scenario {scenario}: ok={self.ok} failed={self.failed} unknown={self.unknown} "
            f"lost={len(self.lost)} duplicated={len(self.duplicated)} "
            f"failed_visible={len(self.failed_visible)} unknown_visible={self.unknown_visible}"
        )


def check(outcomes: Mapping[str, Outcome], seen: Mapping[str, int]) -> Verdict:
    """Compare operation outcomes with how often each one's effect is visible in the read
    model (`seen` maps an operation's key to its number of appearances; absent means 0).
    An effect whose key no operation has is counted as duplicated: nothing asked for it."""
    ok = [k for k, o in outcomes.items() if o is Outcome.OK]
    failed = [k for k, o in outcomes.items() if o is Outcome.FAILED]
    unknown = [k for k, o in outcomes.items() if o is Outcome.UNKNOWN]
    strays = [k for k, n in seen.items() if k not in outcomes and n > 0]
    return Verdict(
        ok=len(ok),
        failed=len(failed),
        unknown=len(unknown),
        lost=tuple(sorted(k for k in ok if seen.get(k, 0) == 0)),
        duplicated=tuple(sorted([k for k in outcomes if seen.get(k, 0) > 1] + strays)),
        failed_visible=tuple(sorted(k for k in failed if seen.get(k, 0) > 0)),
        unknown_visible=sum(1 for k in unknown if seen.get(k, 0) > 0),
    )
