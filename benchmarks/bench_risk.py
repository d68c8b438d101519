"""Risk analytics over 100 assets x 1,000 days of generated daily closes.

The prices are a seeded one-factor model (a market factor plus noise per asset,
fat-tailed through a Student-t draw), so correlations and tails look like crypto
and every run sees the same numbers. They are generated before any clock starts.

- ``report_100x1000``: ``build_risk_report`` end to end without Monte Carlo
  (every per-asset metric and VaR, the portfolio's metrics, component and
  marginal VaR, concentration, betas and stress scenarios, the correlation
  matrix); value = milliseconds (wall clock).
- ``monte_carlo_100k_x100``: ``var_monte_carlo`` with 100,000 multivariate
  normal paths for the 100-asset portfolio, horizon one day; value = ms.
- ``monte_carlo_bootstrap_100k_x100``: the same with bootstrapped days.

    python -m benchmarks.run --only risk
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import cache
from typing import Any

import numpy as np
import numpy.typing as npt

from cryptodesk.analytics.risk_report import RiskReportOptions, build_risk_report
from cryptodesk.analytics.var import var_monte_carlo

ASSETS = 100
DAYS = 1000
PATHS = 100_000
SEED = 7

Result = dict[str, Any]


@cache
def _market() -> tuple[npt.NDArray[np.int64], tuple[str, ...], npt.NDArray[np.float64]]:
    rng = np.random.default_rng(SEED)
    factor = 0.03 * rng.standard_t(4, size=DAYS) / np.sqrt(2)
    betas = rng.uniform(0.5, 1.5, size=ASSETS)
    noise = 0.02 * rng.standard_t(5, size=(DAYS, ASSETS)) / np.sqrt(5 / 3)
    returns = np.clip(factor[:, None] * betas + noise, -0.9, None)
    prices = 100.0 * np.cumprod(1.0 + returns, axis=0)
    times = 1_600_000_000_000 + 86_400_000 * np.arange(DAYS, dtype=np.int64)
    assets = ("BTC", *(f"A{i:03d}" for i in range(1, ASSETS)))
    return times, assets, prices


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return (time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000


def _report() -> Result:
    times, assets, prices = _market()
    options = RiskReportOptions(monte_carlo_paths=0)
    ms, cpu_ms = _timed(lambda: build_risk_report(times, assets, prices, options=options))
    return {"value": ms, "unit": "ms", "cpu_ms": round(cpu_ms, 1), "assets": ASSETS,
            "days": DAYS}  # fmt: skip


def _monte_carlo(method: str) -> Result:
    _, _, prices = _market()
    returns = prices[1:] / prices[:-1] - 1.0
    weights = np.full(ASSETS, 1.0 / ASSETS)
    ms, cpu_ms = _timed(
        lambda: var_monte_carlo(returns, weights, paths=PATHS, method=method, seed=SEED)  # type: ignore[arg-type]
    )
    return {"value": ms, "unit": "ms", "cpu_ms": round(cpu_ms, 1), "paths": PATHS,
            "assets": ASSETS}  # fmt: skip


def cases() -> dict[str, Callable[[], Result]]:
    return {
        "report_100x1000": _report,
        "monte_carlo_100k_x100": lambda: _monte_carlo("normal"),
        "monte_carlo_bootstrap_100k_x100": lambda: _monte_carlo("bootstrap"),
    }


if __name__ == "__main__":
    for name, fn in cases().items():
        print(name, fn())
