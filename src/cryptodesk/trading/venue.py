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

Orders for ``paper:EXCHANGE`` (one ``PaperVenue`` per exchange named in ``paper``)
are applied to that venue as they were decided (what they took is in the record;
resting ones fill by ``paper_fills`` records), sharing the balances, the positions
(one per account and symbol across venues), the order id and trade id numbering.

Market orders go to the book as IOC (or FOK) limits at the risk engine's
protection price, so a fill never costs more than was reserved; a stop-market
order waits as a stop whose triggered order is an IOC at that price, so what
cannot fill within it expires (reason ``protection_price``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
from cryptodesk.trading.paper import PaperVenue, Walk
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
        paper: Sequence[str] = (),
        paper_max_age_ms: int = 10_000,
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
        self.paper = {
            f"paper:{exchange}": PaperVenue(
                exchange, self.instruments, balances=risk.balances, positions=self._positions,
                trade_id=self._next_trade_id, max_age_ms=paper_max_age_ms,
            )
            for exchange in paper
        }  # fmt: skip

    # ---- queries ------------------------------------------------------------------------

    def orders(self, account: str, *, status: OrderStatus | None = None) -> list[Order]:
        """The account's orders on every venue, oldest first (rejections are not kept)."""
        views = [live.view for live in self._by_account.get(account, ())]
        for paper in self.paper.values():
            views += paper.orders(account)
        views.sort(key=lambda v: v.order_id)
        return [v for v in views if status is None or v.status == status]

    def order(self, order_id: str) -> Order | None:
        """The order of that id on any venue."""
        live = self._orders.get(order_id)
        if live is not None:
            return live.view
        for paper in self.paper.values():
            found = paper.order(order_id)
            if found is not None:
                return found
        return None

    def known_client_id(self, account: str, client_order_id: str) -> Order | None:
        """The order ``account`` placed earlier with ``client_order_id``, on any venue."""
        order_id = self._client_ids.get((account, client_order_id))
        if order_id is not None:
            return self._orders[order_id].view
        for paper in self.paper.values():
            found = paper.known_client_id(account, client_order_id)
            if found is not None:
                return found
        return None

    def fills(self, account: str) -> list[Fill]:
        fills = list(self._fills.get(account, ()))
        for paper in self.paper.values():
            fills += paper.fills(account)
        return fills

    def positions(self, account: str) -> list[Position]:
        """The account's positions in every symbol it has traded on any venue (live
        objects; one per symbol across venues)."""
        return [self._positions.get(a, s) for a, s in self._traded_keys() if a == account]

    def position_of(self, account: str, symbol: str) -> Decimal:
        """The account's signed base quantity in ``symbol``, across venues."""
        key = (account, symbol)
        traded = key in self._traded or any(key in p.traded for p in self.paper.values())
        return self._positions.get(*key).quantity if traded else _ZERO

    def take_updates(self) -> list[dict[str, Any]]:
        updates, self.updates = self.updates, []
        for paper in self.paper.values():
            updates += paper.take_updates()
        return updates

    def _traded_keys(self) -> dict[tuple[str, str], None]:
        keys = dict(self._traded)
        for paper in self.paper.values():
            keys.update(paper.traded)
        return keys

    def book(self, symbol: str) -> MatchingEngine:
        """The matching engine of ``symbol``, to read (an empty one, not kept, if no order
        ever reached it: a query changes nothing)."""
        engine = self._engines.get(symbol)
        return MatchingEngine(symbol, self_trade=self._self_trade) if engine is None else engine

    def symbols(self) -> list[str]:
        """Symbols whose book exists."""
        return list(self._engines)

    def open_orders(self, account: str | None = None, symbol: str | None = None) -> list[Order]:
        """Open orders of ``account`` (None: everyone's) on every venue, oldest first."""
        if account is not None and symbol is not None:  # the risk check's question: fast
            views = [live.view for live in self._open.get((account, symbol), {}).values()]
            for paper in self.paper.values():
                views += paper.open_orders(account, symbol)
            return sorted(views, key=lambda v: v.order_id) if self.paper else views
        views = [live.view for orders in self._open.values() for live in orders.values()
                 if symbol in (None, live.view.symbol)]  # fmt: skip
        for paper in self.paper.values():
            views += paper.open_orders(symbol=symbol)
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
        venue = record.get("venue", "internal")
        if kind == "submit" and venue != "internal":
            self._apply_paper_submit(record, ts)
        elif kind == "submit":
            self._apply_submit(record, ts)
        elif kind == "cancel" and venue != "internal":
            self.paper[venue].apply_cancel(record["order_id"], ts)
        elif kind == "cancel":
            live = self._orders[record["order_id"]]
            self._engines[live.view.symbol].cancel(live.oid, "client")
            self._drain(live.view.symbol, ts)
        elif kind == "paper_fills":
            fills = [(order_id, Decimal(price)) for order_id, price in record["fills"]]
            self.paper[venue].apply_fills(fills, ts)
        elif kind == "amend":
            self._apply_amend(record, ts)
        elif kind == "deposit":
            self.risk.balances.deposit(record["account"], record["asset"],
                                       Decimal(record["amount"]))  # fmt: skip
        elif kind == "kill":
            self.risk.kill(record["account"])
            for view in self.open_orders(record["account"]):
                if view.venue != "internal":
                    self.paper[view.venue].apply_cancel(view.order_id, ts, "kill_switch")
                    continue
                live = self._orders[view.order_id]
                self._engines[view.symbol].cancel(live.oid, "kill_switch")
                self._drain(view.symbol, ts)
        elif kind == "revive":
            self.risk.revive(record["account"])
        elif kind.startswith("live_"):
            pass  # the live venue's own records (its state is kept beside the manager)
        else:
            raise ValueError(f"order log record {record['seq']} has unknown type {kind!r}")

    def _apply_paper_submit(self, record: Record, ts: int) -> None:
        order_id = record["order_id"]
        self._order_seq = max(self._order_seq, int(order_id[1:]))
        takes = [(Decimal(price), Decimal(quantity)) for price, quantity in record["takes"]]
        reserve = (record["reserve_asset"], Decimal(record["reserve_amount"]))
        walk = Walk(takes, record["early_close"])
        self.paper[record["venue"]].apply_submit(_request(record), order_id, ts, walk, reserve)

    def _apply_submit(self, record: Record, ts: int) -> None:
        request = _request(record)
        instrument = self.instruments[request.symbol]
        # Validated when it was decided: only the grid conversions are needed here.
        lots = instrument.to_lots(request.quantity)
        ticks = None if request.price is None else instrument.to_ticks(request.price)
        stop = None if request.stop_price is None else instrument.to_ticks(request.stop_price)
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
        trade_id = self._next_trade_id()
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

    def _next_trade_id(self) -> str:
        self._trade_seq += 1
        return f"T{self._trade_seq:010d}"

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


def _request(record: Record) -> OrderRequest:
    """The order a ``submit`` record placed."""
    return OrderRequest(
        account=record["account"], symbol=record["symbol"], side=record["side"],
        type=record["order_type"], quantity=Decimal(record["quantity"]),
        price=_decimal(record["price"]), stop_price=_decimal(record["stop_price"]),
        time_in_force=record["time_in_force"], post_only=record["post_only"],
        reduce_only=record["reduce_only"], client_order_id=record["client_order_id"],
        venue=record.get("venue", "internal"),
    )  # fmt: skip


def _decimal(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)
