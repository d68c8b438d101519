"""The full risk report of a set of assets and a portfolio of them, from daily closes.

What ``cryptodesk risk report`` prints and ``GET /api/v1/risk/portfolio`` serves:
every metric of ``analytics.risk`` per asset (each asset over its own rows: an asset
listed later starts later), the same for the portfolio plus Monte Carlo VaR, Euler
component and marginal VaR, concentration, betas and stress scenarios (over the
range where every asset has a price), and the correlation matrix over that same
range. Conventions are in docs/risk.md. A metric the data cannot support is
``None`` with its reason under ``notes``, never a misleading number.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from cryptodesk.analytics import correlation as corr
from cryptodesk.analytics import portfolio_risk as prisk
from cryptodesk.analytics.risk import (
    InsufficientData,
    RiskInputError,
    beta,
    drawdown_series,
    series_metrics,
)
from cryptodesk.analytics.var import var_monte_carlo
from cryptodesk.domain.timeutil import to_iso

FloatArray = npt.NDArray[np.float64]
WEIGHT_TOLERANCE = 1e-6  # weights typed by hand (0.333...) sum to 1 within this


@dataclass(frozen=True, slots=True)
class RiskReportOptions:
    """How the report is computed; the defaults are the CLI's."""

    confidence: float = 0.95
    horizon: int = 1
    risk_free: float = 0.0
    monte_carlo_paths: int = 100_000  # 0 leaves Monte Carlo out
    seed: int = 0
    benchmark: str = "BTC"
    correlation_threshold: float = 0.8
    stress_btc_shocks: tuple[float, ...] = (-0.1, -0.2, -0.3)
    asset_shocks: Mapping[str, float] = field(default_factory=dict)

    def check(self) -> None:
        if not 0 < self.confidence < 1:
            raise RiskInputError(f"confidence {self.confidence} is not between 0 and 1")
        if self.horizon < 1:
            raise RiskInputError(f"horizon {self.horizon} is not a whole number of days >= 1")
        if self.monte_carlo_paths < 0:
            raise RiskInputError("monte carlo paths cannot be negative")


@dataclass(frozen=True, slots=True)
class RiskReport:
    """The report as JSON-ready data, plus the series its HTML page draws."""

    data: dict[str, Any]
    times: npt.NDArray[np.int64]
    drawdowns: dict[str, tuple[npt.NDArray[np.int64], FloatArray]]
    correlation: FloatArray
    assets: tuple[str, ...]


def check_weights(
    weights: Mapping[str, float] | None, assets: Sequence[str], *, normalize: bool = False
) -> dict[str, float]:
    """Weights per asset of ``assets`` (equal when none are given); they must name known
    assets, be finite and sum to 1 (or be scaled to, with ``normalize``)."""
    if weights is None:
        return {a: 1.0 / len(assets) for a in assets}
    unknown = sorted(set(weights) - set(assets))
    if unknown:
        raise RiskInputError(
            f"unknown asset {', '.join(unknown)} in the weights (known: {', '.join(assets)})"
        )
    if not all(math.isfinite(w) for w in weights.values()):
        raise RiskInputError("weights must be finite numbers")
    total = math.fsum(weights.values())
    if normalize:
        if total <= 0:
            raise RiskInputError(f"weights sum to {total:g}; cannot normalize")
        return {a: w / total for a, w in weights.items()}
    if abs(total - 1.0) > WEIGHT_TOLERANCE:
        raise RiskInputError(f"weights sum to {total:.6g}, not 1 (use --normalize to scale them)")
    return dict(weights)


