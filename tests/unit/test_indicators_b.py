"""Stochastic, CCI, MFI, ADX, OBV and VWAP: TA-Lib is the oracle, on the real candles
of ../shared/data and on generated ones; streaming is checked against vectorised.

Stochastic, CCI, MFI and OBV repeat TA-Lib's arithmetic, so they must equal it bit for
bit; ADX's vectorised form rounds its recursions differently, so it must agree to 1e-9
(its streaming form is TA-Lib's arithmetic again, so that one is exact). VWAP has no
TA-Lib twin and is checked against a plain loop.
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
from cryptodesk.analytics.indicators import oscillators, trend, volume
from cryptodesk.analytics.indicators.base import INPUTS, FloatArray, IndicatorDef
from cryptodesk.domain.interval import Interval
from tests.shared_data import SHARED_DATA

Arrays = dict[str, FloatArray]
DAY_MS = 86_400_000
HOUR_MS = 3_600_000
DEFS = {d.name: d for d in (*oscillators.DEFS, *trend.DEFS, *volume.DEFS)}
# TA-Lib's call for each indicator, with SMA (matype 0) smoothing in STOCH.
TALIB: dict[str, Callable[..., tuple[FloatArray, ...]]] = {
    "stoch": lambda a, k, sk, sd: talib.STOCH(a["high"], a["low"], a["close"], k, sk, 0, sd, 0),
    "cci": lambda a, n: (talib.CCI(a["high"], a["low"], a["close"], n),),
    "mfi": lambda a, n: (talib.MFI(a["high"], a["low"], a["close"], a["volume"], n),),
    "adx": lambda a, n: (talib.ADX(a["high"], a["low"], a["close"], n),),
    "obv": lambda a: (talib.OBV(a["close"], a["volume"]),),
}
EXACT = {"stoch", "cci", "mfi", "obv"}


def as_arrays(candles: Any) -> Arrays:
    return {
        "ts": np.array([c.open_time for c in candles], dtype=np.float64),
        "open": np.array([c.open for c in candles]),
        "high": np.array([c.high for c in candles]),
        "low": np.array([c.low for c in candles]),
        "close": np.array([c.close for c in candles]),
        "volume": np.array([c.volume for c in candles]),
    }


@pytest.fixture(scope="module")
def real() -> dict[str, Arrays]:
    hourly = read_candles(
        SHARED_DATA / "cryptodatadownload_coinbase_btcusd_1h.csv",
        exchange="coinbase",
        symbol="BTC/USD",
        interval=Interval.parse("1h"),
    )
    found = {"coinbase BTC/USD 1h": as_arrays(hourly.candles)}
    for symbol in ("BTC/USD", "ETH/USD", "LTC/USD"):
        daily = read_candles(
            SHARED_DATA / "bitstamp_btc_eth_ltc_usd_1d.csv",
            exchange="bitstamp",
            symbol=symbol,
            interval=Interval.parse("1d"),
        )
        found[f"bitstamp {symbol} 1d"] = as_arrays(daily.candles)
    return found


def vectorised(name: str, a: Arrays, *params: int) -> tuple[FloatArray, ...]:
    definition = DEFS[name]
    result = definition.vectorised(*(a[i] for i in definition.inputs), *params)
    return tuple(result) if definition.multi else (result,)


def streamed(name: str, a: Arrays, *params: int) -> tuple[FloatArray, ...]:
    definition = DEFS[name]
    indicator = definition.streaming(*params)
    rows = zip(*(a[i].tolist() for i in definition.inputs), strict=True)
    values = np.array([indicator.update(*row) for row in rows], dtype=np.float64)
    return tuple(values.reshape(len(values), -1).T)


def assert_same(ours: FloatArray, expected: FloatArray) -> None:
    """Bit for bit, NaN where NaN (``array_equal`` counts -0.0 as 0.0)."""
    assert ours.shape == expected.shape
    assert np.array_equal(ours, expected, equal_nan=True)


def assert_close(ours: FloatArray, expected: FloatArray, rtol: float) -> None:
    """Within ``rtol`` of the value or of ADX's full scale, 100: where +DM and -DM are
    equal up to rounding, DX and so ADX are rounding residue near 0 (1e-14), which no
    other order of operations reproduces relatively."""
    assert ours.shape == expected.shape
    assert np.array_equal(np.isnan(ours), np.isnan(expected))
    valid = ~np.isnan(expected)
    np.testing.assert_allclose(ours[valid], expected[valid], rtol=rtol, atol=rtol * 100.0)


def check(name: str, a: Arrays, *params: int) -> None:
    """Vectorised against TA-Lib, NaN warm-up included, and streaming against both."""
    expected = TALIB[name](a, *params)
    ours = vectorised(name, a, *params)
    stream = streamed(name, a, *params)
    for mine, theirs, live in zip(ours, expected, stream, strict=True):
        assert np.array_equal(np.isnan(mine), np.isnan(theirs))
        if name in EXACT:
            assert_same(mine, theirs)
            assert_same(live, mine)
        else:  # adx
            assert_close(mine, theirs, 1e-9)
            assert_same(live, theirs)
            assert_close(live, mine, 1e-12)


SPECS = [
    ("stoch", (14, 3, 3)),
    ("stoch", (5, 1, 4)),
    ("stoch", (1, 1, 1)),
    ("cci", (20,)),
    ("cci", (2,)),
    ("cci", (45,)),
    ("mfi", (14,)),
    ("mfi", (60,)),
    ("adx", (14,)),
    ("adx", (2,)),
    ("adx", (40,)),
    ("obv", ()),
]


@pytest.mark.parametrize(("name", "params"), SPECS)
def test_real_candles_match_talib(real: dict[str, Arrays], name: str, params: tuple[int]) -> None:
    for series in real.values():
        check(name, series, *params)


def test_warm_up_is_talib_lookback(real: dict[str, Arrays]) -> None:
    a = real["coinbase BTC/USD 1h"]
    first = {
        ("stoch", (14, 3, 3)): 17,
        ("cci", (20,)): 19,
        ("mfi", (14,)): 14,
        ("adx", (14,)): 27,
        ("obv", ()): 0,
    }
    for (name, params), index in first.items():
        for output in vectorised(name, a, *params):
            assert np.isnan(output[:index]).all()
            assert not np.isnan(output[index:]).any()


# ---- generated candles: valid OHLCV with flat stretches ------------------------------

VOLUME = st.one_of(st.just(0.0), st.floats(0.001, 1e6, allow_nan=False, allow_infinity=False))
MOVE = st.tuples(st.integers(-6, 6), st.integers(0, 4), st.integers(0, 4), VOLUME)
FLAT = st.tuples(st.integers(1, 30), VOLUME)  # candles at the last close, one volume


@st.composite
def ohlcv(draw: st.DrawFn, min_size: int = 1) -> Arrays:
    """Prices on a tick grid (so equal prices and typical prices happen), any scale."""
    tick = draw(st.sampled_from([1e-7, 0.01, 0.25, 7.0, 1000.0]))
    price = draw(st.integers(5, 5000))
    rows: list[tuple[int, int, int, int, float]] = []
    segments = draw(st.lists(st.one_of(st.lists(MOVE, min_size=1, max_size=40), FLAT), max_size=6))
    for segment in segments:
        if isinstance(segment, tuple):  # a flat stretch
            length, size = segment
            rows += [(price, price, price, price, size)] * length
            continue
        for move, up, down, size in segment:
            close = max(1, price + move)
            low = max(1, min(price, close) - down)
            rows.append((price, max(price, close) + up, low, close, size))
            price = close
    if len(rows) < min_size:
        rows += [(price, price, price, price, 1.0)] * (min_size - len(rows))
    o, h, lo, c, v = (np.array(column, dtype=np.float64) for column in zip(*rows, strict=True))
    ts = 1_704_067_200_000.0 + HOUR_MS * np.arange(len(rows), dtype=np.float64)
    return {"ts": ts, "open": o * tick, "high": h * tick, "low": lo * tick, "close": c * tick,
            "volume": v}  # fmt: skip


@settings(max_examples=120, deadline=None)
@given(
    a=ohlcv(),
    period=st.integers(2, 25),
    fastk=st.integers(1, 12),
    slowk=st.integers(1, 5),
    slowd=st.integers(1, 5),
)
def test_generated_candles_match_talib(
    a: Arrays, period: int, fastk: int, slowk: int, slowd: int
) -> None:
    check("stoch", a, fastk, slowk, slowd)
    check("cci", a, period)
    check("mfi", a, period)
    check("adx", a, period)
    check("obv", a)


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of a few candles, so every carry across chunk edges is exercised."""
    monkeypatch.setattr(oscillators, "CHUNK", 7)
    monkeypatch.setattr(trend, "CHUNK", 5)


