"""Instruments: a market's price and quantity grid, and the order rules that follow from it.

The matching engine counts prices in integer ticks and quantities in integer
lots; an ``Instrument`` converts at the edge with exact ``Decimal`` arithmetic,
so a price off the tick grid or a quantity off the lot grid is refused here,
never rounded silently (rounding an order changes what the client asked for).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Context, Decimal, DivisionByZero, InvalidOperation, Overflow
from typing import Any, Final

from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.orders import OrderRequest
from cryptodesk.trading.errors import OrderRejected

# ccxt's precision modes (ccxt/base/decimal_to_precision.py): how a market's
# ``precision.price`` / ``precision.amount`` are to be read.
DECIMAL_PLACES: Final = 2
SIGNIFICANT_DIGITS: Final = 3
TICK_SIZE: Final = 4

_ZERO = Decimal(0)
# Wide enough that grid arithmetic on any real price or quantity is exact;
# fixed, so results never depend on the caller's context. Hot paths call its
# methods (``EXACT.multiply(a, b)``) instead of entering ``localcontext(EXACT)``:
# the same result without switching the thread's context.
EXACT = Context(prec=60, traps=[InvalidOperation, DivisionByZero, Overflow])
_PRICED: Final = frozenset({"limit", "stop_limit"})
_STOPS: Final = frozenset({"stop_market", "stop_limit"})


Grid = tuple[int, int | None, int | None]
"""An order on its instrument's grid: (lots, limit price ticks, stop price ticks)."""


def plain(value: Decimal) -> str:
    """A decimal for a message: no exponent, no trailing zeros."""
    return format(value.normalize(), "f") if value else "0"


@dataclass(frozen=True, slots=True)
class Fees:
    """A venue's fee rates, fractions of the notional (a negative maker fee is a rebate);
    checked where an ``Instrument`` is made with them (``Instrument.charging``)."""

    taker: Decimal
    maker: Decimal

    @classmethod
    def of(cls, instrument: Instrument) -> Fees:
        return cls(instrument.taker_fee, instrument.maker_fee)


@dataclass(frozen=True, slots=True)
class Instrument:
    """One tradable market. ``min_quantity`` is at least one lot (0 means one lot);
    fees are fractions of the notional (0.001 = 0.1 %), a negative maker fee is a rebate."""

    symbol: str
    base: str
    quote: str
    tick_size: Decimal
    lot_size: Decimal
    min_quantity: Decimal = _ZERO
    min_notional: Decimal = _ZERO
    taker_fee: Decimal = Decimal("0.001")
    maker_fee: Decimal = Decimal("0.001")

    def __post_init__(self) -> None:
        for name in ("tick_size", "lot_size", "min_quantity", "min_notional"):
            value = getattr(self, name)
            if not isinstance(value, Decimal) or not value.is_finite() or value < _ZERO:
                raise DomainError(
                    f"{name} must be a finite Decimal >= 0, got {value!r}", field=name
                )
        for name in ("tick_size", "lot_size"):
            if getattr(self, name) == _ZERO:
                raise DomainError(f"{name} must be positive", field=name)
        for name in ("taker_fee", "maker_fee"):
            fee = getattr(self, name)
            if not isinstance(fee, Decimal) or not fee.is_finite() or not -1 < fee < 1:
                raise DomainError(f"{name} must be a fraction between -1 and 1", field=name)
        # Any positive quantity on the lot grid is at least one lot anyway.
        if self.min_quantity < self.lot_size:
            object.__setattr__(self, "min_quantity", self.lot_size)

    def charging(self, fees: Fees | None) -> Instrument:
        """This market at a venue's own fee rates (itself for None)."""
        if fees is None or (fees.taker, fees.maker) == (self.taker_fee, self.maker_fee):
            return self
        return replace(self, taker_fee=fees.taker, maker_fee=fees.maker)

    # -- grid conversions ------------------------------------------------------

    def to_ticks(self, price: Decimal, *, field: str = "price") -> int:
        """``price`` as a whole number of ticks; ``OrderRejected("tick_size")`` if off the grid."""
        return _on_grid(price, self.tick_size, "tick_size", field, self.symbol)

    def to_lots(self, quantity: Decimal, *, field: str = "quantity") -> int:
        """``quantity`` as a whole number of lots; ``OrderRejected("lot_size")`` if off the grid."""
        return _on_grid(quantity, self.lot_size, "lot_size", field, self.symbol)

    def price(self, ticks: int) -> Decimal:
        """The price of ``ticks`` ticks."""
        return EXACT.multiply(self.tick_size, ticks)

    def quantity(self, lots: int) -> Decimal:
        """The quantity of ``lots`` lots."""
        return EXACT.multiply(self.lot_size, lots)

    # -- order validation ------------------------------------------------------

    def validate(self, request: OrderRequest) -> Grid:
        """(lots, limit price ticks, stop price ticks) of a well-formed order.

        Checks, in order: symbol, quantity (positive, minimum, lot grid), price
        fields the order type needs or forbids, post-only (limit orders only),
        time in force (a stop rests until triggered: no IOC/FOK), prices
        (positive, tick grid), and the minimum notional of priced orders. A
        market order's notional needs the last trade price: the risk engine
        checks it. Raises ``OrderRejected`` naming the first rule broken.
        """
        if request.symbol != self.symbol:
            raise OrderRejected(
                "unknown_symbol",
                f"symbol {request.symbol} is not {self.symbol}",
                field="symbol",
            )
        quantity = request.quantity
        if not isinstance(quantity, Decimal) or not quantity.is_finite() or quantity <= _ZERO:
            raise OrderRejected(
                "invalid_quantity", f"quantity must be positive, got {quantity}", field="quantity"
            )
        if quantity < self.min_quantity:
            raise OrderRejected(
                "min_quantity",
                f"quantity {plain(quantity)} is below the minimum {plain(self.min_quantity)} "
                f"{self.base} for {self.symbol}",
                field="quantity",
            )
        lots = self.to_lots(quantity)
        _presence(request.price, "price", request.type in _PRICED, request.type)
        _presence(request.stop_price, "stop_price", request.type in _STOPS, request.type)
        if request.post_only and request.type != "limit":
            raise OrderRejected(
                "post_only",
                f"post_only is for limit orders only, not {request.type}",
                field="post_only",
            )
        if request.type in _STOPS and request.time_in_force != "gtc":
            raise OrderRejected(
                "time_in_force",
                f"time_in_force {request.time_in_force} is not allowed on a {request.type} order",
                field="time_in_force",
            )
        ticks = None if request.price is None else self._price_ticks(request.price, "price")
        stop = None
        if request.stop_price is not None:
            stop = self._price_ticks(request.stop_price, "stop_price")
        if request.price is not None:
            notional = EXACT.multiply(request.price, quantity)
            if notional < self.min_notional:
                raise OrderRejected(
                    "min_notional",
                    f"notional {plain(notional)} {self.quote} (price x quantity) is below the "
                    f"minimum {plain(self.min_notional)} for {self.symbol}",
                    field="quantity",
                )
        return lots, ticks, stop

    def _price_ticks(self, price: Decimal, field: str) -> int:
        if not isinstance(price, Decimal) or not price.is_finite() or price <= _ZERO:
            raise OrderRejected(
                "invalid_price", f"{field} must be positive, got {price}", field=field
            )
        return self.to_ticks(price, field=field)

    # -- ccxt ------------------------------------------------------------------

    @classmethod
    def from_ccxt_market(cls, market: Mapping[str, Any], *, precision_mode: int) -> Instrument:
        """An instrument from ccxt's unified market structure (``exchange.markets[symbol]``).

        ``precision_mode`` is the exchange's ``precisionMode``: with ``TICK_SIZE``
        the precisions are the steps themselves; with ``DECIMAL_PLACES`` they
        count decimals (the step is 10**-p). ``SIGNIFICANT_DIGITS`` gives no
        fixed grid (the step depends on the price), so it is refused. Missing
        fees fall back to 0.1 %, missing limits to none.
        """
        precision = market.get("precision") or {}
        limits = market.get("limits") or {}
        fees: dict[str, Decimal] = {}
        for name in ("taker", "maker"):
            fee = _number(market.get(name), name)
            if fee is not None:
                fees[f"{name}_fee"] = fee
        return cls(
            symbol=str(market["symbol"]),
            base=str(market["base"]),
            quote=str(market["quote"]),
            tick_size=_step(precision.get("price"), precision_mode, "precision.price"),
            lot_size=_step(precision.get("amount"), precision_mode, "precision.amount"),
            min_quantity=_number((limits.get("amount") or {}).get("min"), "limits.amount.min")
            or _ZERO,
            min_notional=_number((limits.get("cost") or {}).get("min"), "limits.cost.min") or _ZERO,
            **fees,
        )


