"""Walk-forward optimisation: choose parameters on the past, judge them on what follows.

The series is cut into windows. In each, every combination of a parameter
grid is backtested on the in-sample candles, the one with the best objective
(Sharpe by default) is kept, and that one alone is backtested on the
out-of-sample candles that follow. Only out-of-sample results make the
headline: the windows' out-of-sample equity curves, stitched end to end (each
window starts with the cash the previous one ended with), and the metrics of
that stitched curve. In-sample scores are reported per window, for reference.

Windows (``count_windows`` by candles, ``time_windows`` by durations): the
first out-of-sample window starts right after the first in-sample one, and
each next one ``step`` later (default: the out-of-sample length, so
out-of-sample windows tile the series). Rolling windows keep the in-sample
length; anchored ones all start at the first candle. The last out-of-sample
window is cut short at the end of the data rather than dropped.

Warm-up, and why nothing looks ahead: every backtest of candles ``[a, b)``,
in-sample or out-of-sample, is fed the ``warmup`` candles before ``a`` first
(fewer where the data starts later). Its strategy sees them (indicators fill,
crossings are tracked) but its decisions on them are dropped, so it cannot
trade before ``a``: the first possible fill is at the open of candle ``a + 1``.
Those candles are all in the past of the window, as they would be for a live
strategy started at ``a``. The parameters of a window are chosen from its
in-sample candles (and their warm-up) only, all of which close before its
out-of-sample window opens. A position still open at the end of an
out-of-sample window is closed at its last close, where the parameters change.
By default the warm-up is as long as the first in-sample window.

``optuna`` is not a dependency: the search is a full grid.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice, product

import numpy as np
import numpy.typing as npt

from cryptodesk.analytics.backtest import (
    BacktestConfig,
    BacktestTrade,
    CandleArrays,
    run_backtest,
)
from cryptodesk.analytics.backtest_metrics import Metrics, compute_metrics
from cryptodesk.analytics.strategy import Context, Decision, ParamValue, Strategy, StrategyError
from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.interval import DAY_MS, HOUR_MS, MINUTE_MS, WEEK_MS

# Objectives and their direction: +1 higher is better, -1 lower is better.
OBJECTIVES = {
    "sharpe": 1, "sortino": 1, "calmar": 1, "total_return": 1, "cagr": 1,
    "profit_factor": 1, "win_rate": 1, "max_drawdown": -1,
}  # fmt: skip
MAX_COMBINATIONS = 10_000
_UNITS = {"m": MINUTE_MS, "h": HOUR_MS, "d": DAY_MS, "w": WEEK_MS}
Progress = Callable[[int, int], None]


# ---- windows ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Window:
    """Candle index bounds, end exclusive: in-sample ``[is_start, is_end)``, then
    out-of-sample ``[is_end, oos_end)``."""

    index: int
    is_start: int
    is_end: int
    oos_end: int

    @property
    def oos_start(self) -> int:
        return self.is_end


def parse_length(text: str, name: str) -> tuple[int, bool]:
    """``2000`` -> (2000, False) candles; ``90d`` -> (ms, True). Units m, h, d, w."""
    match = re.fullmatch(r"\s*(\d+)\s*([mhdw]?)\s*", text)
    if match is None or int(match[1]) <= 0:
        raise DomainError(
            f"{name} {text!r} is not a candle count (2000) or a duration (90d, 12h, 4w)",
            field=name,
        )
    unit = match[2]
    return (int(match[1]) * _UNITS[unit], True) if unit else (int(match[1]), False)


def _check_step(in_sample: int, out_of_sample: int, step: int | None, what: str) -> int:
    if in_sample <= 0 or out_of_sample <= 0:
        raise DomainError(f"in-sample and out-of-sample {what} must be positive", field="window")
    step = out_of_sample if step is None else step
    if step < out_of_sample:
        raise DomainError(
            f"step ({step} {what}) is below the out-of-sample length ({out_of_sample}): "
            "out-of-sample windows would overlap",
            field="step",
        )
    return step


def count_windows(
    n: int, *, in_sample: int, out_of_sample: int, step: int | None = None, anchored: bool = False
) -> list[Window]:
    """Windows over ``n`` candles, lengths in candles."""
    step = _check_step(in_sample, out_of_sample, step, "candles")
    if n <= in_sample:
        raise DomainError(
            f"{n} candles leave nothing out of sample after {in_sample} in sample", field="window"
        )
    return [
        Window(k, 0 if anchored else start - in_sample, start, min(start + out_of_sample, n))
        for k, start in enumerate(range(in_sample, n, step))
    ]


def time_windows(
    ts: npt.NDArray[np.int64],
    *,
    in_sample_ms: int,
    out_of_sample_ms: int,
    step_ms: int | None = None,
    anchored: bool = False,
) -> list[Window]:
    """Windows by open time from the first candle (gaps in the data leave windows
    shorter in candles); a window with no candle in or out of sample is left out."""
    step = _check_step(in_sample_ms, out_of_sample_ms, step_ms, "ms")
    first, last = int(ts[0]), int(ts[-1])
    found: list[Window] = []
    start = first + in_sample_ms
    while start <= last:
        bounds = [first if anchored else start - in_sample_ms, start, start + out_of_sample_ms]
        a, b, c = (int(i) for i in np.searchsorted(ts, bounds, side="left"))
        if a < b < c:
            found.append(Window(len(found), a, b, c))
        start += step
    if not found:
        raise DomainError(
            "the data spans no complete in-sample window followed by a candle", field="window"
        )
    return found


# ---- the grid --------------------------------------------------------------------------


def _axis_values(name: str, text: str) -> list[str]:
    """``10:60:10`` (inclusive) or ``10,20,50`` or ``20`` -> the values as text."""
    if ":" not in text:
        values = [v.strip() for v in text.split(",")]
        if any(not v for v in values):
            raise DomainError(f"--grid {name}={text!r} has an empty value", field="grid")
        return values
    parts = text.split(":")
    bad = DomainError(
        f"--grid {name}={text!r} is not START:STOP:STEP with STEP > 0 and START <= STOP",
        field="grid",
    )
    try:
        if len(parts) != 3:
            raise ValueError
        if all(re.fullmatch(r"\s*-?\d+\s*", p) for p in parts):
            a, b, s = (int(p) for p in parts)
            if s <= 0 or a > b:
                raise bad
            return [str(v) for v in islice(range(a, b + 1, s), MAX_COMBINATIONS + 1)]
        x, y, d = (float(p) for p in parts)
    except ValueError:
        raise bad from None
    if not (d > 0 and x <= y and math.isfinite(x) and math.isfinite(y)):
        raise bad
    count = min(math.floor((y - x) / d + 1e-9) + 1, MAX_COMBINATIONS + 1)
    return [repr(round(x + k * d, 12)) for k in range(count)]


@dataclass(frozen=True, slots=True)
class ParamGrid:
    """A strategy class, its fixed parameters and the values to search, axis by axis."""

    strategy: type[Strategy]
    fixed: dict[str, ParamValue]
    axes: tuple[tuple[str, tuple[ParamValue, ...]], ...]

    @classmethod
    def parse(
        cls,
        strategy: type[Strategy],
        items: Iterable[str],
        fixed: Mapping[str, object] | None = None,
    ) -> ParamGrid:
        """``["fast=10:60:10", "slow=100,200"]``: each value checked like a parameter;
        the grid's names and ``fixed``'s must be the strategy's and must not repeat."""
        by_name = {p.name: p for p in strategy.params}
        known = ", ".join(by_name) or "none"

        def convert(key: str, raw: object, where: str) -> ParamValue:
            if key not in by_name:
                raise StrategyError(
                    f"{strategy.name} has no parameter {key!r} ({where}); its parameters: {known}",
                    field="params",
                )
            return by_name[key].convert(strategy.name, raw)

        values = {k: convert(k, v, "--param") for k, v in (fixed or {}).items()}
        axes: list[tuple[str, tuple[ParamValue, ...]]] = []
        for item in items:
            key, sep, text = item.partition("=")
            key = key.strip()
            if not sep or not key:
                raise DomainError(f"--grid {item!r} is not NAME=VALUES", field="grid")
            if key in values or any(key == k for k, _ in axes):
                raise DomainError(f"parameter {key} is given twice", field="grid")
            axis = tuple(dict.fromkeys(convert(key, v, "--grid") for v in _axis_values(key, text)))
            axes.append((key, axis))
        if not axes:
            raise DomainError("give at least one --grid NAME=VALUES", field="grid")
        size = math.prod(len(a) for _, a in axes)
        if size > MAX_COMBINATIONS:
            raise DomainError(
                f"the grid has {size} combinations; at most {MAX_COMBINATIONS}", field="grid"
            )
        return cls(strategy, values, tuple(axes))

    def combinations(self) -> tuple[list[dict[str, ParamValue]], int]:
        """Valid parameter sets in grid order (the first axis varies slowest), and how
        many combinations the strategy refused together (``fast >= slow``)."""
        names = [k for k, _ in self.axes]
        valid: list[dict[str, ParamValue]] = []
        skipped = 0
        for values in product(*(v for _, v in self.axes)):
            params = {**self.fixed, **dict(zip(names, values, strict=True))}
            try:
                self.strategy(**params)
            except StrategyError:
                skipped += 1
                continue
            valid.append(params)
        return valid, skipped


