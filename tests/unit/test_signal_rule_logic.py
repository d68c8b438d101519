"""Signal rules (analytics.signals): crossing semantics, each rule type, windows."""

from __future__ import annotations

import math

import pytest

from cryptodesk.analytics.indicators import parse_spec
from cryptodesk.analytics.signals import (
    RECURSIVE_WINDOW_FACTOR,
    Reading,
    Rule,
    RuleError,
    SeriesRules,
    crossed_down,
    crossed_up,
    window,
)

NAN = math.nan


# ---- crossing semantics -------------------------------------------------------------


@pytest.mark.parametrize(
    ("a0", "b0", "a1", "b1", "up", "down"),
    [
        (1.0, 2.0, 3.0, 2.0, True, False),  # below -> above
        (3.0, 2.0, 1.0, 2.0, False, True),  # above -> below
        (2.0, 2.0, 3.0, 2.0, True, False),  # leaving a tie upwards is the cross
        (2.0, 2.0, 1.0, 2.0, False, True),
        (1.0, 2.0, 2.0, 2.0, False, False),  # reaching a tie is not
        (3.0, 2.0, 2.0, 2.0, False, False),
        (2.0, 2.0, 2.0, 2.0, False, False),
        (3.0, 2.0, 4.0, 2.0, False, False),  # staying above
        (1.0, 2.0, 0.5, 2.0, False, False),
        (NAN, 2.0, 3.0, 2.0, False, False),  # warm-up never fires
        (1.0, NAN, 3.0, 2.0, False, False),
        (1.0, 2.0, NAN, 2.0, False, False),
        (3.0, 2.0, 1.0, NAN, False, False),
    ],
)
def test_crossings_are_strict(a0, b0, a1, b1, up, down):
    assert crossed_up(a0, b0, a1, b1) is up
    assert crossed_down(a0, b0, a1, b1) is down


# ---- each rule type on plain values -------------------------------------------------


def reading(close: float, **values: float) -> Reading:
    return Reading(close, values)


def test_ma_cross_is_golden_then_death():
    rule = Rule.of("g", "ma_cross", fast=3, slow=5)
    assert rule.columns == ("sma_3", "sma_5")
    assert rule.decide(reading(1, sma_3=9.0, sma_5=10.0), reading(1, sma_3=11.0, sma_5=10.5)) == (
        "golden_cross"
    )
    assert rule.decide(reading(1, sma_3=11.0, sma_5=10.5), reading(1, sma_3=10.0, sma_5=10.5)) == (
        "death_cross"
    )
    assert rule.decide(reading(1, sma_3=11.0, sma_5=10.5), reading(1, sma_3=12.0, sma_5=10.5)) is (
        None
    )


def test_defaults_are_the_classic_settings():
    assert Rule.of("a", "ma_cross").params == (50, 200)
    assert Rule.of("a", "ema_cross").params == (12, 26)
    assert Rule.of("a", "rsi_levels").params == (14, 70.0, 30.0)
    assert Rule.of("a", "macd_cross").params == (12, 26, 9)
    assert Rule.of("a", "bb_break").params == (20, 2.0)
    assert Rule.of("a", "ma_cross").columns == ("sma_50", "sma_200")


def test_ema_cross_kinds():
    rule = Rule.of("e", "ema_cross", fast=5, slow=8)
    up = rule.decide(reading(1, ema_5=1.0, ema_8=2.0), reading(1, ema_5=2.5, ema_8=2.0))
    down = rule.decide(reading(1, ema_5=2.5, ema_8=2.0), reading(1, ema_5=1.5, ema_8=2.0))
    assert (up, down) == ("ema_cross_up", "ema_cross_down")


@pytest.mark.parametrize(
    ("prev", "now", "kind"),
    [
        (69.9, 70.1, "rsi_overbought"),
        (70.0, 70.1, "rsi_overbought"),
        (65.0, 70.0, None),  # touching the level is not crossing it
        (75.0, 80.0, None),  # already overbought
        (30.1, 29.9, "rsi_oversold"),
        (30.0, 29.0, "rsi_oversold"),
        (29.0, 31.0, None),  # leaving oversold is no signal
        (71.0, 69.0, None),
        (25.0, 75.0, "rsi_overbought"),  # one candle through both levels: the upper
        (75.0, 25.0, "rsi_oversold"),
    ],
)
def test_rsi_levels(prev, now, kind):
    rule = Rule.of("r", "rsi_levels", period=14, upper=70, lower=30)
    assert rule.decide(reading(1, rsi_14=prev), reading(1, rsi_14=now)) == kind


def test_macd_cross_compares_line_with_signal():
    rule = Rule.of("m", "macd_cross")
    assert rule.columns == ("macd_line_12_26_9", "macd_signal_12_26_9", "macd_hist_12_26_9")

    def r(line: float, signal: float) -> Reading:
        return reading(1, macd_line_12_26_9=line, macd_signal_12_26_9=signal,
                       macd_hist_12_26_9=line - signal)  # fmt: skip

    assert rule.decide(r(-1.0, -0.5), r(0.2, -0.1)) == "macd_cross_up"
    assert rule.decide(r(0.2, -0.1), r(-0.3, -0.2)) == "macd_cross_down"
    assert rule.decide(r(0.2, -0.1), r(0.3, 0.1)) is None


