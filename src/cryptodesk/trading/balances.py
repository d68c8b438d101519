"""Balances per account and asset, and the reservations open orders hold.

``reserve`` moves funds from available to reserved under an order id, ``release``
gives them back (an order cancelled or expired), ``settle_fill`` consumes them on a
fill: the buyer pays quote (and its fee), the seller base, each receives the other
side. Exact decimals; a move an account cannot cover raises and moves nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.orders import Fill
from cryptodesk.trading.errors import OrderRejected
from cryptodesk.trading.instruments import EXACT, plain

_ZERO = Decimal(0)


@dataclass(slots=True)
class _Reservation:
    account: str
    asset: str
    amount: Decimal


class Balances:
    """Available and reserved amounts per account and asset, and reservations per order.

    ``reserve`` moves funds from available to reserved under an order id;
    ``settle_fill`` consumes the reservation (a buyer pays quote including a
    quote fee and receives base, a seller pays base and receives quote minus
    the fee); ``release`` hands back what is left when the order ends.
    """

    def __init__(self) -> None:
        self._available: dict[tuple[str, str], Decimal] = {}
        self._reserved: dict[tuple[str, str], Decimal] = {}
        self._orders: dict[str, _Reservation] = {}

    def available(self, account: str, asset: str) -> Decimal:
        return self._available.get((account, asset), _ZERO)

    def reserved(self, account: str, asset: str) -> Decimal:
        return self._reserved.get((account, asset), _ZERO)

    def reservation(self, order_id: str) -> Decimal:
        """What is still reserved for ``order_id`` (0 once released or unknown)."""
        held = self._orders.get(order_id)
        return held.amount if held is not None else _ZERO

    def deposit(self, account: str, asset: str, amount: Decimal) -> None:
        _positive(amount, "amount")
        _bump(self._available, account, asset, amount)

    def reserve(self, order_id: str, asset: str, amount: Decimal, *, account: str) -> None:
        """Hold ``amount`` of ``asset`` for ``order_id``; ``insufficient_balance`` if short."""
        _positive(amount, "amount")
        if order_id in self._orders:
            raise DomainError(f"order {order_id} already holds a reservation", field="order_id")
        free = self.available(account, asset)
        if free < amount:
            raise OrderRejected(
                "insufficient_balance",
                f"quantity needs {plain(amount)} {asset} but {account} has {plain(free)} available",
                field="quantity",
            )
        _drop(self._available, account, asset, amount)
        _bump(self._reserved, account, asset, amount)
        self._orders[order_id] = _Reservation(account, asset, amount)

    def release(self, order_id: str, amount: Decimal | None = None) -> Decimal:
        """Return all (or ``amount``) of the order's reservation to available; the amount freed."""
        held = self._orders.get(order_id)
        if held is None:
            return _ZERO
        if amount is None:
            amount = held.amount
        elif amount < _ZERO or amount > held.amount:
            raise DomainError(
                f"cannot release {amount} of the {held.amount} reserved for {order_id}",
                field="amount",
            )
        self._take_reserved(order_id, held, amount)
        _bump(self._available, held.account, held.asset, amount)
        return amount

    def settle_fill(self, fill: Fill, *, base: str, quote: str) -> None:
        """Move funds for one fill of ``fill.order_id`` (reservation first, then available).

        A fee in the received asset is taken from what arrives; a fee in a
        third asset (an exchange token) from that asset's available amount.
        """
        notional = EXACT.multiply(fill.price, fill.quantity)
        fee = fill.fee if fill.fee_asset else _ZERO
        gave, got = (quote, base) if fill.side == "buy" else (base, quote)
        pay = notional if fill.side == "buy" else fill.quantity
        receive = fill.quantity if fill.side == "buy" else notional
        if fee and fill.fee_asset == gave:
            pay = EXACT.add(pay, fee)
        elif fee and fill.fee_asset == got:
            receive = EXACT.subtract(receive, fee)
        held = self._orders.get(fill.order_id)
        from_reserved = min(pay, held.amount) if held is not None else _ZERO
        if held is not None and held.asset != gave:
            message = f"order {fill.order_id} reserved {held.asset}, the fill pays {gave}"
            raise DomainError(message, field="order_id")
        owing = {gave: EXACT.subtract(pay, from_reserved)}
        if fee and fill.fee_asset not in (gave, got):
            owing[fill.fee_asset] = fee
        for asset, amount in owing.items():  # check before moving anything
            if amount > self.available(fill.account, asset):
                raise DomainError(
                    f"fill {fill.trade_id} needs {plain(amount)} {asset} more than "
                    f"{fill.account} has",
                    field="quantity",
                )
        if held is not None and from_reserved:
            self._take_reserved(fill.order_id, held, from_reserved)
        for asset, amount in owing.items():
            _drop(self._available, fill.account, asset, amount)
        _bump(self._available, fill.account, got, receive)

    def _take_reserved(self, order_id: str, held: _Reservation, amount: Decimal) -> None:
        held.amount = EXACT.subtract(held.amount, amount)
        _drop(self._reserved, held.account, held.asset, amount)
        if not held.amount:
            del self._orders[order_id]


def _bump(book: dict[tuple[str, str], Decimal], account: str, asset: str, amount: Decimal) -> None:
    key = (account, asset)
    book[key] = EXACT.add(book.get(key, _ZERO), amount)


def _drop(book: dict[tuple[str, str], Decimal], account: str, asset: str, amount: Decimal) -> None:
    key = (account, asset)
    book[key] = EXACT.subtract(book.get(key, _ZERO), amount)


def _positive(amount: Decimal, name: str) -> None:
    if not isinstance(amount, Decimal) or not amount.is_finite() or amount <= _ZERO:
        raise DomainError(f"{name} must be a positive Decimal, got {amount!r}", field=name)
