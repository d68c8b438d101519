"""The ``MarketStore`` contract: every implementation runs these same tests.

A subclass provides an async ``store`` fixture yielding an empty, ready store
(SQLite in tests/unit, PostgreSQL in tests/integration).
"""

from __future__ import annotations

import dataclasses
import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cryptodesk.adapters.db.base import MarketStore
from cryptodesk.domain.market import Candle, Trade

T0 = 1_700_000_000_000  # an ordinary epoch-ms timestamp
MINUTE = 60_000


def trade(
    id: str,
    ts: int = T0,
    *,
    exchange: str = "sim",
    symbol: str = "BTC/USDT",
    price: float = 100.0,
    amount: float = 0.5,
    side: str = "buy",
) -> Trade:
    return Trade(exchange, symbol, id, ts, price, amount, side)  # type: ignore[arg-type]


def candle(
    open_time: int,
    *,
    exchange: str = "sim",
    symbol: str = "BTC/USDT",
    interval: str = "1m",
    close: float = 101.0,
    trades: int = 3,
) -> Candle:
    return Candle(
        exchange,
        symbol,
        interval,
        open_time,
        open=100.0,
        high=max(102.0, close),
        low=min(99.0, close),
        close=close,
        volume=1.5,
        quote_volume=151.25,
        trades=trades,
        closed=True,
    )


def key(t: Trade) -> tuple[str, str, str]:
    return (t.exchange, t.symbol, t.id)


async def all_trades(store: MarketStore, exchange: str) -> list[Trade]:
    out: list[Trade] = []
    async for batch in store.iter_trades(exchange, start=0):
        out.extend(batch)
    return out


_exchange_names = itertools.count()