def _on_grid(value: Decimal, step: Decimal, rule: str, field: str, symbol: str) -> int:
    if not isinstance(value, Decimal) or not value.is_finite():
        raise OrderRejected(rule, f"{field} {value!r} is not a finite decimal", field=field)
    whole, rest = EXACT.divmod(value, step)
    if rest:
        name = rule.replace("_", " ")
        raise OrderRejected(
            rule,
            f"{field} {plain(value)} is not a multiple of the {name} {plain(step)} for {symbol}",
            field=field,
        )
    return int(whole)


def _presence(value: Decimal | None, field: str, needed: bool, order_type: str) -> None:
    if needed and value is None:
        raise OrderRejected("missing_price", f"a {order_type} order needs a {field}", field=field)
    if not needed and value is not None:
        raise OrderRejected(
            "unexpected_price", f"a {order_type} order takes no {field}", field=field
        )


def _number(raw: object, name: str) -> Decimal | None:
    """ccxt numbers are floats (or strings in some builds); ``str`` keeps their shortest
    decimal form, so 0.01 becomes Decimal("0.01"), not the binary expansion."""
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float | str | Decimal):
        raise DomainError(f"{name} {raw!r} is not a number", field=name)
    try:
        value = Decimal(str(raw))
    except InvalidOperation:
        raise DomainError(f"{name} {raw!r} is not a number", field=name) from None
    if not value.is_finite():
        raise DomainError(f"{name} {raw!r} is not a finite number", field=name)
    return value


def _step(raw: object, precision_mode: int, name: str) -> Decimal:
    value = _number(raw, name)
    if value is None:
        raise DomainError(f"market has no {name}", field=name)
    if precision_mode == TICK_SIZE:
        return value
    if precision_mode == DECIMAL_PLACES:
        if value != value.to_integral_value():
            raise DomainError(f"{name} {raw!r} is not a number of decimal places", field=name)
        return Decimal(1).scaleb(-int(value))
    if precision_mode == SIGNIFICANT_DIGITS:
        raise DomainError(
            "precision mode SIGNIFICANT_DIGITS has no fixed tick or lot size",
            field="precision_mode",
        )
    raise DomainError(f"unknown ccxt precision mode {precision_mode!r}", field="precision_mode")
