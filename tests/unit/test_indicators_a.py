"""SMA, EMA, WMA, RSI, MACD, Bollinger Bands and ATR: TA-Lib is the oracle, on the
real candles of ../shared/data and on generated series; streaming is checked against
vectorised.

Every output must agree with TA-Lib to 1e-9 relative (NaN exactly where TA-Lib's is),
and streaming with vectorised to 1e-12. MACD's outputs are differences of EMAs of
the price, so their rounding is a fraction of the price, not of the (possibly tiny)
difference: they are compared at the price's scale. The streaming SMA, WMA and RSI
repeat TA-Lib's arithmetic, so on the real candles they must equal it bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import talib
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cryptodesk.adapters.files.candle_files import read_candles
from cryptodesk.analytics.indicators import _kernels, averages, momentum, volatility
from cryptodesk.analytics.indicators.base import FloatArray, IndicatorError
from cryptodesk.domain.interval import Interval
from tests.shared_data import SHARED_DATA

Arrays = dict[str, FloatArray]
NAN = math.nan
DEFS = {d.name: d for d in (*averages.DEFS, *momentum.DEFS, *volatility.DEFS)}
# TA-Lib's call for each indicator (SMA middle band, matype 0, in BBANDS).
TALIB: dict[str, Callable[..., tuple[FloatArray, ...]]] = {
    "sma": lambda a, n: (talib.SMA(a["close"], n),),
    "ema": lambda a, n: (talib.EMA(a["close"], n),),
    "wma": lambda a, n: (talib.WMA(a["close"], n),),
    "rsi": lambda a, n: (talib.RSI(a["close"], n),),
    "macd": lambda a, f, s, g: talib.MACD(a["close"], f, s, g),
    "bbands": lambda a, n, k: talib.BBANDS(a["close"], n, k, k, 0),
    "atr": lambda a, n: (talib.ATR(a["high"], a["low"], a["close"], n),),
}
BIT_FOR_BIT = {"sma", "wma", "rsi"}  # streaming repeats TA-Lib's arithmetic
SPECS = [
    ("sma", (1,)), ("sma", (2,)), ("sma", (30,)), ("sma", (200,)),
    ("ema", (1,)), ("ema", (2,)), ("ema", (20,)), ("ema", (200,)),
    ("wma", (2,)), ("wma", (30,)), ("wma", (48,)), ("wma", (49,)), ("wma", (200,)),
    ("rsi", (2,)), ("rsi", (14,)), ("rsi", (100,)),
    ("macd", (12, 26, 9)), ("macd", (2, 3, 1)), ("macd", (5, 35, 5)),
    ("bbands", (20, 2.0)), ("bbands", (2, 1.0)), ("bbands", (5, 2.5)), ("bbands", (50, 0.5)),
    ("atr", (1,)), ("atr", (14,)), ("atr", (100,)),
]  # fmt: skip


@pytest.fixture(scope="module")
def real() -> dict[str, Arrays]:
    files = [("cryptodatadownload_coinbase_btcusd_1h.csv", "coinbase", "BTC/USD", "1h")] + [
        ("bitstamp_btc_eth_ltc_usd_1d.csv", "bitstamp", symbol, "1d")
        for symbol in ("BTC/USD", "ETH/USD", "LTC/USD")
    ]
    found = {}
    for name, exchange, symbol, interval in files:
        candles = read_candles(
            SHARED_DATA / name, exchange=exchange, symbol=symbol, interval=Interval.parse(interval)
        ).candles
        found[f"{exchange} {symbol} {interval}"] = {
            field: np.array([getattr(c, field) for c in candles])
            for field in ("high", "low", "close")
        }
    return found


def vectorised(name: str, a: Arrays, *params: float) -> tuple[FloatArray, ...]:
    definition = DEFS[name]
    result = definition.vectorised(*(a[i] for i in definition.inputs), *params)
    return tuple(result) if definition.multi else (result,)


def streamed(name: str, a: Arrays, *params: float) -> tuple[FloatArray, ...]:
    definition = DEFS[name]
    indicator = definition.streaming(*params)
    rows = zip(*(a[i].tolist() for i in definition.inputs), strict=True)
    values = np.array([indicator.update(*row) for row in rows], dtype=np.float64)
    return tuple(values.reshape(len(values), len(definition.outputs)).T)


def assert_close(ours: FloatArray, expected: FloatArray, rtol: float, scale: float) -> None:
    """NaN exactly where ``expected`` is NaN, elsewhere within ``rtol`` of the value
    or of ``scale``, whichever is larger."""
    assert ours.shape == expected.shape
    assert np.array_equal(np.isnan(ours), np.isnan(expected))
    valid = ~np.isnan(expected)
    bound = rtol * np.maximum(np.abs(expected[valid]), scale)
    assert np.all(np.abs(ours[valid] - expected[valid]) <= bound)


def check(name: str, a: Arrays, *params: float, exact: bool = False) -> None:
    """Vectorised and streaming against TA-Lib, and against each other."""
    expected = TALIB[name](a, *params)
    ours = vectorised(name, a, *params)
    live = streamed(name, a, *params)
    scale = float(np.max(np.abs(a["close"]), initial=0.0)) if name == "macd" else 0.0
    for mine, theirs, stream in zip(ours, expected, live, strict=True):
        assert_close(mine, theirs, 1e-9, scale)
        assert_close(stream, theirs, 1e-9, scale)
        assert_close(stream, mine, 1e-12, scale)
        if exact:
            assert np.array_equal(stream, theirs, equal_nan=True)


# ---- the real candles ----------------------------------------------------------------


@pytest.mark.parametrize(("name", "params"), SPECS)
def test_real_candles_match_talib(
    real: dict[str, Arrays], name: str, params: tuple[float, ...]
) -> None:
    for a in real.values():
        check(name, a, *params, exact=name in BIT_FOR_BIT)


def test_warm_up_is_talib_lookback(real: dict[str, Arrays]) -> None:
    a = real["coinbase BTC/USD 1h"]
    lookbacks = {
        ("sma", (30,)): 29, ("ema", (20,)): 19, ("wma", (30,)): 29, ("rsi", (14,)): 14,
        ("macd", (12, 26, 9)): 33, ("bbands", (20, 2.0)): 19, ("atr", (14,)): 14,
    }  # fmt: skip
    for (name, params), lookback in lookbacks.items():
        for size in (0, 1, lookback, lookback + 1, lookback + 40):
            part = {key: values[:size] for key, values in a.items()}
            for output in (*vectorised(name, part, *params), *streamed(name, part, *params)):
                assert len(output) == size
                assert np.isnan(output[:lookback]).all()
                assert not np.isnan(output[lookback:]).any()
            check(name, part, *params)


# ---- generated series ----------------------------------------------------------------

RETURN = st.floats(-0.08, 0.08, allow_nan=False)
WICK = st.floats(0.0, 0.03, allow_nan=False)


@st.composite
def series(draw: st.DrawFn, max_size: int = 240) -> Arrays:
    """Random walks at any magnitude, with flat stretches and, sometimes, prices on a
    tick grid (so equal closes and barely moving windows happen); highs and lows
    around the close, zero-width candles and gaps from the previous close included."""
    scale = draw(st.sampled_from([1e-9, 1e-4, 1.0, 250.0, 3e4, 1e9]))
    steps: list[float] = []
    for flat, length in draw(st.lists(st.tuples(st.booleans(), st.integers(1, 60)), max_size=6)):
        if flat:
            steps += [0.0] * length
        else:
            steps += draw(st.lists(RETURN, min_size=length, max_size=length))
    steps = steps[:max_size]
    close = scale * np.exp(np.cumsum(steps))
    if draw(st.booleans()):  # ticks of 1e-4 of the scale
        close = np.maximum(np.round(close / scale * 1e4), 1.0) * (scale * 1e-4)
    up = np.array(draw(st.lists(WICK, min_size=len(close), max_size=len(close))))
    down = np.array(draw(st.lists(WICK, min_size=len(close), max_size=len(close))))
    return {"close": close, "high": close * (1.0 + up), "low": close * (1.0 - down)}


@settings(max_examples=150, deadline=None)
@given(
    a=series(),
    period=st.integers(1, 30),
    fast=st.integers(2, 12),
    longer=st.integers(1, 20),
    signal=st.integers(1, 10),
    k=st.sampled_from([0.5, 1.0, 2.0, 3.0]),
)
def test_generated_series_match_talib(
    a: Arrays, period: int, fast: int, longer: int, signal: int, k: float
) -> None:
    check("sma", a, period)
    check("ema", a, period)
    check("wma", a, period)
    check("atr", a, period)
    check("rsi", a, max(2, period))
    check("bbands", a, max(2, period), k)
    check("macd", a, fast, fast + longer, signal)


@settings(max_examples=25, deadline=None)
@given(a=series(max_size=400), period=st.integers(49, 120))
def test_generated_series_long_wma(a: Arrays, period: int) -> None:
    check("wma", a, period)  # the recursive path, restarts included


@pytest.fixture
def short_spans(monkeypatch: pytest.MonkeyPatch) -> None:
    """Spans of a few blocks and an odd tail, so every carry across span edges runs."""
    monkeypatch.setattr(_kernels, "SPAN", 3 * _kernels.BLOCK + 5)


@pytest.mark.usefixtures("short_spans")
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(a=series(), period=st.integers(2, 9))
def test_span_edges_change_nothing(a: Arrays, period: int) -> None:
    for name, params in (("sma", (period,)), ("ema", (period,)), ("rsi", (period,)),
                         ("macd", (period, period + 3, 2)), ("bbands", (period, 2.0)),
                         ("atr", (period,))):  # fmt: skip
        check(name, a, *params)


@pytest.mark.usefixtures("short_spans")
def test_span_edges_on_real_candles(real: dict[str, Arrays]) -> None:
    a = {key: values[:1500] for key, values in real["coinbase BTC/USD 1h"].items()}
    for name, params in SPECS:
        check(name, a, *params)


# ---- conventions, value by value -------------------------------------------------------


def test_sma_ema_wma_by_hand() -> None:
    close = np.array([1.0, 2.0, 3.0, 4.0, 6.0])
    assert averages.sma(close, 3)[2:].tolist() == [2.0, 3.0, 13.0 / 3.0]
    # EMA: SMA seed of the first 2, then k = 2/3.
    np.testing.assert_allclose(averages.ema(close, 2)[1:], [1.5, 2.5, 3.5, 31.0 / 6.0], 1e-15)
    np.testing.assert_allclose(averages.wma(close, 3)[2:], [14 / 6, 20 / 6, 29 / 6], 1e-15)
    for name in ("sma", "ema", "wma"):
        assert np.isnan(DEFS[name].vectorised(close, 3)[:2]).all()
        assert vectorised(name, {"close": close}, 1)[0].tolist() == close.tolist()
        assert streamed(name, {"close": close}, 1)[0].tolist() == close.tolist()


def test_rsi_extremes() -> None:
    rising = np.arange(1.0, 21.0)
    assert momentum.rsi(rising, 14)[14:].tolist() == [100.0] * 6
    assert momentum.rsi(rising[::-1], 14)[14:].tolist() == [0.0] * 6
    flat = np.full(20, 7.5)  # no move at all: TA-Lib says 0, not NaN
    assert momentum.rsi(flat, 14)[14:].tolist() == [0.0] * 6
    assert streamed("rsi", {"close": flat}, 14)[0][14:].tolist() == [0.0] * 6
    # One gain of 2 and one loss of 1 over period 2: RSI = 100 * 1 / (1 + 0.5).
    assert momentum.rsi(np.array([10.0, 12.0, 11.0]), 2)[2] == pytest.approx(200.0 / 3.0)


def test_macd_starts_both_emas_at_the_slow_period() -> None:
    close = np.array([10.0, 11.0, 13.0, 12.0, 15.0, 14.0, 16.0, 18.0, 17.0, 19.0])
    fast, slow, signal = 2, 4, 3
    # TA-Lib: at close 3 the slow EMA is the mean of closes 0..3 and the fast one the
    # mean of closes 2..3 (not an EMA run from close 0); the signal starts 2 lines later.
    fast_ema, slow_ema = (13.0 + 12.0) / 2, (10.0 + 11.0 + 13.0 + 12.0) / 4
    lines = [fast_ema - slow_ema]
    for price in close[slow:]:
        fast_ema += (price - fast_ema) * 2.0 / 3.0
        slow_ema += (price - slow_ema) * 2.0 / 5.0
        lines.append(fast_ema - slow_ema)
    signals = [sum(lines[:3]) / 3.0]
    for line in lines[3:]:
        signals.append(signals[-1] + (line - signals[-1]) * 0.5)
    line, sig, hist = momentum.macd(close, fast, slow, signal)
    for output in (line, sig, hist):
        assert np.isnan(output[:5]).all()
    np.testing.assert_allclose(line[5:], lines[2:], rtol=1e-13)
    np.testing.assert_allclose(sig[5:], signals, rtol=1e-13)
    np.testing.assert_allclose(hist[5:], np.array(lines[2:]) - signals, atol=1e-13)
    check("macd", {"close": close}, fast, slow, signal)


def test_bbands_population_deviation_and_flat_windows() -> None:
    close = np.array([1.0, 2.0, 3.0, 4.0, 4.0, 4.0, 4.0, 4.0])
    upper, middle, lower = volatility.bbands(close, 4, 2.0)
    # Window 1..4: mean 2.5, population variance 1.25 (not 5/3).
    assert middle[3] == 2.5
    assert upper[3] == pytest.approx(2.5 + 2.0 * math.sqrt(1.25), rel=1e-15)
    assert lower[3] == pytest.approx(2.5 - 2.0 * math.sqrt(1.25), rel=1e-15)
    # A flat window after larger moves: deviation exactly 0, as TA-Lib has it.
    assert (upper[7], middle[7], lower[7]) == (4.0, 4.0, 4.0)
    assert streamed("bbands", {"close": close}, 4, 2.0)[0][7] == 4.0
    check("bbands", {"close": close}, 4, 2.0)


def test_bbands_barely_moving_window_after_a_jump() -> None:
    # A jump of 10% then one tick of 1e-7: the narrow windows are summed directly.
    close = np.array([100.0] * 5 + [110.0] * 10 + [110.000011] + [110.0] * 10)
    upper, middle, _ = volatility.bbands(close, 5, 2.0)
    window = close[11:16]
    expected = window.mean() + 2.0 * window.std()
    assert upper[15] == pytest.approx(expected, rel=1e-15)
    assert upper[15] > middle[15]
    check("bbands", {"close": close}, 5, 2.0)


def test_atr_true_range_with_gaps() -> None:
    a = {
        "high": np.array([10.0, 12.0, 9.0, 9.5, 15.0]),
        "low": np.array([9.0, 11.0, 8.0, 8.5, 14.0]),
        "close": np.array([9.5, 11.5, 8.5, 9.0, 14.5]),
    }
    # True ranges of candles 1..4: gap up 12 - 9.5, gap down 11.5 - 8, inside 1, gap 15 - 9.
    ranges = [2.5, 3.5, 1.0, 6.0]
    atr = volatility.atr(a["high"], a["low"], a["close"], 2)
    assert np.isnan(atr[:2]).all()
    assert atr[2] == 3.0
    assert atr[3] == pytest.approx(0.5 * 3.0 + 0.5 * ranges[2])
    assert atr[4] == pytest.approx(0.5 * atr[3] + 0.5 * ranges[3])
    assert volatility.atr(a["high"], a["low"], a["close"], 1)[1:].tolist() == ranges
    check("atr", a, 2)


# ---- parameters and inputs -------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "field", "message"),
    [
        (lambda x: averages.sma(x, 0), "period", "sma period 0 is out of range 1..100000"),
        (lambda x: averages.ema(x, 100_001), "period", "ema period 100001 is out of range"),
        (lambda x: averages.wma(x, 2.0), "period", "wma period must be an integer, got 2.0"),
        (lambda x: momentum.rsi(x, 1), "period", "rsi period 1 is out of range 2..100000"),
        (lambda x: momentum.rsi(x, True), "period", "rsi period must be an integer"),
        (lambda x: momentum.macd(x, 1, 26, 9), "fast", "macd fast 1 is out of range"),
        (lambda x: momentum.macd(x, 12, 26, 0), "signal", "macd signal 0 is out of range"),
        (lambda x: momentum.macd(x, 26, 12, 9), "fast", "macd fast must be shorter than slow"),
        (lambda x: momentum.macd(x, 12, 12, 9), "fast", "macd fast must be shorter than slow"),
        (lambda x: volatility.bbands(x, 1, 2.0), "period", "bbands period 1 is out of range"),
        (lambda x: volatility.bbands(x, 20, -1.0), "k", "bbands k -1.0 is out of range 0..100"),
        (lambda x: volatility.bbands(x, 20, NAN), "k", "bbands k nan is out of range"),
        (lambda x: volatility.bbands(x, 20, "2"), "k", "bbands k must be a number, got '2'"),
        (lambda x: volatility.atr(x, x, x, 0), "period", "atr period 0 is out of range 1..100000"),
        # The streaming classes check the same way.
        (lambda _: averages.SimpleMovingAverage(0), "period", "sma period 0 is out of range"),
        (lambda _: averages.ExponentialMovingAverage(-3), "period", "ema period -3 is out of"),
        (lambda _: averages.WeightedMovingAverage(1.5), "period", "wma period must be an int"),
        (lambda _: momentum.RelativeStrengthIndex(1), "period", "rsi period 1 is out of range"),
        (lambda _: momentum.MACD(9, 9, 9), "fast", "macd fast must be shorter than slow"),
        (lambda _: volatility.BollingerBands(20, 101.0), "k", "bbands k 101.0 is out of range"),
        (lambda _: volatility.AverageTrueRange(0), "period", "atr period 0 is out of range"),
    ],
)
def test_bad_parameters_name_the_parameter(call: Any, field: str, message: str) -> None:
    with pytest.raises(IndicatorError, match=f"^{message}") as caught:
        call(np.ones(50))
    assert caught.value.field == field


def test_inputs_must_be_one_dimensional_and_of_one_length() -> None:
    with pytest.raises(IndicatorError, match=r"^atr inputs differ in length: high=3, low=2, cl"):
        volatility.atr(np.ones(3), np.ones(2), np.ones(3), 1)
    with pytest.raises(IndicatorError, match=r"^sma close must be one-dimensional$"):
        averages.sma(np.ones((2, 2)), 1)
    # Lists are taken as arrays; nothing is written into the caller's arrays.
    close = [3.0, 1.0, 2.0, 5.0]
    assert averages.sma(close, 2)[1:].tolist() == [2.0, 1.5, 3.5]
    assert close == [3.0, 1.0, 2.0, 5.0]


def test_definitions() -> None:
    assert [d.name for d in averages.DEFS] == ["sma", "ema", "wma"]
    assert [d.name for d in momentum.DEFS] == ["rsi", "macd"]
    assert [d.name for d in volatility.DEFS] == ["bbands", "atr"]
    macd, bbands, atr = DEFS["macd"], DEFS["bbands"], DEFS["atr"]
    assert [(p.name, p.kind, p.minimum) for p in macd.params] == [
        ("fast", int, 2), ("slow", int, 2), ("signal", int, 1),
    ]  # fmt: skip
    assert macd.outputs == ("line", "signal", "hist")
    assert macd.multi
    assert macd.check is not None
    assert macd.check([12, 26, 9]) is None
    assert macd.check([26, 26, 9]) == "fast must be shorter than slow"
    assert [(p.name, p.kind) for p in bbands.params] == [("period", int), ("k", float)]
    assert bbands.outputs == ("upper", "middle", "lower")
    assert atr.inputs == ("high", "low", "close")
    for name in ("sma", "ema", "wma", "rsi"):
        assert DEFS[name].inputs == ("close",)
        assert not DEFS[name].multi


# ---- the shared kernels ------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 100, 1000])
@pytest.mark.parametrize(("a", "b"), [(0.9, 0.1), (1.0, 1.0), (0.0, 1.0), (1 / 3, 2 / 3)])
def test_first_order_follows_the_recursion(size: int, a: float, b: float) -> None:
    u = np.random.default_rng(size).normal(1000.0, 50.0, size)
    expected, y = [], 5.0
    for value in u.tolist():
        y = a * y + b * value
        expected.append(y)
    np.testing.assert_allclose(_kernels.first_order(u, a, b, 5.0), expected, rtol=1e-13)


@pytest.mark.usefixtures("short_spans")
def test_kernels_across_span_edges() -> None:
    rng = np.random.default_rng(7)
    u = rng.normal(100.0, 5.0, 500)
    expected, y = [], -2.0
    for value in u.tolist():
        y = 0.8 * y + 0.2 * value
        expected.append(y)
    np.testing.assert_allclose(_kernels.first_order(u, 0.8, 0.2, -2.0), expected, rtol=1e-13)
    sums = [u[j : j + 7].sum() for j in range(len(u) - 6)]
    np.testing.assert_allclose(_kernels.rolling_sums(u, 7), sums, rtol=1e-13)
    for run in (16, 48, 10):
        values = u.copy()
        _kernels.run_sums(values, run)
        runs = [np.cumsum(u[s : s + run]) for s in range(0, len(u), run)]
        np.testing.assert_allclose(values, np.concatenate(runs), rtol=1e-13)


def test_true_range_is_talibs_bit_for_bit(real: dict[str, Arrays]) -> None:
    a = real["coinbase BTC/USD 1h"]
    size = len(a["close"]) - 1
    out, scratch = np.empty(size), np.empty(size)
    _kernels.true_range(a["high"], a["low"], a["close"], out, scratch)
    assert np.array_equal(out, talib.TRANGE(a["high"], a["low"], a["close"])[1:])
