"""Prometheus counters of the ccxt sources."""

from __future__ import annotations

import weakref
from typing import ClassVar

from prometheus_client import CollectorRegistry, Counter


class CcxtMetrics:
    """The source's counters, one set per registry (every exchange shares them)."""

    _by_registry: ClassVar[weakref.WeakKeyDictionary[CollectorRegistry, CcxtMetrics]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, registry: CollectorRegistry) -> None:
        self.bad_payloads = Counter(
            "cryptodesk_exchange_bad_payloads_total",
            "Malformed or unexpected exchange payloads, logged and skipped.",
            ["exchange", "endpoint"],
            registry=registry,
        )
        self.reconnects = Counter(
            "cryptodesk_exchange_ws_reconnects_total",
            "Websocket streams watched again after a dropped connection.",
            ["exchange", "stream"],
            registry=registry,
        )
        self.book_resyncs = Counter(
            "cryptodesk_exchange_book_resyncs_total",
            "Local order books rebuilt from a snapshot (sequence gap, checksum, invalid book).",
            ["exchange", "symbol"],
            registry=registry,
        )
        self.trades_backfilled = Counter(
            "cryptodesk_exchange_trades_backfilled_total",
            "Trades missed by a websocket and recovered through REST.",
            ["exchange"],
            registry=registry,
        )
        self.trades_unrecovered = Counter(
            "cryptodesk_exchange_trades_unrecovered_total",
            "Trades known to be missed that REST could not serve.",
            ["exchange"],
            registry=registry,
        )

    @classmethod
    def of(cls, registry: CollectorRegistry) -> CcxtMetrics:
        metrics = cls._by_registry.get(registry)
        if metrics is None:
            metrics = cls._by_registry[registry] = cls(registry)
        return metrics
