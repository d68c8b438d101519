import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cryptodesk.domain import codec
from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.interval import DAY_MS, SUPPORTED, WEEK_MS, Interval, parse_intervals
from cryptodesk.domain.market import Candle, Market, OrderBook, Ticker, Trade, stream_key
from cryptodesk.domain.symbol import Symbol
from cryptodesk.domain.timeutil import MAX_TS_MS, MIN_TS_MS, parse_time, to_iso

T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z


def test_symbol_parse_normalises_and_rejects():
    assert str(Symbol.parse(" btc/usdt ")) == "BTC/USDT"
    assert str(Symbol.parse("eth-usd")) == "ETH/USD"
    for bad in ["BTCUSDT", "BTC/", "/USDT", "BTC/USDT/X", "BTC/BTC", "B$C/USDT"]:
        with pytest.raises(DomainError) as info:
            Symbol.parse(bad)
        assert info.value.field == "symbol"


def test_interval_parse_and_lengths():
    assert Interval.parse("1m").ms == 60_000
    assert Interval.parse("4h").ms == 4 * 3_600_000
    assert Interval.parse("1d").ms == DAY_MS
    assert Interval.parse("1w").ms == WEEK_MS
    with pytest.raises(DomainError, match="unknown interval '7m'"):
        Interval.parse("7m")
    assert [i.name for i in parse_intervals("1h,1m,5m")] == ["1m", "5m", "1h"]
    with pytest.raises(DomainError, match="duplicate"):
        parse_intervals("1m,1m")
    with pytest.raises(DomainError, match="at least one"):
        parse_intervals(" , ")


def test_interval_buckets_align_to_epoch_and_weeks_to_monday():
    m5 = Interval.parse("5m")
    assert m5.bucket(T0) == T0 - T0 % 300_000
    assert m5.bucket(m5.bucket(T0)) == m5.bucket(T0)
    assert m5.next_bucket(m5.bucket(T0)) == m5.bucket(T0) + 300_000
    week = Interval.parse("1w")
    # 2023-11-14 is a Tuesday; its week opened Monday 2023-11-13 00:00 UTC.
    assert to_iso(week.bucket(T0)) == "2023-11-13T00:00:00.000Z"
    assert to_iso(Interval.parse("1d").bucket(T0)) == "2023-11-14T00:00:00.000Z"


@given(st.integers(min_value=0, max_value=2**42), st.sampled_from(SUPPORTED))
def test_bucket_contains_ts(ts, name):
    iv = Interval.parse(name)
    b = iv.bucket(ts)
    assert b <= ts < b + iv.ms
    assert iv.bucket(b) == b


def test_time_parsing_and_formatting():
    assert to_iso(T0) == "2023-11-14T22:13:20.000Z"
    assert parse_time("2023-11-14T22:13:20Z") == T0
    assert parse_time("2023-11-14T23:13:20+01:00") == T0
    assert parse_time("2023-11-14T22:13:20") == T0
    assert parse_time(str(T0)) == T0
    with pytest.raises(DomainError, match="neither epoch"):
        parse_time("yesterday", field="start")
    with pytest.raises(DomainError, match="out of range") as info:
        parse_time("1700000000", field="start")  # seconds, not ms
    assert info.value.field == "start"


def test_trade_validation():
    t = Trade("sim", "BTC/USDT", "1", T0, 67000.5, 0.01, "buy")
    assert stream_key(t.exchange, t.symbol) == "sim:BTC/USDT"
    bad = [
        {"price": -1.0},
        {"price": 0.0},
        {"price": math.nan},
        {"price": math.inf},
        {"amount": 0.0},
        {"amount": -0.5},
        {"side": "hold"},
        {"symbol": "BTCUSDT"},
        {"id": ""},
        {"exchange": ""},
        {"ts": -1},
    ]
    base = {
        "exchange": "sim", "symbol": "BTC/USDT", "id": "1", "ts": T0, "price": 1.0,
        "amount": 1.0, "side": "buy",
    }  # fmt: skip
    for change in bad:
        with pytest.raises(DomainError):
            Trade(**{**base, **change})


