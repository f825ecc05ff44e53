"""Prometheus export of the Router's plain-int counters, read at scrape time.

The hot path only increments ints (src/roomcast/metrics.py); this collector turns them
into metric families when /metrics is scraped. Each Router gets its own registry, so
several servers in one process (tests, embedding) never share or clash.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from roomcast.metrics import LATENCY_BUCKETS

if TYPE_CHECKING:
    from roomcast.router import Router

PREFIX = "roomcast_"


def _labelled(
    name: str, doc: str, label: str, counts: Mapping[Any, int]
) -> CounterMetricFamily:
    family = CounterMetricFamily(PREFIX + name, doc, labels=[label])
    for key, value in sorted(counts.items(), key=lambda kv: str(kv[0])):
        family.add_metric([str(key)], value)
    return family


class RouterCollector:
    """Reads one Router's counters and live sizes each time the registry is collected.

    `http_requests` (path template, status) → count is the HTTP side's own tally."""

    def __init__(self, router: Router, http_requests: Counter[tuple[str, int]] | None = None
                 ) -> None:
        self.router = router
        self.http_requests = http_requests

    def collect(self) -> Iterator[Metric]:
        router = self.router
        m = router.metrics
        stats = router.stats()
        yield GaugeMetricFamily(PREFIX + "connections", "Live WebSocket connections on this node.",
                                value=stats["connections"])
        yield GaugeMetricFamily(PREFIX + "users", "Distinct users connected to this node.",
                                value=stats["users"])
        yield GaugeMetricFamily(PREFIX + "rooms", "Rooms with at least one local subscriber.",
                                value=stats["rooms"])
        yield GaugeMetricFamily(PREFIX + "ready", "1 when accepting connections with the "
                                "backplane reachable, else 0.", value=int(router.ready))
        yield GaugeMetricFamily(PREFIX + "draining", "1 while a graceful shutdown is under way.",
                                value=int(router.draining))
        info = GaugeMetricFamily(PREFIX + "node_info", "Constant 1, labelled with this node.",
                                 labels=["node", "backplane"])
        info.add_metric([router.settings.node, stats["backplane"]], 1)
        yield info
        plain = (
            ("connections_opened", "WebSocket connections admitted.", m.connections_opened),
            ("frames_in", "Frames received from clients.", m.frames_in),
            ("frames_out", "Frames written to clients.", m.frames_out),
            ("bytes_out", "Bytes written to clients.", m.bytes_out),
            ("publishes", "Messages published on this node (WebSocket and HTTP).", m.publishes),
            ("deliveries", "Messages queued to local subscribers.", m.deliveries),
            ("handler_errors", "Unexpected exceptions in connection, command or HTTP handlers.",
             m.handler_errors),
            ("resets", "Stream resets announced to a room's live subscribers (its epoch "
             "changed, or a gap history could not fill).", m.resets),
            ("undeliverable", "Messages subscribers were told (by a reset's missed range) "
             "they will not receive.", m.undeliverable),
            ("events_sent", "Room and user events the application answered with a 2xx.",
             m.events_sent),
            ("events_failed", "Deliveries of room and user events that failed (retried with "
             "backoff).", m.events_failed),
            ("events_given_up", "Room and user events not delivered after all their tries.",
             m.events_given_up),
            ("events_dropped", "Room and user events dropped because events_queue was full.",
             m.events_dropped),
        )
        for name, doc, value in plain:
            yield CounterMetricFamily(PREFIX + name, doc, value=value)
        yield _labelled("drops", "Frames not delivered, by reason.", "reason", m.drops)
        yield _labelled("closes", "Connections closed, by close code.", "code", m.closes)
        yield _labelled("auth_failures", "Handshake tokens refused, by reason.", "reason",
                        m.auth_failures)
        yield _labelled("refused", "Connections refused before or after the handshake, by reason.",
                        "reason", m.refused)
        yield _labelled("commands", "Client commands executed, by type.", "type", m.commands)
        yield _labelled("errors", "Error frames sent to clients, by code.", "code", m.errors)
        yield _latency(m.latency_counts, m.latency_sum)
        hooks = CounterMetricFamily(PREFIX + "hook_requests", "Requests to the application's "
                                    "hooks (§11), by hook and outcome (allowed, denied, "
                                    "failed).", labels=["hook", "outcome"])
        for (hook, outcome), value in sorted(router.hooks.outcomes.items()):
            hooks.add_metric([hook, outcome], value)
        yield hooks
        if self.http_requests is not None:
            family = CounterMetricFamily(PREFIX + "http_requests", "HTTP requests answered, by "
                                         "route and status.", labels=["path", "status"])
            for (path, status), value in sorted(self.http_requests.items()):
                family.add_metric([path, str(status)], value)
            yield family


def _latency(counts: Iterable[int], total: float) -> HistogramMetricFamily:
    """The publish-to-socket-write histogram from per-bucket (non-cumulative) counts."""
    per_bucket = list(counts)
    buckets: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip(LATENCY_BUCKETS, per_bucket, strict=False):
        running += count
        buckets.append((repr(float(bound)), running))
    running += sum(per_bucket[len(LATENCY_BUCKETS):])
    buckets.append(("+Inf", running))
    return HistogramMetricFamily(PREFIX + "delivery_latency_seconds",
                                 "Time from a publish reaching this node to the socket write "
                                 "that carried it (sampled).", buckets=buckets, sum_value=total)


def registry_for(router: Router,
                 http_requests: Counter[tuple[str, int]] | None = None) -> CollectorRegistry:
    """A private registry holding only this Router's collector (never the global one)."""
    registry = CollectorRegistry()
    registry.register(RouterCollector(router, http_requests))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The registry in the Prometheus text format (version 0.0.4)."""
    return generate_latest(registry)
