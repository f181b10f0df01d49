"""The projector's counters, which /metrics exposes (services/projector/__main__.py)."""

from __future__ import annotations

from collections import deque

# Batch apply latency buckets, seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# The events/s gauge averages over this many seconds.
RATE_WINDOW_S = 10.0


class Stats:
    """Counters the /metrics endpoint exposes."""

    def __init__(self) -> None:
        self.events_applied = 0
        self.batches = 0
        self.timeline_rows = 0
        self.timeline_rows_trimmed = 0
        self.dead_letters = 0
        self.fenced = 0
        self.last_batch_at = 0.0
        self.latency_counts = [0] * len(LATENCY_BUCKETS)
        self.latency_sum = 0.0
        self.latency_count = 0
        self._samples: deque[tuple[float, int]] = deque()

    def observe_batch(self, seconds: float, events: int, now: float) -> None:
        self.events_applied += events
        self.batches += 1
        self.last_batch_at = now
        self.latency_sum += seconds
        self.latency_count += 1
        for i, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                self.latency_counts[i] += 1
        self._samples.append((now, self.events_applied))
        while self._samples and self._samples[0][0] < now - RATE_WINDOW_S:
            self._samples.popleft()

    def events_per_second(self, now: float) -> float:
        """Events applied per second over the last RATE_WINDOW_S (0 when idle)."""
        recent = [s for s in self._samples if s[0] >= now - RATE_WINDOW_S]
        if not recent:
            return 0.0
        first_t, first_n = recent[0]
        span = max(now - first_t, 1.0)
        return (self.events_applied - first_n) / span
