"""A fake Kraken spot exchange: REST market data and the public websocket v2,
in Kraken's documented wire format, for ccxt to talk to.

REST (https://docs.kraken.com/api-reference/market-data/get-server-time and the
pages beside it: get-asset-info, get-tradable-asset-pairs,
get-ticker-information, get-ohlc-data, get-order-book, get-recent-trades):
``GET /0/public/<Method>``, every answer ``{"error": [], "result": {...}}``
(HTTP 200 with ``["EQuery:Unknown asset pair"]`` for a pair it does not
list). Pairs have an id (``XXBTZUSD``), an altname (``XBTUSD``) and a wsname
(``XBT/USD``); prices and volumes are strings, times seconds. A trade row is
``[price, volume, time, "b"|"s", "m"|"l", misc, trade_id]``; ``since`` takes
seconds or the ``last`` cursor (nanoseconds) of an earlier answer, and is
exclusive. OHLC serves the newest 720 intervals, the last one still open.

Websocket v2 (https://docs.kraken.com/exchange/api-reference/spot-websocket-v2/
trade, .../book, .../status, .../heartbeat, .../ping), at ``/v2`` as ccxt.pro
opens it; v2 names pairs ``BTC/USD`` and numbers trades per pair, the same
``trade_id`` REST serves. ``{"method": "subscribe", "params": {"channel":
"trade"|"book", "symbol": ["BTC/USD"]}, "req_id": 1}`` is answered per symbol
``{"method": "subscribe", "result": {...}, "success": true, ...}``; a second
subscription to the same channel and symbol on one connection is refused with
``"Already subscribed"`` (so a client rebuilding a book unsubscribes first).
Trades come without a snapshot (v2's default). Book messages carry numbers at
the pair's full precision (``"qty": 1.50000000``) and a CRC32 ``checksum`` of
the top ten levels of each side, snapshot and update alike, computed as
https://docs.kraken.com/exchange/guides/websockets/book-checksum-v2 describes.
Updates send changed levels only; a level pushed out of the subscribed depth
is not deleted (the client truncates), one deleted inside it is followed by
the level that comes into scope. Each connection gets a ``status`` update
before its first answer; ``{"method": "ping"}`` is answered with a pong.

Controls for tests: ``push_trade`` (recorded for REST and sent to
subscribers), ``record_trade`` (REST only: made while no socket listened),
``push_book`` (with ``lost=`` applied but never sent, or a wrong
``checksum=``), ``send_heartbeat``, ``send_raw``, ``drop_websockets`` and
``wait_subscribed``.
"""

from __future__ import annotations

import asyncio
import json
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from aiohttp import web

from tests.fakes.http import FakeServer

T0 = 1_717_200_000_000  # 2024-06-01T00:00:00Z
TRADE_US = 250  # trades fall 250 µs into their millisecond, as real ones rarely sit on one
Level = tuple[str, str]  # (price, quantity)
Side = dict[Decimal, Decimal]


@dataclass(frozen=True)
class Pair:
    """One spot pair as AssetPairs lists it; ``symbol`` is its websocket v2 name."""

    id: str
    altname: str
    wsname: str
    symbol: str
    base: str
    quote: str
    pair_decimals: int = 1
    lot_decimals: int = 8
    ordermin: str = "0.00005"
    costmin: str = "0.5"
    status: str = "online"

    def price(self, value: Decimal | str) -> Decimal:
        return Decimal(value).quantize(Decimal(1).scaleb(-self.pair_decimals))

    def qty(self, value: Decimal | str) -> Decimal:
        return Decimal(value).quantize(Decimal(1).scaleb(-self.lot_decimals))


# Assets: id -> (altname, decimals, display_decimals). X and Z mark Kraken's
# oldest crypto and fiat ids; ccxt names the pairs by the altnames (XBT: BTC).
DEFAULT_ASSETS = {"XXBT": ("XBT", 10, 5), "ZUSD": ("USD", 4, 2), "XETH": ("ETH", 10, 5),
                  "SOL": ("SOL", 10, 5), "ADA": ("ADA", 8, 6)}  # fmt: skip
DEFAULT_PAIRS = (
    Pair("XXBTZUSD", "XBTUSD", "XBT/USD", "BTC/USD", "XXBT", "ZUSD"),
    Pair("XETHZUSD", "ETHUSD", "ETH/USD", "ETH/USD", "XETH", "ZUSD", 2, 8, "0.002"),
    Pair("XETHXXBT", "ETHXBT", "ETH/XBT", "ETH/BTC", "XETH", "XXBT", 5, 8, "0.002", "0.00002"),
    Pair("SOLUSD", "SOLUSD", "SOL/USD", "SOL/USD", "SOL", "ZUSD", 2, 8, "0.02"),
    # cancel_only: listed, but no new orders
    Pair("ADAUSD", "ADAUSD", "ADA/USD", "ADA/USD", "ADA", "ZUSD", 6, 8, "5", status="cancel_only"),
)


