import asyncio
import math
from contextlib import aclosing

import numpy as np
import pytest

from cryptodesk.adapters.exchanges.sim_assets import ASSETS, market_for, start_price
from cryptodesk.adapters.exchanges.sim_model import LatentProcess, SimModel
from cryptodesk.adapters.exchanges.simulator import SimulatedExchange
from cryptodesk.domain.market import OrderBook, Trade

T0 = 1_700_000_000_000
SYMS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]


def run_steps(model: SimModel, n: int) -> tuple[list[Trade], list[OrderBook]]:
    trades: list[Trade] = []
    books: list[OrderBook] = []
    for _ in range(n):
        by_symbol, step_books = model.step()
        for batch in by_symbol.values():
            trades.extend(batch)
        books.extend(step_books)
    return trades, books


def on_increment(value: float, inc: float) -> bool:
    units = value / inc
    return abs(units - round(units)) < 1e-6


@pytest.fixture(scope="module")
def ten_minutes() -> tuple[SimModel, dict[str, list[Trade]], list[OrderBook]]:
    model = SimModel(SYMS, seed=11, start_ms=T0)
    trades, books = model.run_until(T0 + 600_000)
    return model, trades, books


# --- determinism -----------------------------------------------------------------


def test_same_seed_same_stream_whatever_the_reading_pattern():
    a = SimModel(SYMS, seed=5, start_ms=T0)
    b = SimModel(SYMS, seed=5, start_ms=T0)
    trades_a, books_a = run_steps(a, 700)
    # b is read differently: run_until in uneven chunks, then combined steps.
    trades_b: list[Trade] = []
    books_b: list[OrderBook] = []
    for end in (T0 + 3_300, T0 + 41_700):
        by_symbol, books = b.run_until(end)
        trades_b.extend(t for batch in by_symbol.values() for t in batch)
        books_b.extend(books)
    while b.now_ms < T0 + 70_000:
        step_trades, books = b.step_combined()
        trades_b.extend(step_trades)
        books_b.extend(books)
    key = lambda t: (t.symbol, int(t.id))  # noqa: E731
    assert len(trades_a) > 1000
    assert sorted(trades_a, key=key) == sorted(trades_b, key=key)
    assert books_a == books_b


def test_different_seed_or_start_gives_a_different_stream():
    base, _ = run_steps(SimModel(SYMS, seed=5, start_ms=T0), 200)
    other_seed, _ = run_steps(SimModel(SYMS, seed=6, start_ms=T0), 200)
    later, _ = run_steps(SimModel(SYMS, seed=5, start_ms=T0 + 1), 200)
    assert [t.price for t in base] != [t.price for t in other_seed]
    assert not {t.id for t in base} & {t.id for t in later}  # ids never collide across restarts


def test_book_interval_does_not_change_which_trades_happen():
    fine = SimModel(SYMS, seed=3, start_ms=T0, book_interval_ms=100)
    coarse = SimModel(SYMS, seed=3, start_ms=T0, book_interval_ms=5000)
    fine_trades, fine_books = run_steps(fine, 600)
    coarse_trades, _ = run_steps(coarse, 600)
    shape = lambda ts: [(t.id, t.ts, t.amount, t.side) for t in ts]  # noqa: E731
    assert shape(fine_trades) == shape(coarse_trades)
    # Unpublished books have the same touch as published ones would: trades at
    # the touch print the same price, sweeps print beyond it on their side.
    touch = {(b.symbol, b.ts): (b.bids[0][0], b.asks[0][0]) for b in fine_books}
    at_touch = 0
    for f, c in zip(fine_trades, coarse_trades, strict=True):
        bid, ask = touch[(f.symbol, f.ts - (f.ts - T0) % 100)]
        if f.price in (bid, ask):
            at_touch += 1
            assert c.price == f.price
        assert c.price >= ask if c.side == "buy" else c.price <= bid
    assert at_touch > 0.9 * len(fine_trades)


# --- markets and prices ------------------------------------------------------------


def test_start_prices_and_markets_are_realistic():
    model = SimModel([*SYMS, "FOO/USDT", "eth/btc", "BTC/EUR"], seed=1, start_ms=T0)
    assert model.symbols == [*SYMS, "FOO/USDT", "ETH/BTC", "BTC/EUR"]
    trades, books = run_steps(model, 50)
    first = {b.symbol: (b.best_bid(), b.best_ask()) for b in books[:6]}
    for symbol, price in [("BTC/USDT", 67_000), ("ETH/USDT", 3_500), ("SOL/USDT", 150)]:
        bid, ask = first[symbol]
        assert bid is not None
        assert ask is not None
        assert abs((bid + ask) / 2 / price - 1) < 0.001
    assert start_price("FOO/USDT") == 1.0
    assert start_price("ETH/BTC") == pytest.approx(3_500 / 67_000)
    assert start_price("BTC/EUR") < start_price("BTC/USDT")
    btc, eth, sol = (market_for(s) for s in SYMS)
    assert (btc.price_increment, btc.amount_increment) == (0.01, 0.00001)
    assert (eth.price_increment, eth.amount_increment) == (0.01, 0.0001)
    assert (sol.price_increment, sol.amount_increment) == (0.001, 0.001)
    markets = model.markets
    assert all(m.exchange == "sim" and m.min_notional > 0 for m in markets.values())
    assert {t.symbol for t in trades} >= {"BTC/USDT", "ETH/USDT"}