def test_bb_break_compares_the_close_with_each_band():
    rule = Rule.of("b", "bb_break", period=20, k=2)
    assert rule.columns == ("bbands_upper_20_2", "bbands_middle_20_2", "bbands_lower_20_2")

    def r(close: float) -> Reading:
        return reading(close, bbands_upper_20_2=110.0, bbands_middle_20_2=100.0,
                       bbands_lower_20_2=90.0)  # fmt: skip

    assert rule.decide(r(105.0), r(110.5)) == "bb_break_upper"
    assert rule.decide(r(110.0), r(110.5)) == "bb_break_upper"
    assert rule.decide(r(111.0), r(112.0)) is None
    assert rule.decide(r(95.0), r(89.0)) == "bb_break_lower"
    assert rule.decide(r(89.0), r(95.0)) is None


@pytest.mark.parametrize(
    ("kind", "params", "field", "text"),
    [
        ("ma_cross", {"fast": 200, "slow": 50}, "fast", "fast (200) must be below slow (50)"),
        ("ema_cross", {"fast": 9, "slow": 9}, "fast", "fast (9) must be below slow (9)"),
        ("rsi_levels", {"upper": 30, "lower": 70}, "upper", "0 < lower < upper < 100"),
        ("ma_cross", {"fast": 0}, "params", "period 0"),
        ("ma_cross", {"slowest": 1}, "slowest", "ma_cross has no parameter 'slowest'"),
        ("breakout", {}, "type", "unknown rule type 'breakout'"),
    ],
)
def test_bad_rules_name_the_parameter(kind, params, field, text):
    with pytest.raises(RuleError, match=text.replace("(", r"\(").replace(")", r"\)")) as err:
        Rule.of("x", kind, **params)
    assert err.value.field == field


# ---- series over streaming indicators -----------------------------------------------

# Falls, rises through the averages, then falls again: one golden, one death cross.
CLOSES = [10.0, 9, 8, 7, 6, 5, 6, 7, 8, 9, 10, 11, 12, 11, 10, 9, 8, 7]


def sma(values: list[float], n: int) -> float:
    return sum(values[-n:]) / n


def test_series_fires_once_per_cross_with_the_values_read():
    series = SeriesRules([Rule.of("g", "ma_cross", fast=3, slow=5)])
    fired = [(i, series.update(c)) for i, c in enumerate(CLOSES)]
    events = [(i, f.rule.id, f.kind, f.values) for i, out in fired for f in out]
    golden = CLOSES[:9]
    death = CLOSES[:16]
    assert events == [
        (8, "g", "golden_cross", {"sma_3": sma(golden, 3), "sma_5": sma(golden, 5)}),
        (15, "g", "death_cross", {"sma_3": sma(death, 3), "sma_5": sma(death, 5)}),
    ]
    assert (sma(golden, 3), sma(golden, 5)) == (7.0, 6.4)


def test_rules_share_indicators_and_fire_in_rule_order():
    rules = [Rule.of("slow", "ma_cross", fast=3, slow=5), Rule.of("fast", "ma_cross", fast=2,
                                                                   slow=3)]  # fmt: skip
    series = SeriesRules(rules)
    assert [s.text for s in series.specs] == ["sma:3", "sma:5", "sma:2"]
    assert series.lengths == (2, 3, 5)
    out = [[f.rule.id for f in series.update(c)] for c in CLOSES]
    assert out[8] == ["slow"]
    assert [i for i, ids in enumerate(out) if "fast" in ids] == [7, 14]


def test_duplicate_rule_ids_are_refused():
    with pytest.raises(RuleError, match="unique"):
        SeriesRules([Rule.of("a", "ma_cross"), Rule.of("a", "rsi_levels")])


def test_warming_from_the_windows_continues_like_an_uninterrupted_run():
    rules = [Rule.of("g", "ma_cross", fast=3, slow=5), Rule.of("b", "bb_break", period=4, k=1)]
    whole = SeriesRules(rules)
    expected = [[(f.rule.id, f.kind) for f in whole.update(c)] for c in CLOSES]
    for cut in range(len(CLOSES)):
        resumed = SeriesRules(rules)
        resumed.warm(CLOSES[:cut])  # windows ending at the candle evaluated last
        got = [[(f.rule.id, f.kind) for f in resumed.update(c)] for c in CLOSES[cut:]]
        assert got == expected[cut:], cut


def test_recursive_indicators_rebuilt_from_their_window_agree():
    closes = [100 + 10 * math.sin(i / 7) + (i % 5) for i in range(3000)]
    rules = [Rule.of("e", "ema_cross", fast=5, slow=20), Rule.of("r", "rsi_levels", period=14)]
    whole = SeriesRules(rules)
    for c in closes:
        whole.update(c)
    resumed = SeriesRules(rules)
    resumed.warm(closes)
    assert resumed.windows == {"ema:5": 150, "ema:20": 600, "rsi:14": 420}
    assert whole.prev is not None
    assert resumed.prev is not None
    for column, value in whole.prev.values.items():
        assert resumed.prev.values[column] == pytest.approx(value, rel=1e-12), column


@pytest.mark.parametrize(
    ("spec", "length"),
    [
        ("sma:200", 200),
        ("bbands:20:2", 20),
        ("ema:20", 20 * RECURSIVE_WINDOW_FACTOR),
        ("rsi:14", 14 * RECURSIVE_WINDOW_FACTOR),
        ("macd:12:26:9", 35 * RECURSIVE_WINDOW_FACTOR),
    ],
)
def test_windows(spec, length):
    assert window(parse_spec(spec)) == length
