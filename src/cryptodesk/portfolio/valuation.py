"""Positions valued at market prices: quantity, cost basis, market value, PnL, allocation.

Input is a ``CostBasisResult`` and a price per asset in the report
currency. Computed per wallet, it gives a position per (account, asset); a
universal result (the ``uk`` method pools across accounts by law) gives one
position per asset under the account ``*``. Rules:

- ``realized`` of a position is the sum of the gains of its disposal lines
  (the account's disposals of the asset); ``income`` (staking, airdrops...)
  is kept apart from it.
- ``market_value = amount * price``, ``unrealized = market_value - cost_basis``.
- A missing price makes the position's market value, unrealized PnL and
  allocation ``None`` and lists it under ``missing_prices``: an unknown value
  is never shown as zero. A position with nothing left (``amount == 0``) is
  worth exactly zero whatever the price.
- ``allocation`` is the position's share of the total market value of the
  positions that have a price, in percent, rounded half-even to 0.01 (so the
  rounded shares may add up to 99.99 or 100.01). ``Totals.complete`` says
  whether every position had a price; when it is False the totals and
  allocations cover the priced part only.

Money is ``Decimal`` and computed exactly: additions, subtractions and
products run in a context wide enough that no digit is rounded away; only
the allocation division is rounded, as documented above.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Context, Decimal, Inexact, InvalidOperation
from typing import Any, Final

from cryptodesk.portfolio.tax_lots import CostBasisResult

ALLOCATION_STEP: Final = Decimal("0.01")
ALL_ACCOUNTS: Final = "*"  # the account of positions pooled over every account
_ZERO: Final = Decimal(0)
_HUNDRED: Final = Decimal(100)
# 38-digit amounts times prices, summed over many positions, fit in 100 digits;
# Inexact is trapped so a number that would not fit fails loudly instead.
EXACT: Final = Context(prec=100, traps=[InvalidOperation, Inexact])
_DIVIDE: Final = Context(prec=50, rounding=ROUND_HALF_EVEN)


@dataclass(frozen=True, slots=True)
class Position:
    """One asset on one account (``account`` None: the asset over every account)."""

    account: str | None
    asset: str
    amount: Decimal
    cost_basis: Decimal
    realized: Decimal
    income: Decimal
    price: Decimal | None
    market_value: Decimal | None
    unrealized: Decimal | None
    allocation: Decimal | None = None  # percent of the priced total, 0.01 step


@dataclass(frozen=True, slots=True)
class MissingPrice:
    """A position that could not be valued for want of a price."""

    account: str | None
    asset: str
    amount: Decimal


@dataclass(frozen=True, slots=True)
class Totals:
    """Sums over positions; market value and unrealized cover priced positions only."""

    cost_basis: Decimal
    market_value: Decimal
    unrealized: Decimal
    realized: Decimal
    income: Decimal
    complete: bool


@dataclass(frozen=True, slots=True)
class Valuation:
    currency: str
    method: str
    positions: list[Position]  # per (account, asset), sorted
    assets: list[Position]  # per asset over every account, sorted
    total: Totals
    missing_prices: list[MissingPrice]  # per (account, asset)
    warnings: list[str]


def account_of(result: CostBasisResult) -> Callable[[str | None], str]:
    """Maps an account to its position's account: itself per wallet, else ``*``."""
    if result.per_wallet:
        return lambda account: account or ALL_ACCOUNTS
    return lambda _account: ALL_ACCOUNTS


def _add(values: Iterable[Decimal]) -> Decimal:
    total = _ZERO
    for value in values:
        total = EXACT.add(total, value)
    return total


def _position(
    account: str | None,
    asset: str,
    amount: Decimal,
    cost_basis: Decimal,
    realized: Decimal,
    income: Decimal,
    price: Decimal | None,
) -> Position:
    if amount == _ZERO:
        market_value: Decimal | None = _ZERO
    elif price is None:
        market_value = None
    else:
        market_value = EXACT.multiply(amount, price)
    unrealized = None if market_value is None else EXACT.subtract(market_value, cost_basis)
    return Position(
        account, asset, amount, cost_basis, realized, income, price, market_value, unrealized
    )


def allocation(value: Decimal | None, total: Decimal) -> Decimal | None:
    """``value`` as a percentage of ``total``, half-even to 0.01; None when unknown or 0."""
    if value is None or total == _ZERO:
        return None
    share = _DIVIDE.divide(_DIVIDE.multiply(value, _HUNDRED), total)
    return share.quantize(ALLOCATION_STEP, rounding=ROUND_HALF_EVEN)


def _with_allocation(positions: list[Position], total: Decimal) -> list[Position]:
    out = []
    for p in positions:
        out.append(
            Position(
                p.account, p.asset, p.amount, p.cost_basis, p.realized, p.income, p.price,
                p.market_value, p.unrealized, allocation(p.market_value, total),
            )
        )  # fmt: skip
    return out