@pytest.mark.usefixtures("small_chunks")
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(a=ohlcv(), period=st.integers(2, 9))
def test_chunk_edges_change_nothing(a: Arrays, period: int) -> None:
    check("stoch", a, period, 2, 3)
    check("cci", a, period)
    check("mfi", a, period)
    check("adx", a, period)


@pytest.mark.usefixtures("small_chunks")
def test_chunk_edges_on_real_candles(real: dict[str, Arrays]) -> None:
    a = {k: v[:1500] for k, v in real["coinbase BTC/USD 1h"].items()}
    for name, params in SPECS:
        check(name, a, *params)


def test_empty_and_short_series() -> None:
    empty = {name: np.empty(0) for name in INPUTS}
    for name, params in SPECS:
        for output in vectorised(name, empty, *params):
            assert output.shape == (0,)
    assert volume.vwap(*(empty[i] for i in DEFS["vwap"].inputs)).shape == (0,)
    short = {name: np.full(3, 5.0) for name in INPUTS}
    assert_same(vectorised("obv", short)[0], np.array([5.0, 5.0, 5.0]))
    for name, params in [("stoch", (2, 1, 3)), ("cci", (4,)), ("mfi", (3,)), ("adx", (2,))]:
        check(name, short, *params)
        assert all(np.isnan(out).all() for out in vectorised(name, short, *params))