# --- the latent process: correlation, regimes, jumps --------------------------------


@pytest.fixture(scope="module")
def latent_path():
    profiles = [ASSETS["BTC"], ASSETS["ETH"], ASSETS["SOL"]]
    rngs = np.random.SeedSequence(99).spawn(2)
    process = LatentProcess(
        profiles,
        [67_000.0, 3_500.0, 150.0],
        step_ms=60_000,
        regime_rng=np.random.Generator(np.random.PCG64(rngs[0])),
        return_rng=np.random.Generator(np.random.PCG64(rngs[1])),
    )
    return process.advance(300 * 1440)  # 300 days of minutes


def test_returns_are_correlated_as_configured(latent_path):
    returns = np.diff(latent_path.log_mid, axis=0)
    corr = np.corrcoef(returns.T)
    assert corr[0, 1] == pytest.approx(0.95 * 0.84, abs=0.03)  # BTC-ETH ~0.8
    assert corr[0, 2] == pytest.approx(0.95 * 0.74, abs=0.03)  # BTC-SOL ~0.7
    assert corr[1, 2] == pytest.approx(0.84 * 0.74, abs=0.03)


def test_calm_vol_is_realistic_and_regimes_and_jumps_exist(latent_path):
    returns = np.diff(latent_path.log_mid[:, 0])
    regime = latent_path.regime[:-1]
    quiet = (regime == 0) & (latent_path.jumps[:-1] == 0)
    per_year = math.sqrt(365 * 1440)
    calm_vol = returns[quiet].std() * per_year
    volatile_vol = returns[(regime == 1) & (latent_path.jumps[:-1] == 0)].std() * per_year
    assert calm_vol == pytest.approx(0.55, rel=0.05)
    assert volatile_vol == pytest.approx(2 * 0.55, rel=0.1)
    assert 0.55 < returns.std() * per_year < 0.95  # jumps and volatile spells add to calm
    volatile_share = latent_path.regime.mean()
    assert 0.03 < volatile_share < 0.2  # 45 min out of every ~8.75 h on average
    switches = int(np.count_nonzero(np.diff(latent_path.regime)))
    assert switches > 1000  # ~1650 expected in 300 days
    jumps = int(latent_path.jumps.sum())
    expected = 300 * 3.0 * ((1 - volatile_share) + 4 * volatile_share)
    assert abs(jumps - expected) < 6 * math.sqrt(expected)
    standardised = (returns - returns.mean()) / returns.std()
    assert float(np.mean(standardised**4)) > 4.0  # fat tails, a Gaussian has 3


def test_model_mids_follow_a_correlated_path():
    model = SimModel(SYMS, seed=21, start_ms=T0, trade_rates=dict.fromkeys(SYMS, 0.0))
    mids = []
    for i in range(3 * 3600 * 10):  # three hours of 100 ms steps
        model.step()
        if i % 100 == 0:
            mids.append(list(model.mids.values()))
    returns = np.diff(np.log(np.array(mids)), axis=0)
    corr = np.corrcoef(returns.T)
    assert 0.7 < corr[0, 1] < 0.9
    assert 0.6 < corr[0, 2] < 0.8
    assert model.regime in ("calm", "volatile")


# --- trades -------------------------------------------------------------------------


