"""The strategy interface and the built-ins: parameters, context, and each built-in's signals.

Built-in signals are checked against crosses of TA-Lib's indicator values (an
independent implementation) on the real Coinbase hourly candles; the moving
average cross also on a series small enough to follow by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import numpy as np
import pytest
import talib

from cryptodesk.adapters.files.candle_files import read_candles
from cryptodesk.analytics.backtest import BacktestConfig, CandleArrays, run_backtest
from cryptodesk.analytics.strategies import STRATEGIES, build_strategy, describe, parse_param_items
from cryptodesk.analytics.strategy import (
    FLAT,
    LONG,
    SHORT,
    Context,
    Decision,
    Position,
    Strategy,
    StrategyError,
    StrategyParam,
    StrategyRunner,
)
from cryptodesk.domain.interval import Interval
from cryptodesk.domain.market import Candle
from cryptodesk.domain.timeutil import to_iso
from tests.shared_data import SHARED_DATA

HOURLY = SHARED_DATA / "cryptodatadownload_coinbase_btcusd_1h.csv"
N = 4000  # enough candles for dozens of signals of each built-in


@cache
def real() -> list[Candle]:
    return read_candles(
        HOURLY, exchange="coinbase", symbol="BTC/USD", interval=Interval.parse("1h")
    ).candles


def decisions(strategy: Strategy, closes: Sequence[float]) -> list[Decision | None]:
    """Feed closes as candles (open = high = low = close), keeping the position as decided."""
    runner = StrategyRunner(strategy)
    side, out = 0, []
    for i, c in enumerate(closes):
        decided = runner.on_candle(
            i * 3_600_000, c, c, c, c, 1.0, Position(side, 1.0 if side else 0.0)
        )
        side = {LONG: 1, SHORT: -1, FLAT: 0, None: side}[decided]
        out.append(decided)
    return out


def test_built_ins_are_listed_with_their_defaults() -> None:
    assert list(STRATEGIES) == ["ma_cross", "rsi_reversion", "macd_trend", "bollinger_breakout"]
    assert build_strategy("ma_cross").values == {"fast": 50, "slow": 200}
    assert build_strategy("MA_Cross", {"fast": "20", "slow": 100}).values == {
        "fast": 20,
        "slow": 100,
    }
    assert build_strategy("rsi_reversion", {"oversold": "25.5"}).values == {
        "period": 14, "oversold": 25.5, "overbought": 70.0,
    }  # fmt: skip
    assert describe(STRATEGIES["ma_cross"]).startswith("ma_cross (fast=50 slow=200): long when")


@pytest.mark.parametrize(
    ("name", "params", "message", "field"),
    [
        ("nope", {}, "unknown strategy 'nope'; built-in: ma_cross, rsi_reversion, macd_trend, "
         "bollinger_breakout", "strategy"),
        ("ma_cross", {"fsat": 1}, "ma_cross has no parameter 'fsat'; its parameters: fast, slow",
         "params"),
        ("ma_cross", {"fast": "abc"}, "ma_cross parameter fast 'abc' is not an integer", "params"),
        ("ma_cross", {"fast": 2.5}, "ma_cross parameter fast 2.5 is not an integer", "params"),
        ("ma_cross", {"fast": True}, "ma_cross parameter fast True is not an integer", "params"),
        ("ma_cross", {"fast": 0}, "ma_cross parameter fast 0 is out of range 1..100000", "params"),
        ("ma_cross", {"fast": 200}, "ma_cross: fast (200) must be below slow (200)", "params"),
        ("rsi_reversion", {"oversold": 80}, "rsi_reversion: oversold (80) must be below "
         "overbought (70)", "params"),
        ("bollinger_breakout", {"k": "wide"}, "bollinger_breakout parameter k 'wide' is not a "
         "number", "params"),
        ("macd_trend", {"signal": "nan"}, "macd_trend parameter signal 'nan' is not an integer",
         "params"),
    ],
)  # fmt: skip
def test_bad_strategies_and_parameters_are_one_line_errors(
    name: str, params: dict[str, object], message: str, field: str
) -> None:
    with pytest.raises(StrategyError) as caught:
        build_strategy(name, params)
    assert (str(caught.value), caught.value.field) == (message, field)


def test_param_items_and_typed_conversion() -> None:
    assert parse_param_items(["fast=50", " slow = 200 "]) == {"fast": "50", "slow": "200"}
    with pytest.raises(StrategyError, match=r"^--param 'fast' is not NAME=VALUE$"):
        parse_param_items(["fast"])
    with pytest.raises(StrategyError, match=r"^--param fast is given twice$"):
        parse_param_items(["fast=1", "fast=2"])
    flag = StrategyParam("short", bool, False)
    assert [flag.convert("s", v) for v in ("yes", "0", True, "OFF")] == [True, False, True, False]
    with pytest.raises(StrategyError, match=r"^s parameter short 'maybe' is not true or false$"):
        flag.convert("s", "maybe")
    level = StrategyParam("level", float, 30.0, 0, 100)
    with pytest.raises(StrategyError, match=r"^s parameter level 'nan' is out of range 0..100$"):
        level.convert("s", "nan")


def test_ma_cross_by_hand_and_a_touch_is_not_a_cross() -> None:
    # SMA2: -, 9.5, 8.5, 7.5, 8.5, 11, 10, 6.5   SMA3: -, -, 9, 8, 8.33, 9.67, 10, 8.33
    closes = [10, 9, 8, 7, 10, 12, 8, 5, 4, 9, 12]
    got = decisions(build_strategy("ma_cross", {"fast": 2, "slow": 3}), closes)
    # Candle 6: both are 10 (a touch); candle 7 goes below from equal: no cross either.
    # SMA2 8: 4.5 < SMA3 5.67; 9: 6.5 > 6; 10: 10.5 > 8.33.
    assert got == [None, None, None, None, LONG, None, None, None, None, LONG, None]
    assert decisions(build_strategy("ma_cross", {"fast": 2, "slow": 3}), [10, 12, 14, 9, 8]) == [
        None, None, None, SHORT, None,
    ]  # fmt: skip


def crosses(a: np.ndarray, b: np.ndarray | float) -> tuple[set[int], set[int]]:
    """Indices where ``a`` crosses above / below ``b`` (strictly, as Context does)."""
    b = np.broadcast_to(b, a.shape)
    up = {i for i in range(1, len(a)) if a[i - 1] < b[i - 1] and a[i] > b[i]}
    down = {i for i in range(1, len(a)) if a[i - 1] > b[i - 1] and a[i] < b[i]}
    return up, down


def at(got: list[Decision | None], wanted: Decision) -> set[int]:
    return {i for i, d in enumerate(got) if d == wanted}


def closes() -> np.ndarray:
    return np.array([c.close for c in real()[:N]])


def test_rsi_reversion_signals_are_tallib_rsi_crossing_its_levels() -> None:
    close = closes()
    rsi = talib.RSI(close, 14)
    got = decisions(build_strategy("rsi_reversion"), close.tolist())
    long_at, short_at = crosses(rsi, 30.0)[1], crosses(rsi, 70.0)[0]
    assert min(len(long_at), len(short_at)) > 10
    assert (at(got, LONG), at(got, SHORT), at(got, FLAT)) == (long_at, short_at, set())


def test_macd_trend_signals_are_talib_macd_crossing_its_signal_line() -> None:
    close = closes()
    line, signal, _ = talib.MACD(close, 12, 26, 9)
    got = decisions(build_strategy("macd_trend"), close.tolist())
    up, down = crosses(line, signal)
    assert len(up) > 50
    assert (at(got, LONG), at(got, SHORT)) == (up, down)


def test_bollinger_breakout_enters_on_the_outer_bands_and_leaves_on_the_middle() -> None:
    close = closes()
    upper, middle, lower = talib.BBANDS(close, 20, 2.0, 2.0, 0)
    (up, _), (_, down) = crosses(close, upper), crosses(close, lower)
    back_up, back_down = crosses(close, middle)
    expected, side = [], 0
    for i in range(len(close)):
        if i in up:
            decided: Decision | None = LONG
        elif i in down:
            decided = SHORT
        elif (side > 0 and i in back_down) or (side < 0 and i in back_up):
            decided = FLAT
        else:
            decided = None
        side = {LONG: 1, SHORT: -1, FLAT: 0, None: side}[decided]
        expected.append(decided)
    got = decisions(build_strategy("bollinger_breakout"), close.tolist())
    assert len(at(got, FLAT)) > 10
    assert got == expected


class Probe(Strategy):
    name = "probe"

    def __init__(self, specs: tuple[str, ...], answer: object = None) -> None:
        super().__init__()
        self.specs, self.answer = specs, answer
        self.ctx: Context | None = None

    def indicators(self) -> tuple[str, ...]:
        return self.specs

    def on_candle(self, ctx: Context) -> Decision | None:
        self.ctx = ctx
        return self.answer  # type: ignore[return-value]


def test_the_context_gives_values_by_spec_column_and_output() -> None:
    probe = Probe(("sma:2", "macd:2:3:2"))
    runner = StrategyRunner(probe)
    for i, c in enumerate([10.0, 11.0, 13.0, 16.0, 20.0]):
        runner.on_candle(i, c, c + 1, c - 1, c, 5.0 + i)
    ctx = probe.ctx
    assert ctx is not None
    assert (ctx.ts, ctx.index, ctx.open, ctx.high, ctx.low, ctx.close, ctx.volume) == (
        4, 4, 20.0, 21.0, 19.0, 20.0, 9.0,
    )  # fmt: skip
    assert (ctx["sma:2"], ctx["sma_2"], ctx.prev("sma:2"), ctx["close"]) == (18.0, 18.0, 14.5, 20.0)
    macd = ctx["macd:2:3:2"]
    assert isinstance(macd, tuple)
    assert (ctx["macd_line_2_3_2"], ctx["macd_signal_2_3_2"], ctx["macd_hist_2_3_2"]) == macd
    assert ctx.crossed_above("close", 19.5) is True  # 16, then 20
    assert ctx.crossed_below(19.5, "close") is True
    assert ctx.crossed_above("close", "sma:2") is False  # it was above its SMA before too
    with pytest.raises(KeyError, match="has several outputs; name one by its column"):
        ctx.crossed_above("macd:2:3:2", 0.0)
    with pytest.raises(KeyError, match=r"'rsi:14' is not a declared indicator or candle field"):
        ctx["rsi:14"]


def test_bad_specs_and_bad_decisions_are_caught() -> None:
    with pytest.raises(StrategyError, match=r"^probe: unknown indicator 'smma' in 'smma:3'"):
        StrategyRunner(Probe(("smma:3",)))
    with pytest.raises(StrategyError, match=r"^probe: the same indicator is given twice$"):
        StrategyRunner(Probe(("sma:3", "sma:03")))
    runner = StrategyRunner(Probe((), answer="buy"))
    with pytest.raises(ValueError, match=r"^probe\.on_candle returned 'buy'; expected 'long'"):
        runner.on_candle(0, 1.0, 1.0, 1.0, 1.0, 1.0)


def test_the_same_strategy_live_and_in_a_backtest_decides_the_same() -> None:
    """Live, candles arrive one by one; the backtest's entries are the next open after."""
    candles = real()
    runner = StrategyRunner(build_strategy("ma_cross"))
    live = [
        runner.on_candle(c.open_time, c.open, c.high, c.low, c.close, c.volume) for c in candles
    ]
    result = run_backtest(candles, build_strategy("ma_cross"), BacktestConfig())
    ts = [c.open_time for c in candles]
    longs = sorted(at(live, LONG))
    exits = [i for i in sorted(at(live, SHORT)) if i > longs[0]]  # long only: flat ignores it
    assert [ts[i + 1] for i in longs] == [t.entry_ts for t in result.trades]
    assert [ts[i + 1] for i in exits] == [t.exit_ts for t in result.trades]


def test_ma_cross_on_the_real_hourly_candles() -> None:
    result = run_backtest(CandleArrays.of(real()), build_strategy("ma_cross"), BacktestConfig())
    first = result.trades[0]
    assert len(result.trades) == 57
    assert (to_iso(first.entry_ts), first.entry_price) == ("2017-07-19T08:00:00.000Z", 2376.56)
    assert (to_iso(first.exit_ts), first.exit_price) == ("2017-07-26T18:00:00.000Z", 2470.37)
    assert result.metrics.max_drawdown == pytest.approx(0.5142977927655155, rel=1e-9)


def test_trades_equal_backtesting_py_when_it_is_installed() -> None:
    pytest.importorskip("backtesting", reason="backtesting.py is in the bench group only")
    from benchmarks.bench_backtest import compare, ours, theirs

    mine = ours()
    same, their_count = compare(mine, theirs())
    assert (same, their_count, len(mine.trades)) == (57, 57, 57)