# ---- the conventions, on candles small enough to check by hand ------------------------


def candles(rows: list[tuple[float, float, float, float]], volumes: list[float]) -> Arrays:
    o, h, lo, c = (np.array(column, dtype=np.float64) for column in zip(*rows, strict=True))
    ts = 1_704_067_200_000.0 + HOUR_MS * np.arange(len(rows), dtype=np.float64)
    return {"ts": ts, "open": o, "high": h, "low": lo, "close": c,
            "volume": np.array(volumes, dtype=np.float64)}  # fmt: skip


def test_obv_starts_at_the_first_volume_and_ignores_unchanged_closes() -> None:
    a = candles([(10, 10, 10, 10), (11, 11, 11, 11), (11, 11, 11, 11), (9, 9, 9, 9)], [5, 2, 3, 4])
    assert_same(vectorised("obv", a)[0], np.array([5.0, 7.0, 7.0, 3.0]))
    check("obv", a)


def test_stochastic_of_a_flat_range_is_zero() -> None:
    a = candles([(8, 8, 8, 8)] * 5 + [(8, 10, 6, 9)], [1] * 6)
    k, d = vectorised("stoch", a, 3, 1, 1)
    assert_same(k, np.array([math.nan, math.nan, 0.0, 0.0, 0.0, 75.0]))
    assert_same(d, k)
    check("stoch", a, 3, 1, 1)


def test_cci_of_a_flat_window_is_zero() -> None:
    a = candles([(0.1, 0.1, 0.1, 0.1)] * 4 + [(0.1, 0.4, 0.1, 0.4)], [1] * 5)
    (cci,) = vectorised("cci", a, 2)
    # Window (0.1, 0.3): mean 0.2, mean deviation 0.1, CCI = 0.1 / (0.015 * 0.1).
    assert_same(cci[:4], np.array([math.nan, 0.0, 0.0, 0.0]))
    assert cci[4] == pytest.approx(0.1 / 0.0015, rel=1e-12)
    check("cci", a, 2)


def test_mfi_gives_equal_typical_prices_no_flow() -> None:
    # Typical prices 2, 3, 3 (equal: no flow), 1: flows +30, 0, -4 over a period of 3.
    a = candles([(2, 3, 1, 2), (3, 4, 2, 3), (3, 5, 1, 3), (1, 2, 0.5, 0.5)], [1, 10, 7, 4])
    (mfi,) = vectorised("mfi", a, 3)
    assert mfi[3] == pytest.approx(100 * 30 / 34, rel=1e-15)
    check("mfi", a, 3)


def test_mfi_restarts_its_sums_after_a_period_of_no_flow() -> None:
    rows = [(1.1, 1.4, 1.0, 1.3), (1.3, 1.7, 1.3, 1.6), (1.6, 1.6, 0.7, 0.9)]
    rows += [(0.9, 0.9, 0.9, 0.9)] * 5 + [(0.9, 1.2, 0.9, 1.1), (1.1, 1.1, 0.3, 0.4)]
    a = candles(rows, [0.3, 0.7, 1.1] + [0.0] * 5 + [0.2, 0.9])
    (mfi,) = vectorised("mfi", a, 3)
    assert_same(mfi[5:8], np.zeros(3))  # an empty window is 0
    assert mfi[8] == 100.0
    check("mfi", a, 3)


