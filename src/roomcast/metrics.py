"""Counters kept as plain ints on the hot path; exported to Prometheus at scrape time."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

# Upper bounds (seconds) of the publish-to-socket-write latency histogram.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass
class Metrics:
    """Everything the server counts. Increment freely: these are ints, not locks."""

    connections_opened: int = 0
    frames_in: int = 0
    frames_out: int = 0
    bytes_out: int = 0
    publishes: int = 0
    deliveries: int = 0
    handler_errors: int = 0
    resets: int = 0  # stream resets announced to subscribers (protocol §17)
    undeliverable: int = 0  # messages subscribers were told by a reset they will not get
    events_sent: int = 0  # room and user events the application answered with a 2xx (§13)
    events_failed: int = 0  # deliveries of an event that failed (each is retried)
    events_given_up: int = 0  # events that failed all their tries
    events_dropped: int = 0  # events that found the events_queue full
    drops: Counter[str] = field(default_factory=Counter)
    closes: Counter[int] = field(default_factory=Counter)
    auth_failures: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    commands: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    latency_counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    latency_sum: float = 0.0

    def observe_latency(self, seconds: float) -> None:
        """One publish-to-socket-write sample."""
        self.latency_sum += seconds
        for i, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                self.latency_counts[i] += 1
                return
        self.latency_counts[-1] += 1
