"""Long-only allocations from a covariance matrix: minimum variance, risk parity, HRP.

Every function takes an ``n x n`` covariance matrix of asset returns (any
consistent unit: daily or annualised gives the same weights) and returns ``n``
non-negative weights that sum to 1, in the order of the matrix's rows. The
matrix must be symmetric and positive definite: a non-square, non-symmetric,
indefinite or singular matrix (a sample covariance from fewer days than
assets, two identical assets) raises ``RiskInputError`` before any solving.

- Minimum variance: ``min w' Sigma w`` subject to ``sum w = 1, w >= 0``,
  solved by SLSQP and then made exact on the assets it keeps (the KKT system
  ``Sigma_S w_S = lambda 1``), so the answer does not depend on solver tolerances.
- Risk parity: equal risk contributions ``w_i (Sigma w)_i``. Solved through the
  strictly convex problem ``min 0.5 y' Sigma y - (1/n) sum log y_i`` (Spinu 2013),
  whose minimiser has ``y_i (Sigma y)_i = 1/n`` exactly; ``w = y / sum y``.
  L-BFGS-B gets close and a few Newton steps finish to machine precision.
- Hierarchical risk parity (Lopez de Prado 2016): single-linkage clustering on
  the correlation distance ``sqrt((1 - rho) / 2)``, assets reordered so that
  similar ones sit together (quasi-diagonalisation: the dendrogram's leaf
  order), then the ordered list is halved recursively, each half receiving a
  share inversely proportional to its variance under inverse-variance weights
  within it. The distance matrix itself is clustered (as PyPortfolioOpt and
  Riskfolio-Lib do), not the Euclidean distance between its columns.

Runs are deterministic: fixed starting points, no randomness.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from cryptodesk.analytics.risk import RiskInputError

# Eigenvalues below this share of the largest make the matrix singular for our
# purpose: the weights would hinge on rounding noise.
_SINGULAR_RATIO: Final = 1e-12
_SYMMETRY_RTOL: Final = 1e-10
_SUPPORT: Final = 1e-9  # a solver weight below this is an asset left out


def _covariance(cov: npt.ArrayLike) -> npt.NDArray[np.float64]:
    matrix = np.asarray(cov, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise RiskInputError(f"covariance must be a non-empty square matrix, got {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise RiskInputError("covariance contains NaN or infinite values")
    scale = float(np.abs(matrix).max())
    if not np.allclose(matrix, matrix.T, rtol=_SYMMETRY_RTOL, atol=_SYMMETRY_RTOL * scale):
        raise RiskInputError("covariance is not symmetric")
    matrix = (matrix + matrix.T) / 2.0
    eigenvalues = np.linalg.eigvalsh(matrix)
    largest = float(eigenvalues[-1])
    smallest = float(eigenvalues[0])
    if largest <= 0.0 or smallest < -_SINGULAR_RATIO * largest:
        raise RiskInputError(
            f"covariance is not positive semi-definite (smallest eigenvalue {smallest:.3g})"
        )
    if smallest <= _SINGULAR_RATIO * largest:
        raise RiskInputError(
            f"covariance is singular (eigenvalues {smallest:.3g} to {largest:.3g}); "
            "use more days than assets and drop duplicated assets"
        )
    # Scaled to unit mean variance so solver tolerances mean the same for any unit.
    return matrix / float(np.mean(np.diag(matrix)))


def _normalised(weights: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    clipped = np.clip(weights, 0.0, None)
    return np.asarray(clipped / clipped.sum(), dtype=np.float64)


def _min_variance_on_support(
    sigma: npt.NDArray[np.float64], support: npt.NDArray[np.bool_]
) -> npt.NDArray[np.float64] | None:
    """The exact optimum if ``support`` is the right set of held assets, else None."""
    if not support.any():
        return None
    x = np.linalg.solve(sigma[np.ix_(support, support)], np.ones(int(support.sum())))
    total = float(x.sum())
    if total <= 0.0 or (x <= 0.0).any():
        return None
    weights = np.zeros(len(sigma))
    weights[support] = x / total
    # KKT: assets left out must not lower the variance at the margin.
    gradient = sigma @ weights
    multiplier = 1.0 / total
    if (gradient[~support] < multiplier * (1.0 - 1e-9)).any():
        return None
    return weights


def min_variance_weights(cov: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Long-only weights of least portfolio variance."""
    from scipy.optimize import minimize  # type: ignore[import-untyped]  # heavy: on first use

    sigma = _covariance(cov)
    n = len(sigma)
    if n == 1:
        return np.ones(1)
    start = _normalised(1.0 / np.diag(sigma))
    result = minimize(
        lambda w: float(w @ sigma @ w),
        start,
        jac=lambda w: 2.0 * (sigma @ w),
        method="SLSQP",
        bounds=[(0.0, 1.0)] * n,
        constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones(n)}],
        options={"ftol": 1e-15, "maxiter": 1000},
    )
    solved = _normalised(np.asarray(result.x, dtype=np.float64))
    exact = _min_variance_on_support(sigma, solved > _SUPPORT)
    return solved if exact is None else exact


