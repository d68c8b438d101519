"""The backtester on hand-computed scenarios: fills, fees, slippage, stops, sizing, metrics.

Most scenarios use a scripted strategy (decisions at given candle numbers, no
indicators) over five candles whose opens climb 100, 110, ... 140, so every
number below can be checked with a pencil.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pytest

from cryptodesk.analytics.backtest import (
    MAX_SLIPPAGE,
    BacktestConfig,
    BacktestError,
    BacktestTrade,
    CandleArrays,
    Sizing,
    run_backtest,
)
from cryptodesk.analytics.backtest_metrics import compute_metrics
from cryptodesk.analytics.indicators import compute, parse_specs
from cryptodesk.analytics.strategy import FLAT, LONG, SHORT, Context, Decision, Strategy
from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.interval import DAY_MS, HOUR_MS

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
# (open, high, low, close, volume)
ROWS = [
    (100.0, 101.0, 99.0, 100.0, 50.0),
    (110.0, 112.0, 108.0, 111.0, 100.0),
    (120.0, 121.0, 118.0, 119.0, 80.0),
    (130.0, 131.0, 129.0, 130.0, 40.0),
    (140.0, 141.0, 139.0, 140.0, 20.0),
]


def candles(rows: Sequence[tuple[float, float, float, float, float]] = ROWS) -> CandleArrays:
    cols = np.array(rows, dtype=np.float64).T
    ts = T0 + HOUR_MS * np.arange(len(rows), dtype=np.int64)
    return CandleArrays(ts, cols[0], cols[1], cols[2], cols[3], cols[4])


class Scripted(Strategy):
    """Decides ``script[i]`` on candle ``i``; records what it saw."""

    name = "scripted"

    def __init__(self, script: Mapping[int, Decision]) -> None:
        super().__init__()
        self.script = dict(script)
        self.seen: list[tuple[int, float, int]] = []

    def on_candle(self, ctx: Context) -> Decision | None:
        self.seen.append((ctx.ts, ctx.close, ctx.position.side))
        return self.script.get(ctx.index)


def run(script: Mapping[int, Decision], rows: Sequence = ROWS, **config: object):
    settings = {"initial_cash": 1000.0, "fee": 0.0, **config}
    return run_backtest(candles(rows), Scripted(script), BacktestConfig(**settings))  # type: ignore[arg-type]


def only(trades: list[BacktestTrade]) -> BacktestTrade:
    assert len(trades) == 1
    return trades[0]


def test_a_decision_fills_at_the_next_open_and_equity_is_marked_at_each_close() -> None:
    result = run({0: LONG, 2: FLAT})
    trade = only(result.trades)
    qty = 1000 / 110
    assert (trade.side, trade.entry_ts, trade.entry_price) == ("long", T0 + HOUR_MS, 110.0)
    assert (trade.exit_ts, trade.exit_price, trade.exit_reason) == (
        T0 + 3 * HOUR_MS,
        130.0,
        "signal",
    )
    assert trade.qty == pytest.approx(qty, rel=1e-15)
    assert trade.pnl == pytest.approx(qty * 20, rel=1e-12)
    assert trade.bars == 3
    expected = [1000.0, qty * 111, qty * 119, qty * 130, qty * 130]
    assert result.equity.tolist() == pytest.approx(expected, rel=1e-12)
    assert result.metrics.exposure == pytest.approx(2 / 5)


def test_the_strategy_sees_the_position_from_the_candle_after_its_decision() -> None:
    strategy = Scripted({0: LONG, 2: FLAT})
    run_backtest(candles(), strategy, BacktestConfig(fee=0.0))
    sides = [side for _, _, side in strategy.seen]
    assert sides == [0, 1, 1, 0, 0]
    assert [close for _, close, _ in strategy.seen] == [r[3] for r in ROWS]


def test_fees_are_paid_on_both_fills_and_sizing_leaves_room_for_them() -> None:
    result = run({0: LONG, 2: FLAT}, fee=0.001)
    trade = only(result.trades)
    qty = 1000 / (110 * 1.001)
    fee_in, fee_out = qty * 110 * 0.001, qty * 130 * 0.001
    assert trade.qty == pytest.approx(qty, rel=1e-15)
    assert trade.fees == pytest.approx(fee_in + fee_out, rel=1e-12)
    assert trade.pnl == pytest.approx(qty * 20 - fee_in - fee_out, rel=1e-12)
    final = 1000 - qty * 110 - fee_in + qty * 130 - fee_out
    assert result.metrics.final_equity == pytest.approx(final, rel=1e-12)
    assert result.metrics.fees == pytest.approx(fee_in + fee_out, rel=1e-12)


def test_slippage_in_bps_moves_both_fills_against_the_order() -> None:
    trade = only(run({0: LONG, 2: FLAT}, slippage_bps=50).trades)
    assert trade.entry_price == pytest.approx(110 * 1.005, rel=1e-15)
    assert trade.exit_price == pytest.approx(130 * 0.995, rel=1e-15)
    assert trade.qty == pytest.approx(1000 / (110 * 1.005), rel=1e-15)


def test_volume_slippage_is_our_share_of_the_fill_candle_volume() -> None:
    trade = only(run({0: LONG, 2: FLAT}, slippage_volume=0.2).trades)
    qty0 = 1000 / 110  # sized at the slippage-free price first
    entry = 110 * (1 + 0.2 * qty0 / 100)  # candle 1 traded 100
    assert trade.entry_price == pytest.approx(entry, rel=1e-15)
    assert trade.qty == pytest.approx(1000 / entry, rel=1e-15)
    assert trade.exit_price == pytest.approx(130 * (1 - 0.2 * trade.qty / 40), rel=1e-15)


def test_volume_slippage_is_capped_and_a_candle_without_volume_gets_the_cap() -> None:
    rows = [ROWS[0], (110.0, 112.0, 108.0, 111.0, 0.0), *ROWS[2:]]
    trade = only(run({0: LONG, 2: FLAT}, rows, slippage_volume=0.5).trades)
    assert trade.entry_price == pytest.approx(110 * (1 + MAX_SLIPPAGE), rel=1e-15)


def test_when_one_candle_reaches_both_stop_and_target_the_stop_is_assumed_first() -> None:
    rows = [*ROWS[:2], (110.0, 120.0, 100.0, 110.0, 80.0), *ROWS[3:]]
    trade = only(run({0: LONG}, rows, stop_loss=0.05, take_profit=0.05).trades)
    assert (trade.exit_reason, trade.exit_ts) == ("stop_loss", T0 + 2 * HOUR_MS)
    assert trade.exit_price == pytest.approx(110 * 0.95, rel=1e-15)


def test_a_take_profit_is_a_limit_order_paying_the_maker_fee_without_slippage() -> None:
    rows = [*ROWS[:2], (111.0, 120.0, 109.0, 119.0, 80.0), *ROWS[3:]]
    result = run({0: LONG}, rows, take_profit=0.05, fee=0.002, maker_fee=0.0005, slippage_bps=10)
    trade = only(result.trades)
    entry = 110 * 1.001
    qty = 1000 / (entry * 1.002)
    assert (trade.exit_reason, trade.exit_price) == ("take_profit", pytest.approx(entry * 1.05))
    assert trade.fees == pytest.approx(qty * entry * 0.002 + qty * entry * 1.05 * 0.0005, rel=1e-12)


def test_a_stop_gapped_through_fills_at_the_open_and_a_stop_can_hit_the_entry_candle() -> None:
    gap = [*ROWS[:2], (100.0, 101.0, 95.0, 96.0, 80.0), *ROWS[3:]]
    trade = only(run({0: LONG}, gap, stop_loss=0.05).trades)
    assert (trade.exit_reason, trade.exit_price, trade.bars) == ("stop_loss", 100.0, 2)
    same = [ROWS[0], (110.0, 112.0, 100.0, 101.0, 100.0), *ROWS[2:]]
    trade = only(run({0: LONG}, same, stop_loss=0.05).trades)
    assert (trade.exit_reason, trade.exit_ts, trade.bars) == ("stop_loss", T0 + HOUR_MS, 1)
    assert trade.exit_price == pytest.approx(104.5, rel=1e-15)


def test_sizing_by_fraction_by_notional_and_in_whole_lots() -> None:
    half = only(run({0: LONG, 2: FLAT}, sizing=Sizing("fraction", 0.5), fee=0.001).trades)
    assert half.qty == pytest.approx(500 / (110 * 1.001), rel=1e-15)
    fixed = only(run({0: LONG, 2: FLAT}, sizing=Sizing("notional", 330)).trades)
    assert fixed.qty == pytest.approx(3.0, rel=1e-15)
    capped = only(run({0: LONG, 2: FLAT}, sizing=Sizing("notional", 5000)).trades)
    assert capped.qty == pytest.approx(1000 / 110, rel=1e-15)
    lots = only(run({0: LONG, 2: FLAT}, lot=0.5).trades)
    assert lots.qty == 9.0  # 9.09 rounded down to halves


def test_long_only_turns_a_short_signal_into_an_exit() -> None:
    assert run({0: SHORT}).trades == []
    trade = only(run({0: LONG, 2: SHORT}).trades)
    assert (trade.side, trade.exit_price, trade.exit_reason) == ("long", 130.0, "signal")


def test_with_shorts_a_reversal_closes_then_opens_and_the_end_closes_at_the_last_close() -> None:
    result = run({0: LONG, 2: SHORT}, allow_short=True)
    first, second = result.trades
    assert (first.side, first.exit_price, first.exit_ts) == ("long", 130.0, T0 + 3 * HOUR_MS)
    cash = 1000 / 110 * 130
    assert (second.side, second.entry_price, second.entry_ts) == ("short", 130.0, T0 + 3 * HOUR_MS)
    assert second.qty == pytest.approx(cash / 130, rel=1e-12)
    assert (second.exit_price, second.exit_reason) == (140.0, "end")
    assert second.pnl == pytest.approx(-(cash / 130) * 10, rel=1e-12)
    assert result.metrics.final_equity == pytest.approx(cash - cash / 130 * 10, rel=1e-12)


def test_a_short_that_loses_everything_is_closed_and_trading_stops() -> None:
    rows = [*ROWS[:2], (120.0, 310.0, 118.0, 300.0, 80.0), *ROWS[3:]]
    result = run({0: SHORT, 3: LONG}, rows, allow_short=True)
    trade = only(result.trades)
    qty = 1000 / 110
    assert (trade.exit_reason, trade.exit_price) == ("ruined", 300.0)
    assert result.equity.tolist()[2:] == pytest.approx([2000 - qty * 300] * 3, rel=1e-12)
    assert result.metrics.cagr == -1.0


def test_metrics_of_a_known_equity_curve() -> None:
    equity = np.array([110.0, 99.0, 121.0])
    trades = [
        BacktestTrade("long", 1, T0, 1, T0, 1, 0.0, pnl, 0.0, "signal", 1) for pnl in (10, -5, 20)
    ]
    ts = T0 + DAY_MS * np.arange(3, dtype=np.int64)
    m = compute_metrics(equity, 100.0, trades, exposed_bars=2, ts=ts, interval_ms=DAY_MS)
    r = np.array([0.1, -0.1, 121 / 99 - 1])
    assert m.total_return == pytest.approx(0.21, rel=1e-12)
    assert m.periods_per_year == 365.0
    assert m.years == pytest.approx(3 / 365, rel=1e-15)
    assert m.cagr == pytest.approx(1.21 ** (365 / 3) - 1, rel=1e-9)
    assert m.max_drawdown == pytest.approx(0.1, rel=1e-12)
    sample_std = math.sqrt(sum((x - r.mean()) ** 2 for x in r) / 2)
    assert m.sharpe == pytest.approx(r.mean() / sample_std * math.sqrt(365), rel=1e-12)
    assert m.sortino == pytest.approx(r.mean() / math.sqrt(0.01 / 3) * math.sqrt(365), rel=1e-12)
    assert m.calmar == pytest.approx(m.cagr / 0.1, rel=1e-12)
    assert (m.win_rate, m.profit_factor, m.exposure, m.trades) == (2 / 3, 6.0, 2 / 3, 3)


def test_undefined_ratios_are_nan_without_trades() -> None:
    m = run({}).metrics
    assert (m.trades, m.total_return, m.max_drawdown, m.exposure) == (0, 0.0, 0.0, 0.0)
    assert all(math.isnan(v) for v in (m.sharpe, m.sortino, m.calmar, m.win_rate, m.profit_factor))


class Averages(Strategy):
    """Records SMA(3) as it sees it; goes long when the close is above it."""

    name = "averages"

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[float] = []

    def indicators(self) -> tuple[str, ...]:
        return ("sma:3",)

    def on_candle(self, ctx: Context) -> Decision | None:
        self.seen.append(float(ctx["sma:3"]))  # type: ignore[arg-type]
        return LONG if ctx.close > ctx["sma:3"] else FLAT  # type: ignore[operator]


def test_no_look_ahead_the_past_decides_the_same_whatever_the_future_holds() -> None:
    rows = [(p, p + 1, p - 1, p, 10.0) for p in (100.0, 102, 101, 105, 104, 108, 107)]
    future = [*rows[:4], *((p, p + 1, p - 1, p, 10.0) for p in (50.0, 300, 20))]
    a, b = Averages(), Averages()
    ra = run_backtest(candles(rows), a, BacktestConfig(fee=0.0))
    rb = run_backtest(candles(future), b, BacktestConfig(fee=0.0))
    assert a.seen[:4] == b.seen[:4]
    assert ra.equity.tolist()[:4] == rb.equity.tolist()[:4]
    # What it saw on candle i is the indicator over candles 0..i only.
    closes = np.array([r[3] for r in rows])
    expected = compute(parse_specs("sma:3"), {"close": closes})["sma_3"]
    assert a.seen == pytest.approx(expected.tolist(), nan_ok=True, rel=1e-12)


class Peeking(Strategy):
    name = "peeking"

    def on_candle(self, ctx: Context) -> Decision | None:
        return LONG if ctx["next_close"] > ctx.close else None  # type: ignore[operator]


def test_a_strategy_that_peeks_or_raises_stops_the_backtest_with_its_traceback() -> None:
    with pytest.raises(BacktestError) as caught:
        run_backtest(candles(), Peeking(), BacktestConfig())
    assert str(caught.value).startswith(
        "strategy peeking raised on the candle of 2024-01-01T00:00:00.000Z (1 of 5): KeyError:"
    )
    assert "'next_close' is not a declared indicator or candle field" in str(caught.value)
    assert "Traceback (most recent call last)" in caught.value.traceback
    assert 'ctx["next_close"]' in caught.value.traceback

    class Broken(Scripted):
        def on_candle(self, ctx: Context) -> Decision | None:
            return LONG if ctx.index < 2 else ctx.close / 0  # type: ignore[return-value]

    with pytest.raises(
        BacktestError, match=r"\(3 of 5\): ZeroDivisionError: float division by zero"
    ):
        run_backtest(candles(), Broken({}), BacktestConfig())


def test_bad_candles_and_settings_are_domain_errors_naming_the_field() -> None:
    unsorted = candles()
    backwards = CandleArrays(unsorted.ts[::-1].copy(), *(unsorted.open, unsorted.high,
                             unsorted.low, unsorted.close, unsorted.volume))  # fmt: skip
    with pytest.raises(DomainError, match="not strictly ascending"):
        run_backtest(backwards, Scripted({}))
    nan = [ROWS[0], (math.nan, 112.0, 108.0, 111.0, 100.0)]
    with pytest.raises(DomainError, match="positive finite"):
        run_backtest(candles(nan), Scripted({}))
    with pytest.raises(DomainError, match="no candles"):
        run_backtest([], Scripted({}))
    with pytest.raises(DomainError) as caught:
        BacktestConfig(fee=0.2)
    assert (str(caught.value), caught.value.field) == ("fee 0.2 is not in [0, 0.1)", "fee")
    with pytest.raises(DomainError, match="is not fraction:F"):
        Sizing.parse("half")
    with pytest.raises(DomainError, match=r"size fraction 1.5 is not in \(0, 1\]"):
        Sizing.parse("fraction:1.5")
    assert Sizing.parse("notional:250") == Sizing("notional", 250.0)
