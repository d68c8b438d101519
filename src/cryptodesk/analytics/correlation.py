"""Correlation between assets' returns: the full-sample Pearson matrix, a
rolling window between two series, an exponentially weighted matrix at the
latest day, and a warning when the average pairwise correlation is so high
that a portfolio is barely diversified (crypto assets tend to move together,
most of all in a sell-off).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import ArrayLike

from cryptodesk.analytics.risk import FloatArray, InsufficientData, RiskInputError


def _matrix(returns_matrix: ArrayLike) -> FloatArray:
    m = np.asarray(returns_matrix, dtype=np.float64)
    if m.ndim != 2:
        raise RiskInputError(f"returns_matrix must be T x N, got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        raise RiskInputError("returns_matrix contains NaN or infinite values")
    if m.shape[0] < 2:
        raise InsufficientData(f"correlation needs at least 2 days, got {m.shape[0]}")
    return m


def _normalise(cov: FloatArray, m: FloatArray) -> FloatArray:
    # Flatness is judged on the data: the variance of equal floats can round
    # to 1e-35 instead of 0 and would give a meaningless correlation.
    flat = np.flatnonzero(m.max(axis=0) == m.min(axis=0))
    if flat.size:
        raise InsufficientData(
            f"correlation is undefined: asset column {int(flat[0])} has constant returns"
        )
    sd = np.sqrt(np.diag(cov))
    corr: FloatArray = cov / np.outer(sd, sd)
    np.clip(corr, -1.0, 1.0, out=corr)
    np.fill_diagonal(corr, 1.0)
    return corr


def correlation_matrix(returns_matrix: ArrayLike) -> FloatArray:
    """Pearson correlation of the columns of a ``T x N`` returns matrix."""
    m = _matrix(returns_matrix)
    return _normalise(np.atleast_2d(np.cov(m, rowvar=False, ddof=1)), m)


def rolling_correlation(x: ArrayLike, y: ArrayLike, *, window: int) -> FloatArray:
    """Pearson correlation of ``x`` and ``y`` over each trailing ``window``
    days; NaN before the first full window and where either is flat."""
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if a.ndim != 1 or b.ndim != 1:
        raise RiskInputError("x and y must be one-dimensional")
    if a.shape != b.shape:
        raise RiskInputError(f"x and y lengths differ: {a.size} and {b.size}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise RiskInputError("x or y contain NaN or infinite values")
    if isinstance(window, bool) or int(window) != window or window < 2:
        raise RiskInputError(f"window must be a whole number >= 2, got {window!r}")
    out = np.full(a.size, np.nan)
    if a.size < window:
        return out
    wa = sliding_window_view(a, window)
    wb = sliding_window_view(b, window)
    da = wa - wa.mean(axis=1, keepdims=True)
    db = wb - wb.mean(axis=1, keepdims=True)
    cov = np.einsum("ij,ij->i", da, db)
    denom = np.sqrt(np.einsum("ij,ij->i", da, da) * np.einsum("ij,ij->i", db, db))
    flat = (wa.max(axis=1) == wa.min(axis=1)) | (wb.max(axis=1) == wb.min(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.where(flat | (denom == 0.0), np.nan, cov / denom)
    out[window - 1 :] = np.clip(corr, -1.0, 1.0)
    return out


def rolling_average_correlation(returns_matrix: ArrayLike, *, window: int) -> FloatArray:
    """The average pairwise correlation over each trailing ``window`` days: how the
    assets' co-movement has risen or fallen. A pair flat in a window is left out of
    that window's average; NaN before the first full window (or if every pair is flat)."""
    m = _matrix(returns_matrix)
    n = m.shape[1]
    if n < 2:
        raise InsufficientData("average pairwise correlation needs at least 2 assets")
    pairs = np.array([rolling_correlation(m[:, i], m[:, j], window=window)
                      for i in range(n) for j in range(i + 1, n)])  # fmt: skip
    out = np.full(m.shape[0], np.nan)
    seen = ~np.isnan(pairs)
    counts = seen.sum(axis=0)
    has = counts > 0
    out[has] = np.where(seen, pairs, 0.0).sum(axis=0)[has] / counts[has]
    return out


def ewma_correlation(returns_matrix: ArrayLike, *, half_life: float) -> FloatArray:
    """Exponentially weighted correlation at the last observation.

    Day ``t`` of ``T`` weighs ``lambda^(T-1-t)`` with
    ``lambda = 0.5 ** (1 / half_life)``; means and covariances are the
    normalised weighted averages around the weighted means (pandas
    ``ewm(halflife=..., adjust=True).corr()`` at the last timestamp)."""
    m = _matrix(returns_matrix)
    hl = float(half_life)
    if not (math.isfinite(hl) and hl > 0.0):
        raise RiskInputError(f"half_life must be positive, got {half_life!r}")
    lam = 0.5 ** (1.0 / hl)
    weights = lam ** np.arange(m.shape[0] - 1, -1, -1, dtype=np.float64)
    weights /= weights.sum()
    centred = m - weights @ m
    cov = (centred * weights[:, np.newaxis]).T @ centred
    return _normalise(cov, m)


def _square(matrix: ArrayLike) -> FloatArray:
    c = np.asarray(matrix, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise RiskInputError(f"a correlation matrix must be square, got shape {c.shape}")
    if not np.all(np.isfinite(c)):
        raise RiskInputError("correlation matrix contains NaN or infinite values")
    return c


def average_pairwise_correlation(matrix: ArrayLike) -> float:
    """Mean of the entries above the diagonal (each pair once)."""
    c = _square(matrix)
    if c.shape[0] < 2:
        raise InsufficientData("average pairwise correlation needs at least 2 assets")
    return float(c[np.triu_indices(c.shape[0], k=1)].mean())


@dataclass(frozen=True, slots=True)
class CorrelationWarning:
    average: float
    threshold: float
    message: str


def correlation_warning(matrix: ArrayLike, *, threshold: float) -> CorrelationWarning | None:
    """A warning when the average pairwise correlation is at or above
    ``threshold`` (in [-1, 1]), else ``None``."""
    t = float(threshold)
    if not (-1.0 <= t <= 1.0):
        raise RiskInputError(f"threshold must be within [-1, 1], got {threshold!r}")
    avg = average_pairwise_correlation(matrix)
    if avg < t:
        return None
    n = np.asarray(matrix).shape[0]
    return CorrelationWarning(
        average=avg,
        threshold=t,
        message=(
            f"average pairwise correlation of {n} assets is {avg:.2f}, at or above "
            f"{t:.2f}: the portfolio is poorly diversified"
        ),
    )
