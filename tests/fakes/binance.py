"""A fake Binance spot exchange: REST market data and the market-data websocket,
in Binance's documented wire format, for ccxt to talk to.

REST (https://developers.binance.com/docs/binance-spot-api-docs/rest-api):
``/api/v3/ping``, ``/time``, ``/exchangeInfo``, ``/depth``, ``/trades``,
``/historicalTrades``, ``/aggTrades``, ``/klines`` and ``/ticker/24hr``. Prices
and quantities are strings, times epoch ms, errors ``{"code": -1121, "msg": ...}``
with HTTP 400.

Websocket (https://developers.binance.com/docs/binance-spot-api-docs/web-socket-streams):
``/ws/<n>`` raw streams, as ccxt.pro opens them; a client sends
``{"method": "SUBSCRIBE", "params": ["btcusdt@trade", ...], "id": 1}`` and gets
``{"result": null, "id": 1}``. Events are ``trade``, ``depthUpdate`` (``U``/``u``
first and last update id; a quantity of ``"0"`` removes the level) and ``kline``.

Controls for tests: ``push_trade`` (recorded for REST and sent to subscribers),
``record_trade`` (REST only: a trade that happened while no socket listened),
``push_depth`` with ``lost=`` (updates applied to the book but never sent: a
sequence gap), ``push_kline``, ``send_raw`` (any text, for malformed payloads),
``drop_websockets`` and ``wait_subscribed``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from aiohttp import web

from tests.fakes.http import FakeServer

T0 = 1_717_200_000_000  # 2024-06-01T00:00:00Z
Level = tuple[str, str]  # (price, quantity) as Binance sends them


@dataclass(frozen=True)
class Listing:
    """One spot symbol and the filters exchangeInfo publishes for it."""

    base: str
    quote: str
    tick_size: str = "0.01000000"
    step_size: str = "0.00001000"
    min_qty: str = "0.00001000"
    min_notional: str = "5.00000000"
    status: str = "TRADING"

    @property
    def id(self) -> str:
        return f"{self.base}{self.quote}"


DEFAULT_LISTINGS = (
    Listing("BTC", "USDT"),
    Listing("ETH", "USDT", step_size="0.00010000", min_qty="0.00010000"),
    Listing("SOL", "USDT", tick_size="0.01000000", step_size="0.00100000", min_qty="0.00100000"),
    Listing("LUNA", "USDT", status="BREAK"),
)


@dataclass
class Book:
    bids: dict[Decimal, str] = field(default_factory=dict)
    asks: dict[Decimal, str] = field(default_factory=dict)
    last_update_id: int = 1000

    def apply(self, bids: Iterable[Level], asks: Iterable[Level]) -> None:
        for side, levels in ((self.bids, bids), (self.asks, asks)):
            for price, qty in levels:
                if Decimal(qty) == 0:
                    side.pop(Decimal(price), None)
                else:
                    side[Decimal(price)] = qty

    def top(self, limit: int) -> tuple[list[Level], list[Level]]:
        """Best first, as strings exactly as they were given."""
        bids = sorted(self.bids.items(), reverse=True)[:limit]
        asks = sorted(self.asks.items())[:limit]
        return [(_fmt(p), q) for p, q in bids], [(_fmt(p), q) for p, q in asks]


def _fmt(price: Decimal) -> str:
    return f"{price:.8f}"


def _error(status: int, code: int, msg: str) -> web.Response:
    return web.json_response({"code": code, "msg": msg}, status=status)


class FakeBinance:
    def __init__(self, listings: Sequence[Listing] = DEFAULT_LISTINGS, *, now: int = T0) -> None:
        self.server = FakeServer()
        self.listings = {listing.id: listing for listing in listings}
        self.now = now  # server clock (ms); tests move it
        self.trades: dict[str, list[dict[str, Any]]] = {sid: [] for sid in self.listings}
        self.books: dict[str, Book] = {sid: Book() for sid in self.listings}
        self.klines: dict[tuple[str, str], list[list[Any]]] = {}
        self.tickers: dict[str, dict[str, Any]] = {}
        self._next_trade_id = dict.fromkeys(self.listings, 5_000_000)
        self._subscriptions: dict[web.WebSocketResponse, set[str]] = {}
        self.subscribe_counts: dict[str, int] = {}
        self._changed = asyncio.Condition()
        s = self.server
        s.json_route("GET", "/api/v3/ping", lambda request: {})
        s.json_route("GET", "/api/v3/time", lambda request: {"serverTime": self.now})
        s.json_route("GET", "/api/v3/exchangeInfo", self._exchange_info)
        for path, handler in (
            ("/api/v3/depth", self._depth),
            ("/api/v3/trades", self._recent_trades),
            ("/api/v3/historicalTrades", self._historical_trades),
            ("/api/v3/aggTrades", self._agg_trades),
            ("/api/v3/klines", self._klines),
            ("/api/v3/ticker/24hr", self._ticker_24hr),
        ):
            s.route("GET", path, handler)
        s.websocket("/ws/{stream}", self._on_ws_message)

    # -- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        await self.server.start()

    async def stop(self) -> None:
        await self.drop_websockets()
        await self.server.stop()

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def ws_url(self) -> str:
        return self.server.ws_url

    def rest_calls(self, path: str) -> list[dict[str, str]]:
        """Query strings of every request made to ``path``."""
        return [query for _, p, query in self.server.requests if p == path]

    # -- state the tests drive ------------------------------------------------------
    def record_trade(
        self, symbol_id: str, price: str, qty: str, *, buyer_maker: bool, time: int | None = None
    ) -> dict[str, Any]:
        """A trade REST serves but no websocket is told about."""
        tid = self._next_trade_id[symbol_id]
        self._next_trade_id[symbol_id] = tid + 1
        trade = {
            "id": tid,
            "price": price,
            "qty": qty,
            "quoteQty": str(Decimal(price) * Decimal(qty)),
            "time": self.now if time is None else time,
            "isBuyerMaker": buyer_maker,
            "isBestMatch": True,
        }
        self.trades[symbol_id].append(trade)
        return trade

    async def push_trade(
        self, symbol_id: str, price: str, qty: str, *, buyer_maker: bool, time: int | None = None
    ) -> dict[str, Any]:
        trade = self.record_trade(symbol_id, price, qty, buyer_maker=buyer_maker, time=time)
        await self.send(f"{symbol_id.lower()}@trade", trade_event(symbol_id, trade, self.now))
        return trade

    def set_book(
        self, symbol_id: str, bids: Sequence[Level], asks: Sequence[Level], *, last_update_id: int
    ) -> None:
        book = self.books[symbol_id] = Book(last_update_id=last_update_id)
        book.apply(bids, asks)

    async def push_depth(
        self,
        symbol_id: str,
        bids: Sequence[Level] = (),
        asks: Sequence[Level] = (),
        *,
        lost: tuple[Sequence[Level], Sequence[Level]] | None = None,
    ) -> dict[str, Any]:
        """Apply a diff and send it; ``lost`` (bids, asks) is applied first and
        never sent, so the next event's ``U`` skips the update ids it used."""
        book = self.books[symbol_id]
        if lost is not None:
            book.apply(*lost)
            book.last_update_id += max(1, len(lost[0]) + len(lost[1]))
        first = book.last_update_id + 1
        book.apply(bids, asks)
        book.last_update_id += max(1, len(bids) + len(asks))
        event = {
            "e": "depthUpdate",
            "E": self.now,
            "s": symbol_id,
            "U": first,
            "u": book.last_update_id,
            "b": [list(level) for level in bids],
            "a": [list(level) for level in asks],
        }
        await self.send(f"{symbol_id.lower()}@depth@100ms", event)
        return event

    def add_klines(self, symbol_id: str, interval: str, rows: Iterable[list[Any]]) -> None:
        """Rows in the ``/api/v3/klines`` array format, oldest first."""
        self.klines.setdefault((symbol_id, interval), []).extend(rows)

    async def push_kline(
        self, symbol_id: str, interval: str, row: list[Any], *, closed: bool
    ) -> None:
        """A kline event for ``row`` (the REST array format) on ``<symbol>@kline_<interval>``."""
        k = {
            "t": row[0], "T": row[6], "s": symbol_id, "i": interval, "f": 100, "L": 200,
            "o": row[1], "c": row[4], "h": row[2], "l": row[3], "v": row[5], "n": row[8],
            "x": closed, "q": row[7], "V": row[9], "Q": row[10], "B": "0",
        }  # fmt: skip
        event = {"e": "kline", "E": self.now, "s": symbol_id, "k": k}
        await self.send(f"{symbol_id.lower()}@kline_{interval}", event)

    def set_ticker(self, symbol_id: str, **fields: Any) -> None:
        """A 24 h ticker in the ``/api/v3/ticker/24hr`` FULL format."""
        self.tickers[symbol_id] = {"symbol": symbol_id, **fields}

    # -- websocket --------------------------------------------------------------------
    async def send(self, stream: str, event: Any) -> int:
        """Send ``event`` (JSON unless already text) to every socket subscribed to ``stream``."""
        text = event if isinstance(event, str) else json.dumps(event)
        sent = 0
        for ws, streams in list(self._subscriptions.items()):
            if ws.closed:
                self._subscriptions.pop(ws, None)
            elif stream in streams:
                try:
                    await ws.send_str(text)
                except ConnectionError:  # closing under us: like a message lost in a drop
                    continue
                sent += 1
        return sent

    send_raw = send

    async def drop_websockets(self) -> None:
        """Cut every socket: what happens until a client resubscribes reaches REST only."""
        self._subscriptions.clear()
        await self.server.drop_websockets()

    async def wait_subscribed(self, stream: str, *, times: int = 1, timeout: float = 10.0) -> None:
        """Until ``stream`` has been subscribed ``times`` times in all (and is live)."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(
                lambda: (
                    self.subscribe_counts.get(stream, 0) >= times
                    and any(stream in s for s in self._subscriptions.values())
                )
            )

    async def _on_ws_message(self, server: FakeServer, ws: web.WebSocketResponse, msg: Any) -> None:
        method, params, rid = msg.get("method"), msg.get("params") or [], msg.get("id")
        streams = self._subscriptions.setdefault(ws, set())
        if method == "SUBSCRIBE":
            streams.update(params)
            for stream in params:
                self.subscribe_counts[stream] = self.subscribe_counts.get(stream, 0) + 1
            await ws.send_json({"result": None, "id": rid})
        elif method == "UNSUBSCRIBE":
            streams.difference_update(params)
            await ws.send_json({"result": None, "id": rid})
        elif method == "LIST_SUBSCRIPTIONS":
            await ws.send_json({"result": sorted(streams), "id": rid})
        else:
            await ws.send_json(
                {"code": 2, "msg": f"Invalid request: unknown method {method}", "id": rid}
            )
        async with self._changed:
            self._changed.notify_all()

    # -- REST -------------------------------------------------------------------------
    def _exchange_info(self, request: web.Request) -> dict[str, Any]:
        return {
            "timezone": "UTC",
            "serverTime": self.now,
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE",
                 "intervalNum": 1, "limit": 6000},
                {"rateLimitType": "ORDERS", "interval": "SECOND",
                 "intervalNum": 10, "limit": 100},
                {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE",
                 "intervalNum": 5, "limit": 61000},
            ],
            "exchangeFilters": [],
            "symbols": [symbol_info(listing) for listing in self.listings.values()],
        }  # fmt: skip

    def _symbol(self, request: web.Request) -> str | web.Response:
        sid = request.query.get("symbol", "")
        if sid not in self.listings:
            return _error(400, -1121, "Invalid symbol.")
        return sid

    def _limit(self, request: web.Request, default: int, most: int) -> int:
        return min(int(request.query.get("limit", default)), most)

    async def _depth(self, request: web.Request) -> web.StreamResponse:
        sid = self._symbol(request)
        if isinstance(sid, web.Response):
            return sid
        book = self.books[sid]
        bids, asks = book.top(self._limit(request, 100, 5000))
        return web.json_response({"lastUpdateId": book.last_update_id, "bids": bids, "asks": asks})

    async def _recent_trades(self, request: web.Request) -> web.StreamResponse:
        sid = self._symbol(request)
        if isinstance(sid, web.Response):
            return sid
        return web.json_response(self.trades[sid][-self._limit(request, 500, 1000) :])

    async def _historical_trades(self, request: web.Request) -> web.StreamResponse:
        sid = self._symbol(request)
        if isinstance(sid, web.Response):
            return sid
        if "X-MBX-APIKEY" not in request.headers:
            return _error(401, -2014, "API-key format invalid.")
        trades = self.trades[sid]
        limit = self._limit(request, 500, 1000)
        if "fromId" in request.query:
            from_id = int(request.query["fromId"])
            return web.json_response([t for t in trades if t["id"] >= from_id][:limit])
        return web.json_response(trades[-limit:])

    async def _agg_trades(self, request: web.Request) -> web.StreamResponse:
        """Every trade is its own aggregate here (one taker order, one price level)."""
        sid = self._symbol(request)
        if isinstance(sid, web.Response):
            return sid
        q = request.query
        rows = self.trades[sid]
        if "startTime" in q:
            rows = [t for t in rows if t["time"] >= int(q["startTime"])]
        if "endTime" in q:
            rows = [t for t in rows if t["time"] <= int(q["endTime"])]
        if "fromId" in q:
            rows = [t for t in rows if t["id"] >= int(q["fromId"])]
        limit = self._limit(request, 500, 1000)
        rows = rows[:limit] if ("startTime" in q or "fromId" in q) else rows[-limit:]
        return web.json_response([
            {"a": t["id"], "p": t["price"], "q": t["qty"], "f": t["id"], "l": t["id"],
             "T": t["time"], "m": t["isBuyerMaker"], "M": True}
            for t in rows
        ])  # fmt: skip

    async def _klines(self, request: web.Request) -> web.StreamResponse:
        sid = self._symbol(request)
        if isinstance(sid, web.Response):
            return sid
        q = request.query
        rows = self.klines.get((sid, q.get("interval", "")), [])
        if "startTime" in q:
            rows = [r for r in rows if r[0] >= int(q["startTime"])]
        if "endTime" in q:
            rows = [r for r in rows if r[0] <= int(q["endTime"])]
        limit = self._limit(request, 500, 1000)
        return web.json_response(rows[:limit] if "startTime" in q else rows[-limit:])

    async def _ticker_24hr(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        if "symbol" in q:
            sid = self._symbol(request)
            if isinstance(sid, web.Response):
                return sid
            return web.json_response(self.tickers[sid])
        wanted = json.loads(q["symbols"]) if "symbols" in q else list(self.tickers)
        return web.json_response([self.tickers[s] for s in wanted if s in self.tickers])


def trade_event(symbol_id: str, trade: dict[str, Any], event_time: int) -> dict[str, Any]:
    """The ``<symbol>@trade`` event for a trade in the REST format."""
    return {
        "e": "trade",
        "E": event_time,
        "s": symbol_id,
        "t": trade["id"],
        "p": trade["price"],
        "q": trade["qty"],
        "T": trade["time"],
        "m": trade["isBuyerMaker"],
        "M": True,
    }


def symbol_info(listing: Listing) -> dict[str, Any]:
    """One ``symbols`` entry of ``/api/v3/exchangeInfo``."""
    return {
        "symbol": listing.id, "status": listing.status,
        "baseAsset": listing.base, "baseAssetPrecision": 8,
        "quoteAsset": listing.quote, "quotePrecision": 8, "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8, "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True, "ocoAllowed": True, "otoAllowed": True,
        "quoteOrderQtyMarketAllowed": True, "allowTrailingStop": True,
        "cancelReplaceAllowed": True, "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": listing.tick_size,
             "maxPrice": "1000000.00000000", "tickSize": listing.tick_size},
            {"filterType": "LOT_SIZE", "minQty": listing.min_qty,
             "maxQty": "9000.00000000", "stepSize": listing.step_size},
            {"filterType": "ICEBERG_PARTS", "limit": 10},
            {"filterType": "MARKET_LOT_SIZE", "minQty": "0.00000000",
             "maxQty": "100.00000000", "stepSize": "0.00000000"},
            {"filterType": "TRAILING_DELTA", "minTrailingAboveDelta": 10,
             "maxTrailingAboveDelta": 2000, "minTrailingBelowDelta": 10,
             "maxTrailingBelowDelta": 2000},
            {"filterType": "PERCENT_PRICE_BY_SIDE", "bidMultiplierUp": "5",
             "bidMultiplierDown": "0.2", "askMultiplierUp": "5",
             "askMultiplierDown": "0.2", "avgPriceMins": 5},
            {"filterType": "NOTIONAL", "minNotional": listing.min_notional,
             "applyMinToMarket": True, "maxNotional": "9000000.00000000",
             "applyMaxToMarket": False, "avgPriceMins": 5},
            {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders": 5},
        ],
        "permissions": [], "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }  # fmt: skip
