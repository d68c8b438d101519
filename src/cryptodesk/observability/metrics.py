"""Prometheus metrics. One ``Metrics`` per process, built by runtime.py and passed
to whatever records; each test can build its own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.http_request_duration = Histogram(
            "cryptodesk_http_request_duration_seconds",
            "HTTP request duration by route template.",
            ["method", "route", "status"],
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.events_ingested = Counter(
            "cryptodesk_events_ingested_total",
            "Events published to the bus by ingest, per topic.",
            ["topic"],
            registry=r,
        )
        self.events_consumed = Counter(
            "cryptodesk_events_consumed_total",
            "Events processed from the bus, per topic and consumer group.",
            ["topic", "group"],
            registry=r,
        )
        self.trades_stored = Counter(
            "cryptodesk_trades_stored_total",
            "New trades written to the database (duplicates excluded).",
            ["exchange"],
            registry=r,
        )
        self.trades_duplicate = Counter(
            "cryptodesk_trades_duplicate_total",
            "Redelivered trades recognised as already stored.",
            ["exchange"],
            registry=r,
        )
        self.candles_finalized = Counter(
            "cryptodesk_candles_finalized_total",
            "Candles closed by the candle builder.",
            ["exchange", "interval"],
            registry=r,
        )
        self.late_trades = Counter(
            "cryptodesk_late_trades_total",
            "Trades that arrived after their candle was finalized (stored, not in candles).",
            ["exchange", "symbol"],
            registry=r,
        )
        self.dead_letters = Counter(
            "cryptodesk_dead_letters_total",
            "Undecodable bus messages moved to the deadletter topic, per source topic.",
            ["topic"],
            registry=r,
        )
        self.cache_hits = Counter(
            "cryptodesk_cache_hits_total", "Reads served by the cache.", ["kind"], registry=r
        )
        self.cache_misses = Counter(
            "cryptodesk_cache_misses_total",
            "Reads the cache could not serve.",
            ["kind"],
            registry=r,
        )
        self.db_write_seconds = Histogram(
            "cryptodesk_db_write_seconds",
            "Duration of one batched database write.",
            ["table"],
            registry=r,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
        )
        self.component_up = Gauge(
            "cryptodesk_component_up",
            "1 when a component's last health check passed.",
            ["component"],
            registry=r,
        )
        self.feed_failures = Counter(
            "cryptodesk_feed_failures_total",
            "Times an exchange feed failed and was restarted after a backoff.",
            ["exchange"],
            registry=r,
        )
        self.ingest_lag_seconds = Gauge(
            "cryptodesk_ingest_lag_seconds",
            "Wall-clock age of the newest processed trade's event time (simulated time for sim).",
            ["exchange"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
