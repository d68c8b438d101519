"""A fake Bitfinex (API v2): public REST and the public websocket, in
Bitfinex's documented wire format, for ccxt to talk to.

REST (https://docs.bitfinex.com/docs/rest-general): every answer is a JSON
array of numbers, errors are HTTP 500 with ``["error", CODE, "message"]``.
- ``/v2/conf/{keys}`` (https://docs.bitfinex.com/reference/rest-public-conf):
  several keys at once, comma separated, answered as a list in that order.
  ``pub:info:pair`` rows are ``[PAIR, [.., .., .., MIN_ORDER_SIZE, MAX_ORDER_SIZE, ..]]``;
  perpetuals (``BTCF0:USTF0``) come under ``pub:info:pair:futures``.
- ``/v2/tickers?symbols=ALL|tA,tB`` (https://docs.bitfinex.com/reference/rest-public-tickers):
  ``[SYMBOL, BID, BID_SIZE, ASK, ASK_SIZE, DAILY_CHANGE, DAILY_CHANGE_RELATIVE,
  LAST_PRICE, VOLUME, HIGH, LOW]``; funding symbols (``fUSD``) have 17 fields.
- ``/v2/trades/{symbol}/hist`` (https://docs.bitfinex.com/reference/rest-public-trades):
  ``[ID, MTS, ±AMOUNT, PRICE]``, ``start``/``end`` inclusive, ``sort`` -1
  (newest first, the default) or 1, ``limit`` default 125, at most 10000.
- ``/v2/book/{symbol}/P0?len=1|25|100`` (https://docs.bitfinex.com/reference/rest-public-book):
  ``[PRICE, COUNT, ±AMOUNT]``, bids (positive) then asks. Only P0 is served.
- ``/v2/candles/trade:{tf}:{symbol}/hist`` (https://docs.bitfinex.com/reference/rest-public-candles):
  ``[MTS, OPEN, CLOSE, HIGH, LOW, VOLUME]`` (close before high), newest first
  unless ``sort=1``.

Websocket ``/ws/2`` (https://docs.bitfinex.com/docs/ws-general): an ``info``
event on connect; ``ping`` -> ``pong``; ``subscribe`` -> ``subscribed`` with a
``chanId``, a second subscribe to the same channel -> error 10301;
``unsubscribe`` -> ``unsubscribed``; heartbeats ``[chanId, "hb"]``. The size
of the trade snapshot is not documented (30 here). ``conf`` with flag 131072
(OB_CHECKSUM) adds ``[chanId, "cs", CRC32]`` after every book message, the
CRC-32 (signed) of the best 25 bids and asks interleaved as
``price:amount`` (https://docs.bitfinex.com/docs/ws-websocket-checksum).
Trades (https://docs.bitfinex.com/reference/ws-public-trades): a snapshot
(newest first) after subscribing, then a ``te`` and a ``tu`` message per
trade. Books (https://docs.bitfinex.com/reference/ws-public-books): a P0
snapshot ``[[PRICE, COUNT, ±AMOUNT], ..]`` then one level per update; COUNT 0
removes the level (AMOUNT 1 for bids, -1 for asks).
"""

from __future__ import annotations

import asyncio
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes.http import FakeServer

T0 = 1_717_200_000_000  # 2024-06-01T00:00:00Z
OB_CHECKSUM = 131072
Level = tuple[str, int, str]  # (price, order count, amount > 0) as the tests give them


@dataclass(frozen=True)
class Pair:
    """One trading pair of ``pub:info:pair`` (or ``pub:info:pair:futures``)."""

    id: str  # BTCUSD, DOGE:USD, BTCF0:USTF0
    min_size: str = "0.00006"
    max_size: str = "2000.0"


DEFAULT_PAIRS = (Pair("BTCUSD"), Pair("BTCUST"), Pair("ETHUSD", "0.002", "5000.0"),
                 Pair("DOGE:USD", "22.0", "500000.0"))  # fmt: skip
