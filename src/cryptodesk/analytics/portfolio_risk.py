"""Risk of a portfolio of assets: returns, component VaR, concentration, betas, stress tests.

Conventions (shared with the per-series risk metrics):

- Returns are simple daily returns, one row per day and one column per asset.
- A weight vector means constant weights rebalanced every day, so the portfolio
  return of a day is ``r_p = R @ w``; no drift of the weights between days.
- VaR is a POSITIVE loss fraction. Parametric (Gaussian) VaR over ``h`` days at
  confidence ``c`` is ``-(h * mean + z * std * sqrt(h))`` with
  ``z = Phi^-1(1 - c)``; standard deviations and covariances use ddof 1.
- Component VaR is the Euler allocation of that VaR: VaR is homogeneous of
  degree one in the weights, so ``sum_i w_i * dVaR/dw_i`` is the VaR itself and
  each term is the share the asset is responsible for.
- Bad input raises ``RiskInputError``, too few days ``InsufficientData``
  (both from :mod:`cryptodesk.analytics.risk`).
- Stress tests propagate a BTC move through each asset's beta to BTC, because
  in crypto the market factor is BTC; a user shock for an asset wins over the
  propagated one. A long position cannot lose more than it is worth, so a
  propagated shock is floored at -100 %.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from statistics import NormalDist
from typing import Final

import numpy as np
import numpy.typing as npt

from cryptodesk.analytics.risk import (
    InsufficientData,
    RiskInputError,
    check_confidence,
    check_horizon,
)

BENCHMARK_ASSET: Final = "BTC"
_TOTAL_LOSS: Final = -1.0


def _matrix(returns_matrix: npt.ArrayLike) -> npt.NDArray[np.float64]:
    matrix = np.asarray(returns_matrix, dtype=np.float64)
    if matrix.ndim != 2:
        raise RiskInputError(f"returns matrix must be 2-D (days x assets), got {matrix.ndim}-D")
    if matrix.shape[1] == 0:
        raise RiskInputError("returns matrix has no assets")
    if matrix.shape[0] < 2:
        raise InsufficientData(f"need at least 2 days of returns, got {matrix.shape[0]}")
    if not np.isfinite(matrix).all():
        raise RiskInputError("returns matrix contains NaN or infinite values")
    return matrix


def _weights(weights: npt.ArrayLike, assets: int) -> npt.NDArray[np.float64]:
    vector = np.asarray(weights, dtype=np.float64)
    if vector.shape != (assets,):
        raise RiskInputError(f"weights must have shape ({assets},), got {vector.shape}")
    if not np.isfinite(vector).all():
        raise RiskInputError("weights contain NaN or infinite values")
    return vector


def portfolio_returns(
    returns_matrix: npt.ArrayLike, weights: npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """Daily returns of constant weights rebalanced daily: ``R @ w``, one value per day."""
    matrix = _matrix(returns_matrix)
    return matrix @ _weights(weights, matrix.shape[1])


@dataclass(frozen=True, slots=True)
class ComponentVar:
    """Parametric VaR of a portfolio split by asset; ``component.sum() == total``."""

    total: float
    marginal: npt.NDArray[np.float64]
    component: npt.NDArray[np.float64]


def component_var(
    returns_matrix: npt.ArrayLike,
    weights: npt.ArrayLike,
    *,
    confidence: float = 0.95,
    horizon: int = 1,
) -> ComponentVar:
    """Euler allocation of the Gaussian portfolio VaR over ``horizon`` days.

    ``marginal_i = -(h * mu_i) - z * sqrt(h) * (Sigma w)_i / sigma_p`` is the
    derivative of the VaR in ``w_i``; ``component_i = w_i * marginal_i``.
    ``total`` is the sum of the components, which equals the parametric VaR of
    ``portfolio_returns`` up to float rounding.
    """
    confidence = check_confidence(confidence)
    horizon = check_horizon(horizon)
    matrix = _matrix(returns_matrix)
    w = _weights(weights, matrix.shape[1])
    mean = matrix.mean(axis=0)
    cov = np.atleast_2d(np.cov(matrix, rowvar=False, ddof=1))
    sigma_w = cov @ w
    variance = float(w @ sigma_w)
    if not variance > 0.0:
        raise RiskInputError("portfolio variance is zero: VaR has no derivative in the weights")
    z = NormalDist().inv_cdf(1.0 - confidence)
    marginal = -(horizon * mean) - z * math.sqrt(horizon) * sigma_w / math.sqrt(variance)
    component = w * marginal
    return ComponentVar(total=float(component.sum()), marginal=marginal, component=component)


@dataclass(frozen=True, slots=True)
class Concentration:
    """The ``top`` largest positions by absolute weight, Herfindahl index, effective count."""

    largest: tuple[tuple[str, float], ...]
    herfindahl: float
    effective_assets: float


def concentration(weights: Mapping[str, float], *, top: int = 5) -> Concentration:
    """How concentrated the weights are; they are used as given, not normalised.

    ``herfindahl = sum w_i^2`` and ``effective_assets = 1 / herfindahl`` (n equal
    weights give n). ``largest`` is sorted by absolute weight, largest first,
    ties by asset name, and keeps each weight's sign.
    """
    if top < 1:
        raise RiskInputError(f"top must be at least 1, got {top}")
    if not all(math.isfinite(value) for value in weights.values()):
        raise RiskInputError("weights contain NaN or infinite values")
    hhi = math.fsum(value * value for value in weights.values())
    if hhi == 0.0:
        raise RiskInputError("weights are empty or all zero: concentration is undefined")
    ranked = sorted(weights.items(), key=lambda item: (-abs(item[1]), item[0]))
    largest = tuple((asset, float(value)) for asset, value in ranked[:top])
    return Concentration(largest=largest, herfindahl=hhi, effective_assets=1.0 / hhi)


def betas(
    returns_matrix: npt.ArrayLike, benchmark_returns: npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """Beta of each column to the benchmark: ``cov(r_i, b) / var(b)``, both ddof 1."""
    matrix = _matrix(returns_matrix)
    benchmark = np.asarray(benchmark_returns, dtype=np.float64)
    if benchmark.shape != (matrix.shape[0],):
        raise RiskInputError(
            f"benchmark returns must have shape ({matrix.shape[0]},), got {benchmark.shape}"
        )
    if not np.isfinite(benchmark).all():
        raise RiskInputError("benchmark returns contain NaN or infinite values")
    centred = benchmark - benchmark.mean()
    days = matrix.shape[0]
    variance = float(centred @ centred) / (days - 1)
    if variance == 0.0:
        raise RiskInputError("benchmark returns have zero variance: beta is undefined")
    covariances = centred @ (matrix - matrix.mean(axis=0)) / (days - 1)
    return np.asarray(covariances / variance, dtype=np.float64)


@dataclass(frozen=True, slots=True)
class StressResult:
    """The shock applied to each asset and the portfolio's return under it."""

    asset_shocks: dict[str, float]
    portfolio_return: float
    name: str


