"""The fetcher factory's static side: ccxt ids, page sizes and timeframes, no network."""

from __future__ import annotations

import pytest

from cryptodesk.config import Settings
from cryptodesk.domain.market import Candle, Market, Ticker
from cryptodesk.services.sources import (
    CcxtFetcher,
    UnknownExchangeError,
    ccxt_capabilities,
    make_fetcher,
)

pytestmark = pytest.mark.usefixtures("clean_env")


@pytest.mark.parametrize(
    ("exchange", "limit", "has"),
    [("binance", 1000, "1h"), ("coinbase", 300, "6h"), ("kraken", 720, "1w"), ("htx", 1000, "4h")],
)
def test_page_size_and_timeframes_come_from_ccxt(exchange: str, limit: int, has: str) -> None:
    found_limit, timeframes = ccxt_capabilities(exchange)
    assert found_limit == limit
    assert timeframes is not None
    assert has in timeframes


@pytest.mark.parametrize("exchange", ["sim", "replay", "nosuch"])
def test_ids_ccxt_does_not_know_are_refused(exchange: str) -> None:
    with pytest.raises(UnknownExchangeError, match=f"unknown exchange '{exchange}'"):
        make_fetcher(exchange, Settings())


class Source:
    exchange = "binance"

    def __init__(self) -> None:
        self.closed = False
        self.reloaded = False
        self.asked: list[tuple[object, ...]] = []

    async def fetch_ohlcv(
        self, symbol: str, interval: str, *, since: int, until: int, limit: int
    ) -> list[Candle]:
        self.asked.append((symbol, interval, since, until, limit))
        return [Candle("binance", symbol, interval, since, 1.0, 2.0, 0.5, 1.5, 3.0)]

    async def fetch_tickers(self, symbols: list[str]) -> list[Ticker]:
        return [Ticker("binance", s, 1, 10.0) for s in symbols]

    async def load_markets(self, *, reload: bool = False) -> list[Market]:
        self.reloaded = reload
        return [Market("binance", "BTC/USDT", "BTC", "USDT", 0.01, 0.0001)]

    async def close(self) -> None:
        self.closed = True


async def test_the_ccxt_fetcher_passes_calls_through() -> None:
    source = Source()
    fetcher = CcxtFetcher(source, ohlcv_limit=1000, timeframes=frozenset({"1h"}))
    assert (fetcher.exchange, fetcher.ohlcv_limit, fetcher.timeframes) == (
        "binance", 1000, frozenset({"1h"}),
    )  # fmt: skip
    (candle,) = await fetcher.fetch_ohlcv("BTC/USDT", "1h", since=5, until=9, limit=3)
    assert source.asked == [("BTC/USDT", "1h", 5, 9, 3)]
    assert candle.open_time == 5
    assert [t.symbol for t in await fetcher.fetch_tickers(["BTC/USDT", "ETH/USDT"])] == [
        "BTC/USDT",
        "ETH/USDT",
    ]
    assert [m.symbol for m in await fetcher.load_markets()] == ["BTC/USDT"]
    assert source.reloaded  # fetched, not the source's daily copy
    await fetcher.close()
    assert source.closed


async def test_make_fetcher_builds_the_guarded_ccxt_source() -> None:
    fetcher = make_fetcher("kraken", Settings())
    try:
        assert isinstance(fetcher, CcxtFetcher)
        assert (fetcher.exchange, fetcher.ohlcv_limit) == ("kraken", 720)
        assert fetcher.timeframes is not None
        assert "1h" in fetcher.timeframes
    finally:
        await fetcher.close()
