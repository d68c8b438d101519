"""``/api/v1/risk``: live risk of the caller's portfolio, and the circuit breakers.

- ``GET /risk/portfolio``: the full risk report (``cryptodesk risk report``'s
  JSON) of the tenant's invested assets at their live weights, over stored
  daily closes; plus ``as_of``, ``currency``, ``excluded``, ``exposure`` and
  ``history`` (``services/risk_service.py`` says how each is built).
- ``GET /risk/var``: portfolio VaR and CVaR by every method, component VaR.
- ``GET /risk/correlation``: the correlation matrix (Pearson or EWMA), its
  average and the diversification warning.
- ``POST /risk/rebalance``: the trades that bring the holdings to target
  weights (given, or from an optimiser); a proposal only, no order is placed.
- ``GET /risk/circuit-breakers``: the volatility breaker of each market.

Risk numbers are plain JSON numbers (fractions: 0.05 is 5%); money is decimal
strings. A metric the history cannot support is null with its reason under
``notes``; when nothing at all can be computed the answer is 422
``insufficient-history``. Conventions: docs/risk.md.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from decimal import Decimal
from typing import Annotated, Any, Literal, Protocol

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from cryptodesk.analytics.vol_breaker import BreakerState
from cryptodesk.api.ledger_problems import LedgerProblem, LedgerRoute
from cryptodesk.api.routes.market import problem_responses
from cryptodesk.api.security import requires
from cryptodesk.api.tenancy import Tenant
from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.timeutil import to_iso
from cryptodesk.services.close_history import InsufficientHistory
from cryptodesk.services.risk_service import RebalanceRequest, RiskService

_DECIMAL = r"^[0-9]{1,20}(\.[0-9]{1,18})?$"
_ASSET = r"^[A-Z0-9]{1,16}$"
Weight = Annotated[float, Field(strict=True, ge=0, le=1)]
Money = Annotated[str, Field(pattern=_DECIMAL, max_length=40)]
Days = Annotated[int, Query(ge=2, le=3650, description="Daily closes to use.")]
Confidence = Annotated[float, Query(gt=0, lt=1, description="VaR confidence, e.g. 0.95.")]
Horizon = Annotated[int, Query(ge=1, le=365, description="VaR horizon in days.")]
Paths = Annotated[int, Query(ge=0, le=200_000, description="Monte Carlo paths (0: none).")]
Seed = Annotated[int, Query(ge=0, le=2**32 - 1, description="Monte Carlo seed.")]


class BreakerReader(Protocol):
    """Where the breakers' states are read (``services.circuit_breakers.BreakerStates``)."""

    async def states(self) -> list[BreakerState]: ...


