"""The replay exchange: candle files rebuilt exactly by the real CandleBuilder, trade
files, pacing on a fake clock, and the source interface."""

from __future__ import annotations

import asyncio
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cryptodesk.adapters.exchanges.replay import (
    ReplayExchange,
    candle_trades,
    parse_speed,
    split_volume,
)
from cryptodesk.adapters.files.candle_files import read_candles
from cryptodesk.adapters.files.parsing import DataFileError
from cryptodesk.analytics.candles import CandleBuilder
from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.interval import Interval
from cryptodesk.domain.market import Candle, Trade
from cryptodesk.domain.timeutil import parse_time
from tests.shared_data import SHARED_DATA

DATA = SHARED_DATA
CDD = DATA / "cryptodatadownload_coinbase_btcusd_1h.csv"
WIDE = DATA / "bitstamp_btc_eth_ltc_usd_1d.csv"


def ohlcv(c: Candle) -> tuple[int, float, float, float, float, float]:
    return (c.open_time, c.open, c.high, c.low, c.close, c.volume)


async def rebuild(source: ReplayExchange, interval: Interval) -> list[Candle]:
    """Every trade of the replay through the real builder, as ingest + compute would."""
    builder = CandleBuilder(source.exchange, [interval])
    built: list[Candle] = []
    async for trades, books in source.watch_all():
        assert books == []
        result = builder.add_trades(trades)
        assert result.late == []
        built += result.finalized
    assert builder.watermark is not None
    # The stream ended; close the last candle as the next trade would.
    built += builder.advance(interval.bucket(builder.watermark) + interval.ms + builder.grace_ms)
    return built


@pytest.mark.parametrize(
    ("path", "symbol", "interval", "gap_fillers"),
    [
        (CDD, "BTC/USD", "1h", 0),
        (WIDE, "BTC/USD", "1d", 12),  # 2019-03-20 .. 2019-03-31 are missing from the file
        (WIDE, "ETH/USD", "1d", 12),
    ],
)
async def test_a_replayed_candle_file_rebuilds_identical_ohlcv(
    path: Path, symbol: str, interval: str, gap_fillers: int
) -> None:
    iv = Interval.parse(interval)
    source = ReplayExchange(path, symbol=symbol, speed=math.inf, end_when_done=True)
    built = await rebuild(source, iv)
    assert source.interval == iv  # inferred from the spacing
    expected = read_candles(path, exchange="replay", symbol=symbol, interval=iv).candles
    by_time = {c.open_time: c for c in built}
    assert [ohlcv(by_time[c.open_time]) for c in expected] == [ohlcv(c) for c in expected]
    # Zero-volume candles come back as the builder's flat fillers, bit for bit.
    assert any(c.volume == 0 for c in expected)
    # Anything else the builder emitted fills a gap in the file: flat, no volume.
    in_file = {c.open_time for c in expected}
    extra = [c for c in built if c.open_time not in in_file]
    assert len(extra) == gap_fillers
    assert all(c.volume == 0 and c.trades == 0 and c.open == c.close for c in extra)
    assert [c.open_time for c in built] == sorted(by_time)


async def test_any_batching_rebuilds_the_same_candles(tmp_path: Path) -> None:
    small = ReplayExchange(CDD, symbol="BTC/USD", speed=math.inf, batch_size=7, end_when_done=True)
    large = ReplayExchange(CDD, symbol="BTC/USD", speed=math.inf, end_when_done=True)
    h1 = Interval.parse("1h")
    assert [ohlcv(c) for c in await rebuild(small, h1)] == [
        ohlcv(c) for c in await rebuild(large, h1)
    ]


