"""The indicator registry: spec parsing and its one-line errors, column names, and
both implementations wired to the right columns, with TA-Lib as the oracle on
the real hourly candles."""

from __future__ import annotations

import math

import numpy as np
import pytest
import talib

from cryptodesk.adapters.files.candle_files import read_candles
from cryptodesk.analytics.indicators import (
    INPUTS,
    REGISTRY,
    FloatArray,
    IndicatorError,
    StreamingSet,
    compute,
    parse_spec,
    parse_specs,
)
from cryptodesk.analytics.indicators.base import IndicatorDef, Param
from cryptodesk.domain.interval import Interval
from tests.shared_data import SHARED_DATA

FULL = (
    "sma:200,ema:20,rsi:14,macd:12:26:9,bbands:20:2,atr:14,stoch:14:3:3,obv,"
    "adx:14,cci:20,mfi:14,wma:30,vwap"
)
FULL_COLUMNS = [
    "sma_200", "ema_20", "rsi_14",
    "macd_line_12_26_9", "macd_signal_12_26_9", "macd_hist_12_26_9",
    "bbands_upper_20_2", "bbands_middle_20_2", "bbands_lower_20_2",
    "atr_14", "stoch_k_14_3_3", "stoch_d_14_3_3", "obv", "adx_14", "cci_20", "mfi_14",
    "wma_30", "vwap",
]  # fmt: skip
DAY_MS = 86_400_000


def test_registry_holds_every_indicator_by_name() -> None:
    assert list(REGISTRY) == [
        "adx", "atr", "bbands", "cci", "ema", "macd", "mfi", "obv", "rsi", "sma", "stoch",
        "vwap", "wma",
    ]  # fmt: skip
    assert all(name == d.name for name, d in REGISTRY.items())


def test_full_spec_parses_to_columns_in_order() -> None:
    specs = parse_specs(FULL)
    assert [s.text for s in specs] == FULL.split(",")
    assert [c for s in specs for c in s.columns] == FULL_COLUMNS
    assert [s.params for s in parse_specs("macd:12:26:9,bbands:20:2,obv")] == [
        (12, 26, 9),
        (20, 2.0),
        (),
    ]
    assert [type(p) for p in parse_spec("macd:12:26:9").params] == [int, int, int]
    assert parse_spec("bbands:20:2.5").columns == (
        "bbands_upper_20_2.5",
        "bbands_middle_20_2.5",
        "bbands_lower_20_2.5",
    )


def test_spaces_and_capitals_are_forgiven() -> None:
    specs = parse_specs(" SMA:200 , ema : 20 ")
    assert [c for s in specs for c in s.columns] == ["sma_200", "ema_20"]


KNOWN = "adx, atr, bbands, cci, ema, macd, mfi, obv, rsi, sma, stoch, vwap, wma"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("smaa:20", f"unknown indicator 'smaa' in 'smaa:20'; known: {KNOWN}"),
        ("sma:20,smaa", f"unknown indicator 'smaa' in 'smaa'; known: {KNOWN}"),
        ("sma:2.5", "period '2.5' in 'sma:2.5' is not an integer"),
        ("sma:0", "period 0 in 'sma:0' is out of range 1..100000"),
        ("rsi:1", "period 1 in 'rsi:1' is out of range 2..100000"),
        ("macd:12:26", "macd takes 3 parameters (macd:fast:slow:signal), got 2 in 'macd:12:26'"),
        ("macd:26:12:9", "fast must be shorter than slow in 'macd:26:12:9'"),
        ("macd:12:12:9", "fast must be shorter than slow in 'macd:12:12:9'"),
        ("bbands:20:-1", "k -1 in 'bbands:20:-1' is out of range 0..100"),
        ("obv:3", "obv takes no parameters, got 1 in 'obv:3'"),
        ("", "no indicators given"),
        ("sma:20,,obv", "empty item in 'sma:20,,obv'"),
        ("sma:20,sma:20", "'sma:20' repeats 'sma:20' (same columns)"),
        ("bbands:20:2,bbands:20:2.0", "'bbands:20:2.0' repeats 'bbands:20:2' (same columns)"),
    ],
)
def test_bad_spec_lists(text: str, message: str) -> None:
    with pytest.raises(IndicatorError) as caught:
        parse_specs(text)
    assert str(caught.value) == message
    assert caught.value.field == "indicators"