@dataclass
class Book:
    pair: Pair
    bids: Side = field(default_factory=dict)
    asks: Side = field(default_factory=dict)

    def apply(self, bids: Iterable[Level], asks: Iterable[Level]) -> None:
        for side, levels in ((self.bids, bids), (self.asks, asks)):
            for price, qty in levels:
                if Decimal(qty) == 0:
                    side.pop(self.pair.price(price), None)
                else:
                    side[self.pair.price(price)] = self.pair.qty(qty)

    def top(
        self, depth: int
    ) -> tuple[list[tuple[Decimal, Decimal]], list[tuple[Decimal, Decimal]]]:
        """(bids best first, asks best first)."""
        return (sorted(self.bids.items(), reverse=True)[:depth], sorted(self.asks.items())[:depth])

    def checksum(self) -> int:
        bids, asks = self.top(10)
        return book_checksum(bids, asks)


def book_checksum(
    bids: Sequence[tuple[Decimal, Decimal]], asks: Sequence[tuple[Decimal, Decimal]]
) -> int:
    """CRC32 of the top ten asks (low to high) then bids (high to low), each
    price and qty at full precision without its point and leading zeros."""

    def digits(value: Decimal) -> str:
        return str(value).replace(".", "").lstrip("0")

    text = "".join(digits(p) + digits(q) for p, q in [*asks[:10], *bids[:10]])
    return zlib.crc32(text.encode())


