"""A fake Coinbase Advanced Trade exchange: public REST market data and the
market-data websocket, in Coinbase's documented wire format, for ccxt to talk to.

REST, public (no auth), https://docs.cdp.coinbase.com/api-reference/advanced-trade-api/rest-api/public/list-public-products
and the pages beside it: ``/api/v3/brokerage/market/products`` (``product_type``,
``product_ids`` filters), ``.../products/{id}/candles`` (``start``/``end`` in UNIX
seconds, ``granularity`` such as ``ONE_HOUR``; newest first, at most 350),
``.../products/{id}/ticker`` (market trades, newest first, ``limit`` required)
and ``.../product_book``. Prices and sizes are strings, times ISO 8601 with
microseconds; errors are ``{"error": "NOT_FOUND", ...}``.
ccxt also loads currencies from the Coinbase App endpoints ``/v2/currencies``,
``/v2/currencies/crypto`` and ``/v2/exchange-rates``
(https://docs.cdp.coinbase.com/coinbase-app/track-apis/currencies,
https://docs.cdp.coinbase.com/coinbase-app/track-apis/exchange-rates).

Websocket (https://docs.cdp.coinbase.com/coinbase-business/advanced-trade-apis/websocket/websocket-overview,
https://docs.cdp.coinbase.com/coinbase-app/advanced-trade-apis/websocket/websocket-channels,
https://docs.cdp.coinbase.com/api-reference/advanced-trade-api/websocket/level2,
https://docs.cdp.coinbase.com/api-reference/advanced-trade-api/websocket/market-trades):
one socket at ``/``; a client sends ``{"type": "subscribe", "product_ids": [...],
"channel": "level2"}`` (one channel a message) and gets a ``subscriptions``
message listing everything the connection holds, then a ``snapshot`` event.
Every message is ``{"channel", "client_id", "timestamp", "sequence_num",
"events"}``; ``sequence_num`` numbers the messages of one connection, as in
Coinbase's samples (ccxt never reads it). ``level2`` arrives as channel
``l2_data``, whose updates carry ``side`` (bid/offer),
``price_level`` and ``new_quantity`` (the new size, "0" removes the level);
``market_trades`` snapshots hold the most recent 50 trades, newest first.

Controls for tests: ``push_trade`` (recorded for REST and sent to subscribers),
``record_trade`` (REST only: a trade made while no socket listened), ``push_l2``
with ``lost=`` (a message applied to the book and numbered but never sent: a
sequence gap), ``send_raw`` (any text), ``drop_websockets`` and ``wait_subscribed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from aiohttp import web

from tests.fakes.http import FakeServer

T0 = 1_717_200_000_000  # 2024-06-01T00:00:00Z
Level = tuple[str, str]  # (price, size) as Coinbase sends them
Sides = tuple[Sequence[Level], Sequence[Level]]  # (bids, asks)
Query = Mapping[str, str]
Body = dict[str, Any] | web.Response
GRANULARITY_S = {"ONE_MINUTE": 60, "FIVE_MINUTE": 300, "FIFTEEN_MINUTE": 900,
                 "THIRTY_MINUTE": 1800, "ONE_HOUR": 3600, "TWO_HOUR": 7200,
                 "SIX_HOUR": 21600, "ONE_DAY": 86400}  # fmt: skip
CHANNELS = {"level2", "market_trades", "heartbeats", "ticker", "ticker_batch", "candles", "status"}
NAMES = {"BTC": "Bitcoin", "ETH": "Ethereum", "SOL": "Solana", "LUNA": "Terra",
         "USD": "US Dollar", "EUR": "Euro"}  # fmt: skip
SNAPSHOT_TRADES = 50


def iso(ms: int, *, digits: int = 6, extra: int = 0) -> str:
    """Coinbase's time format; ``extra`` fills the digits below the millisecond."""
    stamp = datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    fraction = (ms % 1000) * 10 ** (digits - 3) + extra
    return f"{stamp}.{fraction:0{digits}d}Z"


@dataclass(frozen=True)
class Product:
    """One spot product and the increments ``list products`` publishes for it."""

    base: str
    quote: str
    base_increment: str = "0.00000001"
    price_increment: str = "0.01"
    quote_increment: str = "0.01"
    base_min_size: str = "0.00000001"
    base_max_size: str = "3400"
    quote_min_size: str = "1"
    quote_max_size: str = "150000000"
    trading_disabled: bool = False

    @property
    def id(self) -> str:
        return f"{self.base}-{self.quote}"


DEFAULT_PRODUCTS = (
    Product("BTC", "USD"),
    Product("ETH", "USD", base_max_size="42000", quote_min_size="2"),
    # Prices step by price_increment; quote_increment only sizes funds.
    Product(
        "SOL", "USD", base_increment="0.001", base_min_size="0.001", quote_increment="0.000001"
    ),
    Product("LUNA", "USD", trading_disabled=True),
)


