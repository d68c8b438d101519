"""Live risk of a tenant's portfolio: weights at cached prices, history from stored candles.

**Weights.** ``PortfolioValuation.value`` gives the tenant's positions at the
latest cached prices; market values are summed per asset. The currency and its
par quotes (``portfolio_valuation.par_quotes``) are cash at price 1: their value
is reported under ``exposure`` and kept out of the analytics (a constant price
has no correlation), so every weight and every VaR or drawdown fraction is a
share of the *invested* value, the priced non-cash assets. The loss in the
currency is the fraction times ``exposure.invested_value``. An asset without a
live price is excluded and named under ``excluded``.

**History.** Daily closes per asset come from the stored candles (``interval``,
``1d`` by default) of ``ASSET/Q`` for each quote ``Q`` of the currency then its
par quotes, on each configured exchange in order, as ``ClosePrices`` orders
them: the first market with candles in the window is the asset's series. The
window is the ``days`` periods before the one in progress, aligned on their open
times. Before an asset's first candle its price is NaN (it was not listed yet:
the report measures it over its own rows); a missing period after that takes
the previous close (forward-filled) and is counted under ``history`` and in
``notes`` of the asset. An asset with no candles in the window is excluded.

**Failures.** A bad parameter is a ``DomainError`` naming the field (400). A
metric the history cannot support is null with its reason under ``notes``;
when nothing at all can be computed (no invested asset with history, fewer than
two common closes, flat prices) the service raises ``InsufficientHistory`` and
the API answers 422. CPU work (the report, Monte Carlo, optimisers) runs in a
worker thread, never on the event loop. No method here places an order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from cryptodesk.adapters.db.base import MarketStore
from cryptodesk.analytics import allocation, var
from cryptodesk.analytics import correlation as corr
from cryptodesk.analytics import portfolio_risk as prisk
from cryptodesk.analytics.risk import InsufficientData, RiskInputError
from cryptodesk.analytics.risk_report import RiskReportOptions, build_risk_report
from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.timeutil import now_ms, to_iso
from cryptodesk.portfolio.rebalance import RebalanceError, propose_rebalance
from cryptodesk.services.close_history import CloseHistory, History, InsufficientHistory
from cryptodesk.services.portfolio_valuation import PortfolioValuation, par_quotes

FloatArray = npt.NDArray[np.float64]
OPTIMIZERS: Final[dict[str, Callable[[FloatArray], FloatArray]]] = {
    "min_variance": allocation.min_variance_weights,
    "risk_parity": allocation.risk_parity_weights,
    "hrp": allocation.hrp_weights,
}
_NO_DATA = (RiskInputError, InsufficientData)


def _text(value: Decimal) -> str:
    return format(value, "f")


@dataclass(frozen=True, slots=True)
class Holdings:
    """A tenant's priced holdings per asset: cash apart, non-cash invested."""

    amounts: dict[str, Decimal]
    prices: dict[str, Decimal]
    invested: dict[str, Decimal]  # market value per non-cash asset
    cash: dict[str, Decimal]  # value per cash asset (currency and par quotes)
    excluded: list[dict[str, str]]

    def exposure(self, analysed: Sequence[str]) -> dict[str, Any]:
        """Values in the currency: ``invested_value`` is that of the ``analysed``
        assets, the base of every fraction; ``other_value`` that of priced assets
        left out for want of history."""
        cash = sum(self.cash.values(), Decimal(0))
        invested = sum((self.invested[a] for a in analysed), Decimal(0))
        other = sum(self.invested.values(), Decimal(0)) - invested
        total = cash + invested + other
        return {
            "total_value": _text(total), "invested_value": _text(invested),
            "other_value": _text(other), "cash_value": _text(cash),
            "cash": {a: _text(v) for a, v in sorted(self.cash.items())},
            "cash_weight": float(cash / total) if total else None,
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class RebalanceRequest:
    """Either ``targets`` (weights per asset, cash under any cash asset) or an
    ``optimizer`` over ``days`` of history with ``cash_weight`` kept in cash."""

    targets: Mapping[str, float] | None = None
    optimizer: str | None = None
    days: int = 365
    cash_weight: float = 0.0
    tolerance: Decimal = Decimal("0.05")
    min_trade: Decimal = Decimal("10")
    lot_sizes: Mapping[str, Decimal] = field(default_factory=dict)
    fee_rate: Decimal = Decimal("0.001")


class RiskService:
    """Risk report, VaR, correlation and rebalance proposals of a tenant's portfolio."""

    def __init__(
        self,
        valuation: PortfolioValuation,
        store: MarketStore,
        *,
        exchanges: Sequence[str],
        currency: str,
        par: Sequence[str] | None = None,
        interval: str = "1d",
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._valuation = valuation
        self._clock = clock
        self.currency = currency
        self._par = par_quotes(currency, par)
        self._cash = frozenset((currency, *self._par))
        self._closes = CloseHistory(store, exchanges=exchanges, currency=currency,
                                    par=self._par, interval=interval, clock=clock)  # fmt: skip

    async def history(self, assets: Sequence[str], days: int) -> History:
        """The aligned closes of ``assets`` over the ``days`` periods before now."""
        return await self._closes.closes(assets, days)

    async def holdings(self, tenant: str) -> Holdings:
        view = await self._valuation.value(tenant)
        amounts: dict[str, Decimal] = {}
        prices: dict[str, Decimal] = {}
        invested: dict[str, Decimal] = {}
        cash: dict[str, Decimal] = {}
        excluded: list[dict[str, str]] = []
        for p in view.valuation.assets:
            if p.amount == 0:
                continue
            if p.price is None or p.market_value is None:
                excluded.append({"asset": p.asset, "reason": "no live price"})
                continue
            amounts[p.asset], prices[p.asset] = p.amount, p.price
            (cash if p.asset in self._cash else invested)[p.asset] = p.market_value
        return Holdings(amounts, prices, invested, cash, excluded)

    async def _invested(self, tenant: str, days: int) -> tuple[Holdings, History, dict[str, float]]:
        held = await self.holdings(tenant)
        history = await self.history(sorted(held.invested), days)
        if not history.assets:
            raise InsufficientHistory(
                "no invested asset has a live price and stored candles", field="tenant"
            )
        total = sum((held.invested[a] for a in history.assets), Decimal(0))
        if total == 0:
            raise InsufficientHistory("the invested assets are worth nothing", field="tenant")
        weights = {a: float(held.invested[a] / total) for a in history.assets}
        return held, history, weights

    def _head(self, held: Holdings, history: History) -> dict[str, Any]:
        return {
            "as_of": to_iso(history.end), "currency": self.currency,
            "excluded": held.excluded + history.excluded,
            "exposure": held.exposure(history.assets),
            "history": history.summary(),
        }  # fmt: skip

    async def portfolio(
        self, tenant: str, *, days: int = 365, confidence: float = 0.95, horizon: int = 1,
        paths: int = 10_000, seed: int = 0,
    ) -> dict[str, Any]:  # fmt: skip
        """The ``build_risk_report`` data of the invested assets, plus ``as_of``,
        ``currency``, ``excluded``, ``exposure`` and ``history``."""
        options = RiskReportOptions(confidence=confidence, horizon=horizon,
                                    monte_carlo_paths=paths, seed=seed)  # fmt: skip
        held, history, weights = await self._invested(tenant, days)
        try:
            report = await asyncio.to_thread(
                build_risk_report, history.times, history.assets, history.prices,
                weights=weights, options=options,
            )  # fmt: skip
        except _NO_DATA as exc:
            raise InsufficientHistory(str(exc), field="days") from None
        data = dict(report.data)
        for asset, count in history.filled.items():
            if count:
                reason = f"{count} missing close(s) forward-filled from the previous one"
                data["notes"].setdefault(asset, {})["prices"] = reason
        return {**self._head(held, history), **data}

    async def var(
        self, tenant: str, *, days: int = 365, confidence: float = 0.95, horizon: int = 1,
        paths: int = 10_000, seed: int = 0,
    ) -> dict[str, Any]:  # fmt: skip
        """Portfolio VaR and CVaR by every method, and the Euler component VaR."""
        held, history, weights = await self._invested(tenant, days)
        returns = history.common_returns()
        w = np.array([weights[a] for a in history.assets])
        body = await asyncio.to_thread(_var_block, returns, w, history.assets, confidence,
                                       horizon, paths, seed)  # fmt: skip
        return {**self._head(held, history), "weights": weights, **body,
                "parameters": {"confidence": confidence, "horizon_days": horizon,
                               "monte_carlo_paths": paths, "seed": seed, "days": days}}  # fmt: skip

    async def correlation(
        self, tenant: str, *, assets: Sequence[str] | None = None, days: int = 90,
        method: str = "pearson", half_life: float = 30, threshold: float = 0.8,
        rolling_window: int = 30,
    ) -> dict[str, Any]:  # fmt: skip
        """The correlation matrix of daily returns over the common rows, its
        average pairwise value and the diversification warning, and the average
        pairwise correlation over each trailing ``rolling_window`` days (0: none)."""
        if method not in ("pearson", "ewma"):
            raise DomainError(f"method {method!r} is not pearson or ewma", field="method")
        if not (half_life > 0):
            raise DomainError("half_life must be positive", field="half_life")
        if not -1 <= threshold <= 1:
            raise DomainError("threshold must be within [-1, 1]", field="threshold")
        held = await self.holdings(tenant)
        wanted = sorted(held.invested) if assets is None else list(dict.fromkeys(assets))
        history = await self.history(wanted, days)
        if assets is not None and history.excluded:
            names = ", ".join(e["asset"] for e in history.excluded)
            raise DomainError(f"no stored candles for {names}", field="assets")
        if not history.assets:
            raise InsufficientHistory("no asset has stored candles", field="assets")
        returns = history.common_returns()
        try:
            if method == "pearson":
                matrix = await asyncio.to_thread(corr.correlation_matrix, returns)
            else:
                matrix = await asyncio.to_thread(corr.ewma_correlation, returns,
                                                 half_life=half_life)  # fmt: skip
        except _NO_DATA as exc:
            raise InsufficientHistory(str(exc), field="assets") from None
        n = len(history.assets)
        warning = corr.correlation_warning(matrix, threshold=threshold) if n > 1 else None
        rolling = None
        if n > 1 and rolling_window >= 2:
            series = await asyncio.to_thread(corr.rolling_average_correlation, returns,
                                             window=rolling_window)  # fmt: skip
            # Return k spans the closes k and k+1: it is dated by the later close's open.
            ends = history.times[len(history.times) - len(returns) :]
            rolling = {"window": rolling_window, "average": [
                {"time": to_iso(int(t)), "value": float(v)}
                for t, v in zip(ends.tolist(), series.tolist(), strict=True) if v == v
            ]}  # fmt: skip
        return {
            "as_of": to_iso(history.end), "assets": list(history.assets), "method": method,
            "half_life": half_life if method == "ewma" else None, "observations": len(returns),
            "matrix": {a: {b: float(matrix[i, j]) for j, b in enumerate(history.assets)}
                       for i, a in enumerate(history.assets)},
            "average": corr.average_pairwise_correlation(matrix) if n > 1 else None,
            "threshold": threshold, "warning": None if warning is None else warning.message,
            "rolling": rolling,
            "excluded": (held.excluded if assets is None else []) + history.excluded,
            "history": history.summary(),
        }  # fmt: skip

    async def rebalance(self, tenant: str, request: RebalanceRequest) -> dict[str, Any]:
        """The trades that bring the holdings to the targets; nothing is ordered."""
        if (request.targets is None) == (request.optimizer is None):
            raise DomainError("give either targets or optimizer", field="targets")
        if not 0 <= request.cash_weight < 1:
            raise DomainError("cash_weight must be in [0, 1)", field="cash_weight")
        quote = self._par[0] if self._par else self.currency
        held = await self.holdings(tenant)
        excluded = list(held.excluded)
        universe = sorted(held.invested)
        if request.optimizer is not None:
            history = await self.history(universe, request.days)
            excluded += history.excluded
            universe = list(history.assets)
            targets = await self._optimised(request, history, quote)
        else:
            assert request.targets is not None
            targets = _given_targets(request.targets, held, self._cash, quote)
        cash = sum(held.cash.values(), Decimal(0))
        holdings = {a: held.amounts[a] for a in universe} | {quote: cash}
        prices = {a: held.prices[a] for a in universe}
        try:
            proposal = propose_rebalance(
                holdings, prices, targets, quote=quote, tolerance=request.tolerance,
                min_trade=request.min_trade, lot_sizes=dict(request.lot_sizes),
                fee_rate=request.fee_rate,
            )  # fmt: skip
        except RebalanceError as exc:
            raise DomainError(str(exc), field=_field_of(str(exc))) from None
        return {
            "as_of": to_iso(self._clock()), "currency": self.currency, "quote": quote,
            "optimizer": request.optimizer,
            "targets": {a: float(t) for a, t in sorted(targets.items())},
            "trades": [
                {"asset": t.asset, "side": t.side, "quantity": _text(t.quantity),
                 "price": _text(t.price), "notional": _text(t.notional), "fee": _text(t.fee)}
                for t in proposal.trades
            ],
            "weights_before": {a: _text(w) for a, w in proposal.weights_before.items()},
            "weights_after": {a: _text(w) for a, w in proposal.weights_after.items()},
            "cash_after": _text(proposal.cash_after), "total_value": _text(proposal.total_value),
            "within_tolerance": proposal.within_tolerance,
            "skipped": [{"asset": a, "reason": r} for a, r in proposal.skipped],
            "excluded": excluded,
        }  # fmt: skip

    async def _optimised(
        self, request: RebalanceRequest, history: History, quote: str
    ) -> dict[str, Decimal]:
        assert request.optimizer is not None
        optimise = OPTIMIZERS.get(request.optimizer)
        if optimise is None:
            raise DomainError(f"unknown optimizer {request.optimizer!r}", field="optimizer")
        if not history.assets:
            raise InsufficientHistory("no invested asset has stored candles", field="days")
        returns = history.common_returns()
        cov = np.atleast_2d(np.cov(returns, rowvar=False, ddof=1))
        try:
            weights = await asyncio.to_thread(optimise, cov)
        except _NO_DATA as exc:
            raise InsufficientHistory(str(exc), field="days") from None
        invested = 1 - Decimal(repr(request.cash_weight))
        out = {a: Decimal(repr(float(w))) * invested for a, w in zip(history.assets, weights,
                                                                      strict=True)}  # fmt: skip
        out[quote] = Decimal(repr(request.cash_weight))
        return out


def _field_of(message: str) -> str:
    """The request field a ``RebalanceError`` message is about."""
    for name, key in (("lot size", "lot_sizes"), ("fee_rate", "fee_rate"),
                      ("tolerance", "tolerance"), ("min_trade", "min_trade")):  # fmt: skip
        if name in message:
            return key
    return "targets"


def _given_targets(
    targets: Mapping[str, float], held: Holdings, cash: frozenset[str], quote: str
) -> dict[str, Decimal]:
    out: dict[str, Decimal] = {}
    for asset, weight in targets.items():
        name = quote if asset in cash else asset
        if name != quote and name not in held.prices:
            raise DomainError(f"target asset {asset} has no live price", field="targets")
        out[name] = out.get(name, Decimal(0)) + Decimal(repr(float(weight)))
    return out


def _var_block(
    returns: FloatArray, w: FloatArray, assets: tuple[str, ...], confidence: float,
    horizon: int, paths: int, seed: int,
) -> dict[str, Any]:  # fmt: skip
    port = returns @ w  # portfolio_returns, without its two-day minimum: values null instead
    values: dict[str, dict[str, float | None]] = {"var": {}, "cvar": {}}
    notes: dict[str, str] = {}

    def put(kind: str, method: str, compute: Callable[[], float]) -> None:
        try:
            values[kind][method] = compute()
        except _NO_DATA as exc:
            values[kind][method] = None
            notes[f"{kind}.{method}"] = str(exc)

    c, h = confidence, horizon
    put("var", "historical", lambda: var.var_historical(port, confidence=c, horizon=h))
    put("var", "parametric", lambda: var.var_parametric(port, confidence=c, horizon=h))
    put("var", "cornish_fisher", lambda: var.var_cornish_fisher(port, confidence=c, horizon=h))
    put("cvar", "historical", lambda: var.cvar_historical(port, confidence=c, horizon=h))
    for method, key in (("normal", "monte_carlo"), ("bootstrap", "monte_carlo_bootstrap")):
        if paths == 0:
            values["var"][key] = values["cvar"][key] = None
            notes[f"var.{key}"] = notes[f"cvar.{key}"] = "Monte Carlo not requested (0 paths)"
            continue
        try:
            mc = var.var_monte_carlo(returns, w, confidence=c, horizon=h, paths=paths,
                                     method=method, seed=seed)  # type: ignore[arg-type]  # fmt: skip
            values["var"][key], values["cvar"][key] = mc.var, mc.cvar
        except _NO_DATA as exc:
            values["var"][key] = values["cvar"][key] = None
            notes[f"var.{key}"] = notes[f"cvar.{key}"] = str(exc)
    component: dict[str, float] | None = None
    try:
        cv = prisk.component_var(returns, w, confidence=c, horizon=h)
        component = dict(zip(assets, cv.component.tolist(), strict=True))
    except _NO_DATA as exc:
        notes["component_var"] = str(exc)
    return {**values, "component_var": component, "observations": len(port), "notes": notes}