def stress_test(
    weights: Mapping[str, float],
    betas: Mapping[str, float],
    *,
    btc_shock: float | None = None,
    asset_shocks: Mapping[str, float] | None = None,
    name: str = "custom",
) -> StressResult:
    """Portfolio return under a scenario: a BTC move through betas, then per-asset overrides.

    With ``btc_shock`` every asset moves by ``beta * btc_shock`` (floored at
    -100 %) and BTC itself by ``btc_shock``; every other weighted asset then
    needs a beta. ``asset_shocks`` replace the shock of the assets they name;
    an asset left without any shock does not move. The portfolio return is
    ``sum_i w_i * shock_i``. An asset in ``asset_shocks`` that is not in
    ``weights`` is an error, as is a shock below -100 %.
    """
    overrides = dict(asset_shocks or {})
    unknown = sorted(set(overrides) - set(weights))
    if unknown:
        raise RiskInputError(f"shocked assets not in the portfolio: {', '.join(unknown)}")
    for asset, shock in overrides.items():
        if not math.isfinite(shock) or shock < _TOTAL_LOSS:
            raise RiskInputError(f"shock of {asset} must be a finite value >= -1, got {shock}")
    if btc_shock is not None and (not math.isfinite(btc_shock) or btc_shock < _TOTAL_LOSS):
        raise RiskInputError(f"btc_shock must be a finite value >= -1, got {btc_shock}")
    if not all(math.isfinite(value) for value in weights.values()):
        raise RiskInputError("weights contain NaN or infinite values")

    shocks: dict[str, float] = {}
    for asset in weights:
        if asset in overrides:
            shocks[asset] = float(overrides[asset])
        elif btc_shock is None:
            shocks[asset] = 0.0
        elif asset == BENCHMARK_ASSET:
            shocks[asset] = float(btc_shock)
        elif asset in betas:
            beta = betas[asset]
            if not math.isfinite(beta):
                raise RiskInputError(f"beta of {asset} is not finite")
            shocks[asset] = max(beta * btc_shock, _TOTAL_LOSS)
        else:
            raise RiskInputError(f"no beta for {asset}: cannot propagate the BTC shock")
    total = math.fsum(weights[asset] * shock for asset, shock in shocks.items())
    return StressResult(asset_shocks=shocks, portfolio_return=total, name=name)