# ---- parameters, on a registered stand-in with defaults and a float parameter ----


class _Ramp:
    """Streaming twin of ``_ramp``: the running sum of close * scale, and its negation."""

    def __init__(self, period: int, scale: float) -> None:
        self.period, self.scale, self.total = period, scale, 0.0

    def update(self, ts: float, close: float) -> tuple[float, float]:
        self.total += close * self.scale
        return self.total, -self.total


def _ramp(ts: FloatArray, close: FloatArray, period: int, scale: float) -> tuple[FloatArray, ...]:
    total = np.cumsum(close * scale)
    return total, -total


RAMP = IndicatorDef(
    "ramp",
    (Param("period", int, 2, 500), Param("scale", float, 0.5, 10)),
    ("up", "down"),
    ("ts", "close"),
    _ramp,
    _Ramp,
    check=lambda p: "period must be even" if p[0] % 2 else None,
    defaults=(4.0,),
)


@pytest.fixture
def ramp(monkeypatch: pytest.MonkeyPatch) -> IndicatorDef:
    monkeypatch.setitem(REGISTRY, "ramp", RAMP)
    return RAMP


@pytest.mark.usefixtures("ramp")
def test_trailing_defaults_fill_in_with_their_kind() -> None:
    spec = parse_spec("ramp:10")
    assert spec.params == (10, 4.0)
    assert [type(p) for p in spec.params] == [int, float]
    assert spec.text == "ramp:10:4"
    assert spec.columns == ("ramp_up_10_4", "ramp_down_10_4")
    assert parse_spec("ramp:10:0.75").columns == ("ramp_up_10_0.75", "ramp_down_10_0.75")


@pytest.mark.usefixtures("ramp")
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ramp", "ramp takes 1 to 2 parameters (ramp:period:scale), got 0 in 'ramp'"),
        ("ramp:2:1:3", "ramp takes 1 to 2 parameters (ramp:period:scale), got 3 in 'ramp:2:1:3'"),
        ("ramp:2.0", "period '2.0' in 'ramp:2.0' is not an integer"),
        ("ramp:1e1", "period '1e1' in 'ramp:1e1' is not an integer"),
        ("ramp:", "period '' in 'ramp:' is not an integer"),
        ("ramp:0", "period 0 in 'ramp:0' is out of range 2..500"),
        ("ramp:502", "period 502 in 'ramp:502' is out of range 2..500"),
        ("ramp:4:x", "scale 'x' in 'ramp:4:x' is not a number"),
        ("ramp:4:nan", "scale 'nan' in 'ramp:4:nan' is not a number"),
        ("ramp:4:0.25", "scale 0.25 in 'ramp:4:0.25' is out of range 0.5..10"),
        ("ramp:3", "period must be even in 'ramp:3'"),
    ],
)
def test_bad_parameters_name_the_item(text: str, message: str) -> None:
    with pytest.raises(IndicatorError) as caught:
        parse_specs(f"sma:20,{text}")
    assert str(caught.value) == message


@pytest.mark.usefixtures("ramp")
def test_streaming_set_feeds_each_indicator_its_inputs_in_column_order() -> None:
    specs = parse_specs("ramp:2:2,obv,ramp:4")
    stream = StreamingSet(specs)
    assert stream.columns == (
        "ramp_up_2_2", "ramp_down_2_2", "obv", "ramp_up_4_4", "ramp_down_4_4",
    )  # fmt: skip
    stream.update(0.0, 1.0, 1.0, 1.0, 3.0, 5.0)
    values = stream.update(60_000.0, 1.0, 1.0, 1.0, 4.0, 7.0)
    assert values == (14.0, -14.0, 12.0, 28.0, -28.0)
    assert stream.named(values)["ramp_up_4_4"] == 28.0
    assert StreamingSet([]).update(0.0, 1.0, 1.0, 1.0, 1.0, 1.0) == ()


