"""Compute: order books of several exchanges -> cross-exchange arbitrage alerts.

The ``orderbooks`` topic carries full L2 snapshots (best levels first), so the
newest book of each (symbol, exchange) gives its top of book directly; no
deltas to apply. The watch keeps that top per exchange, ignores a book older
than ``max_age_ms`` (by the clock, against the book's time: a feed that went
quiet must not keep offering a price), and after every batch, and every
``fetch`` timeout so that ageing alone can close an opportunity, looks for the
best pair per symbol (``analytics.arbitrage``).

It publishes on ``alerts`` (key: the symbol; type ``arbitrage``) only changes:

- ``opened``: the best net spread rose above ``threshold``;
- ``changed``: it moved by ``material_change`` or more since the last alert,
  or another pair above the threshold became the best;
- ``closed``: the pair fell ``material_change`` or more below the threshold,
  lost a fresh quote, or gave way to a pair not above the threshold.

The band below the threshold keeps an opportunity hovering at the threshold
from opening and closing on every book. What was published lives in memory:
after a restart an opportunity still open is announced again (at-least-once).

The group starts at the end of the topic (``start="latest"``): a book from
before the start is past its age anyway. Run one member of the group: the bus
spreads keys (``exchange:symbol``) over members, and a member seeing only some
exchanges of a symbol could not compare them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Literal

import msgspec
import structlog

from cryptodesk.adapters.bus.base import Bus
from cryptodesk.analytics.arbitrage import (
    DEFAULT_TAKER_FEE,
    ArbitrageOpportunity,
    Quote,
    best_opportunity,
    quote,
)
from cryptodesk.domain.timeutil import now_ms, to_iso
from cryptodesk.observability.metrics import Metrics
from cryptodesk.services.consume import consume, decoded_books
from cryptodesk.services.retry import retry_forever

log = structlog.get_logger(__name__)
TOPIC = "alerts"
GROUP = "arbitrage"
Event = Literal["opened", "changed", "closed"]
_encode = msgspec.json.Encoder().encode


def alert_json(event: Event, opp: ArbitrageOpportunity, at_ms: int, reason: str) -> dict[str, Any]:
    """The ``alerts`` form: decimals as strings, ``time`` the event's ISO 8601 UTC
    time, ``quoted_at`` that of the older quote."""
    return {
        "type": "arbitrage",
        "event": event,
        "symbol": opp.symbol,
        "buy_exchange": opp.buy_exchange,
        "sell_exchange": opp.sell_exchange,
        "ask": str(opp.ask),
        "bid": str(opp.bid),
        "buy_fee": str(opp.buy_fee),
        "sell_fee": str(opp.sell_fee),
        "net_spread": str(opp.net_spread),
        "gross_spread": str(opp.gross_spread),
        "quoted_at": to_iso(opp.time),
        "time": to_iso(at_ms),
        "reason": reason,
    }


class ArbitrageWatch:
    """Best cross-exchange spread per configured symbol; see the module docstring."""

    def __init__(
        self,
        bus: Bus,
        *,
        exchanges: Sequence[str],
        symbols: Sequence[str],
        threshold: Decimal,
        fees: Mapping[str, Decimal] | None = None,
        default_fee: Decimal = DEFAULT_TAKER_FEE,
        max_age_ms: int = 10_000,
        material_change: Decimal = Decimal("0.0005"),
        clock: Callable[[], int] = now_ms,
        metrics: Metrics | None = None,
        group: str = GROUP,
    ) -> None:
        self._bus = bus
        self._exchanges = frozenset(exchanges)
        self._symbols = list(dict.fromkeys(symbols))
        self._threshold = threshold
        self._fees = dict(fees or {})
        self._default_fee = default_fee
        self._max_age_ms = max_age_ms
        self._material = material_change
        self._clock = clock
        self._metrics = metrics
        self._group = group
        self._quotes: dict[str, dict[str, tuple[tuple[int, int], Quote]]] = {
            s: {} for s in self._symbols
        }
        self._open: dict[str, ArbitrageOpportunity] = {}
        self.published = 0

    @property
    def open(self) -> dict[str, ArbitrageOpportunity]:
        """The opportunities announced and not closed, per symbol."""
        return dict(self._open)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume ``orderbooks`` until ``stop`` is set and nothing more arrives; a quiet
        spell still ages out books, so an opportunity can close without news."""
        await consume(self._bus, "orderbooks", group=self._group, stop=stop,
                      handle=self.process, metrics=self._metrics,
                      on_idle=lambda: self.process([]))  # fmt: skip

    async def process(self, values: Sequence[bytes]) -> list[dict[str, Any]]:
        """Take the encoded books in ``values``, re-check every symbol, publish the
        changes; return the alerts published."""
        for book in decoded_books(values):
            quotes = self._quotes.get(book.symbol)
            if quotes is None or book.exchange not in self._exchanges:
                continue
            mark = (book.ts, book.sequence)
            held = quotes.get(book.exchange)
            if held is None or mark >= held[0]:
                quotes[book.exchange] = (
                    mark, quote(book.exchange, book.best_bid(), book.best_ask(), book.ts)
                )  # fmt: skip
        alerts = self.check(self._clock())
        if alerts:
            items = [(a["symbol"], _encode(a)) for a in alerts]
            await retry_forever(
                lambda: self._bus.publish_many(TOPIC, items), what="publish arbitrage alerts"
            )
            self.published += len(items)
        return alerts

    def check(self, at_ms: int) -> list[dict[str, Any]]:
        """The alerts due at ``at_ms``, recording them as published."""
        alerts = []
        for symbol in self._symbols:
            fresh = [
                q for _, q in self._quotes[symbol].values() if at_ms - q.ts <= self._max_age_ms
            ]
            best = best_opportunity(symbol, fresh, self._fees, default_fee=self._default_fee)
            alert = self._transition(symbol, best, at_ms)
            if alert is not None:
                alerts.append(alert)
                log.info("arbitrage", change=alert["event"], symbol=symbol,
                         buy=alert["buy_exchange"], sell=alert["sell_exchange"],
                         net_spread=alert["net_spread"])  # fmt: skip
        return alerts

    def _transition(
        self, symbol: str, best: ArbitrageOpportunity | None, at_ms: int
    ) -> dict[str, Any] | None:
        last = self._open.get(symbol)
        above = best is not None and best.exceeds(self._threshold)
        if last is None:
            if best is None or not above:
                return None
            self._open[symbol] = best
            return alert_json("opened", best, at_ms, "net spread above the threshold")
        if best is None:
            del self._open[symbol]
            return alert_json("closed", last, at_ms, "fewer than two fresh quotes")
        if best.pair != last.pair:
            if above:
                self._open[symbol] = best
                return alert_json("changed", best, at_ms, "another pair is now the best")
            del self._open[symbol]
            return alert_json("closed", best, at_ms, "the best pair is below the threshold")
        if best.net_spread <= self._threshold - self._material:
            del self._open[symbol]
            return alert_json("closed", best, at_ms, "net spread fell below the threshold")
        if abs(best.net_spread - last.net_spread) >= self._material:
            self._open[symbol] = best
            return alert_json("changed", best, at_ms, "net spread moved")
        return None