def test_synthetic_trades_take_the_shorter_path() -> None:
    h1 = 3_600_000
    rising = Candle("replay", "BTC/USD", "1h", 0, 10.0, 12.0, 9.0, 11.0, 4.0)
    trades = candle_trades(rising, h1, exchange="replay")
    assert [t.price for t in trades] == [10.0, 9.0, 12.0, 11.0]  # open, low, high, close
    assert [t.ts for t in trades] == [0, h1 // 3, 2 * h1 // 3, h1 - 1]
    assert [t.side for t in trades] == ["buy", "sell", "buy", "sell"]
    assert [t.id for t in trades] == ["0-0", "0-1", "0-2", "0-3"]
    falling = Candle("replay", "BTC/USD", "1h", 0, 11.0, 12.0, 9.0, 10.0, 4.0)
    assert [t.price for t in candle_trades(falling, h1, exchange="replay")] == [11, 12, 9, 10]
    flat = Candle("replay", "BTC/USD", "1h", 0, 10.0, 10.0, 10.0, 10.0, 0.0)
    assert candle_trades(flat, h1, exchange="replay") == []


@given(
    st.floats(min_value=1e-300, max_value=1e300, allow_nan=False, allow_infinity=False),
    st.integers(min_value=1, max_value=6),
)
def test_split_volume_sums_exactly_in_any_order(volume: float, parts: int) -> None:
    amounts = split_volume(volume, parts)
    assert len(amounts) == parts
    assert all(a > 0 for a in amounts)
    for order in itertools.permutations(amounts):
        total = 0.0
        for a in order:
            total += a
        assert total == volume
    arr = np.array(amounts)
    assert float(np.add.reduceat(arr, [0])[0]) == volume
    assert float(arr.sum()) == volume


def test_split_volume_refuses_what_cannot_be_split() -> None:
    with pytest.raises(DomainError):
        split_volume(5e-324, 4)


# ---- trade files ------------------------------------------------------------------------


TRADE_HEADER = "timestamp,price,amount,side"


def write_trades(tmp_path: Path, rows: list[str], header: str = TRADE_HEADER) -> Path:
    path = tmp_path / "trades.csv"
    path.write_text(header + "\n" + "".join(r + "\n" for r in rows))
    return path


T0 = parse_time("2024-01-01T00:00:00Z")


async def test_a_trade_file_replays_in_time_order(tmp_path: Path) -> None:
    path = write_trades(
        tmp_path,
        [f"{T0 + 2000},101,0.5,sell", "2024-01-01T00:00:00Z,100,1,buy", f"{T0 + 1000},102,2,BUY"],
    )
    source = ReplayExchange(path, symbol="btc-usdt", speed=math.inf, end_when_done=True)
    got = [t async for batch in source.watch_trades("BTC/USDT") for t in batch]
    assert got == [
        Trade("replay", "BTC/USDT", "3", T0, 100.0, 1.0, "buy"),
        Trade("replay", "BTC/USDT", "4", T0 + 1000, 102.0, 2.0, "buy"),
        Trade("replay", "BTC/USDT", "2", T0 + 2000, 101.0, 0.5, "sell"),
    ]
    markets = await source.load_markets()
    assert [(m.exchange, m.symbol, m.base, m.quote) for m in markets] == [
        ("replay", "BTC/USDT", "BTC", "USDT")
    ]
    assert markets[0].price_increment == 1.0
    assert source.interval is None


async def test_trade_ids_come_from_the_id_column_and_must_be_unique(tmp_path: Path) -> None:
    path = write_trades(
        tmp_path, [f"{T0},1,1,buy,a7", f"{T0 + 1},1,1,sell,a8"], TRADE_HEADER + ",id"
    )
    source = ReplayExchange(path, symbol="BTC/USDT", exchange="mylog", speed=math.inf,
                            end_when_done=True)  # fmt: skip
    batches = [b async for b, _ in source.watch_all()]
    assert [(t.exchange, t.id) for b in batches for t in b] == [("mylog", "a7"), ("mylog", "a8")]
    dup = write_trades(
        tmp_path, [f"{T0},1,1,buy,a7", f"{T0},1,1,buy,a7"], "timestamp,price,amount,side,id"
    )
    with pytest.raises(DataFileError) as info:
        await ReplayExchange(dup, symbol="BTC/USDT").load_markets()
    assert info.value.line_no == 3
    assert "already on line 2" in info.value.reason


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (f"{T0},1,1,hold", "side 'hold' is not buy or sell"),
        (f"{T0},0,1,buy", "price must be a positive"),
        (f"{T0},1,,buy", "amount is empty"),
        ("soon,1,1,buy", "neither epoch milliseconds nor ISO 8601"),
    ],
)
def test_a_bad_trade_row_names_its_line(tmp_path: Path, row: str, reason: str) -> None:
    path = write_trades(tmp_path, [f"{T0},1,1,buy", row])
    with pytest.raises(DataFileError) as info:
        ReplayExchange(path, symbol="BTC/USDT").load()
    assert (info.value.line_no, reason in info.value.reason) == (3, True)


# ---- pacing -----------------------------------------------------------------------------


