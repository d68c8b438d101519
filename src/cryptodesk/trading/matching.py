"""The matching engine: one limit order book per market, price-time priority, integer
ticks and lots, every state change an event with a per-book sequence number.

Pure Python and deterministic: the same commands in the same order give the same
events and the same book, which is what replaying the order log relies on. Prices
are integer ticks and quantities integer lots (``trading/instruments.py`` converts);
sides are ``BUY = 1`` and ``SELL = -1``.

Order types: limit (``gtc``, ``ioc``, ``fok``, post-only), market, stop-market and
stop-limit (triggered by the last trade price: a buy stop when it trades at or
above the stop, a sell stop at or below). Cancel, and amend: a smaller quantity
keeps the order's place in the queue, a larger one or a new price loses it.
Self-trade prevention cancels the incoming order's remainder (``cancel_incoming``,
the default) or the resting order (``cancel_resting``) instead of trading an
account with itself.

Events are plain tuples, appended to a list the caller takes with
``take_events()`` (the engine never does I/O). Each starts ``(seq, kind, ...)``:

- ``("accepted", oid, account, side, price, qty, kind)``: the order is in the engine;
  ``price`` is None for a market order, ``kind`` its type and time in force;
- ``("rejected", oid, reason)``: refused before it touched the book;
- ``("trade", maker_oid, taker_oid, price, qty, maker_left, taker_left, taker_side)``;
- ``("booked", oid, side, price, qty)``: the order (or its remainder) rests;
- ``("cancelled", oid, side, price, qty, reason)``: ``qty`` was resting (or waiting,
  for a stop) and is gone; reason ``client``, ``self_trade`` or ``amend``;
- ``("expired", oid, qty, reason)``: the unfilled part of an IOC, FOK or market
  order, or of an order cut short by self-trade prevention;
- ``("triggered", oid, last_price)``: a stop order became live;
- ``("amended", oid, price, qty, kept_priority)``.

Cancelled orders leave the price level's queue lazily (their quantity drops to 0
and matching skips them), so a cancel is O(1); a level is compacted once most of
its queue is dead, and dropped as soon as nothing lives on it.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, insort
from collections import deque
from typing import Any, Final, Literal

BUY: Final = 1
SELL: Final = -1
SelfTrade = Literal["cancel_incoming", "cancel_resting"]
Event = tuple[Any, ...]

# An order on the book: [oid, account, side, price, qty left]; a level: [live qty,
# queue, dead entries in the queue]. Lists, not objects: this is the hot path.
_OID, _ACCOUNT, _SIDE, _PRICE, _QTY = 0, 1, 2, 3, 4
_INF = 1 << 62


class MatchingEngine:
    """The book of one market (see the module docstring)."""

    __slots__ = ("_ask_keys", "_asks", "_bid_keys", "_bids", "_buy_stops", "_events",
                 "_orders", "_sell_stops", "_stops", "last_price", "self_trade", "seq",
                 "symbol")  # fmt: skip

    def __init__(self, symbol: str, *, self_trade: SelfTrade = "cancel_incoming") -> None:
        if self_trade not in ("cancel_incoming", "cancel_resting"):
            raise ValueError(f"self_trade {self_trade!r} is not cancel_incoming or cancel_resting")
        self.symbol = symbol
        self.self_trade = self_trade
        self.seq = 0
        self.last_price: int | None = None
        self._events: list[Event] = []
        self._bids: dict[int, list[Any]] = {}
        self._asks: dict[int, list[Any]] = {}
        self._bid_keys: list[int] = []  # prices ascending: the best bid is last
        self._ask_keys: list[int] = []  # negated prices ascending: the best ask is last
        self._orders: dict[int, list[Any]] = {}
        # Stops waiting for their trigger: oid -> (account, side, stop, qty, limit, tif);
        # heaps of (trigger key, oid) pop the next to trigger first.
        self._stops: dict[int, tuple[str, int, int, int, int | None, str]] = {}
        self._buy_stops: list[tuple[int, int]] = []
        self._sell_stops: list[tuple[int, int]] = []

    # ---- commands ---------------------------------------------------------------------

    def limit(
        self, oid: int, account: str, side: int, price: int, qty: int,
        tif: str = "gtc", post_only: bool = False,
    ) -> None:  # fmt: skip
        """A limit order; ``tif`` is ``gtc``, ``ioc`` or ``fok``."""
        # The common case (a valid GTC order that does not cross) is inlined: it is
        # most of a market's traffic, and every call and attribute costs here.
        if (
            qty <= 0 or price <= 0 or tif != "gtc" or post_only or oid in self._orders
            or (side != BUY and side != SELL) or oid in self._stops
        ):  # fmt: skip
            self._limit_checked(oid, account, side, price, qty, tif, post_only)
            return
        if side == BUY:
            keys = self._ask_keys
            if keys and -keys[-1] <= price:
                self._limit_checked(oid, account, side, price, qty, tif, post_only)
                return
            book = self._bids
        else:
            keys = self._bid_keys
            if keys and keys[-1] >= price:
                self._limit_checked(oid, account, side, price, qty, tif, post_only)
                return
            book = self._asks
        seq = self.seq
        events = self._events
        events.append((seq + 1, "accepted", oid, account, side, price, qty, "gtc"))
        order = [oid, account, side, price, qty]
        self._orders[oid] = order
        level = book.get(price)
        if level is None:
            book[price] = [qty, deque((order,)), 0]
            insort(self._bid_keys, price) if side == BUY else insort(self._ask_keys, -price)
        else:
            level[0] += qty
            level[1].append(order)
        events.append((seq + 2, "booked", oid, side, price, qty))
        self.seq = seq + 2

    def _limit_checked(
        self, oid: int, account: str, side: int, price: int, qty: int, tif: str, post_only: bool
    ) -> None:
        reason = self._invalid(oid, side, qty, price)
        if reason is None and tif not in ("gtc", "ioc", "fok"):
            reason = f"time in force {tif!r} is not gtc, ioc or fok"
        if reason is None and post_only and tif != "gtc":
            reason = "post-only orders rest: time in force must be gtc"
        if reason is not None:
            self.seq += 1
            self._events.append((self.seq, "rejected", oid, reason))
            return
        self.seq += 1
        self._events.append((self.seq, "accepted", oid, account, side, price, qty,
                             "post_only" if post_only else tif))  # fmt: skip
        self._limit(oid, account, side, price, qty, tif, post_only)
        if self._stops:
            self._run_stops()

    def market(self, oid: int, account: str, side: int, qty: int) -> None:
        """A market order: takes what the book has; the rest expires."""
        reason = self._invalid(oid, side, qty, None)
        self.seq += 1
        if reason is not None:
            self._events.append((self.seq, "rejected", oid, reason))
            return
        self._events.append((self.seq, "accepted", oid, account, side, None, qty, "market"))
        self._market(oid, account, side, qty)
        if self._stops:
            self._run_stops()

    def stop(
        self, oid: int, account: str, side: int, stop_price: int, qty: int,
        limit_price: int | None = None, tif: str = "gtc",
    ) -> None:  # fmt: skip
        """A stop-market (no ``limit_price``) or stop-limit order, triggered by the last
        trade price; one whose trigger is already reached triggers at once. A stop-limit
        becomes a limit order with ``tif`` when triggered: ``ioc`` caps a stop-market at
        a protection price (what cannot fill within it expires instead of resting)."""
        reason = self._invalid(oid, side, qty, limit_price)
        if reason is None and stop_price <= 0:
            reason = "stop price must be positive"
        if reason is None and tif not in ("gtc", "ioc", "fok"):
            reason = f"time in force {tif!r} is not gtc, ioc or fok"
        self.seq += 1
        if reason is not None:
            self._events.append((self.seq, "rejected", oid, reason))
            return
        kind = "stop_market" if limit_price is None else "stop_limit"
        self._events.append((self.seq, "accepted", oid, account, side, limit_price, qty, kind))
        self._stops[oid] = (account, side, stop_price, qty, limit_price, tif)
        if side == BUY:
            heapq.heappush(self._buy_stops, (stop_price, oid))
        else:
            heapq.heappush(self._sell_stops, (-stop_price, oid))
        self._run_stops()

    def cancel(self, oid: int, reason: str = "client") -> bool:
        """Cancel a resting or waiting order; False (and no event) when it is not live."""
        order = self._orders.pop(oid, None)
        if order is None:
            stop = self._stops.pop(oid, None)
            if stop is None:
                return False
            self.seq += 1
            self._events.append((self.seq, "cancelled", oid, stop[1], stop[4], stop[3], reason))
            return True
        price, qty = order[_PRICE], order[_QTY]
        self._unlink(order)
        order[_QTY] = 0
        self.seq = seq = self.seq + 1
        self._events.append((seq, "cancelled", oid, order[_SIDE], price, qty, reason))
        return True

    def amend(self, oid: int, *, price: int | None = None, qty: int | None = None) -> bool:
        """Change a resting order's price and/or quantity (left to fill). A smaller
        quantity at the same price keeps its place; anything else re-queues it (and a
        new price may trade at once). False (no event) when the order is not resting or
        the change is invalid (quantity not positive, price not positive)."""
        order = self._orders.get(oid)
        if order is None or (qty is not None and qty <= 0) or (price is not None and price <= 0):
            return False
        new_price = order[_PRICE] if price is None else price
        new_qty = order[_QTY] if qty is None else qty
        if new_price == order[_PRICE] and new_qty <= order[_QTY]:
            level = (self._bids if order[_SIDE] == BUY else self._asks)[new_price]
            level[0] -= order[_QTY] - new_qty
            order[_QTY] = new_qty
            self.seq += 1
            self._events.append((self.seq, "amended", oid, new_price, new_qty, True))
            return True
        del self._orders[oid]
        self._unlink(order)
        account, side = order[_ACCOUNT], order[_SIDE]
        order[_QTY] = 0
        self.seq += 1
        self._events.append((self.seq, "amended", oid, new_price, new_qty, False))
        self._limit(oid, account, side, new_price, new_qty, "gtc", False)
        if self._stops:
            self._run_stops()
        return True

    def take_events(self) -> list[Event]:
        """The events since the last call, oldest first."""
        events, self._events = self._events, []
        return events

    # ---- market data ------------------------------------------------------------------

    def best_bid(self) -> int | None:
        return self._bid_keys[-1] if self._bid_keys else None

    def best_ask(self) -> int | None:
        return -self._ask_keys[-1] if self._ask_keys else None

    def l2(self, depth: int = 0) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """Aggregated levels ``(price, qty)``, best first (``depth`` 0: all)."""
        bid_keys = self._bid_keys[::-1] if depth <= 0 else self._bid_keys[: -depth - 1 : -1]
        ask_keys = self._ask_keys[::-1] if depth <= 0 else self._ask_keys[: -depth - 1 : -1]
        return ([(p, self._bids[p][0]) for p in bid_keys],
                [(-k, self._asks[-k][0]) for k in ask_keys])  # fmt: skip

    def l3(self) -> tuple[list[tuple[int, int, int, str]], list[tuple[int, int, int, str]]]:
        """Every resting order ``(price, oid, qty, account)``, in priority order."""

        def side(book: dict[int, list[Any]], prices: list[int]) -> list[tuple[int, int, int, str]]:
            return [(o[_PRICE], o[_OID], o[_QTY], o[_ACCOUNT])
                    for p in prices for o in book[p][1] if o[_QTY]]  # fmt: skip

        return (side(self._bids, self._bid_keys[::-1]),
                side(self._asks, [-k for k in self._ask_keys[::-1]]))  # fmt: skip

    def order(self, oid: int) -> tuple[int, int, int, str] | None:
        """A resting order's ``(side, price, qty left, account)``."""
        o = self._orders.get(oid)
        return None if o is None else (o[_SIDE], o[_PRICE], o[_QTY], o[_ACCOUNT])

    def waiting_stops(self) -> dict[int, tuple[str, int, int, int, int | None, str]]:
        """Stops not triggered yet: oid -> (account, side, stop, qty, limit or None, tif)."""
        return dict(self._stops)

    def __len__(self) -> int:
        return len(self._orders)

    # ---- internals --------------------------------------------------------------------

    def _invalid(self, oid: int, side: int, qty: int, price: int | None) -> str | None:
        if oid in self._orders or oid in self._stops:
            return f"order id {oid} is already live"
        if side != BUY and side != SELL:
            return f"side {side!r} is not 1 (buy) or -1 (sell)"
        if qty <= 0:
            return "quantity must be positive"
        if price is not None and price <= 0:
            return "price must be positive"
        return None

    def _limit(
        self, oid: int, account: str, side: int, price: int, qty: int, tif: str, post_only: bool
    ) -> None:
        if side == BUY:
            crosses = bool(self._ask_keys) and -self._ask_keys[-1] <= price
        else:
            crosses = bool(self._bid_keys) and self._bid_keys[-1] >= price
        if crosses:
            if post_only:
                self.seq += 1
                self._events.append((self.seq, "expired", oid, qty, "post_only_would_take"))
                return
            if tif == "fok" and self._available(account, side, price) < qty:
                self.seq += 1
                self._events.append((self.seq, "expired", oid, qty, "fok_not_filled"))
                return
            qty = self._match(oid, account, side, price, qty)
            if qty < 0:  # cut short by self-trade prevention
                self.seq += 1
                self._events.append((self.seq, "expired", oid, -qty, "self_trade"))
                return
        elif tif == "fok":
            self.seq += 1
            self._events.append((self.seq, "expired", oid, qty, "fok_not_filled"))
            return
        if not qty:
            return
        if tif != "gtc":
            self.seq += 1
            self._events.append((self.seq, "expired", oid, qty, "ioc_remainder"))
            return
        order = [oid, account, side, price, qty]
        self._orders[oid] = order
        if side == BUY:
            level = self._bids.get(price)
            if level is None:
                self._bids[price] = [qty, deque((order,)), 0]
                insort(self._bid_keys, price)
            else:
                level[0] += qty
                level[1].append(order)
        else:
            level = self._asks.get(price)
            if level is None:
                self._asks[price] = [qty, deque((order,)), 0]
                insort(self._ask_keys, -price)
            else:
                level[0] += qty
                level[1].append(order)
        self.seq += 1
        self._events.append((self.seq, "booked", oid, side, price, qty))

    def _market(self, oid: int, account: str, side: int, qty: int) -> None:
        left = self._match(oid, account, side, _INF if side == BUY else 0, qty)
        if left:
            self.seq += 1
            reason = "self_trade" if left < 0 else "no_liquidity"
            self._events.append((self.seq, "expired", oid, abs(left), reason))

    def _match(self, oid: int, account: str, side: int, limit: int, qty: int) -> int:
        """Trade ``qty`` against the other side up to ``limit``; the quantity left, negated
        when self-trade prevention cancelled the incoming order."""
        events = self._events
        orders = self._orders
        if side == BUY:
            book, keys, sign = self._asks, self._ask_keys, -1
        else:
            book, keys, sign = self._bids, self._bid_keys, 1
        cancel_resting = self.self_trade == "cancel_resting"
        while qty and keys:
            price = sign * keys[-1]
            if (price > limit) if side == BUY else (price < limit):
                break
            level = book[price]
            queue = level[1]
            while qty and queue:
                maker = queue[0]
                have = maker[_QTY]
                if not have:
                    queue.popleft()
                    level[2] -= 1
                    continue
                if maker[_ACCOUNT] == account:
                    if not cancel_resting:
                        return -qty
                    queue.popleft()
                    del orders[maker[_OID]]
                    level[0] -= have
                    maker[_QTY] = 0
                    self.seq += 1
                    events.append((self.seq, "cancelled", maker[_OID], -side, price, have,
                                   "self_trade"))  # fmt: skip
                    continue
                fill = have if have < qty else qty
                have -= fill
                qty -= fill
                maker[_QTY] = have
                level[0] -= fill
                self.seq += 1
                events.append((self.seq, "trade", maker[_OID], oid, price, fill, have, qty, side))
                self.last_price = price
                if not have:
                    queue.popleft()
                    del orders[maker[_OID]]
            if not level[0]:
                del book[price]
                keys.pop()
        return qty

    def _unlink(self, order: list[Any]) -> None:
        """Take a live resting order's quantity off its level (the queue entry dies lazily)."""
        price = order[_PRICE]
        if order[_SIDE] == BUY:
            book, keys, key = self._bids, self._bid_keys, price
        else:
            book, keys, key = self._asks, self._ask_keys, -price
        level = book[price]
        level[0] -= order[_QTY]
        level[2] += 1
        if not level[0]:
            del book[price]
            if keys[-1] == key:
                keys.pop()
            else:
                del keys[bisect_left(keys, key)]
        elif level[2] > 16 and 2 * level[2] > len(level[1]):
            level[1] = deque(o for o in level[1] if o[_QTY])
            level[2] = 0

    def _available(self, account: str, side: int, limit: int) -> int:
        """What an incoming order could trade up to ``limit``: own orders do not count,
        and with ``cancel_incoming`` matching stops at the first of them."""
        if side == BUY:
            book, keys, sign = self._asks, self._ask_keys, -1
        else:
            book, keys, sign = self._bids, self._bid_keys, 1
        stop_at_own = self.self_trade == "cancel_incoming"
        total = 0
        for key in reversed(keys):
            price = sign * key
            if (price > limit) if side == BUY else (price < limit):
                break
            for o in book[price][1]:
                if o[_ACCOUNT] != account:
                    total += o[_QTY]
                elif o[_QTY] and stop_at_own:
                    return total
        return total

    def _run_stops(self) -> None:
        """Trigger every stop the last trade price has reached, in trigger order, until
        none is left (a triggered stop's trades may trigger more)."""
        stops = self._stops
        while self.last_price is not None:
            last = self.last_price
            oid = None
            while self._buy_stops:
                stop, candidate = self._buy_stops[0]
                if candidate not in stops:
                    heapq.heappop(self._buy_stops)  # cancelled meanwhile
                    continue
                if stop <= last:
                    heapq.heappop(self._buy_stops)
                    oid = candidate
                break
            if oid is None:
                while self._sell_stops:
                    key, candidate = self._sell_stops[0]
                    if candidate not in stops:
                        heapq.heappop(self._sell_stops)
                        continue
                    if -key >= last:
                        heapq.heappop(self._sell_stops)
                        oid = candidate
                    break
            if oid is None:
                return
            account, side, _, qty, limit, tif = stops.pop(oid)
            self.seq += 1
            self._events.append((self.seq, "triggered", oid, last))
            if limit is None:
                self._market(oid, account, side, qty)
            else:
                self._limit(oid, account, side, limit, qty, tif, False)