def _number(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _metrics_block(
    returns: FloatArray, benchmark: FloatArray | None, options: RiskReportOptions
) -> tuple[dict[str, float | None], dict[str, str]]:
    report = series_metrics(
        returns, confidence=options.confidence, horizon=options.horizon,
        risk_free=options.risk_free, benchmark=benchmark,
    )  # fmt: skip
    values = {k: _number(v) for k, v in report.values.items()}
    reasons = dict(report.reasons)
    reasons.update((k, "not a finite number") for k, v in report.values.items()
                   if v is not None and values[k] is None)  # fmt: skip
    return values, reasons


def _span(times: npt.NDArray[np.int64], returns: int) -> dict[str, Any]:
    return {"first": to_iso(int(times[0]))[:10], "last": to_iso(int(times[-1]))[:10],
            "returns": returns}  # fmt: skip


def build_risk_report(
    times: npt.NDArray[np.int64],
    assets: Sequence[str],
    prices: FloatArray,
    *,
    weights: Mapping[str, float] | None = None,
    options: RiskReportOptions | None = None,
) -> RiskReport:
    """The report over ``prices[t, i]`` (asset ``assets[i]`` at ``times[t]``; NaN before
    an asset's first price). ``weights`` are checked with ``check_weights``."""
    options = options or RiskReportOptions()
    options.check()
    assets = tuple(assets)
    if prices.shape != (len(times), len(assets)) or not assets:
        raise RiskInputError("prices must have one row per time and one column per asset")
    w = check_weights(weights, assets)
    notes: dict[str, dict[str, str]] = {}
    spans: dict[str, Any] = {}
    drawdowns: dict[str, tuple[npt.NDArray[np.int64], FloatArray]] = {}

    listed = ~np.isnan(prices)
    common = np.flatnonzero(listed.all(axis=1))
    if len(common) < 2:
        raise RiskInputError("the assets have fewer than two common days of prices")
    common_times = times[common[0] :]
    matrix = prices[common[0] :]
    returns = matrix[1:] / matrix[:-1] - 1.0
    bench_col = assets.index(options.benchmark) if options.benchmark in assets else None
    bench_common = None if bench_col is None else returns[:, bench_col]

    asset_blocks: dict[str, dict[str, float | None]] = {}
    for i, asset in enumerate(assets):
        start = int(np.argmax(listed[:, i]))
        own = prices[start:, i]
        r = own[1:] / own[:-1] - 1.0
        bench = None
        if bench_col is not None:
            # Beta over the rows both have: the later of the two listings onwards.
            both = max(start, int(np.argmax(listed[:, bench_col])))
            b_prices = prices[both:, bench_col]
            bench_r = b_prices[1:] / b_prices[:-1] - 1.0
            bench = np.concatenate([np.full(len(r) - len(bench_r), np.nan), bench_r])
        values, reasons = _metrics_block(r, None, options)
        if bench is not None:
            values["beta"] = _beta(r, bench, reasons)
        asset_blocks[asset] = values
        if reasons:
            notes[asset] = reasons
        spans[asset] = _span(times[start:], len(r))
        drawdowns[asset] = (times[start + 1 :], drawdown_series(r))

    weight_vec = np.array([w.get(a, 0.0) for a in assets])
    port_r = prisk.portfolio_returns(returns, weight_vec)
    port_values, port_reasons = _metrics_block(port_r, bench_common, options)
    portfolio: dict[str, Any] = dict(port_values)
    portfolio.update(_monte_carlo(returns, weight_vec, options, port_reasons))
    try:
        cvar = prisk.component_var(returns, weight_vec, confidence=options.confidence,
                                   horizon=options.horizon)  # fmt: skip
        portfolio["component_var"] = dict(zip(assets, map(_number, cvar.component.tolist()),
                                              strict=True))  # fmt: skip
        portfolio["marginal_var"] = dict(zip(assets, map(_number, cvar.marginal.tolist()),
                                             strict=True))  # fmt: skip
    except InsufficientData as exc:
        portfolio["component_var"] = portfolio["marginal_var"] = None
        port_reasons["component_var"] = port_reasons["marginal_var"] = exc.reason
    conc = prisk.concentration(w)
    portfolio["weights"] = {a: w.get(a, 0.0) for a in assets}
    portfolio["concentration"] = {
        "largest": [{"asset": a, "weight": x} for a, x in conc.largest],
        "herfindahl": conc.herfindahl, "effective_assets": conc.effective_assets,
    }  # fmt: skip
    portfolio["stress"] = _stress(w, returns, bench_common, assets, options, port_reasons)
    if port_reasons:
        notes["portfolio"] = port_reasons
    spans["portfolio"] = _span(common_times, len(port_r))
    drawdowns["portfolio"] = (common_times[1:], drawdown_series(port_r))

    cm = corr.correlation_matrix(returns)
    warning = corr.correlation_warning(cm, threshold=options.correlation_threshold)
    data: dict[str, Any] = {
        "assets": asset_blocks,
        "portfolio": portfolio,
        "correlation": {
            a: {b: _number(float(cm[i, j])) for j, b in enumerate(assets)}
            for i, a in enumerate(assets)
        },
        "correlation_average": _number(corr.average_pairwise_correlation(cm))
        if len(assets) > 1
        else None,
        "correlation_warning": None if warning is None else warning.message,
        "observations": spans,
        "parameters": {
            "confidence": options.confidence,
            "horizon_days": options.horizon,
            "risk_free": options.risk_free,
            "periods_per_year": 365,
            "monte_carlo_paths": options.monte_carlo_paths,
            "seed": options.seed,
            "benchmark": options.benchmark if bench_col is not None else None,
        },
        "notes": notes,
    }
    return RiskReport(data, times, drawdowns, cm, assets)


def _beta(r: FloatArray, bench: FloatArray, reasons: dict[str, str]) -> float | None:
    ok = ~np.isnan(bench)
    try:
        return _number(beta(r[ok], bench[ok]))
    except InsufficientData as exc:
        reasons["beta"] = exc.reason
        return None


def _monte_carlo(
    returns: FloatArray, weights: FloatArray, options: RiskReportOptions, reasons: dict[str, str]
) -> dict[str, float | None]:
    keys = ("var_monte_carlo", "cvar_monte_carlo", "var_monte_carlo_bootstrap",
            "cvar_monte_carlo_bootstrap")  # fmt: skip
    if options.monte_carlo_paths == 0:
        reasons.update((k, "Monte Carlo not requested (0 paths)") for k in keys)
        return dict.fromkeys(keys)
    out: dict[str, float | None] = {}
    methods: tuple[tuple[Literal["normal", "bootstrap"], str], ...] = (
        ("normal", ""), ("bootstrap", "_bootstrap"),
    )  # fmt: skip
    for method, suffix in methods:
        try:
            mc = var_monte_carlo(
                returns, weights, confidence=options.confidence, horizon=options.horizon,
                paths=options.monte_carlo_paths, method=method, seed=options.seed,
            )  # fmt: skip
        except InsufficientData as exc:
            out[f"var_monte_carlo{suffix}"] = out[f"cvar_monte_carlo{suffix}"] = None
            reasons[f"var_monte_carlo{suffix}"] = reasons[f"cvar_monte_carlo{suffix}"] = exc.reason
            continue
        out[f"var_monte_carlo{suffix}"] = _number(mc.var)
        out[f"cvar_monte_carlo{suffix}"] = _number(mc.cvar)
    return out


def _stress(
    weights: Mapping[str, float],
    returns: FloatArray,
    bench: FloatArray | None,
    assets: Sequence[str],
    options: RiskReportOptions,
    reasons: dict[str, str],
) -> list[dict[str, Any]]:
    scenarios: list[prisk.StressResult] = []
    if bench is not None:
        try:
            betas = dict(zip(assets, prisk.betas(returns, bench).tolist(), strict=True))
        except InsufficientData as exc:
            reasons["stress"] = exc.reason
            betas = {}
        for shock in options.stress_btc_shocks if betas else ():
            scenarios.append(prisk.stress_test(weights, betas, btc_shock=shock,
                                               name=f"BTC {shock:+.0%}"))  # fmt: skip
    elif options.stress_btc_shocks:
        reasons["stress"] = f"no {options.benchmark} column: BTC shocks cannot be propagated"
    if options.asset_shocks:
        scenarios.append(prisk.stress_test(weights, {}, asset_shocks=options.asset_shocks,
                                           name="custom"))  # fmt: skip
    return [{"name": s.name, "portfolio_return": s.portfolio_return,
             "asset_shocks": s.asset_shocks} for s in scenarios]  # fmt: skip
