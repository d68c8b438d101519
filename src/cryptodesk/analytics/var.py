"""Value at risk and conditional value at risk of daily simple returns.

Every measure is a POSITIVE loss fraction (0.05 = a 5% loss) at confidence
``c`` over ``horizon`` days. Historical measures use the overlapping
``h``-day compounded returns ``R_h``; the parametric ones scale the daily
mean by ``h`` and the daily standard deviation by ``sqrt(h)``. The formulas
and minimum sample sizes are in ``docs/risk.md``, section "Conventions".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import ArrayLike

from cryptodesk.analytics.risk import (
    MIN_RETURNS_KURTOSIS,
    MIN_RETURNS_STD,
    FloatArray,
    InsufficientData,
    RiskInputError,
    as_returns,
    check_confidence,
    check_horizon,
    excess_kurtosis,
    skewness,
)

_STANDARD_NORMAL = NormalDist()


def min_tail_observations(confidence: float) -> int:
    """Fewest observations whose ``1 - c`` quantile lies inside the sample:
    ``ceil(1 / (1 - c))``, so that at least one observation is expected at or
    beyond it (20 at 95%, 100 at 99%)."""
    c = check_confidence(confidence)
    # Rounded first so that 1 / (1 - 0.95) = 20.000000000000004 counts as 20.
    return max(2, math.ceil(round(1.0 / (1.0 - c), 9)))


def horizon_returns(returns: ArrayLike, horizon: int = 1) -> FloatArray:
    """Overlapping ``h``-day compounded returns ``prod(1 + r[i:i+h]) - 1``
    (the returns themselves when ``h`` is 1)."""
    r = as_returns(returns)
    h = check_horizon(horizon)
    if h == 1:
        return r
    if r.size < h:
        return np.empty(0, dtype=np.float64)
    result: FloatArray = sliding_window_view(1.0 + r, h).prod(axis=1) - 1.0
    return result


def _tail_sample(returns: ArrayLike, confidence: float, horizon: int) -> FloatArray:
    c = check_confidence(confidence)
    rh = horizon_returns(returns, horizon)
    need = min_tail_observations(c)
    if rh.size < need:
        raise InsufficientData(
            f"historical VaR at {c:g} needs at least {need} {horizon}-day returns, got {rh.size}"
        )
    return rh


def var_historical(returns: ArrayLike, *, confidence: float = 0.95, horizon: int = 1) -> float:
    """``-quantile(R_h, 1 - c)`` with linear interpolation between order
    statistics (numpy's default, Excel ``PERCENTILE.INC``, R type 7)."""
    rh = _tail_sample(returns, confidence, horizon)
    return float(-np.quantile(rh, 1.0 - float(confidence)))


def cvar_historical(returns: ArrayLike, *, confidence: float = 0.95, horizon: int = 1) -> float:
    """``-mean(R_h[R_h <= q])`` with ``q`` the historical VaR quantile."""
    rh = _tail_sample(returns, confidence, horizon)
    q = np.quantile(rh, 1.0 - float(confidence))
    return float(-np.mean(rh[rh <= q]))


def _mean_std(returns: ArrayLike, what: str) -> tuple[FloatArray, float, float]:
    r = as_returns(returns)
    if r.size < MIN_RETURNS_STD:
        raise InsufficientData(f"{what} needs at least {MIN_RETURNS_STD} returns, got {r.size}")
    std = 0.0 if float(r.max()) == float(r.min()) else float(np.std(r, ddof=1))
    return r, float(np.mean(r)), std


def var_parametric(returns: ArrayLike, *, confidence: float = 0.95, horizon: int = 1) -> float:
    """Gaussian VaR ``-(h * mean + z * std * sqrt(h))``, ``z = Phi^-1(1 - c)``,
    std with ddof 1."""
    c = check_confidence(confidence)
    h = check_horizon(horizon)
    _, mean, std = _mean_std(returns, "parametric VaR")
    z = _STANDARD_NORMAL.inv_cdf(1.0 - c)
    return -(h * mean + z * std * math.sqrt(h))


def cornish_fisher_z(confidence: float, skew: float, excess_kurtosis: float) -> float:
    """The normal quantile ``z = Phi^-1(1 - c)`` adjusted for skewness ``S``
    and excess kurtosis ``K``:
    ``z + (z^2 - 1) S / 6 + (z^3 - 3z) K / 24 - (2z^3 - 5z) S^2 / 36``."""
    c = check_confidence(confidence)
    z = _STANDARD_NORMAL.inv_cdf(1.0 - c)
    s, k = float(skew), float(excess_kurtosis)
    return (
        z
        + (z * z - 1.0) * s / 6.0
        + (z**3 - 3.0 * z) * k / 24.0
        - (2.0 * z**3 - 5.0 * z) * s * s / 36.0
    )


def modified_var(
    mean: float,
    std: float,
    skew: float,
    excess_kurtosis: float,
    *,
    confidence: float = 0.95,
    horizon: int = 1,
) -> float:
    """Cornish-Fisher VaR from given daily moments:
    ``-(h * mean + z_cf * std * sqrt(h))``."""
    h = check_horizon(horizon)
    z_cf = cornish_fisher_z(confidence, skew, excess_kurtosis)
    return -(h * float(mean) + z_cf * float(std) * math.sqrt(h))


def var_cornish_fisher(returns: ArrayLike, *, confidence: float = 0.95, horizon: int = 1) -> float:
    """Cornish-Fisher (modified) VaR: the parametric VaR with ``z`` replaced by
    :func:`cornish_fisher_z` of the sample skewness and excess kurtosis."""
    c = check_confidence(confidence)
    h = check_horizon(horizon)
    r = as_returns(returns)
    if r.size < MIN_RETURNS_KURTOSIS:
        raise InsufficientData(
            f"Cornish-Fisher VaR needs at least {MIN_RETURNS_KURTOSIS} returns, got {r.size}"
        )
    s, k = skewness(r), excess_kurtosis(r)
    return modified_var(float(np.mean(r)), float(np.std(r, ddof=1)), s, k, confidence=c, horizon=h)


# -- Monte Carlo -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MonteCarloVar:
    var: float
    cvar: float
    paths: int
    method: str


def _returns_matrix(returns_matrix: ArrayLike, weights: ArrayLike) -> tuple[FloatArray, FloatArray]:
    m = np.asarray(returns_matrix, dtype=np.float64)
    if m.ndim == 1:
        m = m[:, np.newaxis]
    if m.ndim != 2:
        raise RiskInputError(f"returns_matrix must be T x N, got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        raise RiskInputError("returns_matrix contains NaN or infinite values")
    if m.size and float(m.min()) < -1.0:
        raise RiskInputError("returns_matrix contains a return below -100%")
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.size != m.shape[1]:
        raise RiskInputError(f"{w.size} weights for {m.shape[1]} assets")
    if not np.all(np.isfinite(w)):
        raise RiskInputError("weights contain NaN or infinite values")
    if m.shape[0] < MIN_RETURNS_STD:
        raise InsufficientData(
            f"Monte Carlo VaR needs at least {MIN_RETURNS_STD} days of returns, got {m.shape[0]}"
        )
    return m, w


def _covariance_factor(cov: FloatArray) -> FloatArray:
    """A matrix ``L`` with ``L @ L.T == cov``: Cholesky, or the eigenvectors
    scaled by the root eigenvalues when the covariance is singular (fewer days than assets,
    a constant or duplicated asset)."""
    try:
        return np.asarray(np.linalg.cholesky(cov), dtype=np.float64)
    except np.linalg.LinAlgError:
        vals, vecs = np.linalg.eigh(cov)
        return np.asarray(vecs * np.sqrt(np.clip(vals, 0.0, None)), dtype=np.float64)


def var_monte_carlo(
    returns_matrix: ArrayLike,
    weights: ArrayLike,
    *,
    confidence: float = 0.95,
    horizon: int = 1,
    paths: int = 100_000,
    method: Literal["normal", "bootstrap"] = "normal",
    seed: int = 0,
) -> MonteCarloVar:
    """Portfolio VaR and CVaR by simulation.

    ``normal`` draws daily asset returns from a multivariate normal law with
    the sample mean and covariance (ddof 1); ``bootstrap`` draws whole
    historical days (rows) with replacement, keeping the cross-asset
    dependence. Each asset compounds ``h`` daily draws, ``prod(1 + r) - 1``,
    before the weights apply; VaR and CVaR follow the historical conventions
    over the simulated portfolio returns. Seeded with ``default_rng(seed)``.
    """
    c = check_confidence(confidence)
    h = check_horizon(horizon)
    m, w = _returns_matrix(returns_matrix, weights)
    if method not in ("normal", "bootstrap"):
        raise RiskInputError(f"method must be 'normal' or 'bootstrap', got {method!r}")
    if isinstance(paths, bool) or int(paths) != paths or paths < 1:
        raise RiskInputError(f"paths must be a positive whole number, got {paths!r}")
    n_paths = int(paths)
    need = min_tail_observations(c)
    if n_paths < need:
        raise InsufficientData(f"Monte Carlo VaR at {c:g} needs at least {need} paths")

    rng = np.random.default_rng(seed)
    if method == "normal":
        mu = m.mean(axis=0)
        factor = _covariance_factor(np.atleast_2d(np.cov(m, rowvar=False, ddof=1)))
        if h == 1:
            # Weights folded into the factor: one (paths x N) @ (N,) product.
            z = rng.standard_normal((n_paths, m.shape[1]))
            port: FloatArray = z @ (factor.T @ w) + float(mu @ w)
        else:
            growth = np.ones((n_paths, m.shape[1]))
            for _ in range(h):
                day: FloatArray = rng.standard_normal((n_paths, m.shape[1])) @ factor.T
                day += mu
                day += 1.0
                growth *= day
            port = (growth - 1.0) @ w
    else:
        if h == 1:
            port = (m @ w)[rng.integers(0, m.shape[0], size=n_paths)]
        else:
            gross = 1.0 + m
            growth = np.ones((n_paths, m.shape[1]))
            for _ in range(h):
                growth *= gross[rng.integers(0, m.shape[0], size=n_paths)]
            port = (growth - 1.0) @ w

    q = np.quantile(port, 1.0 - c)
    return MonteCarloVar(
        var=float(-q), cvar=float(-np.mean(port[port <= q])), paths=n_paths, method=method
    )