def dumps(value: Any) -> str:
    """JSON with Decimals written as numbers at their own precision, as Kraken does."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    return json.dumps(value)


def rfc3339(us: int) -> str:
    return datetime.fromtimestamp(us // 1_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%S") + (
        f".{us % 1_000_000:06d}Z"
    )


def _ok(result: Any) -> web.Response:
    return web.Response(text=json.dumps({"error": [], "result": result}),
                        content_type="application/json")  # fmt: skip


def _unknown_pair() -> web.Response:
    return web.json_response({"error": ["EQuery:Unknown asset pair"]})


class FakeKraken:
    def __init__(
        self,
        pairs: Sequence[Pair] = DEFAULT_PAIRS,
        assets: dict[str, tuple[str, int, int]] = DEFAULT_ASSETS,
        *,
        now: int = T0,
    ) -> None:
        self.server = FakeServer()
        self.pairs = {pair.id: pair for pair in pairs}
        self.assets = dict(assets)
        self.now = now  # server clock (ms); tests move it
        self.trades: dict[str, list[dict[str, Any]]] = {pid: [] for pid in self.pairs}
        self.books = {pid: Book(pair) for pid, pair in self.pairs.items()}
        self.candles: dict[tuple[str, int], list[list[Any]]] = {}
        self.tickers: dict[str, dict[str, Any]] = {}
        self._next_trade_id = dict.fromkeys(self.pairs, 70_000_000)
        # socket -> {(channel, symbol): depth}
        self._subscriptions: dict[web.WebSocketResponse, dict[tuple[str, str], int]] = {}
        self.subscribe_counts: dict[tuple[str, str], int] = {}
        self.unsubscribe_counts: dict[tuple[str, str], int] = {}
        self.refused: list[dict[str, Any]] = []  # error answers sent to clients
        self._changed = asyncio.Condition()
        s = self.server
        s.json_route("GET", "/0/public/Time", self._time)
        s.json_route("GET", "/0/public/Assets", lambda request: {"error": [], "result": {
            aid: {"aclass": "currency", "altname": name, "decimals": decimals,
                  "display_decimals": shown, "status": "enabled"}
            for aid, (name, decimals, shown) in self.assets.items()}})  # fmt: skip
        s.json_route("GET", "/0/public/AssetPairs", lambda request: {"error": [], "result": {
            p.id: asset_pair(p) for p in self.pairs.values()}})  # fmt: skip
        for name, handler in (("Ticker", self._ticker), ("OHLC", self._ohlc),
                              ("Depth", self._depth), ("Trades", self._trades)):  # fmt: skip
            s.route("GET", f"/0/public/{name}", handler)
        s.websocket("/v2", self._on_ws_message)

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

    def rest_calls(self, method: str) -> list[dict[str, str]]:
        """Query strings of every request made to ``/0/public/<method>``."""
        return [query for _, p, query in self.server.requests if p == f"/0/public/{method}"]

    # -- state the tests drive ------------------------------------------------------
    def record_trade(
        self, pair_id: str, price: str, qty: str, *, side: str, ord_type: str = "market"
    ) -> dict[str, Any]:
        """A trade REST serves but no websocket is told about."""
        pair = self.pairs[pair_id]
        tid = self._next_trade_id[pair_id]
        self._next_trade_id[pair_id] = tid + 1
        trade = {"trade_id": tid, "price": pair.price(price), "qty": pair.qty(qty), "side": side,
                 "ord_type": ord_type, "time_us": self.now * 1000 + TRADE_US}  # fmt: skip
        self.trades[pair_id].append(trade)
        return trade

    async def push_trade(
        self, pair_id: str, price: str, qty: str, *, side: str, ord_type: str = "market"
    ) -> dict[str, Any]:
        trade = self.record_trade(pair_id, price, qty, side=side, ord_type=ord_type)
        await self.send_trades(pair_id, [trade])
        return trade

    async def send_trades(self, pair_id: str, trades: Sequence[dict[str, Any]]) -> int:
        """One ``trade`` update carrying ``trades`` (Kraken batches them)."""
        symbol = self.pairs[pair_id].symbol
        data = [ws_trade(symbol, t) for t in trades]
        return await self._send(
            ("trade", symbol), {"channel": "trade", "type": "update", "data": data}
        )

    def set_book(self, pair_id: str, bids: Sequence[Level], asks: Sequence[Level]) -> None:
        book = self.books[pair_id] = Book(self.pairs[pair_id])
        book.apply(bids, asks)

    async def push_book(
        self,
        pair_id: str,
        bids: Sequence[Level] = (),
        asks: Sequence[Level] = (),
        *,
        lost: tuple[Sequence[Level], Sequence[Level]] | None = None,
        checksum: int | None = None,
    ) -> int:
        """Apply a change and send what subscribers see of it. ``lost`` (bids,
        asks) is applied first and never sent; ``checksum`` replaces the true one."""
        book, pair = self.books[pair_id], self.pairs[pair_id]
        if lost is not None:
            book.apply(*lost)
        sent = 0
        key = ("book", pair.symbol)
        depths = {subs[key] for subs in self._subscriptions.values() if key in subs}
        before = {depth: book.top(depth) for depth in depths}
        book.apply(bids, asks)
        true_checksum = book.checksum()
        stamp = rfc3339(self.now * 1000)
        for depth in sorted(depths):
            after = book.top(depth)
            bid_changes = _changes(before[depth][0], after[0], book.bids)
            ask_changes = _changes(before[depth][1], after[1], book.asks)
            if not bid_changes and not ask_changes:
                continue  # nothing within this depth changed: nothing is published
            entry = {
                "symbol": pair.symbol,
                "bids": bid_changes,
                "asks": ask_changes,
                "checksum": true_checksum if checksum is None else checksum,
                "timestamp": stamp,
            }
            message = {"channel": "book", "type": "update", "data": [entry]}
            sent += await self._send(key, message, depth=depth)
        return sent

    def add_candles(self, pair_id: str, interval: int, rows: Iterable[list[Any]]) -> None:
        """OHLC rows ``[time, open, high, low, close, vwap, volume, count]``, oldest first."""
        self.candles.setdefault((pair_id, interval), []).extend(rows)

    def set_ticker(self, pair_id: str, **fields: Any) -> None:
        """A ticker in the Ticker format (``a``, ``b``, ``c``, ``v``, ``p``, ``t``, ``l``,
        ``h``, ``o``)."""
        self.tickers[pair_id] = fields

    # -- websocket --------------------------------------------------------------------
    async def _send(self, key: tuple[str, str], message: Any, *, depth: int | None = None) -> int:
        text = dumps(message)
        sent = 0
        for ws, subs in list(self._subscriptions.items()):
            if ws.closed:
                self._subscriptions.pop(ws, None)
            elif key in subs and (depth is None or subs[key] == depth):
                try:
                    await ws.send_str(text)
                except ConnectionError:  # closing under us: like a message lost in a drop
                    continue
                sent += 1
        return sent

    async def send_raw(self, text: str) -> int:
        """Any text to every open socket, for malformed payloads."""
        return await self.server.send_all(text)

    async def send_heartbeat(self) -> int:
        """What Kraken sends about once a second while nothing else is published."""
        return await self.server.send_all({"channel": "heartbeat"})

    async def drop_websockets(self) -> None:
        """Cut every socket: what happens until a client resubscribes reaches REST only."""
        self._subscriptions.clear()
        await self.server.drop_websockets()

    async def wait_subscribed(
        self, channel: str, symbol: str = "BTC/USD", *, times: int = 1, timeout: float = 10.0
    ) -> None:
        """Until ``channel`` of ``symbol`` was subscribed ``times`` times in all (and is live)."""
        key = (channel, symbol)
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(
                lambda: (
                    self.subscribe_counts.get(key, 0) >= times
                    and any(key in subs for subs in self._subscriptions.values())
                )
            )

    async def _on_ws_message(self, server: FakeServer, ws: web.WebSocketResponse, msg: Any) -> None:
        if ws not in self._subscriptions:  # a new connection: the status update comes first
            self._subscriptions[ws] = {}
            await ws.send_json({"channel": "status", "type": "update", "data": [{
                "version": "2.0.10", "system": "online", "api_version": "v2",
                "connection_id": 12_893_746_518_263_551_000 + server.ws_connects}]})  # fmt: skip
        method = msg.get("method")
        times = {"time_in": rfc3339(self.now * 1000), "time_out": rfc3339(self.now * 1000)}
        rid = {"req_id": msg["req_id"]} if "req_id" in msg else {}
        if method == "ping":
            await ws.send_json({"method": "pong", **rid, **times})
        elif method in ("subscribe", "unsubscribe"):
            params = msg.get("params") or {}
            for symbol in params.get("symbol") or []:
                answer = self._subscription(ws, method, params, symbol)
                await ws.send_str(dumps({"method": method, **answer, **rid, **times}))
                if method == "subscribe" and answer["success"] and params["channel"] == "book":
                    await ws.send_str(dumps(self._book_snapshot(symbol, answer["result"]["depth"])))
        else:
            await ws.send_json({"error": f"Method not found: {method}", "method": method,
                                "success": False, **rid, **times})  # fmt: skip
        async with self._changed:
            self._changed.notify_all()

    def _subscription(
        self, ws: web.WebSocketResponse, method: str, params: dict[str, Any], symbol: str
    ) -> dict[str, Any]:
        channel = params.get("channel")
        subs = self._subscriptions[ws]
        key = (str(channel), symbol)
        error = None
        if channel not in ("trade", "book"):
            error = f"Channel {channel!r} not supported"
        elif not any(p.symbol == symbol for p in self.pairs.values()):
            error = f"Currency pair not supported {symbol}"
        elif method == "subscribe" and key in subs:
            error = "Already subscribed"
        elif method == "unsubscribe" and key not in subs:
            error = "Subscription Not Found"
        if error is not None:
            refusal = {"error": error, "success": False, "symbol": symbol}
            self.refused.append(refusal)
            return refusal
        result: dict[str, Any] = {"channel": channel, "symbol": symbol}
        if channel == "book":
            result["depth"] = int(params.get("depth", 10))
        if method == "unsubscribe":
            del subs[key]
            self.unsubscribe_counts[key] = self.unsubscribe_counts.get(key, 0) + 1
        else:
            subs[key] = result.get("depth", 0)
            self.subscribe_counts[key] = self.subscribe_counts.get(key, 0) + 1
            result["snapshot"] = channel == "book" or bool(params.get("snapshot", False))
        return {"result": result, "success": True}

    def _book_snapshot(self, symbol: str, depth: int) -> dict[str, Any]:
        pid = next(pid for pid, p in self.pairs.items() if p.symbol == symbol)
        book = self.books[pid]
        bids, asks = book.top(depth)
        entry = {
            "symbol": symbol,
            "bids": [{"price": p, "qty": q} for p, q in bids],
            "asks": [{"price": p, "qty": q} for p, q in asks],
            "checksum": book.checksum(),
        }
        return {"channel": "book", "type": "snapshot", "data": [entry]}

    # -- REST -------------------------------------------------------------------------
    def _time(self, request: web.Request) -> dict[str, Any]:
        when = datetime.fromtimestamp(self.now // 1000, UTC).strftime("%a, %d %b %y %H:%M:%S +0000")
        return {"error": [], "result": {"unixtime": self.now // 1000, "rfc1123": when}}

    def _pair(self, name: str) -> Pair | None:
        return next((p for p in self.pairs.values() if name in (p.id, p.altname)), None)

    async def _ticker(self, request: web.Request) -> web.StreamResponse:
        names = request.query.get("pair", "").split(",") if "pair" in request.query else None
        pairs = [self._pair(n) for n in names] if names else list(self.pairs.values())
        if any(p is None for p in pairs):
            return _unknown_pair()
        return _ok(
            {p.id: self.tickers[p.id] for p in pairs if p is not None and p.id in self.tickers}
        )

    async def _ohlc(self, request: web.Request) -> web.StreamResponse:
        pair = self._pair(request.query.get("pair", ""))
        if pair is None:
            return _unknown_pair()
        # Only the newest 720 intervals are served; ``since`` is exclusive.
        rows = self.candles.get((pair.id, int(request.query.get("interval", 1))), [])[-720:]
        if "since" in request.query:
            rows = [r for r in rows if r[0] > int(request.query["since"])]
        committed = rows[-2][0] if len(rows) > 1 else 0  # the newest row is still open
        return _ok({pair.id: rows, "last": committed})

    async def _depth(self, request: web.Request) -> web.StreamResponse:
        pair = self._pair(request.query.get("pair", ""))
        if pair is None:
            return _unknown_pair()
        bids, asks = self.books[pair.id].top(min(int(request.query.get("count", 100)), 500))
        stamp = self.now // 1000
        return _ok({pair.id: {"asks": [[str(p), str(q), stamp] for p, q in asks],
                              "bids": [[str(p), str(q), stamp] for p, q in bids]}})  # fmt: skip

    async def _trades(self, request: web.Request) -> web.StreamResponse:
        pair = self._pair(request.query.get("pair", ""))
        if pair is None:
            return _unknown_pair()
        q = request.query
        count = min(int(q.get("count", 1000)), 1000)
        rows = self.trades[pair.id]
        if "since" in q:  # seconds, or the nanosecond ``last`` cursor; exclusive
            since = int(q["since"])
            since_us = since * 1_000_000 if since < 10**12 else since // 1000
            rows = [t for t in rows if t["time_us"] > since_us][:count]
        else:
            rows = rows[-count:]
        last = rows[-1]["time_us"] * 1000 if rows else int(q.get("since", 0))
        return _ok({pair.id: [rest_trade(t) for t in rows], "last": str(last)})


def _changes(
    before: Sequence[tuple[Decimal, Decimal]], after: Sequence[tuple[Decimal, Decimal]], side: Side
) -> list[dict[str, Decimal]]:
    """What one side of a book update sends: levels gone from the book (qty 0),
    and levels of the new top that are new or changed. A level pushed out of
    the depth only is not sent."""
    old, new = dict(before), dict(after)
    gone = [{"price": p, "qty": Decimal(0)} for p in old if p not in new and p not in side]
    changed = [{"price": p, "qty": q} for p, q in after if old.get(p) != q]
    return gone + changed


def ws_trade(symbol: str, trade: dict[str, Any]) -> dict[str, Any]:
    """One entry of a websocket v2 ``trade`` message."""
    return {"symbol": symbol, "side": trade["side"], "price": trade["price"], "qty": trade["qty"],
            "ord_type": trade["ord_type"], "trade_id": trade["trade_id"],
            "timestamp": rfc3339(trade["time_us"])}  # fmt: skip


def rest_trade(trade: dict[str, Any]) -> list[Any]:
    """One row of ``/0/public/Trades``."""
    return [str(trade["price"]), str(trade["qty"]), trade["time_us"] / 1_000_000,
            "b" if trade["side"] == "buy" else "s", "m" if trade["ord_type"] == "market" else "l",
            "", trade["trade_id"]]  # fmt: skip


def asset_pair(pair: Pair) -> dict[str, Any]:
    """One entry of ``/0/public/AssetPairs``."""
    return {
        "altname": pair.altname, "wsname": pair.wsname, "aclass_base": "currency",
        "base": pair.base, "aclass_quote": "currency", "quote": pair.quote, "lot": "unit",
        "cost_decimals": 5, "pair_decimals": pair.pair_decimals,
        "lot_decimals": pair.lot_decimals, "lot_multiplier": 1,
        "leverage_buy": [2, 3], "leverage_sell": [2, 3],
        "fees": [[0, 0.4], [10000, 0.35], [50000, 0.24]],
        "fees_maker": [[0, 0.25], [10000, 0.2], [50000, 0.14]],
        "fee_volume_currency": "ZUSD", "margin_call": 80, "margin_stop": 40,
        "ordermin": pair.ordermin, "costmin": pair.costmin,
        "tick_size": str(Decimal(1).scaleb(-pair.pair_decimals)), "status": pair.status,
        "long_position_limit": 250, "short_position_limit": 200,
    }  # fmt: skip