DEFAULT_FUTURES = (Pair("BTCF0:USTF0", "0.0002", "100.0"),)


def num(value: str | Decimal) -> int | float:
    """A number as Bitfinex writes it in JSON: whole numbers without a fraction."""
    d = Decimal(value)
    return int(d) if d == d.to_integral_value() else float(d)


def text(value: Decimal) -> str:
    """A number as the checksum string spells it (no exponent, no trailing zeros)."""
    return format(value.normalize(), "f")


def error(code: int, message: str) -> web.Response:
    return web.json_response(["error", code, message], status=500)


@dataclass
class Book:
    """A P0 book: price -> (order count, signed amount; negative for asks)."""

    levels: dict[Decimal, tuple[int, Decimal]] = field(default_factory=dict)

    def side(self, bids: bool) -> list[tuple[Decimal, int, Decimal]]:
        rows = [(p, c, a) for p, (c, a) in self.levels.items() if (a > 0) == bids]
        return sorted(rows, reverse=bids)

    def rows(self, depth: int) -> list[list[int | float]]:
        """Bids best first, then asks best first, as both REST and snapshots send them."""
        return [
            [num(p), c, num(a)] for p, c, a in self.side(True)[:depth] + self.side(False)[:depth]
        ]

    def checksum(self) -> int:
        bids, asks = self.side(True)[:25], self.side(False)[:25]
        parts: list[str] = []
        for i in range(25):
            for rows in (bids, asks):
                if i < len(rows):
                    parts += [text(rows[i][0]), text(rows[i][2])]
        crc = binascii.crc32(":".join(parts).encode())
        return crc - (1 << 32) if crc >= 1 << 31 else crc


