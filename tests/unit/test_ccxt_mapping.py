"""ccxt unified structures to domain types, without I/O; and the source's pure helpers."""

from __future__ import annotations

from typing import Any

import pytest

from cryptodesk.adapters.exchanges.ccxt_exchange import _ws_endpoint
from cryptodesk.adapters.exchanges.ccxt_mapping import (
    DECIMAL_PLACES,
    SIGNIFICANT_DIGITS,
    TICK_SIZE,
    PayloadError,
    increment,
    map_market,
    map_ohlcv,
    map_order_book,
    map_ticker,
    map_trade,
    synthetic_trade_id,
)
from cryptodesk.adapters.exchanges.ccxt_quirks import rebase
from cryptodesk.adapters.exchanges.ccxt_source import CcxtSource, UnknownExchangeError
from cryptodesk.adapters.exchanges.ccxt_trades import TradeTape
from cryptodesk.domain.market import Candle, Market, OrderBook, Ticker, Trade

T = 1_717_200_000_000


# -- precision --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("precision", "mode", "magnitude", "step"),
    [
        (0.01, TICK_SIZE, 1.0, 0.01),
        ("0.00001", TICK_SIZE, 1.0, 0.00001),
        (0.5, TICK_SIZE, 1.0, 0.5),
        (2, DECIMAL_PLACES, 1.0, 0.01),
        (8.0, DECIMAL_PLACES, 1.0, 1e-8),
        (0, DECIMAL_PLACES, 1.0, 1.0),  # whole units
        (5, SIGNIFICANT_DIGITS, 60_000.0, 1.0),  # bitfinex BTC/USD ticks by $1
        (5, SIGNIFICANT_DIGITS, 0.5, 0.00001),
        (5, SIGNIFICANT_DIGITS, 1.0, 0.0001),
        (3, SIGNIFICANT_DIGITS, 999.0, 1.0),
    ],
)
def test_increment_in_every_precision_mode(
    precision: Any, mode: int, magnitude: float, step: float
) -> None:
    assert increment(precision, mode, magnitude=magnitude) == step


def test_decimal_places_give_exactly_the_tick_size_float() -> None:
    # Not 10.0 ** -n, which is off by one ulp for some n.
    for digits in range(13):
        assert increment(digits, DECIMAL_PLACES) == float(f"1e-{digits}")


