"""Comparing strategies on identical candles: is one really better, or lucky?

Each strategy is backtested on the same candles with the same costs. From its
equity curve we take the per-candle returns (the first against the initial
cash), then for every pair A, B two statistics of A minus B:

- ``mean``: the difference of the mean per-candle returns;
- ``total``: the difference of the total returns, compounded over the series.

Their confidence intervals come from a stationary bootstrap (Politis and
Romano, 1994): a resampled series is built from blocks of consecutive candles
that start at random places and have geometrically distributed lengths (mean
``mean_block`` candles; the series wraps around). Blocks keep the
autocorrelation of returns (a position held over many candles makes
consecutive returns alike), which resampling single candles would destroy,
making intervals too narrow. All strategies are resampled with the same
indices, so their correlation through the common market is kept too. The
default mean block length grows as ``n^(1/3)``, the rate known to suit block
bootstraps of a mean. The interval is the percentile interval of the
resampled statistic; a difference is significant when its interval excludes
0. The random generator is numpy's PCG64 seeded with ``seed``: the same
inputs and seed give the same intervals.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from cryptodesk.analytics.backtest import BacktestConfig, BacktestResult, CandleArrays, run_backtest
from cryptodesk.analytics.strategy import Strategy
from cryptodesk.domain.errors import DomainError

FloatArray = npt.NDArray[np.float64]
_CHUNK_CELLS = 2_000_000  # resampled candles held at once (a few tens of MB)


def period_returns(equity: FloatArray, initial_cash: float) -> FloatArray:
    """Per-candle returns of an equity curve; 0 once equity is gone (nothing left to change)."""
    curve = np.concatenate(([initial_cash], equity))
    prev = curve[:-1]
    out = np.zeros(len(equity), np.float64)
    np.divide(curve[1:] - prev, prev, out=out, where=prev > 0)
    return out


def default_block(n: int) -> float:
    """The mean block length used when none is given: ``n^(1/3)`` candles, at least 1."""
    return float(max(1, round(n ** (1 / 3))))


def stationary_indices(
    n: int, mean_block: float, size: int, rng: np.random.Generator
) -> npt.NDArray[np.int64]:
    """``size`` resampled index series of length ``n`` (one per row).

    Draws, in this order: ``rng.random((size, n))``, where a value below
    ``1 / mean_block`` starts a new block (the first position always does), and
    ``rng.integers(0, n, (size, n))``, the start of a block beginning there.
    Inside a block, indices go up by one and wrap from ``n - 1`` to 0.
    """
    fresh = rng.random((size, n)) < 1.0 / mean_block
    fresh[:, 0] = True
    starts = rng.integers(0, n, (size, n))
    positions = np.arange(n)
    # The position where the current block began, for every position.
    began = np.maximum.accumulate(np.where(fresh, positions, 0), axis=1)
    rows = np.arange(size)[:, None]
    out: npt.NDArray[np.int64] = (starts[rows, began] + (positions - began)) % n
    return out


@dataclass(frozen=True, slots=True)
class Estimate:
    """A statistic and its bootstrap confidence interval."""

    value: float
    low: float
    high: float

    @property
    def significant(self) -> bool:
        """The interval excludes 0."""
        return self.low > 0 or self.high < 0


@dataclass(frozen=True, slots=True)
class PairTest:
    """A minus B: differences of mean per-candle return and of total return."""

    a: str
    b: str
    mean: Estimate
    total: Estimate


def bootstrap_pairs(
    returns: Sequence[FloatArray],
    *,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 1,
    mean_block: float | None = None,
) -> list[tuple[int, int, Estimate, Estimate]]:
    """For every pair ``i < j`` of equally long return series: (i, j, mean, total)
    estimates of series i minus series j."""
    if len(returns) < 2:
        raise DomainError("compare at least two return series", field="strategies")
    n = len(returns[0])
    if any(len(r) != n for r in returns):
        raise DomainError("return series must be equally long", field="returns")
    if n < 2:
        raise DomainError("a comparison needs two candles at least", field="candles")
    if not 0 < confidence < 1:
        raise DomainError(f"confidence {confidence!r} is not in (0, 1)", field="confidence")
    if resamples < 10:
        raise DomainError(f"resamples {resamples} is below 10", field="resamples")
    block = default_block(n) if mean_block is None else mean_block
    if not 1 <= block <= n:
        raise DomainError(f"mean block {block!r} is not in [1, {n}]", field="block")
    r = np.vstack([np.asarray(x, np.float64) for x in returns])
    with np.errstate(divide="ignore"):
        logs = np.log1p(r)  # a return of -1 (all lost) is log 0 = -inf: growth 0
    rng = np.random.Generator(np.random.PCG64(seed))
    means = np.empty((len(r), resamples))
    growth = np.empty((len(r), resamples))
    chunk = max(1, _CHUNK_CELLS // n)
    for at in range(0, resamples, chunk):
        size = min(chunk, resamples - at)
        idx = stationary_indices(n, block, size, rng)
        for s in range(len(r)):
            means[s, at : at + size] = r[s][idx].mean(axis=1)
            growth[s, at : at + size] = np.exp(logs[s][idx].sum(axis=1))
    tail = (1 - confidence) / 2
    levels = [tail, 1 - tail]
    totals = np.exp(logs.sum(axis=1)) - 1
    found = []
    for i in range(len(r)):
        for j in range(i + 1, len(r)):
            lo_m, hi_m = np.quantile(means[i] - means[j], levels)
            lo_t, hi_t = np.quantile(growth[i] - growth[j], levels)
            mean = Estimate(float(r[i].mean() - r[j].mean()), float(lo_m), float(hi_m))
            total = Estimate(float(totals[i] - totals[j]), float(lo_t), float(hi_t))
            found.append((i, j, mean, total))
    return found


@dataclass(frozen=True, slots=True)
class Comparison:
    labels: list[str]
    results: list[BacktestResult]
    returns: list[FloatArray]
    pairs: list[PairTest]
    resamples: int
    confidence: float
    seed: int
    mean_block: float


def compare_strategies(
    candles: CandleArrays,
    strategies: Sequence[tuple[str, Strategy]],
    config: BacktestConfig | None = None,
    *,
    interval_ms: int,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 1,
    mean_block: float | None = None,
) -> Comparison:
    """Backtest each ``(label, strategy)`` on ``candles`` and test every pair's difference.

    Raises DomainError for bad input, BacktestError when a strategy raises.
    """
    labels = [label for label, _ in strategies]
    if len(set(labels)) != len(labels):
        twice = next(x for x in labels if labels.count(x) > 1)
        raise DomainError(f"strategy {twice!r} is given twice", field="strategies")
    if len(labels) < 2:
        raise DomainError("compare at least two strategies", field="strategies")
    cfg = config or BacktestConfig()
    results = [run_backtest(candles, s, cfg, interval_ms=interval_ms) for _, s in strategies]
    returns = [period_returns(r.equity, cfg.initial_cash) for r in results]
    block = default_block(len(candles.ts)) if mean_block is None else mean_block
    found = bootstrap_pairs(
        returns, resamples=resamples, confidence=confidence, seed=seed, mean_block=block
    )
    pairs = [PairTest(labels[i], labels[j], mean, total) for i, j, mean, total in found]
    return Comparison(labels, results, returns, pairs, resamples, confidence, seed, block)


def _estimate(e: Estimate) -> dict[str, float | bool]:
    return {"value": e.value, "low": e.low, "high": e.high, "significant": e.significant}


def compare_report(c: Comparison, *, data: Mapping[str, Any]) -> dict[str, Any]:
    """The comparison as JSON-ready values (NaN stays NaN); ``data`` describes the candles."""
    return {
        "data": dict(data),
        "bootstrap": {"method": "stationary", "resamples": c.resamples,
                      "confidence": c.confidence, "seed": c.seed, "mean_block": c.mean_block},
        "strategies": [
            {"label": label, "name": r.strategy, "params": r.params, "metrics": r.metrics.as_dict()}
            for label, r in zip(c.labels, c.results, strict=True)
        ],
        "pairs": [
            {"a": p.a, "b": p.b, "total_return_difference": _estimate(p.total),
             "mean_return_difference": _estimate(p.mean)}
            for p in c.pairs
        ],
    }  # fmt: skip