@dataclass(frozen=True)
class MarketTrade:
    id: int
    product_id: str
    ms: int
    price: str
    size: str
    side: str  # "BUY" | "SELL"

    def wire(self) -> dict[str, Any]:
        """The trade as both ``.../ticker`` and ``market_trades`` send it."""
        return {"trade_id": str(self.id), "product_id": self.product_id, "price": self.price,
                "size": self.size, "time": iso(self.ms), "side": self.side}  # fmt: skip


@dataclass
class Book:
    bids: dict[Decimal, Level] = field(default_factory=dict)
    asks: dict[Decimal, Level] = field(default_factory=dict)

    def apply(self, bids: Iterable[Level], asks: Iterable[Level]) -> None:
        for side, levels in ((self.bids, bids), (self.asks, asks)):
            for price, size in levels:
                if Decimal(size) == 0:
                    side.pop(Decimal(price), None)
                else:
                    side[Decimal(price)] = (price, size)

    def top(self, limit: int | None = None) -> tuple[list[Level], list[Level]]:
        """Best first, as strings exactly as they were given."""
        bids = [lvl for _, lvl in sorted(self.bids.items(), reverse=True)][:limit]
        asks = [lvl for _, lvl in sorted(self.asks.items())][:limit]
        return bids, asks


@dataclass
class Connection:
    channels: dict[str, set[str]] = field(default_factory=dict)  # channel -> product ids
    sequence: int = 0


def _error(status: int, code: str, message: str) -> web.Response:
    body = {"error": code, "error_details": message, "message": message}
    return web.json_response(body, status=status)