_HEAD: dict[str, Any] = {
    "as_of": "2024-05-01T00:00:00.000Z", "currency": "USD",
    "excluded": [{"asset": "SOL", "reason": "no live price"}],
    "exposure": {"total_value": "42500", "invested_value": "40000", "other_value": "0",
                 "cash_value": "2500", "cash": {"USDT": "2500"}, "cash_weight": 0.05882},
    "history": {"BTC": {"source": "candle:binance:BTC/USDT:1d", "forward_filled": 0,
                        "first": "2024-04-01T00:00:00.000Z"},
                "ETH": {"source": "candle:binance:ETH/USDT:1d", "forward_filled": 1,
                        "first": "2024-04-01T00:00:00.000Z"}},
}  # fmt: skip
_METRICS: dict[str, Any] = {
    "annual_return": -0.1943, "annual_volatility": 0.5326, "sharpe": -0.1445,
    "sortino": -0.1915, "max_drawdown": -0.1517, "calmar": -1.281, "skew": -0.6847,
    "kurtosis": 2.1, "var_historical": 0.04876, "var_parametric": 0.04606,
    "var_cornish_fisher": 0.05006, "cvar_historical": 0.069, "beta": 1.0,
}  # fmt: skip
_SPAN = {"first": "2024-04-01", "last": "2024-04-30", "returns": 29}
PORTFOLIO: dict[str, Any] = {
    **_HEAD,
    "assets": {"BTC": _METRICS, "ETH": {**_METRICS, "beta": 0.1308}},
    "portfolio": {
        **_METRICS, "beta": 0.7827, "var_monte_carlo": 0.03795, "cvar_monte_carlo": 0.04857,
        "var_monte_carlo_bootstrap": 0.03336, "cvar_monte_carlo_bootstrap": 0.05196,
        "component_var": {"BTC": 0.03248, "ETH": 0.006402},
        "marginal_var": {"BTC": 0.04331, "ETH": 0.02561},
        "weights": {"BTC": 0.75, "ETH": 0.25},
        "concentration": {"largest": [{"asset": "BTC", "weight": 0.75},
                                      {"asset": "ETH", "weight": 0.25}],
                          "herfindahl": 0.625, "effective_assets": 1.6},
        "stress": [{"name": "BTC -10%", "portfolio_return": -0.07827,
                    "asset_shocks": {"BTC": -0.1, "ETH": -0.01308}}],
    },
    "correlation": {"BTC": {"BTC": 1.0, "ETH": 0.1143}, "ETH": {"BTC": 0.1143, "ETH": 1.0}},
    "correlation_average": 0.1143, "correlation_warning": None,
    "observations": {"BTC": _SPAN, "ETH": _SPAN, "portfolio": _SPAN},
    "parameters": {"confidence": 0.95, "horizon_days": 1, "risk_free": 0.0,
                   "periods_per_year": 365, "monte_carlo_paths": 10000, "seed": 0,
                   "benchmark": "BTC"},
    "notes": {"ETH": {"prices": "1 missing close(s) forward-filled from the previous one"}},
}  # fmt: skip
VAR: dict[str, Any] = {
    **_HEAD, "weights": {"BTC": 0.75, "ETH": 0.25},
    "var": {"historical": 0.0312, "parametric": 0.03888, "cornish_fisher": 0.04185,
            "monte_carlo": 0.03795, "monte_carlo_bootstrap": 0.03336},
    "cvar": {"historical": 0.05254, "monte_carlo": 0.04857, "monte_carlo_bootstrap": 0.05196},
    "component_var": {"BTC": 0.03248, "ETH": 0.006402}, "observations": 29, "notes": {},
    "parameters": {"confidence": 0.95, "horizon_days": 1, "monte_carlo_paths": 10000,
                   "seed": 0, "days": 30},
}  # fmt: skip
CORRELATION: dict[str, Any] = {
    "as_of": "2024-05-01T00:00:00.000Z", "assets": ["BTC", "ETH"], "method": "pearson",
    "half_life": None, "observations": 29,
    "matrix": {"BTC": {"BTC": 1.0, "ETH": 0.8512}, "ETH": {"BTC": 0.8512, "ETH": 1.0}},
    "average": 0.8512, "threshold": 0.8,
    "warning": "average pairwise correlation of 2 assets is 0.85, at or above 0.80: "
               "the portfolio is poorly diversified",
    "rolling": {"window": 28, "average": [
        {"time": "2024-04-30T00:00:00.000Z", "value": 0.8431},
        {"time": "2024-05-01T00:00:00.000Z", "value": 0.8512},
    ]},
    "excluded": [], "history": _HEAD["history"],
}  # fmt: skip
REBALANCE_IN: dict[str, Any] = {
    "targets": {"BTC": 0.5, "ETH": 0.4, "USDT": 0.1}, "tolerance": "0.05", "min_trade": "10",
    "lot_sizes": {"BTC": "0.0001", "ETH": "0.001"}, "fee_rate": "0.001",
}  # fmt: skip
REBALANCE: dict[str, Any] = {
    "as_of": "2024-05-01T12:00:00.000Z", "currency": "USD", "quote": "USDT", "optimizer": None,
    "targets": {"BTC": 0.5, "ETH": 0.4, "USDT": 0.1},
    "trades": [{"asset": "BTC", "side": "sell", "quantity": "0.1", "price": "60000",
                "notional": "6000", "fee": "6"},
               {"asset": "ETH", "side": "buy", "quantity": "1.9", "price": "3000",
                "notional": "5700", "fee": "5.7"}],
    "weights_before": {"BTC": "0.6", "ETH": "0.3", "USDT": "0.1"},
    "weights_after": {"BTC": "0.5", "ETH": "0.3995", "USDT": "0.1005"},
    "cash_after": "6018.3", "total_value": "60000", "within_tolerance": False, "skipped": [],
    "excluded": [],
}  # fmt: skip
BREAKER: dict[str, Any] = {
    "exchange": "binance", "symbol": "BTC/USDT", "state": "halted",
    "since": "2024-05-01T12:15:00.000Z", "short_volatility": 0.0125, "long_volatility": 0.0031,
    "ratio": 4.032, "reason": "short-window volatility 0.0125 is 4.032x the long-window "
                              "0.0031, above the 3x limit",
}  # fmt: skip
BREAKERS: dict[str, Any] = {"circuit_breakers": [BREAKER]}


class RebalanceIn(BaseModel):
    """Targets as weights (numbers summing to 1; cash under the currency or a par
    quote), or an optimiser over ``days`` of history keeping ``cash_weight`` in cash.
    Money and lot sizes are decimal strings."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [REBALANCE_IN]})

    targets: dict[Annotated[str, Field(pattern=_ASSET)], Weight] | None = Field(
        None, max_length=200
    )
    optimizer: Literal["min_variance", "risk_parity", "hrp"] | None = None
    days: int = Field(365, ge=2, le=3650, description="History for the optimiser.")
    cash_weight: float = Field(0.0, strict=True, ge=0, lt=1)
    tolerance: Money = "0.05"
    min_trade: Money = "10"
    lot_sizes: dict[Annotated[str, Field(pattern=_ASSET)], Money] = Field({}, max_length=200)
    fee_rate: Money = "0.001"

    @model_validator(mode="after")
    def _one_source(self) -> RebalanceIn:
        if (self.targets is None) == (self.optimizer is None):
            raise ValueError("give exactly one of targets and optimizer")
        return self


class BreakerOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [BREAKER]})

    exchange: str
    symbol: str
    state: Literal["active", "halted"]
    since: str
    short_volatility: float | None
    long_volatility: float | None
    ratio: float | None
    reason: str


def _example(body: Any) -> dict[int | str, dict[str, Any]]:
    return {200: {"content": {"application/json": {"example": body}}}}


class RiskRoute(LedgerRoute):
    """Also answers ``InsufficientHistory`` (nothing at all can be computed) with 422."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except InsufficientHistory as exc:
                problem = LedgerProblem(422, "insufficient-history", str(exc), name=exc.field)
                return problem.response(request.url.path)

        return run


class BreakersOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [BREAKERS]})

    circuit_breakers: list[BreakerOut]


def _breaker(s: BreakerState) -> BreakerOut:
    return BreakerOut(
        exchange=s.exchange, symbol=s.symbol, state=s.state, since=to_iso(s.since_ms),
        short_volatility=s.short_vol, long_volatility=s.long_vol, ratio=s.ratio, reason=s.reason,
    )  # fmt: skip


def risk_router(service: RiskService, breakers: BreakerReader) -> APIRouter:
    router = APIRouter(prefix="/api/v1/risk", tags=["risk"], route_class=RiskRoute)
    failures = problem_responses(400, 422, 503)

    @router.get(
        "/portfolio",
        summary="Risk report of the portfolio at its live weights",
        dependencies=[requires("risk:read")],
        responses={**_example(PORTFOLIO), **failures},
    )
    async def portfolio(
        tenant: Tenant, days: Days = 365, confidence: Confidence = 0.95, horizon: Horizon = 1,
        paths: Paths = 10_000, seed: Seed = 0,
    ) -> dict[str, Any]:  # fmt: skip
        return await service.portfolio(tenant, days=days, confidence=confidence,
                                       horizon=horizon, paths=paths, seed=seed)  # fmt: skip

    @router.get(
        "/var",
        summary="Portfolio VaR and CVaR by every method",
        dependencies=[requires("risk:read")],
        responses={**_example(VAR), **failures},
    )
    async def var(
        tenant: Tenant, days: Days = 365, confidence: Confidence = 0.95, horizon: Horizon = 1,
        paths: Paths = 10_000, seed: Seed = 0,
    ) -> dict[str, Any]:  # fmt: skip
        return await service.var(tenant, days=days, confidence=confidence,
                                 horizon=horizon, paths=paths, seed=seed)  # fmt: skip

    @router.get(
        "/correlation",
        summary="Correlation of the assets' daily returns",
        dependencies=[requires("risk:read")],
        responses={**_example(CORRELATION), **failures},
    )
    async def correlation(
        tenant: Tenant,
        assets: Annotated[
            list[Annotated[str, Query(pattern=_ASSET)]] | None,
            Query(max_length=50, description="These assets (default: the portfolio's)."),
        ] = None,
        days: Annotated[int, Query(ge=2, le=3650)] = 90,
        method: Literal["pearson", "ewma"] = "pearson",
        half_life: Annotated[float, Query(gt=0, le=3650, description="EWMA, days.")] = 30,
        threshold: Annotated[float, Query(ge=-1, le=1, description="Warning level.")] = 0.8,
        rolling_window: Annotated[
            int, Query(ge=0, le=365, description="Days per rolling average (0: none).")
        ] = 30,
    ) -> dict[str, Any]:
        if rolling_window == 1:
            raise DomainError("rolling_window must be 0 or at least 2", field="rolling_window")
        return await service.correlation(
            tenant, assets=assets, days=days, method=method, half_life=half_life,
            threshold=threshold, rolling_window=rolling_window,
        )  # fmt: skip

    @router.post(
        "/rebalance",
        summary="Trades to reach target weights (a proposal; no order is placed)",
        dependencies=[requires("risk:read")],
        responses={**_example(REBALANCE), **failures},
    )
    async def rebalance(tenant: Tenant, body: RebalanceIn) -> dict[str, Any]:
        request = RebalanceRequest(
            targets=body.targets, optimizer=body.optimizer, days=body.days,
            cash_weight=body.cash_weight, tolerance=Decimal(body.tolerance),
            min_trade=Decimal(body.min_trade), fee_rate=Decimal(body.fee_rate),
            lot_sizes={a: Decimal(s) for a, s in body.lot_sizes.items()},
        )  # fmt: skip
        return await service.rebalance(tenant, request)

    @router.get(
        "/circuit-breakers",
        summary="Volatility circuit breakers per market",
        dependencies=[requires("market:read")],
        responses={**_example(BREAKERS), **problem_responses(503)},
    )
    async def circuit_breakers() -> BreakersOut:
        return BreakersOut(circuit_breakers=[_breaker(s) for s in await breakers.states()])

    return router
