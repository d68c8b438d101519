"""The built-in strategies, and finding a strategy by name with its parameters.

Each built-in says ``LONG`` on its buy signal and ``SHORT`` on its sell
signal; a long-only backtest turns ``SHORT`` into closing the long. Crosses
follow ``Context.crossed_above``: strictly below then strictly above.

``build_strategy("ma_cross", {"fast": "20"})`` checks and converts parameters
(text from the command line or JSON numbers); ``parse_param_items`` reads the
CLI's ``--param fast=20`` items.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cached_property

from cryptodesk.analytics.indicators import parse_spec
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

_PERIOD = 100_000  # the indicators' own limit on a period


def _columns(spec: str) -> tuple[str, ...]:
    """The context keys of one output each (``macd_line_12_26_9`` ...)."""
    return parse_spec(spec).columns


class MaCross(Strategy):
    """Golden cross / death cross of two simple moving averages of the close."""

    name = "ma_cross"
    summary = "long when SMA(fast) crosses above SMA(slow), short (or out) when it crosses below"
    params = (
        StrategyParam("fast", int, 50, 1, _PERIOD, "fast SMA period"),
        StrategyParam("slow", int, 200, 2, _PERIOD, "slow SMA period"),
    )
    fast: int
    slow: int

    def check(self) -> str | None:
        return (
            None
            if self.fast < self.slow
            else f"fast ({self.fast}) must be below slow ({self.slow})"
        )

    def indicators(self) -> tuple[str, ...]:
        return (f"sma:{self.fast}", f"sma:{self.slow}")

    @cached_property
    def _keys(self) -> tuple[str, ...]:
        return self.indicators()

    def on_candle(self, ctx: Context) -> Decision | None:
        fast, slow = self._keys
        if ctx.crossed_above(fast, slow):
            return LONG
        if ctx.crossed_below(fast, slow):
            return SHORT
        return None


class RsiReversion(Strategy):
    """Mean reversion on Wilder's RSI: buy weakness, sell strength."""

    name = "rsi_reversion"
    summary = (
        "long when RSI crosses below oversold, short (or out) when it crosses above overbought"
    )
    params = (
        StrategyParam("period", int, 14, 2, _PERIOD, "RSI period"),
        StrategyParam("oversold", float, 30.0, 0, 100, "RSI level that opens a long"),
        StrategyParam("overbought", float, 70.0, 0, 100, "RSI level that opens a short"),
    )
    period: int
    oversold: float
    overbought: float

    def check(self) -> str | None:
        if self.oversold < self.overbought:
            return None
        return f"oversold ({self.oversold:g}) must be below overbought ({self.overbought:g})"

    def indicators(self) -> tuple[str, ...]:
        return (f"rsi:{self.period}",)

    @cached_property
    def _keys(self) -> tuple[str, ...]:
        return self.indicators()

    def on_candle(self, ctx: Context) -> Decision | None:
        (rsi,) = self._keys
        if ctx.crossed_below(rsi, self.oversold):
            return LONG
        if ctx.crossed_above(rsi, self.overbought):
            return SHORT
        return None


class MacdTrend(Strategy):
    """Trend following on the MACD line crossing its signal line."""

    name = "macd_trend"
    summary = "long when the MACD line crosses above its signal line, short (or out) below"
    params = (
        StrategyParam("fast", int, 12, 2, _PERIOD, "fast EMA period"),
        StrategyParam("slow", int, 26, 2, _PERIOD, "slow EMA period"),
        StrategyParam("signal", int, 9, 1, _PERIOD, "signal EMA period"),
    )
    fast: int
    slow: int
    signal: int

    def check(self) -> str | None:
        return (
            None
            if self.fast < self.slow
            else f"fast ({self.fast}) must be below slow ({self.slow})"
        )

    def indicators(self) -> tuple[str, ...]:
        return (f"macd:{self.fast}:{self.slow}:{self.signal}",)

    @cached_property
    def _keys(self) -> tuple[str, ...]:
        return _columns(self.indicators()[0])

    def on_candle(self, ctx: Context) -> Decision | None:
        line, signal, _ = self._keys
        if ctx.crossed_above(line, signal):
            return LONG
        if ctx.crossed_below(line, signal):
            return SHORT
        return None


class BollingerBreakout(Strategy):
    """Volatility breakout: the close leaving the Bollinger band starts a move."""

    name = "bollinger_breakout"
    summary = (
        "long when the close crosses above the upper band, short when it crosses below the "
        "lower band; out when it crosses back over the middle band"
    )
    params = (
        StrategyParam("period", int, 20, 2, _PERIOD, "SMA and standard deviation period"),
        StrategyParam("k", float, 2.0, 0.1, 10, "band width in standard deviations"),
    )
    period: int
    k: float

    def indicators(self) -> tuple[str, ...]:
        return (f"bbands:{self.period}:{self.k!r}",)

    @cached_property
    def _keys(self) -> tuple[str, ...]:
        return _columns(self.indicators()[0])

    def on_candle(self, ctx: Context) -> Decision | None:
        upper, middle, lower = self._keys
        if ctx.crossed_above("close", upper):
            return LONG
        if ctx.crossed_below("close", lower):
            return SHORT
        side = ctx.position.side
        if side > 0 and ctx.crossed_below("close", middle):
            return FLAT
        if side < 0 and ctx.crossed_above("close", middle):
            return FLAT
        return None


STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (MaCross, RsiReversion, MacdTrend, BollingerBreakout)
}


def build_strategy(name: str, params: Mapping[str, object] | None = None) -> Strategy:
    """The built-in strategy ``name`` with ``params`` checked and converted."""
    cls = STRATEGIES.get(name.strip().lower())
    if cls is None:
        raise StrategyError(
            f"unknown strategy {name!r}; built-in: {', '.join(STRATEGIES)}", field="strategy"
        )
    return cls(**dict(params or {}))


def parse_param_items(items: Iterable[str]) -> dict[str, str]:
    """``["fast=50", "slow=200"]`` -> ``{"fast": "50", "slow": "200"}``; repeats are errors."""
    found: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise StrategyError(f"--param {item!r} is not NAME=VALUE", field="params")
        if key in found:
            raise StrategyError(f"--param {key} is given twice", field="params")
        found[key] = value.strip()
    return found


def describe(cls: type[Strategy]) -> str:
    """One line per strategy: name, parameters with defaults, what it does."""
    params = " ".join(f"{p.name}={p.default}" for p in cls.params)
    return f"{cls.name} ({params}): {cls.summary}"