class StoreContract:
    # ---- insert_trades --------------------------------------------------------------

    async def test_insert_returns_only_new_trades(self, store: MarketStore) -> None:
        first = [trade("1"), trade("2"), trade("3", T0 + 1)]
        assert await store.insert_trades(first) == first
        later = [trade("4", T0 + 2), first[1], trade("5", T0 + 3), first[0]]
        assert await store.insert_trades(later) == [later[0], later[2]]
        assert await store.count_trades() == 5

    async def test_replaying_a_batch_changes_nothing(self, store: MarketStore) -> None:
        batch = [trade(str(i), T0 + i, price=100.0 + i) for i in range(50)]
        assert await store.insert_trades(batch) == batch
        before = await all_trades(store, "sim")
        assert await store.insert_trades(batch) == []
        assert await store.insert_trades(list(reversed(batch))) == []
        assert await store.count_trades() == 50
        assert await all_trades(store, "sim") == before

    async def test_a_trade_repeated_within_a_batch_counts_once(self, store: MarketStore) -> None:
        a, b = trade("a"), trade("b", T0 + 1)
        a_again = trade("a", T0 + 5, price=999.0)  # same natural key, other payload
        assert await store.insert_trades([a, a, b, a_again, b]) == [a, b]
        c = trade("c", T0 + 2)
        assert await store.insert_trades([c, a, c, b, c]) == [c]  # partly stored already
        assert await store.count_trades() == 3
        assert await store.get_trades("sim", "BTC/USDT") == [a, b, c]

    async def test_empty_insert(self, store: MarketStore) -> None:
        assert await store.insert_trades([]) == []
        assert await store.count_trades() == 0

    async def test_trades_round_trip_exactly(self, store: MarketStore) -> None:
        t = Trade("sim", "ETH/USDT", "uuid-7f3e", T0 + 123, 0.1 + 0.2, 1e-8, "sell")
        await store.insert_trades([t])
        (back,) = await store.get_trades("sim", "ETH/USDT")
        assert back == t  # float64 survives bit for bit, side and id as text

    @settings(
        max_examples=25,
        deadline=None,
        # The store fixture is shared by all examples (each uses its own exchange),
        # and every implementation's subclass runs this same method by design.
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.differing_executors,
        ],
    )
    @given(
        ids=st.lists(st.integers(0, 40), min_size=0, max_size=120),
        cuts=st.lists(st.integers(0, 120), max_size=6),
        replay=st.booleans(),
    )
    async def test_any_batching_stores_each_trade_once(
        self, store: MarketStore, ids: list[int], cuts: list[int], replay: bool
    ) -> None:
        # A fresh exchange per example keeps examples independent on one store.
        exchange = f"hx{next(_exchange_names)}"
        stream = [
            trade(str(i), T0 + i // 3, exchange=exchange, symbol=("BTC/USDT", "ETH/USDT")[i % 2])
            for i in ids
        ]
        bounds = sorted({0, len(stream), *(c for c in cuts if c <= len(stream))})
        batches = [stream[lo:hi] for lo, hi in itertools.pairwise(bounds)]
        if replay:
            batches += batches  # a redelivery after a crash
        unique = {key(t): t for t in reversed(stream)}  # first occurrence wins
        returned: list[Trade] = []
        for batch in batches:
            returned.extend(await store.insert_trades(batch))
        assert len(returned) == len(unique)  # nothing returned twice
        assert {key(t): t for t in returned} == unique
        stored = await all_trades(store, exchange)
        assert {key(t): t for t in stored} == unique
        assert len(stored) == len(unique)
        assert await store.count_trades(exchange) == len(unique)

    # ---- candles --------------------------------------------------------------------

    async def test_candle_upsert_is_idempotent(self, store: MarketStore) -> None:
        series = [candle(T0 + i * MINUTE) for i in range(5)]
        await store.upsert_candles(series)
        await store.upsert_candles(series)
        assert await store.count_candles() == 5
        assert await store.get_candles("sim", "BTC/USDT", "1m") == series

    async def test_candle_upsert_replaces_by_natural_key(self, store: MarketStore) -> None:
        await store.upsert_candles([candle(T0, close=101.0, trades=3)])
        revised = candle(T0, close=105.0, trades=9)
        await store.upsert_candles([revised])
        assert await store.get_candles("sim", "BTC/USDT", "1m") == [revised]
        assert await store.count_candles() == 1

    async def test_last_duplicate_in_one_upsert_wins(self, store: MarketStore) -> None:
        await store.upsert_candles([candle(T0, close=101.0), candle(T0, close=103.0)])
        assert await store.get_candles("sim", "BTC/USDT", "1m") == [candle(T0, close=103.0)]

    async def test_stored_candles_read_back_closed(self, store: MarketStore) -> None:
        c = candle(T0)
        await store.upsert_candles([dataclasses.replace(c, closed=False)])
        (back,) = await store.get_candles("sim", "BTC/USDT", "1m")
        assert back.closed is True
        assert back == c

    async def test_get_candles_range_limit_and_order(self, store: MarketStore) -> None:
        series = [candle(T0 + i * MINUTE) for i in range(10)]
        await store.upsert_candles(list(reversed(series)))
        get = store.get_candles
        assert await get("sim", "BTC/USDT", "1m") == series
        assert await get("sim", "BTC/USDT", "1m", start=series[2].open_time) == series[2:]
        # end is exclusive: a candle opening exactly at end is not included
        assert await get("sim", "BTC/USDT", "1m", end=series[4].open_time) == series[:4]
        assert (
            await get("sim", "BTC/USDT", "1m", start=T0 + 2 * MINUTE - 1, end=T0 + 5 * MINUTE)
            == series[2:5]
        )
        assert await get("sim", "BTC/USDT", "1m", limit=3) == series[:3]
        newest = await get("sim", "BTC/USDT", "1m", limit=3, newest_first=True)
        assert newest == series[:-4:-1]
        assert await get("sim", "BTC/USDT", "1m", newest_first=True) == series[::-1]
        ranged = await get("sim", "BTC/USDT", "1m", end=series[5].open_time, newest_first=True)
        assert ranged == series[4::-1]
        assert await get("sim", "BTC/USDT", "1m", start=T0 + 99 * MINUTE) == []
        assert await get("sim", "BTC/USDT", "1m", limit=0) == []

    async def test_get_candles_reads_one_series(self, store: MarketStore) -> None:
        mine = candle(T0)
        others = [
            candle(T0, interval="5m"),
            candle(T0, symbol="ETH/USDT"),
            candle(T0, exchange="other"),
        ]
        await store.upsert_candles([mine, *others])
        assert await store.get_candles("sim", "BTC/USDT", "1m") == [mine]
        assert await store.get_candles("other", "BTC/USDT", "1m") == [others[2]]
        assert await store.get_candles("sim", "XRP/USDT", "1m") == []
        assert await store.count_candles() == 4
        assert await store.count_candles("sim") == 3
        assert await store.count_candles("nowhere") == 0

    async def test_last_candle_per_series(self, store: MarketStore) -> None:
        assert await store.last_candle("sim", "BTC/USDT", "1m") is None
        await store.upsert_candles(
            [
                candle(T0 + 2 * MINUTE),
                candle(T0),
                candle(T0 + 9 * MINUTE, interval="5m"),
                candle(T0 + 7 * MINUTE, symbol="ETH/USDT"),
                candle(T0 + 8 * MINUTE, exchange="other"),
            ]
        )
        assert await store.last_candle("sim", "BTC/USDT", "1m") == candle(T0 + 2 * MINUTE)
        last_5m = await store.last_candle("sim", "BTC/USDT", "5m")
        assert last_5m == candle(T0 + 9 * MINUTE, interval="5m")
        assert await store.last_candle("other", "ETH/USDT", "1m") is None

    # ---- trade reads ----------------------------------------------------------------

    async def test_get_trades_range_limit_and_series(self, store: MarketStore) -> None:
        mine = [trade(f"t{i}", T0 + i * 10) for i in range(6)]
        await store.insert_trades(
            [*reversed(mine), trade("t1", T0, symbol="ETH/USDT"), trade("t1", T0, exchange="x")]
        )
        get = store.get_trades
        assert await get("sim", "BTC/USDT") == mine
        assert await get("sim", "BTC/USDT", start=T0 + 20) == mine[2:]
        assert await get("sim", "BTC/USDT", end=T0 + 20) == mine[:2]  # end exclusive
        assert await get("sim", "BTC/USDT", start=T0 + 5, end=T0 + 41) == mine[1:5]
        assert await get("sim", "BTC/USDT", limit=2) == mine[:2]
        assert await get("sim", "BTC/USDT", limit=0) == []
        assert await get("sim", "ETH/USDT") == [trade("t1", T0, symbol="ETH/USDT")]
        assert await get("x", "BTC/USDT") == [trade("t1", T0, exchange="x")]

    async def test_iter_trades_is_ordered_and_complete(self, store: MarketStore) -> None:
        # Many trades share a millisecond, and two markets reuse the same trade
        # ids, so a page boundary falls inside runs of equal (ts, id).
        stream = [
            trade(f"{i:03d}", T0 + i // 10, symbol=symbol, price=100.0 + i)
            for i in range(95)
            for symbol in ("BTC/USDT", "ETH/USDT")
        ]
        stream.append(trade("early", T0 - 5))  # before start: never replayed
        stream.append(trade("zzz", T0 + 3, exchange="other"))
        await store.insert_trades(stream[::-1])
        batches = [b async for b in store.iter_trades("sim", start=T0, batch_size=7)]
        assert all(len(b) == 7 for b in batches[:-1])
        assert 1 <= len(batches[-1]) <= 7
        flat = [t for b in batches for t in b]
        assert [(t.ts, t.id) for t in flat] == sorted((t.ts, t.id) for t in flat)
        assert len(flat) == 190
        assert {key(t): t for t in flat} == {key(t): t for t in stream[:190]}

    async def test_iter_trades_start_and_empty(self, store: MarketStore) -> None:
        assert [b async for b in store.iter_trades("sim", start=0)] == []
        stream = [trade(str(i), T0 + i) for i in range(10)]
        await store.insert_trades(stream)
        batches = [b async for b in store.iter_trades("sim", start=T0 + 4, batch_size=3)]
        assert [t.id for b in batches for t in b] == [str(i) for i in range(4, 10)]
        assert [b async for b in store.iter_trades("sim", start=T0 + 10)] == []
        exact = [b async for b in store.iter_trades("sim", start=T0 + 4, batch_size=6)]
        assert [len(b) for b in exact] == [6]

    async def test_last_trade_ts_per_exchange(self, store: MarketStore) -> None:
        assert await store.last_trade_ts("sim") is None
        await store.insert_trades(
            [
                trade("1", T0 + 50),
                trade("2", T0 + 10, symbol="ETH/USDT"),
                trade("3", T0 + 99, exchange="other"),
            ]
        )
        assert await store.last_trade_ts("sim") == T0 + 50
        assert await store.last_trade_ts("other") == T0 + 99
        assert await store.last_trade_ts("absent") is None

    async def test_exchanges_are_isolated(self, store: MarketStore) -> None:
        # Trade ids are only unique per exchange and market.
        a = trade("42", exchange="alpha")
        b = trade("42", exchange="beta")
        c = trade("42", exchange="alpha", symbol="ETH/USDT")
        assert await store.insert_trades([a, b, c]) == [a, b, c]
        assert await store.count_trades() == 3
        assert await store.count_trades("alpha") == 2
        assert await store.count_trades("beta") == 1
        assert await store.count_trades("gamma") == 0
        assert await all_trades(store, "beta") == [b]

    async def test_ping(self, store: MarketStore) -> None:
        await store.ping()
