"""Prometheus metrics of one query-service app: the shared request histogram
(shared/metrics.py) plus how read-your-writes waits end."""

from __future__ import annotations

from prometheus_client import Counter

from shared.metrics import ServiceMetrics


class QueryMetrics(ServiceMetrics):
    def __init__(self) -> None:
        super().__init__("query")
        self.consistency_waits = Counter(
            "microblog_query_consistency_waits_total",
            "Requests that carried X-Consistency-Position, by outcome (reached or timeout).",
            ["outcome"],
            registry=self.registry,
        )