def test_candle_validation():
    c = Candle("sim", "BTC/USDT", "1m", T0, 10, 12, 9, 11, 3.5, 38.5, 4, True)
    assert c.closed
    with pytest.raises(DomainError, match="OHLC inconsistent"):
        Candle("sim", "BTC/USDT", "1m", T0, 10, 10.5, 9, 11, 1)
    with pytest.raises(DomainError, match="OHLC inconsistent"):
        Candle("sim", "BTC/USDT", "1m", T0, 10, 12, 10.5, 11, 1)
    with pytest.raises(DomainError, match="volume"):
        Candle("sim", "BTC/USDT", "1m", T0, 10, 12, 9, 11, -1)
    with pytest.raises(DomainError, match="trades"):
        Candle("sim", "BTC/USDT", "1m", T0, 10, 12, 9, 11, 1, trades=-1)


def test_orderbook_validation():
    book = OrderBook("sim", "BTC/USDT", T0, ((100.0, 1.0), (99.0, 2.0)), ((101.0, 1.0),))
    assert book.best_bid() == 100.0
    assert book.best_ask() == 101.0
    assert book.top(1).bids == ((100.0, 1.0),)
    assert OrderBook("sim", "BTC/USDT", T0, (), ()).best_bid() is None
    with pytest.raises(DomainError, match="crossed"):
        OrderBook("sim", "BTC/USDT", T0, ((101.0, 1.0),), ((100.0, 1.0),))
    with pytest.raises(DomainError, match="bids are not strictly ordered"):
        OrderBook("sim", "BTC/USDT", T0, ((99.0, 1.0), (100.0, 1.0)), ())
    with pytest.raises(DomainError, match="asks are not strictly ordered"):
        OrderBook("sim", "BTC/USDT", T0, (), ((101.0, 1.0), (101.0, 1.0)))
    with pytest.raises(DomainError, match="bids amount"):
        OrderBook("sim", "BTC/USDT", T0, ((100.0, 0.0),), ())


def test_ticker_and_market_validation():
    t = Ticker("sim", "BTC/USDT", T0, 110.0, 109.0, 111.0, 100.0)
    assert t.change_24h == pytest.approx(0.1)
    assert Ticker("sim", "BTC/USDT", T0, 1.0).change_24h is None
    with pytest.raises(DomainError, match="crossed ticker"):
        Ticker("sim", "BTC/USDT", T0, 110.0, 111.0, 111.0)
    with pytest.raises(DomainError):
        Market("sim", "BTC/USDT", "BTC", "USDT", 0.0, 0.001)


def test_codec_round_trips():
    t = Trade("sim", "BTC/USDT", "abc", T0, 67000.12, 0.00001, "sell")
    assert codec.decode_trade(codec.encode_trade(t)) == t
    c = Candle("sim", "ETH/USDT", "5m", T0, 10, 12, 9, 11, 3.5, 38.5, 4, True)
    assert codec.decode_candle(codec.encode_candle(c)) == c
    b = OrderBook("sim", "BTC/USDT", T0, ((100.0, 1.0),), ((101.0, 2.0),), 7)
    assert codec.decode_book(codec.encode_book(b)) == b
    tk = Ticker("sim", "BTC/USDT", T0, 110.0, 109.0, 111.0, 100.0, 120.0, 90.0, 5.0, 550.0)
    assert codec.decode_ticker(codec.encode_ticker(tk)) == tk
    m = Market("sim", "BTC/USDT", "BTC", "USDT", 0.01, 0.00001, 0.00001, 5.0)
    assert codec.decode_markets(codec.encode_markets([m])) == [m]


def test_codec_rejects_invalid_payload():
    with pytest.raises(DomainError):
        codec.decode_trade(b'{"e":"sim","s":"BTC/USDT","i":"1","t":1,"p":-5,"a":1,"d":"buy"}')


@pytest.mark.parametrize("junk", ["²", "１２３", "--5", "", "2024-13-01"])
def test_parse_time_rejects_junk_with_domain_error(junk):
    with pytest.raises(DomainError):
        parse_time(junk)


@given(st.integers(min_value=MIN_TS_MS, max_value=MAX_TS_MS - 1))
def test_parse_time_reads_back_every_millisecond_to_iso_writes(ts: int) -> None:
    assert parse_time(to_iso(ts)) == ts