class FakeTime:
    """A clock that moves only when the replay sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


async def test_speed_paces_the_feed_in_replay_time(tmp_path: Path) -> None:
    offsets = [0, 0, 500, 60_000, 60_001, 600_000]
    path = write_trades(tmp_path, [f"{T0 + o},1,1,buy" for o in offsets])
    fake = FakeTime()
    speed = 60.0  # one replay minute per real second
    source = ReplayExchange(path, symbol="BTC/USDT", speed=speed, clock=fake.clock,
                            sleep=fake.sleep, end_when_done=True)  # fmt: skip
    start = fake.now
    emitted: list[tuple[float, list[int]]] = []
    async for batch, _ in source.watch_all():
        emitted.append((fake.now, [t.ts - T0 for t in batch]))
    # Each batch leaves exactly when replay time reaches it, never before.
    for real, offs in emitted:
        replay_ms = (real - start) * speed * 1000
        assert all(o <= replay_ms + 1e-6 for o in offs)
    assert [offs for _, offs in emitted] == [[0, 0], [500], [60_000], [60_001], [600_000]]
    assert sum(fake.sleeps) == pytest.approx(600_000 / 1000 / speed)


async def test_resume_skips_what_was_replayed_before(tmp_path: Path) -> None:
    path = write_trades(tmp_path, [f"{T0 + o},1,1,buy" for o in (0, 10, 20, 30)])
    source = ReplayExchange(path, symbol="BTC/USDT", speed=math.inf, resume_after_ms=T0 + 20,
                            end_when_done=True)  # fmt: skip
    assert [t.ts - T0 async for b, _ in source.watch_all() for t in b] == [20, 30]


async def test_the_feed_stays_open_after_the_file_until_closed(tmp_path: Path) -> None:
    path = write_trades(tmp_path, [f"{T0},1,1,buy"])
    source = ReplayExchange(path, symbol="BTC/USDT", speed=math.inf)
    stream = source.watch_all()
    assert len((await anext(stream))[0]) == 1
    pending = asyncio.ensure_future(anext(stream))
    books = asyncio.ensure_future(anext(source.watch_order_book("BTC/USDT")))
    await asyncio.sleep(0.01)
    assert not pending.done()
    assert not books.done()
    await source.close()
    with pytest.raises(StopAsyncIteration):
        await pending
    with pytest.raises(StopAsyncIteration):
        await books


async def test_close_cuts_a_long_wait_short(tmp_path: Path) -> None:
    path = write_trades(tmp_path, [f"{T0},1,1,buy", f"{T0 + 86_400_000},1,1,buy"])
    source = ReplayExchange(path, symbol="BTC/USDT", speed=1.0)
    stream = source.watch_all()
    await anext(stream)
    pending = asyncio.ensure_future(anext(stream))  # the next trade is a day away
    await asyncio.sleep(0.01)
    await source.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(pending, 5)


def test_unknown_symbol_and_bad_settings(tmp_path: Path) -> None:
    source = ReplayExchange(CDD, symbol="BTC/USD")
    with pytest.raises(ValueError, match="not replayed here"):
        source.watch_trades("ETH/USD")
    with pytest.raises(ValueError, match="speed"):
        ReplayExchange(CDD, symbol="BTC/USD", speed=0)
    with pytest.raises(DataFileError, match="lacks volume_eth"):
        ReplayExchange(CDD, symbol="ETH/USD").load()
    single = tmp_path / "one.csv"
    single.write_text("timestamp,open,high,low,close,volume\n2024-01-01T00:00:00Z,1,1,1,1,1\n")
    with pytest.raises(DataFileError, match="cannot tell the candle interval"):
        ReplayExchange(single, symbol="BTC/USD").load()
    assert ReplayExchange(single, symbol="BTC/USD", interval="1h").load()[0].ts == T0


async def test_load_markets_of_a_candle_file() -> None:
    markets = await ReplayExchange(CDD, symbol="BTC/USD").load_markets()
    assert markets[0].price_increment == 0.01  # prices like 8056.83


def test_parse_speed() -> None:
    assert parse_speed("max") == math.inf
    assert parse_speed(" 3600 ") == 3600.0
    for bad in ("0", "-1", "fast", "nan", "inf"):
        with pytest.raises(DomainError):
            parse_speed(bad)


async def test_ingest_reads_the_replay_as_one_ordered_stream(tmp_path: Path) -> None:
    from cryptodesk.adapters.bus.memory import MemoryBus
    from cryptodesk.adapters.cache.memory import MemoryCache
    from cryptodesk.adapters.exchanges.base import MarketDataSource
    from cryptodesk.domain import codec
    from cryptodesk.observability.metrics import Metrics
    from cryptodesk.services.ingest import CombinedSource, MarketIngest

    path = tmp_path / "c.csv"
    path.write_text(
        "timestamp,open,high,low,close,volume\n"
        "2024-01-01T01:00:00Z,2,3,1,2.5,4\n2024-01-01T00:00:00Z,1,2,0.5,2,8\n"
    )
    source: MarketDataSource = ReplayExchange(path, symbol="BTC/USDT", speed=math.inf,
                                              end_when_done=True)  # fmt: skip
    assert isinstance(source, CombinedSource)
    bus = MemoryBus()
    consumer = bus.consumer("trades", group="t")
    ingest = MarketIngest(source, bus, MemoryCache(), Metrics(), symbols=["BTC/USDT"])
    await asyncio.wait_for(ingest.run(), 5)
    messages = await consumer.fetch(100, timeout=0.1)
    assert {m.key for m in messages} == {"replay:BTC/USDT"}
    trades = [codec.decode_trade(m.value) for m in messages]
    assert [t.id for t in trades] == [f"{T0 + h * 3_600_000}-{n}" for h in (0, 1) for n in range(4)]
    assert ingest.published_trades == 8