class FakeCoinbase:
    def __init__(self, products: Sequence[Product] = DEFAULT_PRODUCTS, *, now: int = T0) -> None:
        self.server = FakeServer()
        self.products = {p.id: p for p in products}
        self.now = now  # server clock (ms); tests move it
        self.trades: dict[str, list[MarketTrade]] = {pid: [] for pid in self.products}
        self.books: dict[str, Book] = {pid: Book() for pid in self.products}
        self.candles: dict[tuple[str, str], list[dict[str, str]]] = {}
        self.stats: dict[str, dict[str, str]] = {pid: {} for pid in self.products}
        self.subscribe_counts: dict[tuple[str, str], int] = {}
        self._next_trade_id = dict.fromkeys(self.products, 700_000_000)
        self._connections: dict[web.WebSocketResponse, Connection] = {}
        self._changed = asyncio.Condition()
        s, market = self.server, "/api/v3/brokerage/market"
        s.json_route("GET", "/v2/currencies", self._fiat)
        s.json_route("GET", "/v2/currencies/crypto", self._crypto)
        s.json_route("GET", "/v2/exchange-rates", self._rates)
        s.json_route("GET", f"{market}/products", self._list_products)
        s.route(
            "GET", f"{market}/products/{{product_id}}/candles", self._for_product(self._candles)
        )
        s.route("GET", f"{market}/products/{{product_id}}/ticker", self._for_product(self._ticker))
        s.route("GET", f"{market}/product_book", self._for_product(self._product_book))
        s.websocket("/", self._on_ws_message)

    async def start(self) -> None:
        await self.server.start()

    async def stop(self) -> None:
        await self.drop_websockets()
        await self.server.stop()

    def rest_calls(self, path: str) -> list[dict[str, str]]:
        """Query strings of every request made to ``path``."""
        return [query for _, p, query in self.server.requests if p == path]

    # -- state the tests drive ------------------------------------------------------
    def record_trade(self, product_id: str, price: str, size: str, side: str) -> MarketTrade:
        """A trade, made now, that REST serves but no websocket is told about."""
        tid = self._next_trade_id[product_id]
        self._next_trade_id[product_id] = tid + 1
        trade = MarketTrade(tid, product_id, self.now, price, size, side)
        self.trades[product_id].append(trade)
        return trade

    async def push_trade(self, product_id: str, price: str, size: str, side: str) -> MarketTrade:
        trade = self.record_trade(product_id, price, size, side)
        await self._publish(
            "market_trades", product_id, {"type": "update", "trades": [trade.wire()]}
        )
        return trade

    def set_book(self, product_id: str, bids: Sequence[Level], asks: Sequence[Level]) -> None:
        self.books[product_id] = Book()
        self.books[product_id].apply(bids, asks)

    async def push_l2(
        self, product_id: str, bids: Sequence[Level] = (), asks: Sequence[Level] = (),
        *, lost: Sides | None = None,
    ) -> None:  # fmt: skip
        """Apply an update and send it; ``lost`` is applied and numbered first
        but never sent, so the connection's ``sequence_num`` skips one."""
        for sides, dropped in ((lost, True), ((bids, asks), False)):
            if sides is not None:
                self.books[product_id].apply(*sides)
                event = self._l2_event("update", product_id, *sides)
                await self._publish("level2", product_id, event, lost=dropped)

    def add_candles(
        self, product_id: str, granularity: str, rows: Iterable[dict[str, str]]
    ) -> None:
        """Candles in the REST format (``start`` in UNIX seconds), oldest first."""
        self.candles.setdefault((product_id, granularity), []).extend(rows)

    def set_stats(self, product_id: str, **fields: str) -> None:
        """24 h fields of the product listing: ``price``, ``volume_24h``, ..."""
        self.stats[product_id] = dict(fields)

    async def send_raw(self, channel: str, product_id: str, text: str) -> None:
        """Send ``text`` as it is to every socket subscribed to ``channel`` for the product."""
        for ws, _ in self._subscribers(channel, product_id):
            await _send_text(ws, text)

    async def drop_websockets(self) -> None:
        """Cut every socket: what happens until a client resubscribes reaches REST only."""
        self._connections.clear()
        await self.server.drop_websockets()

    async def wait_subscribed(
        self, channel: str, product_id: str, *, times: int = 1, timeout: float = 10.0
    ) -> None:
        """Until ``channel`` was subscribed for the product ``times`` times (and is live)."""
        key = (channel, product_id)
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(
                lambda: (
                    self.subscribe_counts.get(key, 0) >= times
                    and bool(self._subscribers(channel, product_id))
                )
            )

    # -- websocket --------------------------------------------------------------------
    def _subscribers(self, channel: str, product_id: str) -> list[tuple[Any, Connection]]:
        return [(ws, conn) for ws, conn in self._connections.items()
                if not ws.closed and product_id in conn.channels.get(channel, ())]  # fmt: skip

    def _l2_event(self, kind: str, product_id: str, bids: Iterable[Level],
                  asks: Iterable[Level]) -> dict[str, Any]:  # fmt: skip
        when = "1970-01-01T00:00:00Z" if kind == "snapshot" else iso(self.now)
        updates = [{"side": side, "event_time": when, "price_level": price, "new_quantity": size}
                   for side, levels in (("bid", bids), ("offer", asks))
                   for price, size in levels]  # fmt: skip
        return {"type": kind, "product_id": product_id, "updates": updates}

    async def _send(self, ws: web.WebSocketResponse, channel: str, event: dict[str, Any]) -> None:
        conn = self._connections[ws]
        stamp = iso(self.now, digits=9, extra=417)  # nanoseconds, as the feed sends them
        message = {"channel": channel, "client_id": "", "timestamp": stamp,
                   "sequence_num": conn.sequence, "events": [event]}  # fmt: skip
        conn.sequence += 1
        await _send_text(ws, json.dumps(message))

    async def _publish(
        self, channel: str, product_id: str, event: dict[str, Any], *, lost: bool = False
    ) -> None:
        for ws, conn in self._subscribers(channel, product_id):
            if lost:
                conn.sequence += 1
            else:
                await self._send(ws, "l2_data" if channel == "level2" else channel, event)

    async def _on_ws_message(self, server: FakeServer, ws: web.WebSocketResponse, msg: Any) -> None:
        conn = self._connections.setdefault(ws, Connection())
        kind, channel, products = msg.get("type"), msg.get("channel"), msg.get("product_ids") or []
        if (
            kind not in ("subscribe", "unsubscribe")
            or channel not in CHANNELS
            or any(p not in self.products for p in products)
        ):
            await ws.send_json({"type": "error", "message": "Failure to subscribe"})
            return
        held = conn.channels.setdefault(channel, set())
        if kind == "subscribe":
            held.update(products)
        else:  # no product ids: the whole channel
            held.difference_update(products or set(held))
        conn.channels = {name: ids for name, ids in conn.channels.items() if ids}
        listing = {name: sorted(ids) for name, ids in conn.channels.items()}
        await self._send(ws, "subscriptions", {"subscriptions": listing})
        for pid in products if kind == "subscribe" else ():
            self.subscribe_counts[channel, pid] = self.subscribe_counts.get((channel, pid), 0) + 1
            if channel == "level2":
                await self._send(
                    ws, "l2_data", self._l2_event("snapshot", pid, *self.books[pid].top())
                )
            elif channel == "market_trades" and self.trades[pid]:
                recent = [t.wire() for t in self.trades[pid][-SNAPSHOT_TRADES:][::-1]]
                await self._send(ws, channel, {"type": "snapshot", "trades": recent})
        async with self._changed:
            self._changed.notify_all()

    # -- REST -------------------------------------------------------------------------
    def _fiat(self, request: web.Request) -> dict[str, Any]:
        codes = sorted({p.quote for p in self.products.values()})
        return {"data": [{"id": c, "name": NAMES.get(c, c), "min_size": "0.01"} for c in codes]}

    def _crypto(self, request: web.Request) -> dict[str, Any]:
        codes = sorted({p.base for p in self.products.values()})
        return {"data": [
            {"asset_id": f"00000000-0000-4000-8000-{i:012d}", "code": c, "name": NAMES.get(c, c),
             "color": "#0052FF", "sort_index": 100 + i, "exponent": 8, "type": "crypto",
             "address_regex": "^.+$"}
            for i, c in enumerate(codes)
        ]}  # fmt: skip

    def _rates(self, request: web.Request) -> dict[str, Any]:
        rates = {p.base: "0.0001" for p in self.products.values()}
        return {"data": {"currency": request.query.get("currency", "USD"), "rates": rates}}

    def _product_entry(self, p: Product) -> dict[str, Any]:
        return {
            "product_id": p.id, "price": "", "price_percentage_change_24h": "",
            "volume_24h": "", "volume_percentage_change_24h": "",
            "base_increment": p.base_increment, "quote_increment": p.quote_increment,
            "quote_min_size": p.quote_min_size, "quote_max_size": p.quote_max_size,
            "base_min_size": p.base_min_size, "base_max_size": p.base_max_size,
            "base_name": NAMES.get(p.base, p.base), "quote_name": NAMES.get(p.quote, p.quote),
            "watched": False, "is_disabled": False, "new": False,
            "status": "delisted" if p.trading_disabled else "online",
            "cancel_only": False, "limit_only": False, "post_only": False,
            "trading_disabled": p.trading_disabled, "auction_mode": False,
            "product_type": "SPOT", "quote_currency_id": p.quote, "base_currency_id": p.base,
            "fcm_trading_session_details": None, "mid_market_price": "", "alias": "",
            "alias_to": [], "base_display_symbol": p.base, "quote_display_symbol": p.quote,
            "view_only": False, "price_increment": p.price_increment, "display_name": p.id,
            "product_venue": "CBE", "approximate_quote_24h_volume": "",
            **self.stats[p.id],
        }  # fmt: skip

    def _list_products(self, request: web.Request) -> dict[str, Any]:
        q, wanted = request.query, request.query.getall("product_ids", [])
        spot = q.get("product_type", "SPOT") == "SPOT"  # this venue lists no futures
        products = [self._product_entry(p) for p in self.products.values()
                    if spot and (not wanted or p.id in wanted)]  # fmt: skip
        return {"products": products, "num_products": len(products)}

    def _for_product(self, handler: Callable[[Query, str], Body]) -> Any:
        """A route for one product (in the path or ``product_id``): 404 for others."""

        async def route(request: web.Request) -> web.StreamResponse:
            pid = request.match_info.get("product_id") or request.query.get("product_id", "")
            if pid not in self.products:
                return _error(404, "NOT_FOUND", "ProductID is invalid")
            body = handler(request.query, pid)
            return body if isinstance(body, web.Response) else web.json_response(body)

        return route

    def _candles(self, q: Query, pid: str) -> Body:
        step = GRANULARITY_S.get(q.get("granularity", ""))
        if step is None or "start" not in q or "end" not in q:
            return _error(400, "INVALID_ARGUMENT", "start, end and granularity are required")
        start, end = int(q["start"]), int(q["end"])
        if (end - start) // step > 350:
            return _error(400, "INVALID_ARGUMENT", "more than 350 candles requested")
        rows = self.candles.get((pid, q["granularity"]), [])
        return {"candles": [r for r in rows if start <= int(r["start"]) <= end][::-1]}

    def _ticker(self, q: Query, pid: str) -> Body:
        """Market trades, newest first (``start``/``end`` in UNIX seconds)."""
        if "limit" not in q:
            return _error(400, "INVALID_ARGUMENT", "limit is required")
        start, end = int(q.get("start", 0)) * 1000, int(q.get("end", 0)) * 1000
        trades = [t for t in self.trades[pid] if t.ms >= start and (not end or t.ms < end)]
        (bid, _), (ask, _) = (side[0] if side else ("", "") for side in self.books[pid].top(1))
        newest = trades[::-1][: int(q["limit"])]
        return {"trades": [t.wire() for t in newest], "best_bid": bid, "best_ask": ask}

    def _product_book(self, q: Query, pid: str) -> Body:
        bids, asks = self.books[pid].top(int(q["limit"]) if "limit" in q else None)
        return {"pricebook": {
            "product_id": pid, "time": iso(self.now),
            "bids": [{"price": p, "size": s} for p, s in bids],
            "asks": [{"price": p, "size": s} for p, s in asks],
        }}  # fmt: skip


async def _send_text(ws: web.WebSocketResponse, text: str) -> None:
    with contextlib.suppress(ConnectionError):  # closing under us: lost like in a drop
        await ws.send_str(text)
