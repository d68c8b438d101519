"""Walk-forward optimisation: window bounds, the grid, the choice of parameters, warm-up
and the absence of look-ahead, on series built so the right answers are known."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from cryptodesk.analytics.backtest import BacktestConfig, CandleArrays, run_backtest
from cryptodesk.analytics.strategies import MaCross, RsiReversion
from cryptodesk.analytics.strategy import (
    FLAT,
    LONG,
    SHORT,
    Context,
    Decision,
    Strategy,
    StrategyError,
    StrategyParam,
)
from cryptodesk.analytics.walkforward import (
    ParamGrid,
    Window,
    backtest_segment,
    count_windows,
    parse_length,
    time_windows,
    walk_forward,
)
from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.interval import DAY_MS, HOUR_MS

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
FREE = BacktestConfig(fee=0.0, allow_short=True)
LONG_ONLY = BacktestConfig(fee=0.0)


def series(closes: list[float], ts: list[int] | None = None) -> CandleArrays:
    """Candles opening at the previous close; high and low bound open and close."""
    c = np.array(closes, np.float64)
    o = np.concatenate(([c[0]], c[:-1]))
    times = np.array(ts if ts is not None else [T0 + k * HOUR_MS for k in range(len(c))])
    return CandleArrays(times, o, np.maximum(o, c), np.minimum(o, c), c, np.ones(len(c)))


class Side(Strategy):
    """Wants one side on every candle: 1 long, -1 short, 0 flat."""

    name = "side"
    params = (StrategyParam("side", int, 0, -1, 1),)
    side: int

    def on_candle(self, ctx: Context) -> Decision | None:
        return LONG if self.side > 0 else SHORT if self.side < 0 else FLAT


# ---- windows ---------------------------------------------------------------------------


def test_rolling_windows_tile_the_series_and_the_last_is_cut_at_the_end() -> None:
    bounds = [(w.is_start, w.is_end, w.oos_end) for w in
              count_windows(105, in_sample=40, out_of_sample=20)]  # fmt: skip
    assert bounds == [(0, 40, 60), (20, 60, 80), (40, 80, 100), (60, 100, 105)]
    assert [w.index for w in count_windows(100, in_sample=40, out_of_sample=20)] == [0, 1, 2]


def test_anchored_windows_start_at_the_first_candle_and_a_step_leaves_gaps() -> None:
    anchored = count_windows(100, in_sample=40, out_of_sample=20, anchored=True)
    assert [(w.is_start, w.is_end, w.oos_end) for w in anchored] == [
        (0, 40, 60), (0, 60, 80), (0, 80, 100),
    ]  # fmt: skip
    stepped = count_windows(105, in_sample=40, out_of_sample=20, step=30)
    assert [(w.is_start, w.oos_start, w.oos_end) for w in stepped] == [
        (0, 40, 60), (30, 70, 90), (60, 100, 105),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("n", "kwargs", "message"),
    [
        (100, {"in_sample": 40, "out_of_sample": 20, "step": 10}, "step (10 candles) is below "
         "the out-of-sample length (20): out-of-sample windows would overlap"),
        (40, {"in_sample": 40, "out_of_sample": 20}, "40 candles leave nothing out of sample "
         "after 40 in sample"),
        (100, {"in_sample": 0, "out_of_sample": 20}, "in-sample and out-of-sample candles must "
         "be positive"),
    ],
)  # fmt: skip
def test_impossible_windows_are_refused(n: int, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(DomainError) as caught:
        count_windows(n, **kwargs)
    assert str(caught.value) == message


def test_time_windows_follow_open_times_across_gaps() -> None:
    # Hourly candles 0..29 and 40..59: ten hours missing after the 30th.
    hours = [*range(30), *range(40, 60)]
    ts = np.array([T0 + h * HOUR_MS for h in hours], np.int64)
    found = time_windows(ts, in_sample_ms=10 * HOUR_MS, out_of_sample_ms=10 * HOUR_MS)
    # Out-of-sample starts at hours 10, 20, 30 (no candle out of sample: left out), 40 (no
    # candle in sample: left out) and 50; hour 60 is past the last candle.
    assert found == [Window(0, 0, 10, 20), Window(1, 10, 20, 30), Window(2, 30, 40, 50)]
    anchored = time_windows(ts, in_sample_ms=10 * HOUR_MS, out_of_sample_ms=10 * HOUR_MS,
                            step_ms=20 * HOUR_MS, anchored=True)  # fmt: skip
    # Hours 30..40 hold no candle: the second window is the one out of sample from hour 50.
    assert anchored == [Window(0, 0, 10, 20), Window(1, 0, 40, 50)]


def test_parse_length_reads_counts_and_durations() -> None:
    assert parse_length("2000", "--in-sample") == (2000, False)
    assert parse_length("90d", "--in-sample") == (90 * DAY_MS, True)
    assert parse_length(" 12h ", "--step") == (12 * HOUR_MS, True)
    assert parse_length("2w", "--step") == (14 * DAY_MS, True)
    for bad in ("0", "-5", "5s", "1.5d", ""):
        with pytest.raises(DomainError, match="is not a candle count"):
            parse_length(bad, "--in-sample")


# ---- the grid --------------------------------------------------------------------------


def test_grid_ranges_are_inclusive_and_refused_combinations_are_skipped() -> None:
    grid = ParamGrid.parse(MaCross, ["fast=10:60:10", "slow=30,40, 50"])
    assert grid.axes == (("fast", (10, 20, 30, 40, 50, 60)), ("slow", (30, 40, 50)))
    valid, skipped = grid.combinations()
    assert skipped == 9
    assert [(p["fast"], p["slow"]) for p in valid] == [
        (10, 30), (10, 40), (10, 50), (20, 30), (20, 40), (20, 50), (30, 40), (30, 50), (40, 50),
    ]  # fmt: skip


def test_float_ranges_and_fixed_parameters() -> None:
    grid = ParamGrid.parse(RsiReversion, ["oversold=20:30:2.5"], {"period": "7"})
    assert grid.fixed == {"period": 7}
    assert grid.axes == (("oversold", (20.0, 22.5, 25.0, 27.5, 30.0)),)
    valid, _ = grid.combinations()
    assert valid[1] == {"period": 7, "oversold": 22.5}


@pytest.mark.parametrize(
    ("items", "fixed", "error", "message"),
    [
        (["speed=1:3:1"], {}, StrategyError, "ma_cross has no parameter 'speed' (--grid); its "
         "parameters: fast, slow"),
        (["fast=0,10"], {}, StrategyError, "ma_cross parameter fast '0' is out of range "
         "1..100000"),
        (["fast=2.5"], {}, StrategyError, "ma_cross parameter fast '2.5' is not an integer"),
        (["fast=10:5:1"], {}, DomainError, "--grid fast='10:5:1' is not START:STOP:STEP with "
         "STEP > 0 and START <= STOP"),
        (["fast=1:5:0"], {}, DomainError, "--grid fast='1:5:0' is not START:STOP:STEP with "
         "STEP > 0 and START <= STOP"),
        (["fast=1,,2"], {}, DomainError, "--grid fast='1,,2' has an empty value"),
        (["fast"], {}, DomainError, "--grid 'fast' is not NAME=VALUES"),
        (["fast=1,2", "fast=3"], {}, DomainError, "parameter fast is given twice"),
        (["fast=1,2"], {"fast": "3"}, DomainError, "parameter fast is given twice"),
        ([], {}, DomainError, "give at least one --grid NAME=VALUES"),
        (["fast=1:200:1", "slow=2:200:1"], {}, DomainError, "the grid has 39800 combinations; "
         "at most 10000"),
    ],
)  # fmt: skip
def test_bad_grids_are_refused_naming_the_item(
    items: list[str], fixed: dict[str, str], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as caught:
        ParamGrid.parse(MaCross, items, fixed)
    assert str(caught.value) == message


# ---- choosing parameters ---------------------------------------------------------------


def up_then_down() -> list[float]:
    """30 candles up 1% each, then 30 down 2% each."""
    closes = [100.0 * 1.01**k for k in range(30)]
    return closes + [closes[-1] * 0.98 ** (k + 1) for k in range(30)]


def test_each_window_chooses_the_side_its_in_sample_candles_paid() -> None:
    candles = series(up_then_down())
    windows = count_windows(60, in_sample=20, out_of_sample=10)
    grid = ParamGrid.parse(Side, ["side=-1:1:1"])
    result = walk_forward(candles, grid, windows, FREE, interval_ms=HOUR_MS,
                          objective="total_return")  # fmt: skip
    # In sample: [0, 20) and [10, 30) rise; [20, 40) rises 9% and falls 18%; [30, 50) falls.
    assert [w.params["side"] for w in result.windows] == [1, 1, -1, -1]
    assert (result.combinations, result.skipped, result.warmup) == (3, 0, 20)
    # Out of sample, window 0 is long from the open of its second candle to its last close.
    c, o = candles.close, candles.open
    first = result.windows[0].out_of_sample
    assert first.metrics.total_return == pytest.approx(c[29] / o[21] - 1, rel=1e-12)
    assert [(t.entry_ts, t.exit_ts, t.exit_reason) for t in first.trades] == [
        (int(candles.ts[21]), int(candles.ts[29]), "end")
    ]
    # Window 1 stays long into the fall and loses; windows 2 and 3 are short (all in at the
    # open, so equity grows by 1 + (open - close) / open) and gain.
    growth = [c[29] / o[21], c[39] / o[31], 2 - c[49] / o[41], 2 - c[59] / o[51]]
    assert result.metrics.final_equity == pytest.approx(10_000 * math.prod(growth), rel=1e-9)
    assert result.metrics.trades == 4


def test_ties_keep_the_first_combination_and_the_objective_can_be_minimised() -> None:
    flat = series([100.0] * 60)
    windows = count_windows(60, in_sample=20, out_of_sample=10)
    grid = ParamGrid.parse(Side, ["side=-1:1:1"])
    tied = walk_forward(flat, grid, windows, FREE, interval_ms=HOUR_MS, objective="total_return")
    assert [w.params["side"] for w in tied.windows] == [-1, -1, -1, -1]
    # Sharpe of a flat curve is undefined (NaN) for every side: the first one is kept.
    assert [w.params["side"] for w in walk_forward(flat, grid, windows, FREE,
            interval_ms=HOUR_MS).windows] == [-1, -1, -1, -1]  # fmt: skip
    least_dd = walk_forward(series(up_then_down()), grid, windows, FREE, interval_ms=HOUR_MS,
                            objective="max_drawdown")  # fmt: skip
    # No drawdown: flat, or long while prices rise at every close, or short while they fall;
    # ties keep the first side in grid order.
    assert [w.params["side"] for w in least_dd.windows] == [0, 0, 0, -1]


def test_an_unknown_objective_or_an_empty_grid_is_refused() -> None:
    candles = series(up_then_down())
    windows = count_windows(60, in_sample=20, out_of_sample=10)
    with pytest.raises(DomainError, match="objective 'alpha' is not one of sharpe, sortino"):
        walk_forward(candles, ParamGrid.parse(Side, ["side=1"]), windows, interval_ms=HOUR_MS,
                     objective="alpha")  # fmt: skip
    refused = ParamGrid.parse(MaCross, ["fast=50,60", "slow=20"])
    with pytest.raises(DomainError) as caught:
        walk_forward(candles, refused, windows, interval_ms=HOUR_MS)
    assert str(caught.value) == "no valid parameter combination in the grid (2 refused by ma_cross)"


# ---- no look-ahead ---------------------------------------------------------------------


def test_out_of_sample_curves_are_stitched_with_the_cash_carried_over() -> None:
    candles = series(up_then_down())
    windows = count_windows(60, in_sample=20, out_of_sample=10)
    grid = ParamGrid.parse(Side, ["side=-1:1:1"])
    result = walk_forward(candles, grid, windows, interval_ms=HOUR_MS, objective="total_return")
    assert result.ts.tolist() == candles.ts[20:].tolist()
    assert result.equity.tolist() == [
        v for w in result.windows for v in w.out_of_sample.equity.tolist()
    ]
    cash = [w.out_of_sample.metrics.initial_cash for w in result.windows]
    ends = [w.out_of_sample.metrics.final_equity for w in result.windows]
    assert cash == [10_000.0, *ends[:-1]]
    for w in result.windows:
        seg = w.out_of_sample
        assert seg.ts.tolist() == candles.ts[w.window.oos_start : w.window.oos_end].tolist()
        assert all(seg.ts[1] <= t.entry_ts and t.exit_ts <= seg.ts[-1] for t in seg.trades)


def test_the_future_never_changes_a_window() -> None:
    closes = up_then_down()
    windows = count_windows(60, in_sample=20, out_of_sample=10)
    grid = ParamGrid.parse(Side, ["side=-1:1:1"])

    def run(prices: list[float]) -> list[tuple[str, ...]]:
        result = walk_forward(series(prices), grid, windows, FREE, interval_ms=HOUR_MS,
                              objective="total_return")  # fmt: skip
        # As text: NaN metrics (no losing trade) then compare equal.
        return [(repr(w.params), repr(w.in_sample), repr(w.out_of_sample.metrics))
                for w in result.windows]  # fmt: skip

    base = run(closes)
    # Turn everything after window 1's out-of-sample end (candle 40) upside down.
    changed = run(closes[:40] + [closes[39] * 1.05 ** (k + 1) for k in range(20)])
    assert changed[:2] == base[:2]
    assert changed[2:] != base[2:]
    # Change window 1's out-of-sample candles only: its choice and in-sample score stay.
    shaken = run(closes[:30] + [closes[29] * 1.03 ** (k + 1) for k in range(30)])
    assert shaken[1][:2] == base[1][:2]
    assert shaken[1][2] != base[1][2]


def falling_then_jump(at: int) -> CandleArrays:
    """Closes falling by 1 per candle, a jump to 200 at candle ``at``, then falling again."""
    return series([100.0 - k if k < at else 200.0 - (k - at) for k in range(40)])


def test_out_of_sample_indicators_are_warmed_up_on_earlier_candles() -> None:
    # SMA(2) crosses above SMA(4) on candle 20, the first out-of-sample candle.
    candles = falling_then_jump(20)
    warm = backtest_segment(candles, MaCross(fast=2, slow=4), 20, 30, LONG_ONLY, warmup=20,
                            interval_ms=HOUR_MS)  # fmt: skip
    assert [(t.entry_ts, t.entry_price) for t in warm.trades] == [
        (int(candles.ts[21]), float(candles.open[21]))
    ]
    # Without warm-up SMA(4) is NaN until candle 23 and the cross is never seen.
    cold = backtest_segment(candles, MaCross(fast=2, slow=4), 20, 30, LONG_ONLY, warmup=0,
                            interval_ms=HOUR_MS)  # fmt: skip
    assert cold.trades == []
    # The same as a plain backtest of candles 20..29.
    plain = run_backtest(_cut(candles, 20, 30), MaCross(fast=2, slow=4), LONG_ONLY)
    assert cold.equity.tolist() == plain.equity.tolist()


def test_a_signal_on_a_warm_up_candle_is_not_traded() -> None:
    # The cross happens on candle 19, the last warm-up candle: nothing is bought.
    candles = falling_then_jump(19)
    seg = backtest_segment(candles, MaCross(fast=2, slow=4), 20, 30, LONG_ONLY, warmup=20,
                           interval_ms=HOUR_MS)  # fmt: skip
    assert seg.trades == []
    assert seg.equity.tolist() == [10_000.0] * 10
    assert (seg.exposed, seg.metrics.exposure) == (0, 0.0)


def _cut(c: CandleArrays, a: int, b: int) -> CandleArrays:
    return CandleArrays(c.ts[a:b], c.open[a:b], c.high[a:b], c.low[a:b], c.close[a:b],
                        c.volume[a:b])  # fmt: skip


def test_progress_counts_every_backtest() -> None:
    seen: list[tuple[int, int]] = []
    walk_forward(series(up_then_down()), ParamGrid.parse(Side, ["side=0,1"]),
                 count_windows(60, in_sample=20, out_of_sample=20), interval_ms=HOUR_MS,
                 on_progress=lambda done, total: seen.append((done, total)))  # fmt: skip
    # Two windows, each two in-sample runs and one out of sample.
    assert seen == [(1, 6), (2, 6), (3, 6), (4, 6), (5, 6), (6, 6)]