class FakeBitfinex:
    def __init__(
        self,
        pairs: Sequence[Pair] = DEFAULT_PAIRS,
        futures: Sequence[Pair] = DEFAULT_FUTURES,
        *,
        now: int = T0,
        trade_snapshot: int = 30,
    ) -> None:
        self.server = FakeServer()
        self.pairs = {f"t{p.id}": p for p in pairs}
        self.futures = {f"t{p.id}": p for p in futures}
        self.now = now  # server clock (ms); tests move it
        self.trade_snapshot = trade_snapshot  # trades in a subscription's snapshot
        every = [*self.pairs, *self.futures]
        self.trades: dict[str, list[list[int | float]]] = {s: [] for s in every}
        self.books: dict[str, Book] = {s: Book() for s in every}
        self.candles: dict[str, list[list[int | float]]] = {}
        self.tickers: dict[str, list[Any]] = {}
        self.confs: list[int] = []  # flags of every conf event
        self.opened: list[tuple[str, str, int]] = []  # (channel, symbol, chanId)
        self.closed: list[int] = []  # chanIds unsubscribed
        self._next_trade_id = 1_600_000_000
        self._next_chan = 10_000
        self._channels: dict[web.WebSocketResponse, dict[int, dict[str, Any]]] = {}
        self._flags: dict[web.WebSocketResponse, int] = {}
        self._changed = asyncio.Condition()
        s = self.server
        for path, handler in (
            ("/v2/conf/{keys}", self._conf),
            ("/v2/tickers", self._tickers),
            ("/v2/trades/{symbol}/hist", self._trades),
            ("/v2/book/{symbol}/{precision}", self._book),
            ("/v2/candles/{candle}/hist", self._candles),
            ("/ws/2", self._ws),
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
    def record_trade(
        self, symbol: str, price: str, amount: str, *, time: int | None = None
    ) -> list[int | float]:
        """A trade REST serves but no websocket is told about; ``amount`` < 0: a sell."""
        self._next_trade_id += 7  # ids rise but are not consecutive (shared by all pairs)
        trade = [self._next_trade_id, self.now if time is None else time, num(amount), num(price)]
        self.trades[symbol].append(trade)
        return trade

    async def push_trade(
        self, symbol: str, price: str, amount: str, *, time: int | None = None
    ) -> list[int | float]:
        """Record a trade and send it: ``te`` at once, ``tu`` (the same trade) after."""
        trade = self.record_trade(symbol, price, amount, time=time)
        await self.send("trades", symbol, "te", trade)
        await self.send("trades", symbol, "tu", trade)
        return trade

    async def heartbeat(self) -> None:
        """``[chanId, "hb"]`` on every open channel, as Bitfinex sends every 15 s."""
        for ws, channels in list(self._channels.items()):
            for chan_id in list(channels):
                await self._send(ws, [chan_id, "hb"])

    def set_book(self, symbol: str, bids: Sequence[Level], asks: Sequence[Level]) -> None:
        book = self.books[symbol] = Book()
        for levels, sign in ((bids, 1), (asks, -1)):
            for price, count, amount in levels:
                book.levels[Decimal(price)] = (count, sign * Decimal(amount))

    async def push_book(
        self, symbol: str, price: str, count: int, amount: str, *, checksum: int | None = None
    ) -> None:
        """One P0 update (``amount`` signed: > 0 bid, < 0 ask; ``count`` 0 removes),
        then the checksum to sockets that asked for it (``checksum`` overrides it)."""
        book, p = self.books[symbol], Decimal(price)
        if count == 0:
            book.levels.pop(p, None)
        else:
            book.levels[p] = (count, Decimal(amount))
        await self.send("book", symbol, [num(price), count, num(amount)], checksum=checksum)

    def add_candles(self, symbol: str, timeframe: str, rows: Sequence[list[Any]]) -> None:
        """Rows ``[MTS, OPEN, CLOSE, HIGH, LOW, VOLUME]``, oldest first."""
        self.candles.setdefault(f"trade:{timeframe}:{symbol}", []).extend(rows)

    def set_ticker(self, symbol: str, row: Sequence[Any]) -> None:
        """``row``: the ticker fields after SYMBOL (10 on pairs, 16 on funding)."""
        self.tickers[symbol] = [symbol, *row]

    # -- websocket --------------------------------------------------------------------
    async def send(
        self, channel: str, symbol: str, *payload: Any, checksum: int | None = None
    ) -> int:
        """``[chanId, *payload]`` to every socket subscribed to ``channel`` of ``symbol``."""
        sent = 0
        for ws, channels in list(self._channels.items()):
            for chan_id, sub in list(channels.items()):
                if (sub["channel"], sub["symbol"]) != (channel, symbol):
                    continue
                if await self._send(ws, [chan_id, *payload]):
                    sent += 1
                if channel == "book" and self._flags.get(ws, 0) & OB_CHECKSUM:
                    crc = self.books[symbol].checksum() if checksum is None else checksum
                    await self._send(ws, [chan_id, "cs", crc])
        return sent

    async def send_raw(self, channel: str, symbol: str, message: str) -> None:
        """Any text to the sockets subscribed to a channel (malformed payloads)."""
        for ws, channels in list(self._channels.items()):
            if any((s["channel"], s["symbol"]) == (channel, symbol) for s in channels.values()):
                await self._send(ws, message)

    async def drop_websockets(self) -> None:
        """Cut every socket: what happens until a client resubscribes reaches REST only."""
        self._channels.clear()
        await self.server.drop_websockets()

    async def wait_subscribed(
        self, channel: str, symbol: str, *, times: int = 1, timeout: float = 10.0
    ) -> None:
        """Until ``channel`` of ``symbol`` was subscribed ``times`` times in all (and is live)."""

        def live() -> bool:
            key = (channel, symbol)
            opened = [c for ch, sym, c in self.opened if (ch, sym) == key]
            return len(opened) >= times and any(opened[-1] in c for c in self._channels.values())

        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(live)

    def chan_id(self, channel: str, symbol: str) -> int:
        """The id of the newest channel opened for ``channel`` of ``symbol``."""
        return [c for ch, s, c in self.opened if (ch, s) == (channel, symbol)][-1]

    async def _send(self, ws: web.WebSocketResponse, message: Any) -> bool:
        if ws.closed:
            return False
        try:
            await ws.send_str(message if isinstance(message, str) else json.dumps(message))
        except ConnectionError:  # closing under us: like a message lost in a drop
            return False
        return True

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(heartbeat=None)
        await ws.prepare(request)
        self.server.websockets.add(ws)
        self.server.ws_connects += 1
        self._channels[ws] = {}
        await self._send(ws, {"event": "info", "version": 2,
                              "serverId": "0b6a5b1c-6c1e-4f0a-9d62-6a1b2f3c4d5e",
                              "platform": {"status": 1}})  # fmt: skip
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._on_message(ws, json.loads(msg.data))
        finally:
            self.server.websockets.discard(ws)
            self._channels.pop(ws, None)
        return ws

    async def _on_message(self, ws: web.WebSocketResponse, msg: dict[str, Any]) -> None:
        event, channels = msg.get("event"), self._channels.setdefault(ws, {})
        if event == "conf":
            self._flags[ws] = int(msg.get("flags", 0))
            self.confs.append(self._flags[ws])
            await self._send(ws, {"event": "conf", "status": "OK", "flags": self._flags[ws]})
        elif event == "ping":
            await self._send(ws, {"event": "pong", "ts": self.now, "cid": msg.get("cid")})
        elif event == "subscribe":
            await self._subscribe(ws, channels, msg)
        elif event == "unsubscribe":
            chan_id = msg.get("chanId")
            if channels.pop(int(chan_id), None) is None:  # type: ignore[arg-type]
                await self._send(ws, {"event": "error", "msg": "unsubscribe: invalid",
                                      "code": 10400})  # fmt: skip
            else:
                self.closed.append(int(chan_id))  # type: ignore[arg-type]
                await self._send(ws, {"event": "unsubscribed", "status": "OK", "chanId": chan_id})
        else:
            await self._send(ws, {"event": "error", "msg": "unknown event", "code": 10000})
        async with self._changed:
            self._changed.notify_all()

    async def _subscribe(
        self, ws: web.WebSocketResponse, channels: dict[int, dict[str, Any]], msg: dict[str, Any]
    ) -> None:
        channel, symbol = msg.get("channel"), msg.get("symbol")
        if channel not in ("trades", "book") or symbol not in self.trades:
            await self._send(ws, {"event": "error", "msg": "subscribe: invalid", "code": 10300,
                                  "channel": channel, "symbol": symbol})  # fmt: skip
            return
        if any((s["channel"], s["symbol"]) == (channel, symbol) for s in channels.values()):
            await self._send(ws, {"event": "error", "msg": "subscribe: dup", "code": 10301,
                                  "channel": channel, "symbol": symbol})  # fmt: skip
            return
        self._next_chan += 1
        chan_id, pair = self._next_chan, symbol[1:]
        sub: dict[str, Any] = {"channel": channel, "symbol": symbol}
        reply = {"event": "subscribed", "channel": channel, "chanId": chan_id,
                 "symbol": symbol, "pair": pair}  # fmt: skip
        if channel == "book":
            reply.update(prec=msg.get("prec", "P0"), freq=msg.get("freq", "F0"),
                         len=str(msg.get("len", "25")))  # fmt: skip
        channels[chan_id] = sub
        self.opened.append((channel, symbol, chan_id))
        await self._send(ws, reply)
        if channel == "trades":
            newest = sorted(self.trades[symbol], key=lambda t: (t[1], t[0]), reverse=True)
            await self._send(ws, [chan_id, newest[: self.trade_snapshot]])
        else:
            await self._send(ws, [chan_id, self.books[symbol].rows(int(reply["len"]))])
            if self._flags.get(ws, 0) & OB_CHECKSUM:
                await self._send(ws, [chan_id, "cs", self.books[symbol].checksum()])

    # -- REST -------------------------------------------------------------------------
    async def _conf(self, request: web.Request) -> web.StreamResponse:
        def info(pairs: dict[str, Pair]) -> list[Any]:
            return [[p.id, [None, None, None, p.min_size, p.max_size, None, None, None,
                            0.2 if p in self.futures.values() else None, None]]
                    for p in pairs.values()]  # fmt: skip

        coins = sorted({c for p in self.pairs.values() for c in _currencies(p.id)})
        known: dict[str, Any] = {
            "pub:info:pair": info(self.pairs),
            "pub:info:pair:futures": info(self.futures),
            "pub:list:pair:exchange": [p.id for p in self.pairs.values()],
            "pub:list:pair:securities": [],
            "pub:list:pair:margin": [p.id for p in self.pairs.values() if ":" not in p.id],
            "pub:list:currency": coins,
            "pub:map:currency:sym": [["UST", "USDt"]],
            "pub:map:currency:label": [[c, c.title()] for c in coins],
            "pub:map:currency:unit": [],
            "pub:map:currency:undl": [["BTCF0", "BTC"], ["USTF0", "UST"]],
            "pub:map:currency:pool": [["UST", "ETH"]],
            "pub:map:currency:explorer": [["BTC", ["https://blockstream.info",
                                                  "https://blockstream.info/address/VAL",
                                                  "https://blockstream.info/tx/VAL"]]],
            "pub:map:currency:tx:fee": [["BTC", [0, 0.0004]], ["UST", [0, 1.5]]],
            "pub:map:tx:method": [["BITCOIN", ["BTC"]], ["TETHERUSE", ["UST"]]],
            "pub:info:tx:status": [["BITCOIN", 1, 1, None, None, None, None, 0, 0, None, None, 3]],
            "pub:list:currency:margin": coins,
        }  # fmt: skip
        return web.json_response([known.get(k) for k in request.match_info["keys"].split(",")])

    async def _tickers(self, request: web.Request) -> web.StreamResponse:
        wanted = request.query.get("symbols", "ALL")
        names = list(self.tickers) if wanted == "ALL" else wanted.split(",")
        return web.json_response([self.tickers[s] for s in names if s in self.tickers])

    def _window(
        self, request: web.Request, rows: list[list[Any]], *, mts: int, default: int
    ) -> list[Any]:
        """``start``/``end`` (inclusive) on the MTS field, ``sort``, then ``limit``."""
        q = request.query
        if "start" in q:
            rows = [r for r in rows if r[mts] >= int(q["start"])]
        if "end" in q:
            rows = [r for r in rows if r[mts] <= int(q["end"])]
        rows = sorted(rows, key=lambda r: (r[mts], r[0]), reverse=q.get("sort", "-1") != "1")
        return rows[: min(int(q.get("limit", default)), 10_000)]

    async def _trades(self, request: web.Request) -> web.StreamResponse:
        symbol = request.match_info["symbol"]
        if symbol not in self.trades:
            return error(10020, "symbol: invalid")
        return web.json_response(self._window(request, self.trades[symbol], mts=1, default=125))

    async def _book(self, request: web.Request) -> web.StreamResponse:
        symbol, precision = request.match_info["symbol"], request.match_info["precision"]
        if symbol not in self.books:
            return error(10020, "symbol: invalid")
        if precision != "P0":
            return error(10020, "precision: this fake serves P0 only")
        depth = request.query.get("len", "25")
        if depth not in ("1", "25", "100"):
            return error(10020, "len: invalid")
        return web.json_response(self.books[symbol].rows(int(depth)))

    async def _candles(self, request: web.Request) -> web.StreamResponse:
        candle = request.match_info["candle"]
        if candle.count(":") < 2 or candle.split(":", 2)[2] not in self.trades:
            return error(10020, "key: invalid")
        return web.json_response(
            self._window(request, self.candles.get(candle, []), mts=0, default=100)
        )


def _currencies(pair: str) -> tuple[str, str]:
    if ":" in pair:
        base, quote = pair.split(":")
        return base, quote
    return pair[:3], pair[3:]