@pytest.mark.parametrize(
    ("precision", "mode", "message"),
    [
        (None, TICK_SIZE, "precision is None"),
        ("abc", TICK_SIZE, "not a number"),
        (0, TICK_SIZE, "tick size 0 is not positive"),
        (float("inf"), DECIMAL_PLACES, "not a finite number"),
        (0, SIGNIFICANT_DIGITS, "fewer than one significant digit"),
        (2.5, DECIMAL_PLACES, "not a whole number"),
        (True, TICK_SIZE, "precision is True"),
        (2, 99, "unknown ccxt precision mode 99"),
    ],
)
def test_bad_precision_is_a_payload_error(precision: Any, mode: int, message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        increment(precision, mode)


# -- markets ----------------------------------------------------------------------------


def ccxt_market(**changes: Any) -> dict[str, Any]:
    """The fields of ccxt's unified market structure that matter here."""
    market: dict[str, Any] = {
        "id": "BTCUSDT", "symbol": "BTC/USDT", "base": "BTC", "quote": "USDT",
        "type": "spot", "spot": True, "active": True,
        "precision": {"amount": 1e-05, "price": 0.01, "base": 1e-08, "quote": 1e-08},
        "limits": {
            "amount": {"min": 1e-05, "max": 9000.0}, "price": {"min": 0.01, "max": 1e6},
            "cost": {"min": 5.0, "max": 9e6}, "leverage": {"min": None, "max": None},
        },
        "info": {},
    }  # fmt: skip
    market.update(changes)
    return market


def test_market_from_tick_size_precision() -> None:
    assert map_market(ccxt_market(), "binance") == Market(
        "binance", "BTC/USDT", "BTC", "USDT", price_increment=0.01, amount_increment=1e-05,
        min_amount=1e-05, min_notional=5.0, active=True,
    )  # fmt: skip


def test_market_from_decimal_places_and_missing_limits() -> None:
    raw = ccxt_market(precision={"price": 1, "amount": 8}, limits={}, active=None)
    assert map_market(raw, "kraken", precision_mode=DECIMAL_PLACES) == Market(
        "kraken", "BTC/USDT", "BTC", "USDT", 0.1, 1e-8, 0.0, 0.0, True
    )


def test_market_from_significant_digits_sized_by_reference_price() -> None:
    raw = ccxt_market(
        precision={"price": 5, "amount": 8},
        limits={"amount": {"min": 0.0001}, "cost": {"min": None}},
        active=False,
    )
    found = map_market(raw, "bitfinex", precision_mode=SIGNIFICANT_DIGITS, reference_price=64_000)
    assert (found.price_increment, found.amount_increment) == (1.0, 1e-11)
    assert (found.min_amount, found.min_notional, found.active) == (0.0001, 0.0, False)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"precision": {"price": None, "amount": 1e-5}}, "precision is None"),
        ({"precision": None}, "precision is None"),
        ({"symbol": "BTCUSDT"}, "not of the form BASE/QUOTE"),
        ({"limits": {"amount": {"min": -1}}}, "limits.amount.min is -1"),
        ({"limits": {"cost": {"min": "x"}}}, "could not convert"),
    ],
)
def test_malformed_market_names_the_symbol_and_the_problem(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(PayloadError, match=message) as info:
        map_market(ccxt_market(**changes), "binance")
    assert str(info.value).startswith("market ")


def test_market_without_a_symbol_key() -> None:
    raw = ccxt_market()
    del raw["symbol"]
    with pytest.raises(PayloadError, match="market None: missing field 'symbol'"):
        map_market(raw, "binance")


# -- trades -----------------------------------------------------------------------------


def ccxt_trade(**changes: Any) -> dict[str, Any]:
    trade: dict[str, Any] = {
        "info": {}, "timestamp": T, "datetime": "2024-06-01T00:00:00.000Z",
        "symbol": "BTC/USDT", "id": "28457", "order": None, "type": None, "side": "sell",
        "takerOrMaker": None, "price": 64000.5, "amount": 0.012, "cost": 768.006,
        "fee": None, "fees": [],
    }  # fmt: skip
    trade.update(changes)
    return trade


def test_trade() -> None:
    assert map_trade(ccxt_trade(), "binance") == Trade(
        "binance", "BTC/USDT", "28457", T, 64000.5, 0.012, "sell"
    )


def test_trade_id_is_always_text_and_numbers_are_coerced() -> None:
    found = map_trade(ccxt_trade(id=28457, timestamp=float(T), price="1.5", amount=2), "x")
    assert (found.id, found.ts, found.price, found.amount) == ("28457", T, 1.5, 2.0)
    assert type(found.ts) is int


def test_trade_without_id_gets_a_stable_synthetic_one() -> None:
    a = map_trade(ccxt_trade(id=None), "kraken")
    b = map_trade(ccxt_trade(id=None), "kraken")
    c = map_trade(ccxt_trade(id=None, amount=0.013), "kraken")
    assert a.id == b.id == synthetic_trade_id(T, 64000.5, 0.012, "sell")
    assert a.id != c.id
    assert a.id.startswith("h")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"price": -5.0}, "trade '28457': price must be a positive finite number"),
        ({"amount": 0.0}, "amount must be a positive finite number"),
        ({"price": float("nan")}, "price must be a positive finite number"),
        ({"side": None}, "trade '28457': no side"),
        ({"side": "short"}, "side must be buy or sell"),
        ({"timestamp": None}, "trade '28457': no timestamp"),
        ({"price": None, "amount": None}, "no price, amount"),
        ({"price": "abc"}, "could not convert string to float"),
        ({"symbol": "BTCUSDT"}, "not of the form BASE/QUOTE"),
        ({"timestamp": -1}, "ts must be epoch ms >= 0"),
    ],
)
def test_malformed_trade(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        map_trade(ccxt_trade(**changes), "binance")


def test_trade_missing_keys_and_non_mappings() -> None:
    raw = ccxt_trade()
    del raw["price"]
    with pytest.raises(PayloadError, match="no price"):
        map_trade(raw, "binance")
    with pytest.raises(PayloadError, match="trade None"):
        map_trade([1, 2], "binance")  # type: ignore[arg-type]


# -- candles ----------------------------------------------------------------------------


def test_ohlcv_row() -> None:
    row = [T, 100.0, 110.0, 90.0, 105.5, 12.5]
    assert map_ohlcv(row, "binance", "BTC/USDT", "1h", closed=True) == Candle(
        "binance", "BTC/USDT", "1h", T, 100.0, 110.0, 90.0, 105.5, 12.5, closed=True
    )
    quiet = map_ohlcv([T, 1, 1, 1, 1, None], "kraken", "BTC/USD", "1m", closed=False)
    assert (quiet.volume, quiet.closed, quiet.trades, quiet.quote_volume) == (0.0, False, 0, 0.0)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ([T, 100, 90, 95, 99, 1], "candle 1717200000000: OHLC inconsistent"),
        ([T, 100, 110, 90], "4 fields, expected 6"),
        ([T, None, 110, 90, 100, 1], "candle 1717200000000: float"),
        ([T, 100, 110, 90, 100, -1], "volume must be a non-negative"),
        (["x", 100, 110, 90, 100, 1], "invalid literal for int"),
        ([T, 0, 110, 90, 100, 1], "open must be a positive"),
    ],
)
def test_malformed_ohlcv(row: list[Any], message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        map_ohlcv(row, "binance", "BTC/USDT", "1h", closed=True)


# -- order books ------------------------------------------------------------------------


def test_order_book_is_cut_to_depth_and_keeps_the_sequence() -> None:
    raw = {
        "symbol": "BTC/USDT",
        "bids": [[100.0, 1.0], [99.0, 2.0], [98.0, 3.0, 7]],  # a third field: order count
        "asks": [[101.0, 1.5], [102.0, 2.5]],
        "timestamp": T,
        "datetime": None,
        "nonce": 1027024,
    }
    assert map_order_book(raw, "binance", "BTC/USDT", depth=2, now_ms=0) == OrderBook(
        "binance", "BTC/USDT", T, ((100.0, 1.0), (99.0, 2.0)), ((101.0, 1.5), (102.0, 2.5)),
        1027024,
    )  # fmt: skip


def test_order_book_without_time_or_nonce_uses_now_and_zero() -> None:
    raw = {"bids": [[1.0, 1.0]], "asks": [], "timestamp": None, "nonce": None}
    book = map_order_book(raw, "kraken", "BTC/USD", depth=20, now_ms=T)
    assert (book.ts, book.sequence, book.asks) == (T, 0, ())


@pytest.mark.parametrize(
    ("bids", "asks", "message"),
    [
        ([[101.0, 1.0]], [[100.0, 1.0]], "crossed book: best bid 101.0 >= best ask 100.0"),
        ([[99.0, 1.0], [100.0, 1.0]], [], "bids are not strictly ordered"),
        ([[100.0, 0.0]], [], "bids amount must be a positive"),
        ([[100.0]], [], "tuple index out of range|list index out of range"),
        ([["x", 1]], [], "could not convert"),
    ],
)
def test_invalid_order_book(bids: list[Any], asks: list[Any], message: str) -> None:
    raw = {"bids": bids, "asks": asks, "timestamp": T, "nonce": 1}
    with pytest.raises(PayloadError, match=message):
        map_order_book(raw, "binance", "BTC/USDT", depth=20, now_ms=T)


def test_order_book_without_sides() -> None:
    with pytest.raises(PayloadError, match="order book of BTC/USDT: missing field 'bids'"):
        map_order_book({"asks": []}, "binance", "BTC/USDT", depth=20, now_ms=T)


# -- tickers ----------------------------------------------------------------------------


def ccxt_ticker(**changes: Any) -> dict[str, Any]:
    ticker: dict[str, Any] = {
        "symbol": "BTC/USDT", "timestamp": T, "datetime": None, "high": 102.0, "low": 98.0,
        "bid": 100.99, "bidVolume": 1.0, "ask": 101.01, "askVolume": 2.0, "vwap": 100.5,
        "open": 100.0, "close": 101.0, "last": 101.0, "previousClose": 99.0, "change": 1.0,
        "percentage": 1.0, "average": 100.5, "baseVolume": 1234.5, "quoteVolume": 124000.0,
        "info": {},
    }  # fmt: skip
    ticker.update(changes)
    return ticker


def test_ticker() -> None:
    assert map_ticker(ccxt_ticker(), "binance", now_ms=0) == Ticker(
        "binance", "BTC/USDT", T, 101.0, 100.99, 101.01, 100.0, 102.0, 98.0, 1234.5, 124000.0
    )


def test_ticker_with_gaps_the_exchange_leaves() -> None:
    raw = ccxt_ticker(timestamp=None, last=None, bid=0, ask=None, open=None, baseVolume=None)
    found = map_ticker(raw, "kraken", now_ms=T + 5)
    assert (found.ts, found.last, found.bid, found.ask, found.open_24h) == (
        T + 5, 101.0, None, None, None,
    )  # fmt: skip
    assert found.volume_24h == 0.0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"last": None, "close": None}, "ticker 'BTC/USDT': no last price"),
        ({"bid": 102.0}, "crossed ticker"),
        ({"symbol": None}, "ticker None"),
    ],
)
def test_malformed_ticker(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        map_ticker(ccxt_ticker(**changes), "binance", now_ms=T)


# -- the source's pure helpers ----------------------------------------------------------


def trade(tid: str, ts: int) -> Trade:
    return Trade("binance", "BTC/USDT", tid, ts, 1.0, 1.0, "buy")


def test_trade_tape_hands_out_each_trade_once() -> None:
    tape = TradeTape(capacity=100)
    assert tape.admit([trade("1", 10), trade("2", 11)]) == [trade("1", 10), trade("2", 11)]
    assert tape.admit([trade("2", 11), trade("3", 11), trade("3", 11)]) == [trade("3", 11)]
    assert (tape.last_ts, tape.last_id) == (11, "3")
    assert tape.admit([trade("0", 5)]) == [trade("0", 5)]  # late, unseen: handed out
    assert (tape.last_ts, tape.last_id) == (11, "3")


def test_trade_tape_memory_is_bounded() -> None:
    tape = TradeTape(capacity=3)
    tape.admit([trade(str(i), 100 + i) for i in range(10)])
    assert len(tape._ids) == len(tape._order) == 3
    # Forgotten ids older than the window are not handed out again...
    assert tape.admit([trade("0", 100), trade("5", 105)]) == []
    # ...ids still remembered are not either, and new ones are.
    assert tape.admit([trade("9", 109), trade("10", 110)]) == [trade("10", 110)]


def testrebase_keeps_paths_and_nesting() -> None:
    urls = {
        "public": "https://api.binance.com/api/v3",
        "ws": {"spot": "wss://stream.binance.com:9443/ws", "ws-api": {"spot": "wss://x.com/a/b"}},
        "other": "not a url",
        "bare": "https://example.com",
    }
    bases = {"http": "http://127.0.0.1:1", "ws": "ws://127.0.0.1:2/"}
    assert rebase(urls, bases) == {
        "public": "http://127.0.0.1:1/api/v3",
        "ws": {"spot": "ws://127.0.0.1:2/ws", "ws-api": {"spot": "ws://127.0.0.1:2/a/b"}},
        "other": "not a url",
        "bare": "http://127.0.0.1:1",
    }


def test_websocket_endpoint_labels_stay_bounded() -> None:
    assert _ws_endpoint({"e": "depthUpdate"}) == "ws:depthUpdate"
    assert _ws_endpoint({"channel": "level2"}) == "ws:level2"
    assert _ws_endpoint({"e": "x" * 41}) == "ws"
    assert _ws_endpoint({"e": "drop table;"}) == "ws"
    assert _ws_endpoint([1, 2]) == "ws"


def test_unknown_exchange_id_is_named() -> None:
    with pytest.raises(UnknownExchangeError, match="unknown exchange 'binanse'"):
        CcxtSource("binanse")


async def test_significant_digit_markets_are_sized_by_their_last_price() -> None:
    """bitfinex quotes precision in significant digits: BTC/USD at 64,000 with 5
    digits steps by 1, a coin at 0.5 by 0.00001."""
    source = CcxtSource("bitfinex")
    exchange = source.client
    markets = {
        "BTC/USD": ccxt_market(symbol="BTC/USD", quote="USD", precision={"price": 5, "amount": 8}),
        "XYZ/USD": ccxt_market(
            symbol="XYZ/USD", base="XYZ", quote="USD", precision={"price": 5, "amount": 8}
        ),
        "NEW/USD": ccxt_market(
            symbol="NEW/USD", base="NEW", quote="USD", precision={"price": 5, "amount": 8}
        ),
    }

    async def load_markets(reload: bool = False) -> dict[str, Any]:
        return markets

    async def fetch_tickers(symbols: Any = None) -> dict[str, Any]:
        return {"BTC/USD": {"last": 64_000.0}, "XYZ/USD": {"last": 0.5}, "NEW/USD": {"last": None}}

    exchange.load_markets, exchange.fetch_tickers = load_markets, fetch_tickers
    try:
        found = {m.symbol: m.price_increment for m in await source.load_markets()}
    finally:
        await source.close()
    assert found == {"BTC/USD": 1.0, "XYZ/USD": 0.00001, "NEW/USD": 0.0001}