def test_trade_arrivals_are_poisson_at_the_configured_rate(ten_minutes):
    _, trades, _ = ten_minutes
    for symbol, rate in [("BTC/USDT", 8.0), ("ETH/USDT", 6.0), ("SOL/USDT", 4.0)]:
        ts = np.array([t.ts for t in trades[symbol]])
        assert len(ts) / 600 == pytest.approx(rate, abs=5 * math.sqrt(rate / 600))
        per_second = np.bincount((ts - T0) // 1000, minlength=600)
        dispersion = per_second.var() / per_second.mean()  # 1 for Poisson counts
        assert 0.8 < dispersion < 1.2


def test_trades_are_on_increments_ordered_and_uniquely_identified(ten_minutes):
    model, trades, _ = ten_minutes
    for symbol, batch in trades.items():
        market = model.markets[symbol]
        assert all(on_increment(t.price, market.price_increment) for t in batch)
        assert all(on_increment(t.amount, market.amount_increment) for t in batch)
        assert all(t.amount * t.price >= market.min_notional * 0.999 for t in batch)
        ts = [t.ts for t in batch]
        assert ts == sorted(ts)
        assert ts[0] >= T0
        assert ts[-1] < T0 + 600_000
        ids = [int(t.id) for t in batch]
        assert ids == sorted(set(ids))
        assert ids[0] == T0 * 1000
        assert {t.side for t in batch} == {"buy", "sell"}


def test_trade_sizes_are_mostly_small_with_a_heavy_tail(ten_minutes):
    _, trades, _ = ten_minutes
    notional = np.array([t.price * t.amount for batch in trades.values() for t in batch])
    median = float(np.median(notional))
    assert 100 < median < 600
    assert np.mean(notional < 5_000) > 0.9
    assert notional.max() > 200 * median


# --- books --------------------------------------------------------------------------


def test_books_are_valid_periodic_and_sequenced(ten_minutes):
    model, _, books = ten_minutes
    btc = [b for b in books if b.symbol == "BTC/USDT"]
    assert [b.ts for b in btc] == list(range(T0, T0 + 600_000, 1000))
    assert all(len(b.bids) == 20 and len(b.asks) == 20 for b in btc)
    seqs = [b.sequence for b in btc]
    assert seqs == sorted(set(seqs))
    tick = model.markets["BTC/USDT"].price_increment
    spreads = [(b.asks[0][0] - b.bids[0][0]) / tick for b in btc]
    assert min(spreads) >= 0.999
    assert max(spreads) < 15


def test_trades_print_at_levels_of_their_steps_book():
    # A thin unknown coin traded often, so that some trades sweep several levels.
    rates = {"ZZZ/USDT": 50.0}
    model = SimModel(
        [*SYMS, "ZZZ/USDT"], seed=8, start_ms=T0, book_interval_ms=100, trade_rates=rates
    )
    trades, books = model.run_until(T0 + 120_000)
    by_step = {(b.symbol, b.ts): b for b in books}
    swept = 0
    for symbol, batch in trades.items():
        for t in batch:
            book = by_step[(symbol, t.ts - (t.ts - T0) % 100)]
            levels = book.asks if t.side == "buy" else book.bids
            prices = [p for p, _ in levels]
            assert t.price in prices
            if t.side == "buy":
                assert t.price >= book.asks[0][0] > book.bids[0][0]
            else:
                assert t.price <= book.bids[0][0] < book.asks[0][0]
            level = prices.index(t.price)
            if level:  # a sweep took everything resting before its last level
                swept += 1
                assert t.amount > sum(size for _, size in levels[:level]) - 1e-9
    assert sum(map(len, trades.values())) > 5000
    assert swept > 20


# --- arguments ----------------------------------------------------------------------


def test_unknown_base_gets_a_plausible_default():
    model = SimModel(["ZZZ/USDT"], seed=1, start_ms=T0)
    trades, books = model.run_until(T0 + 30_000)
    assert books
    assert 0.9 < books[0].bids[0][0] < 1.1
    assert trades["ZZZ/USDT"]


@pytest.mark.parametrize("speed", [0, -1.0, math.nan])
def test_bad_speed_is_rejected(speed):
    with pytest.raises(ValueError, match="speed"):
        SimulatedExchange(SYMS, seed=1, speed=speed)


def test_bad_symbols_are_rejected():
    with pytest.raises(ValueError, match="symbols must not be empty"):
        SimulatedExchange([], seed=1, speed=1.0)
    with pytest.raises(ValueError, match="symbols must not be empty"):
        SimModel([], seed=1, start_ms=T0)
    with pytest.raises(ValueError, match="BASE/QUOTE"):
        SimModel(["BTCUSDT"], seed=1, start_ms=T0)
    with pytest.raises(ValueError, match="not simulated here"):
        SimulatedExchange(SYMS, seed=1, speed=1.0).watch_trades("DOGE/USDT")


# --- the async exchange -------------------------------------------------------------


async def test_watch_all_yields_exactly_the_model_stream():
    ex = SimulatedExchange(SYMS, seed=4, speed=math.inf, start_ms=T0)
    assert ex.exchange == "sim"
    assert {m.symbol for m in await ex.load_markets()} == set(SYMS)
    got = []
    async with aclosing(ex.watch_all()) as stream:
        async for item in stream:
            got.append(item)
            if len(got) == 300:
                break
    await ex.close()
    model = SimModel(SYMS, seed=4, start_ms=T0)
    expected = []
    while len(expected) < 300:
        trades, books = model.step_combined()
        if trades or books:
            expected.append((trades, books))
    assert got == expected
    for trades, _ in got:
        assert [t.ts for t in trades] == sorted(t.ts for t in trades)


async def test_watch_trades_and_books_match_the_model():
    ex = SimulatedExchange(SYMS, seed=4, speed=math.inf, start_ms=T0)
    got: list[Trade] = []
    async with aclosing(ex.watch_trades("ETH/USDT")) as stream:
        async for batch in stream:
            assert batch
            assert all(t.symbol == "ETH/USDT" for t in batch)
            got.extend(batch)
            if len(got) >= 200:
                break
    books = []
    async with aclosing(ex.watch_order_book("SOL/USDT")) as stream:
        async for book in stream:
            books.append(book)
            if len(books) == 3:
                break
    await ex.close()
    expected, _ = SimModel(SYMS, seed=4, start_ms=T0).run_until(T0 + 3_600_000)
    assert got == expected["ETH/USDT"][: len(got)]
    assert [b.ts - books[0].ts for b in books] == [0, 1000, 2000]
    assert all(b.symbol == "SOL/USDT" for b in books)


async def test_pacing_never_runs_ahead_of_real_time():
    loop = asyncio.get_running_loop()
    speed = 30.0
    ex = SimulatedExchange(SYMS, seed=2, speed=speed, start_ms=T0)
    began = loop.time()
    batches = 0
    async with aclosing(ex.watch_all()) as stream:
        async for trades, books in stream:
            allowed = (loop.time() - began) * speed * 1000
            last = max([t.ts for t in trades] + [b.ts for b in books])
            assert last - T0 < allowed
            batches += 1
            if batches == 5:
                break
    await ex.close()


async def test_fast_engine_yields_to_the_event_loop():
    ex = SimulatedExchange(SYMS, seed=2, speed=math.inf, start_ms=T0)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    async with aclosing(ex.watch_all()) as stream:
        n = 0
        async for _ in stream:
            n += 1
            if n == 2000:
                break
    task.cancel()
    await ex.close()
    assert ticks > 10


async def test_slow_consumer_holds_the_engine_back():
    ex = SimulatedExchange(SYMS, seed=2, speed=math.inf, start_ms=T0, queue_size=2)
    stream = ex.watch_all()
    await anext(stream)
    for _ in range(50):  # let the engine run as far as it can
        await asyncio.sleep(0)
    steps = (ex.sim_now_ms - T0) // 100
    assert steps < 20  # bounded by the queue, not by how long we waited
    await stream.aclose()
    await ex.close()


async def test_close_ends_every_iterator_and_the_engine():
    ex = SimulatedExchange(SYMS, seed=2, speed=1.0)
    received: list[str] = []

    async def drain(name: str, stream) -> None:
        async for _ in stream:
            received.append(name)

    tasks = [
        asyncio.create_task(drain("all", ex.watch_all())),
        asyncio.create_task(drain("trades", ex.watch_trades("BTC/USDT"))),
        asyncio.create_task(drain("book", ex.watch_order_book("BTC/USDT"))),
    ]
    await asyncio.sleep(0.05)
    await ex.close()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=5)  # they end, without errors
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("sim-engine")]
    async for _ in ex.watch_all():
        raise AssertionError("a closed exchange yields nothing")
    await ex.close()  # idempotent