# ---- running ---------------------------------------------------------------------------


class _AfterWarmUp(Strategy):
    """Sees every candle, but its decisions count from candle ``trade_from`` on."""

    def __init__(self, inner: Strategy, trade_from: int) -> None:
        self.inner, self.trade_from = inner, trade_from
        self.__dict__["name"] = inner.name  # error messages name the real strategy

    def indicators(self) -> Sequence[str]:
        return self.inner.indicators()

    def on_candle(self, ctx: Context) -> Decision | None:
        decision = self.inner.on_candle(ctx)
        return decision if ctx.index >= self.trade_from else None


@dataclass(frozen=True, slots=True)
class Segment:
    """A backtest of candles ``[start, end)``; the warm-up candles are left out."""

    ts: npt.NDArray[np.int64]
    equity: npt.NDArray[np.float64]
    trades: list[BacktestTrade]
    exposed: int
    metrics: Metrics


def _slice(c: CandleArrays, a: int, b: int) -> CandleArrays:
    return CandleArrays(c.ts[a:b], c.open[a:b], c.high[a:b], c.low[a:b], c.close[a:b],
                        c.volume[a:b])  # fmt: skip


def backtest_segment(
    candles: CandleArrays,
    strategy: Strategy,
    start: int,
    end: int,
    config: BacktestConfig,
    *,
    warmup: int,
    interval_ms: int,
) -> Segment:
    """Backtest candles ``[start, end)`` after feeding up to ``warmup`` earlier candles
    to the strategy without trading on them."""
    first = max(0, start - warmup)
    skip = start - first
    run = run_backtest(
        _slice(candles, first, end), _AfterWarmUp(strategy, skip), config, interval_ms=interval_ms
    )
    exposed = round(run.metrics.exposure * len(run.ts))  # no position during the warm-up
    ts, equity = run.ts[skip:], run.equity[skip:]
    metrics = compute_metrics(
        equity, config.initial_cash, run.trades, exposed_bars=exposed, ts=ts,
        interval_ms=interval_ms,
    )  # fmt: skip
    return Segment(ts, equity, run.trades, exposed, metrics)


