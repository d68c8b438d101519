"""Signals that trade: an enabled strategy turns its rule's signals into market orders,
through the order service, on the internal venue, on a paper venue
``paper:EXCHANGE`` (filled against that exchange's live book), or, with
``mode = "live"``, for real on ``live:EXCHANGE`` (the tenant's ledger account
named by ``account``).

Each enabled strategy names a signal rule and where to trade: tenant, account,
quantity (base units) and venue. A signal of a bullish kind buys, a bearish one sells:

- bullish: ``golden_cross``, ``ema_cross_up``, ``macd_cross_up`` (trend following),
  ``rsi_oversold``, ``bb_break_lower`` (mean reversion: a stretched fall buys);
- bearish: their opposites.

The order's client order id is the signal's natural key, so a signal delivered
twice (the bus is at-least-once, a restart re-reads what was not acknowledged)
places one order: the order service returns the first one. The trader is its own
consumer group on ``signals`` and starts at the end of the topic: strategies trade
the signals that come after they were enabled, never a retained backlog. Every
order passes the same validation and pre-trade risk as one sent over the API; a
rejection is logged with its rule and the signal is done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Final

import structlog

from cryptodesk.adapters.bus.base import Bus
from cryptodesk.config_trading import TradingStrategy
from cryptodesk.domain.orders import OrderRequest, Side
from cryptodesk.domain.signals import SIGNAL_KINDS, Signal, decode_signal
from cryptodesk.services.order_service import OrderService

log = structlog.get_logger(__name__)
GROUP: Final = "signal-trader"
BULLISH: Final = frozenset(
    {"golden_cross", "ema_cross_up", "macd_cross_up", "rsi_oversold", "bb_break_lower"}
)
BEARISH: Final = frozenset(SIGNAL_KINDS) - BULLISH


def side_of(kind: str) -> Side:
    """The side a signal of ``kind`` trades (see the module docstring)."""
    return "buy" if kind in BULLISH else "sell"


def client_order_id(signal: Signal) -> str:
    rule, exchange, symbol, interval, open_time = signal.key
    return f"sig:{rule}:{exchange}:{symbol}:{interval}:{open_time}"


class SignalTrader:
    """Consumes ``signals`` and places each enabled strategy's orders."""

    def __init__(
        self, bus: Bus, orders: OrderService, strategies: Sequence[TradingStrategy],
        *, group: str = GROUP,
    ) -> None:  # fmt: skip
        self._bus = bus
        self._orders = orders
        self._by_rule: dict[str, list[TradingStrategy]] = {}
        for strategy in strategies:
            self._by_rule.setdefault(strategy.rule, []).append(strategy)
        self._group = group
        self.placed = 0
        self.rejected: dict[str, int] = {}  # by rule broken

    async def handle(self, signal: Signal) -> None:
        """Place the orders of every strategy trading ``signal``'s rule."""
        for strategy in self._by_rule.get(signal.rule, ()):
            request = OrderRequest(
                strategy.account, signal.symbol, side_of(signal.kind), "market",
                strategy.quantity, client_order_id=client_order_id(signal),
                venue=strategy.venue,
            )  # fmt: skip
            placed = await self._orders.submit(strategy.tenant, request)
            order = placed.order
            if order.status == "rejected":
                rule = order.reject_rule or "unknown"
                self.rejected[rule] = self.rejected.get(rule, 0) + 1
                log.warning("signal order rejected", rule=signal.rule, tenant=strategy.tenant,
                            account=strategy.account, reject_rule=order.reject_rule,
                            reason=order.reject_reason)  # fmt: skip
            elif placed.new:
                self.placed += 1
                log.info("signal order placed", rule=signal.rule, tenant=strategy.tenant,
                         order_id=order.order_id, side=order.side, status=order.status)  # fmt: skip

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop``: fetch signals, place their orders, then acknowledge them."""
        consumer = self._bus.consumer("signals", group=self._group, name=f"{self._group}-1",
                                      start="latest")  # fmt: skip
        try:
            while not stop.is_set():
                messages = await consumer.fetch(max_messages=100, timeout=0.5)
                for message in messages:
                    try:
                        signal = decode_signal(message.value)
                    except (ValueError, KeyError, TypeError) as exc:
                        log.warning("undecodable signal skipped", error=repr(exc))
                        continue
                    await self.handle(signal)
                if messages:
                    await consumer.ack(messages)
        finally:
            await consumer.close()
