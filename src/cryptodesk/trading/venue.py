"""The venue's state (books, orders, fills, positions, balances) and the one way it
changes: applying an accepted command, as recorded in the order log.

Applying is deterministic and decides nothing (``OrderManager`` validates and
risk-checks before it records a command), so applying the same records to a new
``Venue`` gives the same state: that is how the order log is replayed.

Each engine event becomes an order status change, a pair of fills (maker and
taker, fee = notional x the instrument's maker or taker fee, in the quote asset),
a position update and a balance settlement. A reservation never holds more than
the open quantity needs; what is left is released when an order ends. Order ids
are ``O`` + sequence (the engine's integer id is the sequence), trade ids ``T`` +
sequence, times the record's ``ts``. Every order change and fill is appended to
``updates`` for the service layer to publish (``take_updates``), as
``{"event": "order" | "fill", **its fields as JSON values}``.

Market orders go to the book as IOC (or FOK) limits at the risk engine's
protection price, so a fill never costs more than was reserved; a stop-market
order waits as a stop whose triggered order is an IOC at that price, so what
cannot fill within it expires (reason ``protection_price``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, localcontext
from typing import Any

from cryptodesk.domain.orders import Fill, Liquidity, OrderRequest, OrderStatus
from cryptodesk.trading.instruments import EXACT, Instrument
from cryptodesk.trading.matching import BUY, SELL, Event, MatchingEngine, SelfTrade
from cryptodesk.trading.order_log import Record
from cryptodesk.trading.order_state import (
    Order,
    OrderKeeping,
    check_transition,
    fill_dict,
    order_dict,
)
from cryptodesk.trading.positions import Position, Positions
from cryptodesk.trading.pretrade import PreTradeRisk

_ZERO = Decimal(0)
_ONE = Decimal(1)


@dataclass(slots=True)
class Live:
    """An order's public view and what the venue needs beside it (integer lots)."""

    view: Order
    oid: int  # the engine's id
    instrument: Instrument
    lots: int
    filled_lots: int = 0
    notional: Decimal = _ZERO
    protection: Decimal | None = None  # market / stop-market: the worst fill price


