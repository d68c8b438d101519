"""Candle builders with one event-time clock per symbol.

``CandleBuilder`` closes candles by its watermark, the newest trade time it has
seen. On a partitioned bus (Kafka keyed by ``exchange:symbol``) each symbol's
trades are in order, but symbols arrive from different partitions at different
paces: with one clock per exchange, a symbol read ahead would close another
symbol's candles before its trades arrive (seen in the kill -9 test on Kafka as
flat candles and late trades). One builder per symbol keeps each series on its
own clock. The price: a symbol with no trades closes its candles (flat ones
included) only when its next trade arrives.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from cryptodesk.analytics.candles import BuildResult, CandleBuilder
from cryptodesk.domain.interval import Interval
from cryptodesk.domain.market import Candle, Trade


class PerSymbolCandleBuilder:
    """The ``CandleBuilder`` interface, with one builder (and clock) per symbol."""

    def __init__(self, exchange: str, intervals: Sequence[Interval], *, grace_ms: int) -> None:
        self.exchange = exchange
        self._intervals = list(intervals)
        self._grace_ms = grace_ms
        self._builders: dict[str, CandleBuilder] = {}

    def _for(self, symbol: str) -> CandleBuilder:
        builder = self._builders.get(symbol)
        if builder is None:
            builder = self._builders[symbol] = CandleBuilder(
                self.exchange, self._intervals, grace_ms=self._grace_ms
            )
        return builder

    def seed(self, symbol: str, interval: Interval, last: Candle) -> None:
        self._for(symbol).seed(symbol, interval, last)

    def add_trades(self, trades: Sequence[Trade]) -> BuildResult:
        groups: dict[str, list[Trade]] = defaultdict(list)
        for t in trades:
            groups[t.symbol].append(t)
        finalized: list[Candle] = []
        late: list[Trade] = []
        for symbol, group in groups.items():
            result = self._for(symbol).add_trades(group)
            finalized.extend(result.finalized)
            late.extend(result.late)
        return BuildResult(finalized, late)

    def open_candles(self) -> list[Candle]:
        return [c for b in self._builders.values() for c in b.open_candles()]

    def watermark(self, symbol: str) -> int | None:
        builder = self._builders.get(symbol)
        return None if builder is None else builder.watermark