def test_adx_holds_while_directional_movement_vanishes() -> None:
    """Inside candles (same high and low, closes at either end) keep TR while +DM and
    -DM decay, until the DIs sum below 1e-14: DX is undefined and ADX holds."""
    rng = np.random.default_rng(3)
    close = 100 + np.cumsum(rng.normal(0, 1, 300))
    high, low = close + rng.random(300), close - rng.random(300)
    high[60:], low[60:] = high[59], low[59]
    close[60:] = np.where(np.arange(240) % 2 == 0, high[59], low[59])
    a = {"ts": np.zeros(300), "open": close, "high": high, "low": low, "close": close,
         "volume": np.ones(300)}  # fmt: skip
    (adx,) = vectorised("adx", a, 2)
    assert (adx[120:] == adx[-1]).all()
    check("adx", a, 2)


# ---- VWAP ----------------------------------------------------------------------------


def reference_vwap(a: Arrays) -> FloatArray:
    """Typical price weighted by volume since each UTC midnight, summed in a plain loop."""
    out = np.empty(len(a["ts"]))
    day, weighted, traded = None, 0.0, 0.0
    for i, ts in enumerate(a["ts"].tolist()):
        if ts // DAY_MS != day:
            day, weighted, traded = ts // DAY_MS, 0.0, 0.0
        typical = (a["high"][i] + a["low"][i] + a["close"][i]) / 3
        weighted += typical * a["volume"][i]
        traded += a["volume"][i]
        out[i] = weighted / traded if traded > 0 else math.nan
    return out


def check_vwap(a: Arrays) -> None:
    expected = reference_vwap(a)
    assert_same(vectorised("vwap", a)[0], expected)
    assert_same(streamed("vwap", a)[0], expected)


def test_vwap_restarts_each_utc_day_and_is_nan_before_any_volume() -> None:
    a = candles(
        [(2, 3, 1, 2), (3, 6, 3, 3), (4, 5, 3, 4), (4, 7, 4, 4), (4, 4, 4, 4)], [2, 1, 0, 3, 0]
    )
    a["ts"] = np.array([-1.0, 22, 24, 25, 48]) * HOUR_MS  # 23:00 (1969), then 22:00, 00:00 ...
    vwap = vectorised("vwap", a)[0]
    assert_same(vwap[[0, 2, 4]], np.array([2.0, math.nan, math.nan]))
    assert vwap[1] == 4.0
    assert vwap[3] == 5.0
    check_vwap(a)


def test_vwap_on_real_candles(real: dict[str, Arrays]) -> None:
    for series in real.values():
        check_vwap(series)


@settings(max_examples=80, deadline=None)
@given(
    a=ohlcv(),
    steps=st.lists(st.sampled_from([1, 1, 1, 2, 7, 30, 400]), min_size=1, max_size=200),
    interval=st.sampled_from([60_000, HOUR_MS, 4 * HOUR_MS, DAY_MS]),
)
def test_vwap_with_gaps_and_uneven_days(a: Arrays, steps: list[int], interval: int) -> None:
    gaps = np.resize(np.array(steps, dtype=np.float64), len(a["ts"]))
    a["ts"] = 1_704_060_000_000.0 + interval * np.cumsum(gaps)
    check_vwap(a)


# ---- shape of the definitions and of the streaming state ------------------------------


def test_definitions() -> None:
    shape = {
        "stoch": (("fastk", "slowk", "slowd"), ("k", "d"), ("high", "low", "close")),
        "cci": (("period",), ("cci",), ("high", "low", "close")),
        "mfi": (("period",), ("mfi",), ("high", "low", "close", "volume")),
        "adx": (("period",), ("adx",), ("high", "low", "close")),
        "obv": ((), ("obv",), ("close", "volume")),
        "vwap": ((), ("vwap",), ("ts", "high", "low", "close", "volume")),
    }
    assert {name: (tuple(p.name for p in d.params), d.outputs, d.inputs)
            for name, d in DEFS.items()} == shape  # fmt: skip
    assert [p.minimum for d in DEFS.values() for p in d.params] == [1, 1, 1, 2, 2, 2]


@pytest.mark.parametrize("definition", DEFS.values(), ids=DEFS)
def test_streaming_state_is_slotted_and_bounded(
    real: dict[str, Arrays], definition: IndicatorDef
) -> None:
    params = {"stoch": (14, 3, 3), "cci": (20,), "mfi": (14,), "adx": (14,)}
    indicator = definition.streaming(*params.get(definition.name, ()))
    assert not hasattr(indicator, "__dict__")
    a = real["coinbase BTC/USD 1h"]
    for row in zip(*(a[i].tolist() for i in definition.inputs), strict=True):
        indicator.update(*row)
    for slot in type(indicator).__slots__:
        held = getattr(indicator, slot)
        if hasattr(held, "__len__"):
            assert len(held) <= 20, slot  # windows, never the history