def value(
    result: CostBasisResult,
    prices: Mapping[str, Decimal | None],
    *,
    warnings: Iterable[str] = (),
) -> Valuation:
    """Value every (account, asset) of ``result`` at ``prices`` (asset -> price or None).

    Positions fully disposed of stay listed (amount zero) while they carry
    realized PnL or income.
    """
    home = account_of(result)
    keys: set[tuple[str, str]] = set()
    held: dict[tuple[str, str], tuple[Decimal, Decimal]] = {}
    for h in result.holdings:
        key = (home(h.account), h.asset)
        amount, cost = held.get(key, (_ZERO, _ZERO))
        held[key] = (EXACT.add(amount, h.amount), EXACT.add(cost, h.cost_basis))
        keys.add(key)
    realized: dict[tuple[str, str], Decimal] = {}
    for line in result.disposals:
        key = (home(line.account), line.asset)
        realized[key] = EXACT.add(realized.get(key, _ZERO), line.gain)
        keys.add(key)
    income: dict[tuple[str, str], Decimal] = {}
    for item in result.income:
        if item.asset == result.currency:
            continue  # cash income: no position to hang it on (it is in the tax report)
        key = (home(item.account), item.asset)
        income[key] = EXACT.add(income.get(key, _ZERO), item.value)
        keys.add(key)

    positions = []
    for account, asset in sorted(keys):
        amount, cost = held.get((account, asset), (_ZERO, _ZERO))
        positions.append(
            _position(account, asset, amount, cost, realized.get((account, asset), _ZERO),
                      income.get((account, asset), _ZERO), price_of(prices, asset, result.currency))
        )  # fmt: skip
    by_asset: dict[str, list[Position]] = {}
    for p in positions:
        by_asset.setdefault(p.asset, []).append(p)
    assets = [
        _position(
            None, asset, _add(p.amount for p in group), _add(p.cost_basis for p in group),
            _add(p.realized for p in group), _add(p.income for p in group),
            price_of(prices, asset, result.currency),
        )
        for asset, group in sorted(by_asset.items())
    ]  # fmt: skip
    priced = [p for p in positions if p.market_value is not None]
    market_value = _add(p.market_value for p in priced if p.market_value is not None)
    total = Totals(
        cost_basis=_add(p.cost_basis for p in positions),
        market_value=market_value,
        unrealized=_add(p.unrealized for p in priced if p.unrealized is not None),
        realized=_add(p.realized for p in positions),
        income=_add(p.income for p in positions),
        complete=len(priced) == len(positions),
    )
    missing = [
        MissingPrice(p.account, p.asset, p.amount) for p in positions if p.market_value is None
    ]
    return Valuation(
        currency=result.currency,
        method=result.method,
        positions=_with_allocation(positions, market_value),
        assets=_with_allocation(assets, market_value),
        total=total,
        missing_prices=missing,
        warnings=[*result.warnings, *warnings],
    )


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One position at the close of ``day`` (``YYYY-MM-DD``, UTC), as stored daily."""

    day: str
    account: str
    asset: str
    amount: Decimal
    cost_basis: Decimal
    price: Decimal | None
    market_value: Decimal | None
    realized: Decimal  # cumulative up to the close of ``day``
    unrealized: Decimal | None


def snapshots(v: Valuation, day: str) -> list[Snapshot]:
    """The per-(account, asset) rows of ``v`` stamped with ``day``."""
    return [
        Snapshot(day, p.account or "", p.asset, p.amount, p.cost_basis, p.price,
                 p.market_value, p.realized, p.unrealized)
        for p in v.positions
    ]  # fmt: skip


def price_of(prices: Mapping[str, Decimal | None], asset: str, currency: str) -> Decimal | None:
    """The asset's price; the report currency itself is worth exactly 1."""
    if asset == currency:
        return Decimal(1)
    return prices.get(asset)


# ---- the JSON shape the API serves (Decimal as strings, None as null) --------------------


def _text(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")


def position_to_dict(p: Position) -> dict[str, Any]:
    out: dict[str, Any] = {"account": p.account} if p.account is not None else {}
    out.update(
        asset=p.asset, amount=_text(p.amount), cost_basis=_text(p.cost_basis),
        price=_text(p.price), market_value=_text(p.market_value),
        unrealized=_text(p.unrealized), realized=_text(p.realized), income=_text(p.income),
        allocation=_text(p.allocation),
    )  # fmt: skip
    return out


def to_dict(v: Valuation) -> dict[str, Any]:
    """The valuation as JSON-ready data: money as decimal strings, unknowns as null."""
    t = v.total
    total = {
        "cost_basis": _text(t.cost_basis), "market_value": _text(t.market_value),
        "unrealized": _text(t.unrealized), "realized": _text(t.realized),
        "income": _text(t.income), "complete": t.complete,
    }  # fmt: skip
    return {
        "currency": v.currency,
        "method": v.method,
        "total": total,
        "assets": [position_to_dict(p) for p in v.assets],
        "positions": [position_to_dict(p) for p in v.positions],
        "missing_prices": [
            {"account": m.account, "asset": m.asset, "amount": _text(m.amount)}
            for m in v.missing_prices
        ],
        "warnings": list(v.warnings),
    }
