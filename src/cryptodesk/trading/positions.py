"""Positions per account and symbol, built from fills (``portfolio/trade_fills.py`` turns
the same fills into ledger entries).

A position keeps its signed quantity and the signed cost of what is open
(quantity x entry prices), so every number is exact ``Decimal``: the average
entry price is cost / quantity; a reducing fill realizes (fill price - average)
on what it closes and keeps the average; a fill that flips the position closes
it all and opens the rest at the fill price. Fees are counted apart from the
realized PnL. Because the closed cost is taken out of the open cost exactly,
realized + unrealized(mark) - fees equals the cash-flow PnL (quote received -
quote paid + quantity x mark) for any sequence of fills.

Fees: a quote fee is a cost; a base fee changes the quantity the fill moves (a
buyer receives fewer units, a seller gives more) at the fill price, and its
value at that price is the fee, so quantities agree with the ledger
(``portfolio.tax_events``: a fee in the received asset means fewer units
arrive). A fee in a third asset (an exchange token) is kept in ``other_fees``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, localcontext

from cryptodesk.domain.orders import Fill
from cryptodesk.trading.instruments import EXACT

_ZERO = Decimal(0)


@dataclass(slots=True)
class Position:
    """One account's position in one symbol; ``cost`` is signed like ``quantity``."""

    account: str
    symbol: str
    quantity: Decimal = _ZERO
    cost: Decimal = _ZERO
    realized: Decimal = _ZERO
    fees: Decimal = _ZERO  # in quote, base fees valued at their fill price
    other_fees: dict[str, Decimal] = field(default_factory=dict)

    @property
    def average_price(self) -> Decimal:
        """Average entry price of what is open (0 when flat)."""
        if not self.quantity:
            return _ZERO
        with localcontext(EXACT):
            return self.cost / self.quantity

    def unrealized(self, mark: Decimal) -> Decimal:
        """PnL of the open quantity if it were closed at ``mark``."""
        with localcontext(EXACT):
            return mark * self.quantity - self.cost

    def snapshot(self, mark: Decimal | None = None) -> dict[str, str]:
        """The position as strings (the API's money form); with ``unrealized`` given a mark."""
        out = {
            "account": self.account,
            "symbol": self.symbol,
            "quantity": str(self.quantity),
            "average_price": str(self.average_price),
            "realized": str(self.realized),
            "fees": str(self.fees),
        }
        out.update({f"fees_{asset}": str(amount) for asset, amount in self.other_fees.items()})
        if mark is not None:
            out["mark"] = str(mark)
            out["unrealized"] = str(self.unrealized(mark))
        return out

    def trade(self, delta: Decimal, price: Decimal) -> None:
        """Apply a signed quantity change at ``price`` (no fee)."""
        add, mul = EXACT.add, EXACT.multiply
        quantity = self.quantity
        if not quantity or (quantity > 0) == (delta > 0):
            self.quantity = add(quantity, delta)
            self.cost = add(self.cost, mul(price, delta))
            return
        closing = EXACT.minus(delta)
        if delta.copy_abs() < quantity.copy_abs():  # reduce: keep the average
            closed_cost = EXACT.divide(mul(self.cost, closing), quantity)
            self.realized = add(self.realized, EXACT.subtract(mul(price, closing), closed_cost))
            self.quantity = add(quantity, delta)
            self.cost = EXACT.subtract(self.cost, closed_cost)
            return
        # Close everything (the exact cost, so nothing is left behind) and
        # open what remains at the fill price.
        self.realized = add(self.realized, EXACT.subtract(mul(price, quantity), self.cost))
        self.quantity = add(quantity, delta)
        self.cost = mul(price, self.quantity)


class Positions:
    """All positions, keyed by (account, symbol). A fill seen before (same venue,
    trade id and side) is ignored: delivery is at least once."""

    def __init__(self) -> None:
        self._positions: dict[tuple[str, str], Position] = {}
        self._seen: set[tuple[str, str, str]] = set()

    def get(self, account: str, symbol: str) -> Position:
        """The position (flat if none yet); the live object, not a copy."""
        key = (account, symbol)
        position = self._positions.get(key)
        if position is None:
            position = self._positions[key] = Position(account, symbol)
        return position

    def all(self) -> list[Position]:
        return list(self._positions.values())

    def apply(self, fill: Fill) -> bool:
        """Book ``fill``; False if it was already booked."""
        key = (fill.venue, fill.trade_id, fill.side)
        if key in self._seen:
            return False
        self._seen.add(key)
        base, _, quote = fill.symbol.partition("/")  # a fill's symbol is a valid BASE/QUOTE
        position = self.get(fill.account, fill.symbol)
        delta = fill.quantity if fill.side == "buy" else EXACT.minus(fill.quantity)
        fee = fill.fee if fill.fee_asset else _ZERO
        if fee and fill.fee_asset == base:
            delta = EXACT.subtract(delta, fee)
            position.fees = EXACT.add(position.fees, EXACT.multiply(fee, fill.price))
        elif fee and fill.fee_asset == quote:
            position.fees = EXACT.add(position.fees, fee)
        elif fee:
            held = position.other_fees.get(fill.fee_asset, _ZERO)
            position.other_fees[fill.fee_asset] = EXACT.add(held, fee)
        position.trade(delta, fill.price)
        return True

    def snapshot(self, marks: dict[str, Decimal] | None = None) -> list[dict[str, str]]:
        """Every non-empty position as strings, valued at ``marks[symbol]`` where given."""
        marks = marks or {}
        return [
            p.snapshot(marks.get(p.symbol))
            for p in self._positions.values()
            if p.quantity or p.realized or p.fees
        ]