@pytest.mark.usefixtures("ramp")
def test_compute_checks_its_inputs() -> None:
    specs = parse_specs("ramp:2")
    out = compute(specs, {"ts": [0, 1, 2], "close": [1, 2, 3]})
    assert out["ramp_up_2_4"].tolist() == [4.0, 12.0, 24.0]
    assert out["ramp_down_2_4"].dtype == np.float64
    with pytest.raises(IndicatorError, match=r"^ramp:2:4 needs the ts input$"):
        compute(specs, {"close": [1.0]})
    with pytest.raises(IndicatorError, match=r"^input arrays differ in length: ts=2, close=3$"):
        compute(specs, {"ts": [0.0, 1.0], "close": [1.0, 2.0, 3.0]})


# ---- every column on the real hourly candles ------------------------------------


@pytest.fixture(scope="module")
def hourly() -> dict[str, FloatArray]:
    path = SHARED_DATA / "cryptodatadownload_coinbase_btcusd_1h.csv"
    candles = read_candles(
        path, exchange="coinbase", symbol="BTC/USD", interval=Interval.parse("1h")
    ).candles
    return {
        "ts": np.array([c.open_time for c in candles], dtype=np.float64),
        "open": np.array([c.open for c in candles]),
        "high": np.array([c.high for c in candles]),
        "low": np.array([c.low for c in candles]),
        "close": np.array([c.close for c in candles]),
        "volume": np.array([c.volume for c in candles]),
    }


def _vwap(a: dict[str, FloatArray]) -> FloatArray:
    """Volume-weighted typical price since each UTC midnight, summed plainly."""
    out = np.empty(len(a["ts"]))
    day, pv, vol = -1, 0.0, 0.0
    for i in range(len(out)):
        if a["ts"][i] // DAY_MS != day:
            day, pv, vol = a["ts"][i] // DAY_MS, 0.0, 0.0
        typical = (a["high"][i] + a["low"][i] + a["close"][i]) / 3
        pv += typical * a["volume"][i]
        vol += a["volume"][i]
        out[i] = pv / vol if vol > 0 else math.nan
    return out


def _oracle(a: dict[str, FloatArray]) -> dict[str, FloatArray]:
    h, lo, c, v = a["high"], a["low"], a["close"], a["volume"]
    macd = talib.MACD(c, 12, 26, 9)
    bbands = talib.BBANDS(c, 20, 2.0, 2.0)
    stoch = talib.STOCH(h, lo, c, 14, 3, 0, 3, 0)
    columns: list[FloatArray] = [
        talib.SMA(c, 200), talib.EMA(c, 20), talib.RSI(c, 14), *macd, *bbands,
        talib.ATR(h, lo, c, 14), *stoch, talib.OBV(c, v), talib.ADX(h, lo, c, 14),
        talib.CCI(h, lo, c, 20), talib.MFI(h, lo, c, v, 14), talib.WMA(c, 30), _vwap(a),
    ]  # fmt: skip
    return dict(zip(FULL_COLUMNS, columns, strict=True))


def _agree(name: str, ours: FloatArray, expected: FloatArray) -> None:
    assert ours.shape == expected.shape, name
    assert np.array_equal(np.isnan(ours), np.isnan(expected)), name
    valid = ~np.isnan(expected)
    scale = float(np.max(np.abs(expected[valid])))
    np.testing.assert_allclose(ours[valid], expected[valid], rtol=1e-9, atol=1e-9 * scale)


def test_compute_matches_talib_column_by_column(hourly: dict[str, FloatArray]) -> None:
    out = compute(parse_specs(FULL), hourly)
    assert list(out) == FULL_COLUMNS
    for name, expected in _oracle(hourly).items():
        _agree(name, out[name], expected)


def test_streaming_set_matches_compute(hourly: dict[str, FloatArray]) -> None:
    specs = parse_specs(FULL)
    stream = StreamingSet(specs)
    assert list(stream.columns) == FULL_COLUMNS
    rows = zip(*(hourly[name].tolist() for name in INPUTS), strict=True)
    streamed = np.array([stream.update(*row) for row in rows])
    for i, (name, expected) in enumerate(compute(specs, hourly).items()):
        _agree(name, streamed[:, i], expected)
