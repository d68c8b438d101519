"""What differs between exchanges behind ccxt's unified API, kept in one table
per concern so adding an exchange touches this file (and its fake) only."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ccxt.base.errors import ChecksumError  # type: ignore[import-untyped]


@dataclass(frozen=True)
class TradeRest:
    """How one exchange's REST trades line up with its websocket trades."""

    params: dict[str, Any] = field(default_factory=dict)
    since: bool = True  # the endpoint filters by time; otherwise it serves the newest
    # Trade ids count up by one, and older trades can be paged by id with these
    # params (an API key is needed); a gap is then known exactly.
    by_id: dict[str, Any] | None = None
    # Trade ids rise with time, not by one: trades of one millisecond go in id order.
    ids_rise: bool = False


# binance: ccxt's default REST trades are aggregate trades, numbered apart from
# the websocket's ``trade`` stream; /api/v3/trades carries the same ids (newest
# 1000, no time filter), /api/v3/historicalTrades pages older ones by id.
TRADE_REST = {
    "binance": TradeRest(
        {"fetchTradesMethod": "publicGetTrades"},
        since=False,
        by_id={"fetchTradesMethod": "publicGetHistoricalTrades"},
    ),
    # coinbase: ccxt refuses ``since`` without an ``until``, and the public
    # market-trades endpoint serves the newest ``limit`` (1000) trades anyway.
    "coinbase": TradeRest(since=False),
    # htx: /market/history/trade serves the newest groups of trades, no time filter.
    "htx": TradeRest(since=False, ids_rise=True),
    # bitfinex: /v2/trades/{symbol}/hist filters by time; one id sequence for all pairs.
    "bitfinex": TradeRest(ids_rise=True),
}
# binance: spot markets only (our symbols are spot; the futures endpoints cost
# weight and time), and neither the currency list nor the margin pairs, which
# ccxt fetches from signed endpoints whenever an API key is configured.
OPTIONS: dict[str, dict[str, Any]] = {
    "binance": {
        "fetchMarkets": {"types": ["spot"]},
        "fetchCurrencies": False,
        "fetchMargins": False,
    },
    # bitfinex: ccxt asks for raw books (R0: one row per order, prices repeat)
    # unless told otherwise; P0 rows are price levels.
    "bitfinex": {"fetchOrderBook": {"precision": "P0"}},
    # htx: spot markets only (the swap and future lists are three more requests).
    "htx": {"fetchMarkets": {"types": {"spot": True, "linear": False, "inverse": False}}},
}


def rebase(urls: Any, bases: dict[str, str]) -> Any:
    """Every URL in ccxt's nested ``urls['api']`` with scheme and host replaced:
    ``ws``/``wss`` by ``bases['ws']``, ``http``/``https`` by ``bases['http']``."""
    if isinstance(urls, dict):
        return {key: rebase(value, bases) for key, value in urls.items()}
    if isinstance(urls, str) and "://" in urls:
        scheme, rest = urls.split("://", 1)
        base = bases.get("ws" if scheme.startswith("ws") else "http")
        if base is not None:
            path = rest.partition("/")[2]
            return f"{base.rstrip('/')}/{path}" if path else base.rstrip("/")
    return urls


def kraken_book_check(exchange: Any, client: Any, message: Any) -> bool:
    """Check a kraken websocket v2 ``book`` message against its CRC32 before
    ccxt applies it: the top ten asks then bids of the book it would make, at
    the pair's decimals, without points and leading zeros
    (https://docs.kraken.com/api/docs/guides/spot-ws-book-v2).

    False: the message is dropped. Either it updates a book being rebuilt (its
    snapshot follows), or the book fails the check: it is then dropped with
    its subscription and its watchers get ChecksumError, as ccxt does where it
    checks, so the next watch subscribes afresh and starts from a snapshot.
    """
    try:
        if message.get("channel") != "book":
            return True
        entry = message["data"][0]
        symbol, expected = entry["symbol"], int(entry["checksum"])
        info = exchange.markets[symbol]["info"]
        price_places, qty_places = int(info["pair_decimals"]), int(info["lot_decimals"])
        book = exchange.orderbooks.get(symbol)
        sides: dict[str, dict[float, float]] = {"asks": {}, "bids": {}}
        if message.get("type") == "update":
            if book is None:
                return False
            sides = {key: {level[0]: level[1] for level in book[key]} for key in sides}
        for key, side in sides.items():
            for level in entry.get(key) or ():
                price, qty = float(level["price"]), float(level["qty"])
                if qty:
                    side[price] = qty
                else:
                    side.pop(price, None)
    except (AttributeError, KeyError, IndexError, TypeError, ValueError):
        return True  # not a book ccxt can apply: its own handler says why
    levels = [
        *sorted(sides["asks"].items())[:10],
        *sorted(sides["bids"].items(), reverse=True)[:10],
    ]
    text = "".join(_digits(p, price_places) + _digits(q, qty_places) for p, q in levels)
    if zlib.crc32(text.encode()) == expected:
        return True
    message_hash = f"orderbook@{symbol}"
    client.subscriptions.pop(message_hash, None)
    exchange.orderbooks.pop(symbol, None)
    # Kraken refuses a second subscription on one connection ("Already subscribed").
    request = {"method": "unsubscribe", "params": {"channel": "book", "symbol": [symbol]}}
    exchange.spawn(_send_quietly, client, request)
    client.reject(ChecksumError(f"kraken {symbol}: order book checksum mismatch"), message_hash)
    return False


