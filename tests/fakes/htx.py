"""A fake HTX (formerly Huobi) spot exchange: public REST market data and the
market websocket, in HTX's documented wire format, for ccxt to talk to.

REST (https://huobiapi.github.io/docs/spot/v1/en/): objects with ``"status":
"ok"`` and ``data`` (or ``tick``); errors are HTTP 200 with ``"status":
"error"``, ``err-code`` and ``err-msg``. Numbers are JSON numbers.
- ``/v2/reference/currencies`` ("APIv2 Currency & Chains") and
  ``/v1/common/symbols`` ("Get all Supported Trading Symbol (V1)").
- ``/market/tickers`` ("Get Latest Tickers for All Pairs").
- ``/market/depth?symbol=&type=step0[&depth=5|10|20]`` ("Get Market Depth"),
  150 levels when ``depth`` is left out.
- ``/market/history/trade?symbol=&size=`` ("Get the Most Recent Trades"):
  the newest ``size`` groups, one group per taker order (``id``, ``ts``,
  ``data``), each trade with its legacy ``id`` and its ``trade-id``. The order
  of the trades inside a group is not documented; newest first here too.
- ``/market/history/kline?symbol=&period=&size=`` ("Get Klines (Candles)"),
  newest first. ccxt calls ``/market/history/candles`` by default, which
  HTX's public docs do not describe; it is served here with the kline rows,
  windowed by ccxt's ``from``/``to`` (seconds) and ``size`` parameters.

Websocket ("Websocket Market Data"; topics also at
https://www.htx.com/en-us/opend/newApiPages/?id=7ec53b69-7773-11ed-9966-0242ac110003):
``/ws`` for market data, ``/feed`` for the incremental MBP feed. Every server
message is a gzip-compressed binary frame; the server sends ``{"ping": ts}``
and the client answers ``{"pong": ts}`` (HTX closes the connection after two
unanswered pings; this fake only records the answers). ``{"sub": topic, "id": id}`` ->
``{"id", "status": "ok", "subbed", "ts"}``; ``unsub`` -> ``unsubbed``;
``{"req": topic, "id": id}`` -> ``{"id", "rep", "status", "ts", "data"}``; an
unknown topic -> ``"status": "error"``, ``err-code`` ``bad-request``.
- ``market.$symbol.trade.detail``: ``{"ch", "ts", "tick": {"id", "ts", "data":
  [{"id", "ts", "tradeId", "amount", "price", "direction"}]}}``; ``tradeId`` is
  the REST ``trade-id``.
- ``market.$symbol.mbp.$levels`` ("Market By Price (incremental update)"):
  ``{"ch", "ts", "tick": {"seqNum", "prevSeqNum", "bids", "asks"}}``, an amount
  of 0 removes the level; a ``req`` on the topic answers the whole book with
  its ``seqNum`` ("refresh").
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes.http import FakeServer

T0 = 1_717_200_000_000  # 2024-06-01T00:00:00Z
Level = tuple[str, str]  # (price, amount)


@dataclass(frozen=True)
class Listing:
    """One spot symbol as ``/v1/common/symbols`` lists it."""

    base: str
    quote: str
    price_precision: int = 2
    amount_precision: int = 6
    min_amount: float = 0.0001
    min_value: float = 5.0
    state: str = "online"

    @property
    def id(self) -> str:
        return f"{self.base}{self.quote}"


DEFAULT_LISTINGS = (
    Listing("btc", "usdt"),
    Listing("eth", "usdt", amount_precision=4, min_amount=0.001),
    Listing("trx", "usdt", price_precision=6, amount_precision=2, min_amount=1.0, min_value=1.0),
    Listing("luna", "usdt", state="offline"),
)


def num(value: str | Decimal) -> int | float:
    d = Decimal(value)
    return int(d) if d == d.to_integral_value() else float(d)


@dataclass
class Book:
    bids: dict[Decimal, Decimal] = field(default_factory=dict)
    asks: dict[Decimal, Decimal] = field(default_factory=dict)
    seq_num: int = 100_000

    def apply(self, bids: Sequence[Level], asks: Sequence[Level]) -> None:
        for side, levels in ((self.bids, bids), (self.asks, asks)):
            for price, amount in levels:
                if Decimal(amount) == 0:
                    side.pop(Decimal(price), None)
                else:
                    side[Decimal(price)] = Decimal(amount)

    def top(self, depth: int) -> tuple[list[list[int | float]], list[list[int | float]]]:
        bids = sorted(self.bids.items(), reverse=True)[:depth]
        asks = sorted(self.asks.items())[:depth]
        return [[num(p), num(a)] for p, a in bids], [[num(p), num(a)] for p, a in asks]


class FakeHtx:
    def __init__(self, listings: Sequence[Listing] = DEFAULT_LISTINGS, *, now: int = T0) -> None:
        self.server = FakeServer()
        self.listings = {listing.id: listing for listing in listings}
        self.now = now  # server clock (ms); tests move it
        self.trades: dict[str, list[dict[str, Any]]] = {sid: [] for sid in self.listings}
        self.books: dict[str, Book] = {sid: Book() for sid in self.listings}
        self.klines: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.tickers: dict[str, dict[str, Any]] = {}
        self.subscribe_counts: dict[str, int] = {}
        self.pongs: list[int] = []
        self._next_tick = 105_004_645_000
        self._next_trade_id = 102_090_727_000
        self._topics: dict[web.WebSocketResponse, set[str]] = {}
        self._changed = asyncio.Condition()
        s = self.server
        s.json_route("GET", "/v2/reference/currencies", self._currencies)
        s.json_route("GET", "/v1/common/symbols", self._symbols)
        s.json_route("GET", "/market/tickers", self._tickers)
        for path, handler in (
            ("/market/depth", self._depth),
            ("/market/history/trade", self._history_trade),
            ("/market/history/kline", self._klines),
            ("/market/history/candles", self._klines),
            ("/ws", self._ws),
            ("/feed", self._ws),
        ):
            s.route("GET", path, handler)

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
    def record_trades(
        self, sid: str, fills: Sequence[tuple[str, str, str]], *, time: int | None = None
    ) -> dict[str, Any]:
        """One taker order's trades ``(price, amount, direction)``, REST only."""
        self._next_tick += 1
        ts = self.now if time is None else time
        data = []
        for price, amount, direction in fills:
            self._next_trade_id += 3  # rising, not consecutive
            data.append({
                "id": self._next_tick * 10**11 + self._next_trade_id % 10**11,
                "ts": ts, "trade-id": self._next_trade_id, "amount": num(amount),
                "price": num(price), "direction": direction,
            })  # fmt: skip
        group = {"id": self._next_tick, "ts": ts, "data": data}
        self.trades[sid].append(group)
        return group

    async def push_trades(
        self, sid: str, fills: Sequence[tuple[str, str, str]], *, time: int | None = None
    ) -> dict[str, Any]:
        """Record one taker order's trades and send them in one trade.detail message."""
        group = self.record_trades(sid, fills, time=time)
        await self.send(f"market.{sid}.trade.detail", trade_detail(sid, group, self.now))
        return group

    def set_book(self, sid: str, bids: Sequence[Level], asks: Sequence[Level], *, seq: int) -> None:
        book = self.books[sid] = Book(seq_num=seq)
        book.apply(bids, asks)

    async def push_mbp(
        self,
        sid: str,
        bids: Sequence[Level] = (),
        asks: Sequence[Level] = (),
        *,
        levels: int = 150,
        lost: tuple[Sequence[Level], Sequence[Level]] | None = None,
    ) -> dict[str, Any]:
        """Apply an update and send it; ``lost`` (bids, asks) is applied first under
        a sequence number never sent, so the update's ``prevSeqNum`` skips it."""
        book = self.books[sid]
        if lost is not None:
            book.apply(*lost)
            book.seq_num += 3
        prev = book.seq_num
        book.apply(bids, asks)
        book.seq_num += 3
        message = {
            "ch": f"market.{sid}.mbp.{levels}", "ts": self.now,
            "tick": {"seqNum": book.seq_num, "prevSeqNum": prev,
                     "bids": [[num(p), num(a)] for p, a in bids],
                     "asks": [[num(p), num(a)] for p, a in asks]},
        }  # fmt: skip
        await self.send(message["ch"], message)
        return message

    def add_klines(self, sid: str, period: str, rows: Sequence[dict[str, Any]]) -> None:
        """Rows ``{"id": open time in s, "open", "close", "low", "high", "amount",
        "vol", "count"}``, oldest first."""
        self.klines.setdefault((sid, period), []).extend(rows)

    def set_ticker(self, sid: str, **fields: Any) -> None:
        """One ``/market/tickers`` entry."""
        self.tickers[sid] = {"symbol": sid, **fields}

    async def ping(self) -> None:
        """The server's heartbeat; clients must answer with the same number."""
        await self.send_all({"ping": self.now})

    # -- websocket --------------------------------------------------------------------
    async def send(self, topic: str, message: Any) -> int:
        """``message`` (gzipped JSON; bytes as they are) to sockets subscribed to ``topic``."""
        sent = 0
        for ws, topics in list(self._topics.items()):
            if topic in topics and await self._send(ws, message):
                sent += 1
        return sent

    async def send_all(self, message: Any) -> None:
        for ws in list(self._topics):
            await self._send(ws, message)

    async def drop_websockets(self) -> None:
        """Cut every socket: what happens until a client resubscribes reaches REST only."""
        self._topics.clear()
        await self.server.drop_websockets()

    async def wait_subscribed(self, topic: str, *, times: int = 1, timeout: float = 10.0) -> None:
        """Until ``topic`` was subscribed ``times`` times in all (and is live)."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(
                lambda: (
                    self.subscribe_counts.get(topic, 0) >= times
                    and any(topic in t for t in self._topics.values())
                )
            )

    async def wait_pongs(self, count: int, *, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.pongs) >= count)

    async def _send(self, ws: web.WebSocketResponse, message: Any) -> bool:
        if ws.closed:
            return False
        data = message if isinstance(message, bytes) else json.dumps(message).encode()
        try:
            await ws.send_bytes(data if isinstance(message, bytes) else gzip.compress(data))
        except ConnectionError:  # closing under us: like a message lost in a drop
            return False
        return True

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(heartbeat=None)
        await ws.prepare(request)
        self.server.websockets.add(ws)
        self.server.ws_connects += 1
        self._topics[ws] = set()
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._on_message(ws, json.loads(msg.data))
        finally:
            self.server.websockets.discard(ws)
            self._topics.pop(ws, None)
        return ws

    def _serves(self, topic: str) -> bool:
        parts = topic.split(".", 2)
        return (
            len(parts) == 3
            and parts[:2] == ["market", parts[1]]
            and parts[1] in self.listings
            and parts[2] in ("trade.detail", "mbp.5", "mbp.20", "mbp.150", "mbp.400")
        )

    async def _on_message(self, ws: web.WebSocketResponse, msg: dict[str, Any]) -> None:
        rid, topics = msg.get("id"), self._topics.setdefault(ws, set())
        topic = msg.get("sub") or msg.get("unsub") or msg.get("req")
        if "pong" in msg:
            self.pongs.append(int(msg["pong"]))
        elif topic is None or not self._serves(topic):
            await self._send(ws, {"status": "error", "ts": self.now, "id": rid,
                                  "err-code": "bad-request",
                                  "err-msg": f"invalid topic {topic}"})  # fmt: skip
        elif "sub" in msg:
            topics.add(topic)
            self.subscribe_counts[topic] = self.subscribe_counts.get(topic, 0) + 1
            await self._send(ws, {"id": rid, "status": "ok", "subbed": topic, "ts": self.now})
        elif "unsub" in msg:
            topics.discard(topic)
            await self._send(ws, {"id": rid, "status": "ok", "unsubbed": topic, "ts": self.now})
        elif ".mbp." in topic:
            book = self.books[topic.split(".")[1]]
            bids, asks = book.top(int(topic.rsplit(".", 1)[1]))
            data = {"seqNum": book.seq_num, "bids": bids, "asks": asks}
            await self._send(ws, {"id": rid, "rep": topic, "status": "ok", "ts": self.now,
                                  "data": data})  # fmt: skip
        else:  # a trade.detail request: the newest trades
            sid = topic.split(".")[1]
            data = [
                t for g in self.trades[sid][-1:] for t in trade_detail(sid, g, 0)["tick"]["data"]
            ]
            await self._send(ws, {"id": rid, "rep": topic, "status": "ok", "ts": self.now,
                                  "data": data})  # fmt: skip
        async with self._changed:
            self._changed.notify_all()

    # -- REST -------------------------------------------------------------------------
    def _error(self, code: str, message: str) -> web.Response:
        return web.json_response({"status": "error", "err-code": code, "err-msg": message,
                                  "ts": self.now, "data": None})  # fmt: skip

    def _currencies(self, request: web.Request) -> dict[str, Any]:
        coins = sorted({c for x in self.listings.values() for c in (x.base, x.quote)})
        return {"code": 200, "data": [
            {"currency": c, "assetType": 1, "instStatus": "normal", "chains": [
                {"chain": c, "displayName": c.upper(), "baseChain": c.upper(),
                 "baseChainProtocol": "", "isDynamic": False, "numOfConfirmations": 12,
                 "numOfFastConfirmations": 12, "depositStatus": "allowed",
                 "minDepositAmt": "0.001", "withdrawStatus": "allowed",
                 "minWithdrawAmt": "0.002", "withdrawPrecision": 8,
                 "maxWithdrawAmt": "1000.0", "withdrawQuotaPerDay": "1000.0",
                 "withdrawQuotaPerYear": None, "withdrawQuotaTotal": None,
                 "withdrawFeeType": "fixed", "transactFeeWithdraw": "0.0005",
                 "addrWithTag": False, "addrDepositTag": False}]}
            for c in coins
        ]}  # fmt: skip

    def _symbols(self, request: web.Request) -> dict[str, Any]:
        return {"status": "ok", "data": [symbol_info(x) for x in self.listings.values()]}

    def _tickers(self, request: web.Request) -> dict[str, Any]:
        return {"status": "ok", "ts": self.now, "data": list(self.tickers.values())}

    def _sid(self, request: web.Request) -> str | None:
        sid = request.query.get("symbol", "")
        return sid if sid in self.listings else None

    async def _depth(self, request: web.Request) -> web.StreamResponse:
        sid, depth = self._sid(request), request.query.get("depth", "150")
        if sid is None:
            return self._error("invalid-parameter", "invalid symbol")
        if depth not in ("5", "10", "20", "150") or not request.query.get("type", "").startswith(
            "step"
        ):
            return self._error("invalid-parameter", "invalid depth or type")
        book = self.books[sid]
        bids, asks = book.top(int(depth))
        tick = {"ts": self.now, "version": book.seq_num, "bids": bids, "asks": asks}
        return web.json_response({"ch": f"market.{sid}.depth.{request.query['type']}",
                                  "status": "ok", "ts": self.now, "tick": tick})  # fmt: skip

    async def _history_trade(self, request: web.Request) -> web.StreamResponse:
        sid = self._sid(request)
        if sid is None:
            return self._error("invalid-parameter", "invalid symbol")
        size = min(int(request.query.get("size", "1")), 2000)
        newest = [dict(g, data=g["data"][::-1]) for g in self.trades[sid][::-1][:size]]
        return web.json_response({"ch": f"market.{sid}.trade.detail", "status": "ok",
                                  "ts": self.now, "data": newest})  # fmt: skip

    async def _klines(self, request: web.Request) -> web.StreamResponse:
        sid, q = self._sid(request), request.query
        if sid is None:
            return self._error("invalid-parameter", "invalid symbol")
        rows = self.klines.get((sid, q.get("period", "")), [])
        if "from" in q:
            rows = [r for r in rows if r["id"] >= int(q["from"])]
        if "to" in q:
            rows = [r for r in rows if r["id"] <= int(q["to"])]
        size = min(int(q.get("size", "150")), 2000)
        rows = rows[:size] if "from" in q else rows[-size:]
        return web.json_response({"ch": f"market.{sid}.kline.{q.get('period')}", "status": "ok",
                                  "ts": self.now, "data": rows[::-1]})  # fmt: skip


def trade_detail(sid: str, group: dict[str, Any], now: int) -> dict[str, Any]:
    """The ``trade.detail`` push of one group of the REST format."""
    data = [
        {"id": t["id"], "ts": t["ts"], "tradeId": t["trade-id"], "amount": t["amount"],
         "price": t["price"], "direction": t["direction"]}
        for t in group["data"]
    ]  # fmt: skip
    return {"ch": f"market.{sid}.trade.detail", "ts": now,
            "tick": {"id": group["id"], "ts": group["ts"], "data": data}}  # fmt: skip


def symbol_info(x: Listing) -> dict[str, Any]:
    """One entry of ``/v1/common/symbols``."""
    return {
        "base-currency": x.base, "quote-currency": x.quote, "price-precision": x.price_precision,
        "amount-precision": x.amount_precision, "symbol-partition": "main", "symbol": x.id,
        "state": x.state, "value-precision": 8, "min-order-amt": x.min_amount,
        "max-order-amt": 1000, "min-order-value": x.min_value,
        "limit-order-min-order-amt": x.min_amount, "limit-order-max-order-amt": 1000,
        "limit-order-max-buy-amt": 1000, "limit-order-max-sell-amt": 1000,
        "buy-limit-must-less-than": 1.1, "sell-limit-must-greater-than": 0.9,
        "sell-market-min-order-amt": x.min_amount, "sell-market-max-order-amt": 100,
        "buy-market-max-order-value": 1000000, "market-sell-order-rate-must-less-than": 0.1,
        "market-buy-order-rate-must-less-than": 0.1, "api-trading": "enabled", "tags": "",
    }  # fmt: skip