async def test_engine_stops_when_the_last_subscriber_leaves():
    ex = SimulatedExchange(SYMS, seed=2, speed=math.inf, start_ms=T0)
    async with aclosing(ex.watch_all()) as stream:
        await anext(stream)
    for _ in range(5):
        await asyncio.sleep(0)
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("sim-engine")]
    paused_at = ex.sim_now_ms
    async with aclosing(ex.watch_all()) as stream:  # resumes the same timeline
        trades, _ = await anext(stream)
    assert trades[0].ts >= paused_at
    await ex.close()


async def test_a_reader_leaving_never_blocks_the_others():
    ex = SimulatedExchange(SYMS, seed=2, speed=math.inf, start_ms=T0, queue_size=1)
    leaver = ex.watch_all()
    stayer = ex.watch_all()
    both = asyncio.gather(anext(leaver), anext(stayer))  # subscribe both before the engine runs
    first_leaver, first_stayer = await asyncio.wait_for(both, timeout=5)
    assert first_leaver == first_stayer
    for _ in range(5):  # the engine fills the leaver's queue and waits on it
        await asyncio.sleep(0)
    await leaver.aclose()
    for _ in range(50):
        await asyncio.wait_for(anext(stayer), timeout=5)  # a deadlock guard, not a speed check
    await stayer.aclose()
    await ex.close()