def _digits(value: float, places: int) -> str:
    return f"{value:.{places}f}".replace(".", "").lstrip("0")


async def _send_quietly(client: Any, request: dict[str, Any]) -> None:
    try:
        await client.send(request)
    except Exception:  # a closed connection has no subscription left to end
        return


def bitfinex_book_check(exchange: Any, client: Any, message: Any) -> bool:
    """Run ccxt's own check of a bitfinex book checksum (``cs``), and where it
    fails close the channel on the server too
    (https://docs.bitfinex.com/docs/ws-websocket-checksum).

    ccxt drops the book and fails its watchers but leaves the channel open:
    its next subscribe is refused as a duplicate (error 10301) and the old
    channel's next update is taken for a snapshot, a book of one level. So the
    channel is unsubscribed, and its messages until then are dropped.
    """
    closing: set[Any] = client.__dict__.setdefault("_cryptodesk_closing", set())
    if isinstance(message, dict):
        return not (message.get("event") == "unsubscribed" and message.get("chanId") in closing)
    if not isinstance(message, list) or not message:
        return True
    chan_id = message[0]
    if chan_id in closing:
        return False
    subscription = client.subscriptions.get(str(chan_id))
    if len(message) < 3 or message[1] != "cs" or not isinstance(subscription, dict):
        return True
    symbol = exchange.safe_symbol(subscription.get("symbol"))
    if symbol not in exchange.orderbooks:
        return True
    exchange.handle_checksum(client, message, subscription)
    if symbol not in exchange.orderbooks:  # mismatch: ccxt dropped the book
        closing.add(chan_id)
        client.subscriptions.pop(str(chan_id), None)
        exchange.spawn(_send_quietly, client, {"event": "unsubscribe", "chanId": chan_id})
    return False


def htx_book_check(exchange: Any, client: Any, message: Any) -> bool:
    """Check an htx MBP update's ``prevSeqNum`` against the book's ``seqNum``
    before ccxt applies it (https://huobiapi.github.io/docs/spot/v1/en/,
    "Market By Price (incremental update)").

    On a gap ccxt raises ChecksumError out of its message handler, so nobody
    watching hears of it and the book stops for good. Here the book is dropped
    with its subscription, the topic unsubscribed and the watchers failed with
    ChecksumError; updates of a topic no longer subscribed are dropped.
    """
    topic = message.get("ch") if isinstance(message, dict) else None
    if not isinstance(topic, str) or ".mbp." not in topic:
        return True
    if topic not in client.subscriptions:
        return False  # a book no longer watched, until the unsubscribe lands
    symbol = exchange.safe_symbol(topic.split(".")[1])
    book, tick = exchange.orderbooks.get(symbol), message.get("tick")
    nonce = None if book is None else book["nonce"]
    previous = tick.get("prevSeqNum") if isinstance(tick, dict) else None
    if not isinstance(nonce, int) or not isinstance(previous, int) or previous <= nonce:
        return True
    client.subscriptions.pop(topic, None)
    exchange.orderbooks.pop(symbol, None)
    exchange.spawn(_send_quietly, client, {"unsub": topic, "id": exchange.request_id()})
    error = ChecksumError(f"htx {symbol}: order book sequence gap after {nonce}, at {previous}")
    client.reject(error, topic)
    return False


# Book checks ccxt does not make (kraken) or cannot recover from (bitfinex,
# htx), run on each websocket message before ccxt handles it (see
# kraken_book_check for what False means).
BOOK_CHECKS: dict[str, Callable[[Any, Any, Any], bool]] = {
    "kraken": kraken_book_check,
    "bitfinex": bitfinex_book_check,
    "htx": htx_book_check,
}

# htx: ccxt names a websocket trade by its legacy ``id`` (21 digits, so a
# float once parsed: trades of one order collide) and a REST trade by its
# ``trade-id``; both carry the documented trade id, as ``tradeId``/``trade-id``.
TRADE_ID_KEYS: dict[str, tuple[str, ...]] = {"htx": ("tradeId", "trade-id")}


def natural_trade_id(trade: Any, keys: tuple[str, ...]) -> Any:
    """A ccxt trade with its id from the first of ``keys`` in the exchange's own
    fields (``info``); as it is when none is there."""
    info = trade.get("info") if isinstance(trade, dict) else None
    if isinstance(info, dict):
        for key in keys:
            value = info.get(key)
            if value is not None:
                return {**trade, "id": str(value)}
    return trade


# Depths an exchange's REST book accepts (bitfinex: 1, 25 or 100 price points;
# htx: 5, 10, 20 or 150): the smallest that covers ours is asked for.
BOOK_LIMITS: dict[str, tuple[int, ...]] = {"bitfinex": (1, 25, 100), "htx": (5, 10, 20, 150)}


def book_limit(exchange_id: str, depth: int) -> int:
    allowed = sorted(BOOK_LIMITS.get(exchange_id, ()))
    return next((n for n in allowed if n >= depth), allowed[-1]) if allowed else depth
