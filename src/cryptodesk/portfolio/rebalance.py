"""Rebalancing proposals: the trades that bring holdings back to target weights.

Money is exact ``Decimal`` in the quote currency. The rules:

- ``holdings`` include the quote currency as cash (``quote``, price 1); every
  other held or targeted asset needs a positive price in the quote currency.
- ``targets`` are weights of the total value, each >= 0, summing to 1 within
  1e-9; a cash target is given under the quote asset; a missing asset has
  target 0. ``weights_before``/``weights_after`` cover the union of held and
  targeted assets plus the quote asset, rounded to 28 significant digits
  and normalised (``Decimal("0.5")``, not ``0.50``).
- The tolerance band is absolute on the weight: an asset is outside it when
  ``|weight - target| > tolerance``. Cash has a band too.
- No asset outside its band: no trades and ``within_tolerance`` True.
  Otherwise every non-cash asset outside its band is traded back to its
  target value ``target * total_value`` (assets inside their band stay as
  they are). Cash moves only through other assets' trades, so when cash is
  the only asset outside its band the surplus buys every asset under its
  target (spending at most the surplus), or a shortfall sells every asset
  over its target (the same share of each excess, raising at most the
  shortfall after fees).
- Sells come first; their proceeds minus fees join the cash. Buys are then
  paid from that cash including their fees; when the cash is short every
  buy is scaled down by the same factor, so no proposal spends more cash
  than there is.
- Quantities are rounded DOWN to the asset's lot size (``1e-8`` when none is
  given): a sell never undershoots and a buy never overshoots the target by
  rounding. A trade that rounds to zero or whose notional is below
  ``min_trade`` is left out and listed in ``skipped`` with the reason.
- ``notional = quantity * price``, ``fee = notional * fee_rate``, paid in the
  quote currency. ``weights_after`` and ``cash_after`` are those of the holdings
  after every proposed trade; ``total_value`` is the value before the trades.
- Bad input raises ``RebalanceError`` (a ``ValueError``) naming the asset.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import (
    ROUND_FLOOR,
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    Inexact,
    InvalidOperation,
)
from typing import Final, Literal

DEFAULT_LOT: Final = Decimal("1e-8")  # the finest step most exchanges trade in
TARGET_SUM_TOLERANCE: Final = Decimal("1e-9")
_ZERO: Final = Decimal(0)
_ONE: Final = Decimal(1)
# Products and sums are exact (Inexact trapped); divisions round toward zero
# (floor, as every quantity is positive) so a rounded quantity never exceeds
# the true one; weights are reported to 28 digits.
_EXACT: Final = Context(prec=100, traps=[InvalidOperation, Inexact])
_FLOOR: Final = Context(prec=50, rounding=ROUND_FLOOR)
_WEIGHT: Final = Context(prec=28, rounding=ROUND_HALF_EVEN)


class RebalanceError(ValueError):
    """Holdings, prices, targets or options a rebalance cannot use."""


@dataclass(frozen=True, slots=True)
class TradeProposal:
    """One proposed order: ``quantity`` of ``asset`` at ``price``; ``fee`` in the quote."""

    asset: str
    side: Literal["buy", "sell"]
    quantity: Decimal
    price: Decimal
    notional: Decimal
    fee: Decimal


@dataclass(frozen=True, slots=True)
class RebalanceProposal:
    """The trades (sells first) and the portfolio before and after them."""

    trades: tuple[TradeProposal, ...]
    weights_before: dict[str, Decimal]
    weights_after: dict[str, Decimal]
    cash_after: Decimal
    total_value: Decimal
    within_tolerance: bool
    skipped: tuple[tuple[str, str], ...]  # (asset, reason)


def _check(name: str, value: object, *, positive: bool = False) -> Decimal:
    if not isinstance(value, Decimal) or not value.is_finite():
        raise RebalanceError(f"{name} must be a finite Decimal, got {value!r}")
    if value < 0 or (positive and value == 0):
        bound = "positive" if positive else "non-negative"
        raise RebalanceError(f"{name} must be {bound}, got {value}")
    return value


def _prices(
    holdings: Mapping[str, Decimal],
    prices: Mapping[str, Decimal],
    targets: Mapping[str, Decimal],
    quote: str,
) -> dict[str, Decimal]:
    checked = {asset: _check(f"price of {asset}", p, positive=True) for asset, p in prices.items()}
    if checked.get(quote, _ONE) != _ONE:
        raise RebalanceError(f"price of the quote currency {quote} must be 1, got {prices[quote]}")
    checked[quote] = _ONE
    for asset, quantity in holdings.items():
        _check(f"holding of {asset}", quantity)
        if asset not in checked and quantity != 0:
            raise RebalanceError(f"no price for held asset {asset}")
    total = _ZERO
    for asset, target in targets.items():
        _check(f"target of {asset}", target)
        if asset not in checked:
            raise RebalanceError(f"no price for target asset {asset}")
        total = _EXACT.add(total, target)
    if abs(total - _ONE) > TARGET_SUM_TOLERANCE:
        raise RebalanceError(f"targets must sum to 1, got {total}")
    return checked


def _weights(values: Mapping[str, Decimal], total: Decimal) -> dict[str, Decimal]:
    return {
        asset: _WEIGHT.divide(value, total).normalize(_WEIGHT) for asset, value in values.items()
    }


def _lots(amount: Decimal, price: Decimal, lot: Decimal) -> Decimal:
    """The largest multiple of ``lot`` whose value at ``price`` is at most ``amount``."""
    count = _FLOOR.divide(amount, _EXACT.multiply(price, lot))
    return _EXACT.multiply(count.to_integral_value(rounding=ROUND_FLOOR), lot)


def _too_small(quantity: Decimal, price: Decimal, lot: Decimal, min_trade: Decimal) -> str | None:
    if quantity == 0:
        return f"rounds to zero at lot size {lot}"
    notional = _EXACT.multiply(quantity, price)
    if notional < min_trade:
        return f"notional {notional} below min_trade {min_trade}"
    return None


def _sum(values: Iterable[Decimal]) -> Decimal:
    total = _ZERO
    for value in values:
        total = _EXACT.add(total, value)
    return total


def _trade(
    asset: str, side: Literal["buy", "sell"], quantity: Decimal, price: Decimal, fee_rate: Decimal
) -> TradeProposal:
    notional = _EXACT.multiply(quantity, price)
    return TradeProposal(
        asset, side, quantity, price, notional, _EXACT.multiply(notional, fee_rate)
    )


def _cash_only(
    values: dict[str, Decimal], goal: dict[str, Decimal], quote: str, fee_rate: Decimal
) -> tuple[list[str], Decimal, Decimal | None]:
    """Assets to trade, share of each sell gap and buy budget when only cash is off.

    Cash moves only through other assets' trades: surplus cash buys the assets
    under their target, spending at most the surplus; a shortfall sells the
    assets over their target, each by the same share of its excess so the
    proceeds after fees do not exceed the shortfall.
    """
    surplus = _EXACT.subtract(values[quote], goal[quote])
    others = [asset for asset in values if asset != quote]
    if surplus > 0:
        return [a for a in others if values[a] < goal[a]], _ONE, surplus
    over = [a for a in others if values[a] > goal[a]]
    excess = _EXACT.multiply(
        _sum(_EXACT.subtract(values[a], goal[a]) for a in over), _EXACT.subtract(_ONE, fee_rate)
    )
    return over, min(_ONE, _FLOOR.divide(-surplus, excess)), None


def _scaled_buys(
    wanted: list[tuple[str, Decimal]],
    cash: Decimal,
    price: Mapping[str, Decimal],
    lot: Mapping[str, Decimal],
    fee_rate: Decimal,
    min_trade: Decimal,
    skipped: list[tuple[str, str]],
) -> list[TradeProposal]:
    """The buys, each cut by the same share when they and their fees cost more than ``cash``."""
    cost_rate = _EXACT.add(_ONE, fee_rate)
    cost = _sum(_EXACT.multiply(_EXACT.multiply(q, price[a]), cost_rate) for a, q in wanted)
    if cost <= cash:
        return [_trade(asset, "buy", amount, price[asset], fee_rate) for asset, amount in wanted]
    share = _FLOOR.divide(cash, cost)  # rounded down, so the scaled buys fit in the cash
    buys = []
    for asset, amount in wanted:
        lots = _FLOOR.divide(_EXACT.multiply(amount, share), lot[asset])
        scaled = _EXACT.multiply(lots.to_integral_value(rounding=ROUND_FLOOR), lot[asset])
        reason = _too_small(scaled, price[asset], lot[asset], min_trade)
        if reason is not None:
            skipped.append((asset, f"buy scaled to the available cash: {reason}"))
        else:
            buys.append(_trade(asset, "buy", scaled, price[asset], fee_rate))
    return buys


def propose_rebalance(
    holdings: Mapping[str, Decimal],
    prices: Mapping[str, Decimal],
    targets: Mapping[str, Decimal],
    *,
    quote: str = "USDT",
    tolerance: Decimal = Decimal("0.05"),
    min_trade: Decimal = Decimal("10"),
    lot_sizes: Mapping[str, Decimal] | None = None,
    fee_rate: Decimal = Decimal("0.001"),
) -> RebalanceProposal:
    """The trades that bring ``holdings`` back within ``tolerance`` of ``targets``."""
    _check("tolerance", tolerance)
    _check("min_trade", min_trade)
    if _check("fee_rate", fee_rate) >= 1:
        raise RebalanceError(f"fee_rate must be below 1, got {fee_rate}")
    given_lots = {
        asset: _check(f"lot size of {asset}", size, positive=True)
        for asset, size in (lot_sizes or {}).items()
    }
    price = _prices(holdings, prices, targets, quote)

    assets = sorted(set(holdings) | set(targets) | {quote})
    lot = {asset: given_lots.get(asset, DEFAULT_LOT) for asset in assets}
    quantity = {asset: holdings.get(asset, _ZERO) for asset in assets}
    values = {asset: _EXACT.multiply(quantity[asset], price.get(asset, _ONE)) for asset in assets}
    total = _sum(values.values())
    if total == 0:
        raise RebalanceError("the holdings are worth nothing: there is nothing to rebalance")
    goal = {asset: _EXACT.multiply(targets.get(asset, _ZERO), total) for asset in assets}
    band = _EXACT.multiply(tolerance, total)
    outside = [a for a in assets if abs(_EXACT.subtract(values[a], goal[a])) > band]
    before = _weights(values, total)
    if not outside:
        return RebalanceProposal((), before, dict(before), quantity[quote], total, True, ())

    skipped: list[tuple[str, str]] = []
    sells: list[TradeProposal] = []
    wanted_buys: list[tuple[str, Decimal]] = []
    traded = [asset for asset in outside if asset != quote]
    share, budget = _ONE, None
    if not traded:
        traded, share, budget = _cash_only(values, goal, quote, fee_rate)
    for asset in traded:
        gap = _EXACT.subtract(values[asset], goal[asset])
        wanted = abs(gap) if gap < 0 else _EXACT.multiply(gap, share)
        amount = _lots(wanted, price[asset], lot[asset])
        if gap > 0:
            amount = min(amount, quantity[asset])
        reason = _too_small(amount, price[asset], lot[asset], min_trade)
        if reason is not None:
            skipped.append((asset, f"{'sell' if gap > 0 else 'buy'}: {reason}"))
        elif gap > 0:
            sells.append(_trade(asset, "sell", amount, price[asset], fee_rate))
        else:
            wanted_buys.append((asset, amount))

    cash = _EXACT.add(quantity[quote], _sum(_EXACT.subtract(t.notional, t.fee) for t in sells))
    spendable = cash if budget is None else min(cash, budget)
    buys = _scaled_buys(wanted_buys, spendable, price, lot, fee_rate, min_trade, skipped)
    cash = _EXACT.subtract(cash, _sum(_EXACT.add(t.notional, t.fee) for t in buys))
    for sell in sells:
        quantity[sell.asset] = _EXACT.subtract(quantity[sell.asset], sell.quantity)
    for buy in buys:
        quantity[buy.asset] = _EXACT.add(quantity[buy.asset], buy.quantity)
    quantity[quote] = cash
    after = {asset: _EXACT.multiply(quantity[asset], price.get(asset, _ONE)) for asset in assets}
    return RebalanceProposal(
        trades=(*sells, *buys),
        weights_before=before,
        weights_after=_weights(after, _sum(after.values())),
        cash_after=cash,
        total_value=total,
        within_tolerance=False,
        skipped=tuple(skipped),
    )