def risk_parity_weights(cov: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Long-only weights whose risk contributions ``w_i (Sigma w)_i`` are all equal."""
    from scipy.optimize import minimize

    sigma = _covariance(cov)
    n = len(sigma)
    budget = 1.0 / n

    def objective(y: npt.NDArray[np.float64]) -> float:
        return float(0.5 * y @ sigma @ y - budget * np.log(y).sum())

    def gradient(y: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return np.asarray(sigma @ y - budget / y, dtype=np.float64)

    # The exact answer when assets are uncorrelated, so often a step or two away.
    start = np.sqrt(budget / np.diag(sigma))
    result = minimize(
        objective,
        start,
        jac=gradient,
        method="L-BFGS-B",
        bounds=[(1e-12, None)] * n,
        options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 10_000},
    )
    y = np.asarray(result.x, dtype=np.float64)
    # Newton on a self-concordant function: quadratic convergence from here;
    # the step is shortened so y stays inside the domain y > 0.
    for _ in range(100):
        g = gradient(y)
        if float(np.abs(g * y).max()) < 1e-15:
            break
        step = np.linalg.solve(sigma + np.diag(budget / (y * y)), g)
        length = 1.0
        while (y - length * step <= 0.0).any():
            length /= 2.0
        y = y - length * step
    return np.asarray(y / y.sum(), dtype=np.float64)


def _inverse_variance(sigma: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    inverse = 1.0 / np.diag(sigma)
    return np.asarray(inverse / inverse.sum(), dtype=np.float64)


def _cluster_variance(sigma: npt.NDArray[np.float64], members: npt.NDArray[np.intp]) -> float:
    block = sigma[np.ix_(members, members)]
    weights = _inverse_variance(block)
    return float(weights @ block @ weights)


def hrp_weights(cov: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Hierarchical risk parity weights (Lopez de Prado, 2016)."""
    import scipy.cluster.hierarchy as sch  # type: ignore[import-untyped]
    from scipy.spatial.distance import squareform  # type: ignore[import-untyped]

    sigma = _covariance(cov)
    n = len(sigma)
    if n == 1:
        return np.ones(1)
    volatility = np.sqrt(np.diag(sigma))
    correlation = np.clip(sigma / np.outer(volatility, volatility), -1.0, 1.0)
    distance = np.sqrt(np.clip((1.0 - correlation) / 2.0, 0.0, 1.0))
    np.fill_diagonal(distance, 0.0)
    linkage = sch.linkage(squareform(distance, checks=False), method="single")
    order = np.asarray(sch.leaves_list(linkage), dtype=np.intp)

    weights = np.ones(n)
    clusters = [order]
    while clusters:
        halves: list[npt.NDArray[np.intp]] = []
        for cluster in clusters:
            if len(cluster) < 2:
                continue
            left, right = cluster[: len(cluster) // 2], cluster[len(cluster) // 2 :]
            left_var = _cluster_variance(sigma, left)
            right_var = _cluster_variance(sigma, right)
            alpha = 1.0 - left_var / (left_var + right_var)
            weights[left] *= alpha
            weights[right] *= 1.0 - alpha
            halves += [left, right]
        clusters = halves
    return weights