def score(metrics: Metrics, objective: str) -> float:
    """The objective, higher is better; NaN (no trades, a flat curve) ranks last."""
    value = float(getattr(metrics, objective)) * OBJECTIVES[objective]
    return value if not math.isnan(value) else -math.inf


@dataclass(frozen=True, slots=True)
class WindowResult:
    window: Window
    params: dict[str, ParamValue]
    in_sample: Metrics  # of the chosen parameters
    out_of_sample: Segment


@dataclass(frozen=True, slots=True)
class WalkForwardResult:
    strategy: str
    objective: str
    config: BacktestConfig
    interval_ms: int
    warmup: int
    combinations: int  # valid parameter sets tried in each window
    skipped: int  # combinations the strategy refused
    windows: list[WindowResult]
    ts: npt.NDArray[np.int64]  # the stitched out-of-sample curve
    equity: npt.NDArray[np.float64]
    trades: list[BacktestTrade]
    metrics: Metrics  # the headline: out-of-sample only


def walk_forward(
    candles: CandleArrays,
    grid: ParamGrid,
    windows: Sequence[Window],
    config: BacktestConfig | None = None,
    *,
    interval_ms: int,
    objective: str = "sharpe",
    warmup: int | None = None,
    on_progress: Progress | None = None,
) -> WalkForwardResult:
    """Search ``grid`` in each window's in-sample candles, backtest the best out of sample.

    Ties keep the earlier combination in grid order. Raises DomainError for bad
    input, BacktestError when the strategy raises.
    """
    cfg = config or BacktestConfig()
    if objective not in OBJECTIVES:
        raise DomainError(
            f"objective {objective!r} is not one of {', '.join(OBJECTIVES)}", field="objective"
        )
    if not windows:
        raise DomainError("no windows to walk through", field="window")
    candles.check()
    warm = windows[0].is_end - windows[0].is_start if warmup is None else warmup
    if warm < 0:
        raise DomainError(f"warmup {warm} is negative", field="warmup")
    sets, skipped = grid.combinations()
    if not sets:
        raise DomainError(
            f"no valid parameter combination in the grid ({skipped} refused by "
            f"{grid.strategy.name})",
            field="grid",
        )
    per_window = len(sets) + 1
    tick = on_progress or (lambda done, total: None)
    cash = cfg.initial_cash
    results: list[WindowResult] = []
    for k, w in enumerate(windows):
        scored: list[tuple[float, Metrics, dict[str, ParamValue]]] = []
        for params in sets:
            seg = backtest_segment(candles, grid.strategy(**params), w.is_start, w.is_end, cfg,
                                   warmup=warm, interval_ms=interval_ms)  # fmt: skip
            scored.append((score(seg.metrics, objective), seg.metrics, params))
            tick(k * per_window + len(scored), len(windows) * per_window)
        _, in_sample, best = max(scored, key=lambda s: s[0])  # the first of equal scores
        oos = backtest_segment(
            candles, grid.strategy(**best), w.oos_start, w.oos_end,
            dataclasses.replace(cfg, initial_cash=cash), warmup=warm, interval_ms=interval_ms,
        )  # fmt: skip
        tick((k + 1) * per_window, len(windows) * per_window)
        results.append(WindowResult(w, grid.strategy(**best).values, in_sample, oos))
        cash = float(oos.equity[-1])
        if cash <= 0:  # ruined: nothing left to trade with in the windows after
            break
    ts = np.concatenate([r.out_of_sample.ts for r in results])
    equity = np.concatenate([r.out_of_sample.equity for r in results])
    trades = [t for r in results for t in r.out_of_sample.trades]
    metrics = compute_metrics(
        equity, cfg.initial_cash, trades, ts=ts, interval_ms=interval_ms,
        exposed_bars=sum(r.out_of_sample.exposed for r in results),
    )  # fmt: skip
    return WalkForwardResult(
        grid.strategy.name, objective, cfg, interval_ms, warm, len(sets), skipped, results,
        ts, equity, trades, metrics,
    )  # fmt: skip