class Venue(OrderKeeping):
    """Every account's orders, fills and positions, the books, and (through ``risk``)
    the balances. Read it through the queries; change it only with ``apply``."""

    def __init__(
        self,
        instruments: Mapping[str, Instrument],
        risk: PreTradeRisk,
        *,
        self_trade: SelfTrade = "cancel_incoming",
        venue: str = "internal",
    ) -> None:
        self.instruments = dict(instruments)
        self.risk = risk
        self.venue = venue
        self.updates: list[dict[str, Any]] = []
        self._self_trade: SelfTrade = self_trade
        self._engines: dict[str, MatchingEngine] = {}
        self._orders: dict[str, Live] = {}
        self._by_oid: dict[int, Live] = {}
        self._by_account: dict[str, list[Live]] = {}
        self._open: dict[tuple[str, str], dict[str, Live]] = {}  # (account, symbol)
        self._client_ids: dict[tuple[str, str], str] = {}
        self._fills: dict[str, list[Fill]] = {}
        self._positions = Positions()
        self._traded: dict[tuple[str, str], None] = {}  # (account, symbol) with fills
        self._seq = 0  # of the last record applied
        self._order_seq = 0
        self._trade_seq = 0

    # ---- queries ------------------------------------------------------------------------

    def orders(self, account: str, *, status: OrderStatus | None = None) -> list[Order]:
        """The account's orders, oldest first (rejections are not kept)."""
        views = (live.view for live in self._by_account.get(account, ()))
        return [v for v in views if status is None or v.status == status]

    def fills(self, account: str) -> list[Fill]:
        return list(self._fills.get(account, ()))

    def positions(self, account: str) -> list[Position]:
        """The account's positions in every symbol it has traded (live objects)."""
        return [self._positions.get(a, s) for a, s in self._traded if a == account]

    def book(self, symbol: str) -> MatchingEngine:
        """The matching engine of ``symbol``, to read (an empty one, not kept, if no order
        ever reached it: a query changes nothing)."""
        engine = self._engines.get(symbol)
        return MatchingEngine(symbol, self_trade=self._self_trade) if engine is None else engine

    def symbols(self) -> list[str]:
        """Symbols whose book exists."""
        return list(self._engines)

    def open_orders(self, account: str | None = None) -> list[Order]:
        """Open orders of ``account`` (None: everyone's), oldest first."""
        views = [live.view for orders in self._open.values() for live in orders.values()]
        return sorted((v for v in views if account is None or v.account == account),
                      key=lambda v: v.order_id)  # fmt: skip

    def _engine(self, symbol: str) -> MatchingEngine:
        engine = self._engines.get(symbol)
        if engine is None:
            engine = self._engines[symbol] = MatchingEngine(symbol, self_trade=self._self_trade)
        return engine

    # ---- applying -----------------------------------------------------------------------

    def apply(self, record: Record) -> None:
        """Apply one order-log record (see ``trading/order_log.py``)."""
        self._seq = max(self._seq, int(record["seq"]))
        ts, kind = int(record["ts"]), record["type"]
        if kind == "submit":
            self._apply_submit(record, ts)
        elif kind == "cancel":
            live = self._orders[record["order_id"]]
            self._engines[live.view.symbol].cancel(live.oid, "client")
            self._drain(live.view.symbol, ts)
        elif kind == "amend":
            self._apply_amend(record, ts)
        elif kind == "deposit":
            self.risk.balances.deposit(record["account"], record["asset"],
                                       Decimal(record["amount"]))  # fmt: skip
        elif kind == "kill":
            self.risk.kill(record["account"])
            for view in self.open_orders(record["account"]):
                live = self._orders[view.order_id]
                self._engines[view.symbol].cancel(live.oid, "kill_switch")
                self._drain(view.symbol, ts)
        elif kind == "revive":
            self.risk.revive(record["account"])
        else:
            raise ValueError(f"order log record {record['seq']} has unknown type {kind!r}")

    def _apply_submit(self, record: Record, ts: int) -> None:
        request = OrderRequest(
            account=record["account"], symbol=record["symbol"], side=record["side"],
            type=record["order_type"], quantity=Decimal(record["quantity"]),
            price=_decimal(record["price"]), stop_price=_decimal(record["stop_price"]),
            time_in_force=record["time_in_force"], post_only=record["post_only"],
            reduce_only=record["reduce_only"], client_order_id=record["client_order_id"],
        )  # fmt: skip
        instrument = self.instruments[request.symbol]
        lots, ticks, stop = instrument.validate(request)
        order_id = record["order_id"]
        balances = self.risk.balances
        if not balances.reservation(order_id):  # replaying: risk.check reserved it live
            amount = Decimal(record["reserve_amount"])
            balances.reserve(order_id, record["reserve_asset"], amount, account=request.account)
        oid = int(order_id[1:])
        self._order_seq = max(self._order_seq, oid)
        protection = _decimal(record["protection_price"])
        live = Live(Order.from_request(request, order_id=order_id, status="new", ts=ts), oid,
                     instrument, lots, protection=protection)  # fmt: skip
        self._orders[order_id] = self._by_oid[oid] = live
        self._by_account.setdefault(request.account, []).append(live)
        self._open.setdefault((request.account, request.symbol), {})[order_id] = live
        if request.client_order_id is not None:
            self._client_ids[(request.account, request.client_order_id)] = order_id
        engine = self._engine(request.symbol)
        side = BUY if request.side == "buy" else SELL
        if request.type == "limit" and ticks is not None:
            engine.limit(oid, request.account, side, ticks, lots, request.time_in_force,
                         request.post_only)  # fmt: skip
        elif request.type == "market" and protection is not None:
            tif = "fok" if request.time_in_force == "fok" else "ioc"
            engine.limit(oid, request.account, side, _cap(instrument, side, protection), lots, tif)
        elif request.type == "stop_limit" and stop is not None:
            engine.stop(oid, request.account, side, stop, lots, ticks)
        elif stop is not None and protection is not None:
            engine.stop(oid, request.account, side, stop, lots,
                        _cap(instrument, side, protection), "ioc")  # fmt: skip
        else:
            raise ValueError(f"order log record {record['seq']} lacks a price")
        self._drain(request.symbol, ts)

    def _apply_amend(self, record: Record, ts: int) -> None:
        live = self._orders[record["order_id"]]
        view, instrument = live.view, live.instrument
        price, quantity = Decimal(record["price"]), Decimal(record["quantity"])
        balances = self.risk.balances
        balances.release(view.order_id)
        asset = instrument.quote if view.side == "buy" else instrument.base
        balances.reserve(view.order_id, asset, Decimal(record["reserve_amount"]),
                         account=view.account)  # fmt: skip
        live.lots = instrument.to_lots(quantity)
        live.view = replace(view, price=price, quantity=quantity, updated_ts=ts)
        left = live.lots - live.filled_lots
        if not self._engines[view.symbol].amend(live.oid, price=instrument.to_ticks(price),
                                                qty=left):  # fmt: skip
            raise ValueError(f"order {view.order_id} is not resting: cannot amend it")
        self._drain(view.symbol, ts)

    def _drain(self, symbol: str, ts: int) -> None:
        """Turn the engine's events into order changes, fills and balance moves."""
        engine = self._engines[symbol]
        while events := engine.take_events():
            for event in events:
                kind = event[1]
                if kind == "trade":
                    self._trade(event, ts)
                    continue
                live = self._by_oid[event[2]]
                if kind == "accepted":
                    self._change(live, ts, status="accepted")
                elif kind == "cancelled":
                    self._change(live, ts, status="cancelled", close_reason=event[6])
                elif kind == "expired":
                    # A triggered stop-market is an IOC at its protection price: what it
                    # could not fill within that price expires.
                    reason = event[4]
                    if live.view.type == "stop_market" and reason == "ioc_remainder":
                        reason = "protection_price"
                    self._change(live, ts, status="expired", close_reason=reason)
                elif kind == "rejected":
                    self._change(live, ts, status="rejected", reject_rule="engine",
                                 reject_reason=event[3])  # fmt: skip
                elif kind == "amended":
                    self._change(live, ts)
                # "triggered": the stop stays accepted; its trades follow.

    def _trade(self, event: Event, ts: int) -> None:
        _, _, maker_oid, taker_oid, price_ticks, lots, *_ = event
        maker, taker = self._by_oid[maker_oid], self._by_oid[taker_oid]
        instrument = taker.instrument
        price, quantity = instrument.price(price_ticks), instrument.quantity(lots)
        self._trade_seq += 1
        trade_id = f"T{self._trade_seq:010d}"
        with localcontext(EXACT):
            notional = price * quantity
            sides: list[tuple[Live, Liquidity, Decimal]] = [
                (maker, "maker", instrument.maker_fee),
                (taker, "taker", instrument.taker_fee),
            ]
            for live, liquidity, rate in sides:
                view = live.view
                fee = notional * rate
                fill = Fill(trade_id, view.order_id, view.account, view.symbol, view.side,
                            price, quantity, fee, instrument.quote, liquidity, ts,
                            venue=self.venue)  # fmt: skip
                self._fills.setdefault(view.account, []).append(fill)
                self.risk.balances.settle_fill(fill, base=instrument.base, quote=instrument.quote)
                self._positions.apply(fill)
                self._traded[(view.account, view.symbol)] = None
                self.updates.append({"event": "fill", **fill_dict(fill)})
                live.filled_lots += lots
                live.notional += notional
                filled = instrument.quantity(live.filled_lots)
                done = live.filled_lots == live.lots
                self._change(live, ts, status="filled" if done else "partially_filled",
                             filled=filled, average_price=live.notional / filled,
                             fees=view.fees + fee)  # fmt: skip
                if not done:  # keep only what the rest needs (a buy may fill below its price)
                    held = self.risk.balances.reservation(view.order_id)
                    excess = held - self.need(live, live.lots - live.filled_lots)
                    if excess > _ZERO:
                        self.risk.balances.release(view.order_id, excess)

    def _change(self, live: Live, ts: int, *, status: OrderStatus | None = None,
                **fields: Any) -> None:  # fmt: skip
        """Move the order's view on (a final status releases its reservation) and publish."""
        view = live.view
        if status is not None:
            check_transition(view, status)
            fields["status"] = status
        live.view = replace(view, updated_ts=ts, **fields)
        if not live.view.is_open:
            self.risk.balances.release(view.order_id)
            self._open[(view.account, view.symbol)].pop(view.order_id, None)
        self.updates.append({"event": "order", **order_dict(live.view)})

    # ---- helpers ------------------------------------------------------------------------

    def need(self, live: Live, lots: int, price: Decimal | None = None) -> Decimal:
        """What ``lots`` more of the order hold: base for a sell, quote with the fee for a
        buy (at its limit price, or its protection price)."""
        quantity = live.instrument.quantity(lots)
        if live.view.side == "sell":
            return quantity
        if price is None:
            price = live.view.price if live.view.price is not None else live.protection
        if price is None:
            raise ValueError(f"order {live.view.order_id} has no price to reserve at")
        fee = max(live.instrument.taker_fee, live.instrument.maker_fee, _ZERO)
        with localcontext(EXACT):
            return price * quantity * (_ONE + fee)


def _cap(instrument: Instrument, side: int, protection: Decimal) -> int:
    """The protection price in whole ticks, never beyond it (at least one tick)."""
    with localcontext(EXACT):
        ticks = protection / instrument.tick_size
        rounded = ticks.to_integral_value(ROUND_FLOOR if side == BUY else ROUND_CEILING)
    return max(1, int(rounded))


def _decimal(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)
