"""Pre-trade risk: the one gate every order passes before it reaches a book.

``PreTradeRisk.check`` raises ``OrderRejected`` naming the first rule broken,
in this order (a kill or a halt never spends a rate-limit token):

1. ``kill_switch``: trading stopped for everyone or for the account;
2. ``halted``: the symbol's circuit breaker tripped; only a reduce-only order
   that really reduces the position gets through;
3. ``rate_limit``: the account's token bucket is empty (every order that gets
   this far spends a token, accepted or not: a flood of bad orders is a flood);
4. the instrument's rules (``Instrument.validate``: tick, lot, minimums...);
5. ``reduce_only``: the order would increase or flip the position;
6. ``no_last_price`` (a market order has nothing to be valued at), ``price_band``
   (a limit price further than the band from the last trade: fat fingers);
7. ``min_notional`` of a market / stop-market order at its reference price;
8. ``max_quantity``, ``max_notional``, ``max_open_orders``, ``max_position``;
9. ``insufficient_balance``; on success the amount is reserved under the order id.

The reference price is the limit price (limit, stop-limit), the stop price
(stop-market) or the last trade price (market). A buy reserves reference x
quantity x (1 + fee) of quote; a market or stop-market buy reserves at its
``protection_price`` (the reference raised by ``price_band``, or by
``market_slippage`` without a band): send it to the book with that limit, so
a fill never costs more than was reserved. A sell reserves its base quantity.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, localcontext
from typing import Protocol

from cryptodesk.domain.orders import OrderRequest, Side
from cryptodesk.trading.balances import Balances
from cryptodesk.trading.errors import OrderRejected
from cryptodesk.trading.instruments import EXACT, Grid, Instrument, plain

_ZERO = Decimal(0)
_ONE = Decimal(1)


@dataclass(frozen=True, slots=True)
class RiskLimits:
    """Limits for one symbol; ``None`` disables a limit.

    ``price_band`` is a fraction of the last price (0.05: within 5 %);
    ``max_position`` an absolute base quantity. ``submit_rate`` is orders per
    second per account (a token bucket of ``submit_burst`` tokens, default
    ``max(1, floor(rate))``) across symbols, so set it once, on the default.
    """

    price_band: Decimal | None = None
    max_order_quantity: Decimal | None = None
    max_order_notional: Decimal | None = None
    max_open_orders: int | None = None
    max_position: Decimal | None = None
    submit_rate: Decimal | None = None
    submit_burst: int | None = None
    market_slippage: Decimal = Decimal("0.05")

    def submit_bucket(self) -> int:
        """The submit rate's bucket size: ``submit_burst``, else the rate (at least 1)."""
        rate = self.submit_rate or _ZERO
        return self.submit_burst or max(1, int(rate))


class OpenOrder(Protocol):
    """What the risk engine needs to know of a resting order."""

    @property
    def side(self) -> Side: ...

    @property
    def remaining(self) -> Decimal: ...


OpenOrders = Sequence[OpenOrder] | Callable[[], Sequence[OpenOrder]]
"""The account's resting orders in the symbol, or how to list them: only an order that
a ``max_open_orders`` or ``max_position`` limit applies to needs them."""


@dataclass(frozen=True, slots=True)
class RestingOrder:
    """An ``OpenOrder`` as a plain value."""

    side: Side
    remaining: Decimal


class PreTradeRisk:
    """The risk engine. ``limits``: one ``RiskLimits`` for every symbol, or a mapping
    by symbol with ``default`` for the rest. ``halted(symbol)`` asks the circuit
    breaker; ``clock()`` is epoch milliseconds."""

    def __init__(
        self,
        limits: RiskLimits | Mapping[str, RiskLimits],
        balances: Balances,
        *,
        halted: Callable[[str], bool],
        clock: Callable[[], int],
        default: RiskLimits | None = None,
    ) -> None:
        if isinstance(limits, RiskLimits):
            default = limits
        self._by_symbol = {} if isinstance(limits, RiskLimits) else dict(limits)
        self._default = default or RiskLimits()
        self.balances = balances
        self._halted = halted
        self._clock = clock
        self._killed: set[str | None] = set()  # None: everyone
        self._buckets: dict[str, tuple[Decimal, int]] = {}  # account -> (tokens, at ms)

    def limits(self, symbol: str) -> RiskLimits:
        return self._by_symbol.get(symbol, self._default)

    def kill(self, account: str | None = None) -> None:
        """Refuse every new order of ``account`` (or of everyone)."""
        self._killed.add(account)

    def revive(self, account: str | None = None) -> None:
        """Undo ``kill`` for ``account`` (or the global switch; account kills stay)."""
        self._killed.discard(account)

    def check(
        self,
        request: OrderRequest,
        instrument: Instrument,
        *,
        order_id: str,
        last_price: Decimal | None,
        position: Decimal,
        open_orders: OpenOrders,
    ) -> Grid:
        """Accept ``request`` (reserving its funds) or raise ``OrderRejected``; the order on
        the instrument's grid (``Instrument.validate``: lots, limit ticks, stop ticks).

        ``position`` is the account's signed base quantity in the symbol,
        ``open_orders`` its resting orders there.
        """
        asset, amount, grid = self._admit(request, instrument, last_price, position, open_orders)
        self.balances.reserve(order_id, asset, amount, account=request.account)
        return grid

    def check_rules(
        self,
        request: OrderRequest,
        instrument: Instrument,
        *,
        last_price: Decimal | None,
        position: Decimal,
        open_orders: OpenOrders,
    ) -> None:
        """Every rule of ``check`` but the balance; nothing is reserved. For an amend that
        re-prices or grows an order (``request`` the order as amended, ``open_orders``
        the account's other resting orders; the caller re-reserves its funds: an amend
        that only shrinks an order lowers risk and needs no check), and for an order
        whose funds the venue itself holds (a live exchange refuses what the account
        cannot pay)."""
        self._admit(request, instrument, last_price, position, open_orders)

    def _admit(
        self,
        request: OrderRequest,
        instrument: Instrument,
        last_price: Decimal | None,
        position: Decimal,
        open_orders: OpenOrders,
    ) -> tuple[str, Decimal, Grid]:
        """Every rule but the reservation; what to reserve, ``(asset, amount)``, and the
        order's grid."""
        limits = self.limits(request.symbol)
        if None in self._killed or request.account in self._killed:
            who = "all accounts" if None in self._killed else f"account {request.account}"
            raise OrderRejected("kill_switch", f"trading is stopped for {who}", field="account")
        reduces = _reduces(request.side, request.quantity, position)
        if self._halted(request.symbol) and not (request.reduce_only and reduces):
            raise OrderRejected(
                "halted",
                f"symbol {request.symbol} is halted: only reduce_only orders that reduce "
                "the position are accepted",
                field="symbol",
            )
        self._spend_token(request.account, limits)
        grid = instrument.validate(request)
        if request.reduce_only and not reduces:
            raise OrderRejected(
                "reduce_only",
                f"reduce_only {request.side} of quantity {plain(request.quantity)} would "
                f"increase or flip the position {plain(position)}",
                field="reduce_only",
            )
        reference = self._reference_price(request, limits, last_price)
        notional = EXACT.multiply(reference, request.quantity)
        if request.price is None and notional < instrument.min_notional:
            raise OrderRejected(
                "min_notional",
                f"notional {plain(notional)} {instrument.quote} (quantity x {plain(reference)}) "
                f"is below the minimum {plain(instrument.min_notional)}",
                field="quantity",
            )
        _check_limits(request, limits, notional, instrument.quote, position, open_orders)
        if request.side == "sell":
            return instrument.base, request.quantity, grid
        price = reference
        if request.type in ("market", "stop_market"):
            price = self.protection_price(request.symbol, "buy", reference)
        fee = max(instrument.taker_fee, instrument.maker_fee, _ZERO)
        amount = EXACT.multiply(EXACT.multiply(price, request.quantity), EXACT.add(_ONE, fee))
        return instrument.quote, amount, grid

    def protection_price(self, symbol: str, side: Side, reference: Decimal) -> Decimal:
        """The worst price a market order may fill at: ``reference`` moved against the
        taker by the price band (or the market slippage). A market buy reserves at it."""
        limits = self.limits(symbol)
        slip = limits.price_band if limits.price_band is not None else limits.market_slippage
        with localcontext(EXACT):
            return reference * (_ONE + slip if side == "buy" else _ONE - slip)

    def _reference_price(
        self, request: OrderRequest, limits: RiskLimits, last: Decimal | None
    ) -> Decimal:
        if request.price is not None:
            reference = request.price
        elif request.stop_price is not None:
            reference = request.stop_price
        elif last is None or last <= _ZERO:
            raise OrderRejected(
                "no_last_price",
                f"order type {request.type} needs a last trade price of {request.symbol}",
                field="type",
            )
        else:
            reference = last
        band = limits.price_band
        if request.type == "limit" and band is not None and last is not None:
            with localcontext(EXACT):
                low, high = last * (_ONE - band), last * (_ONE + band)
            if not low <= reference <= high:
                raise OrderRejected(
                    "price_band",
                    f"price {plain(reference)} is outside {plain(low)}..{plain(high)} "
                    f"({plain(band * 100)} % around the last price {plain(last)})",
                    field="price",
                )
        return reference

    def _spend_token(self, account: str, limits: RiskLimits) -> None:
        rate = limits.submit_rate
        if rate is None:
            return
        burst = Decimal(limits.submit_bucket())
        now = self._clock()
        tokens, then = self._buckets.get(account, (burst, now))
        with localcontext(EXACT):
            tokens = min(burst, tokens + rate * max(0, now - then) / 1000)
            if tokens < _ONE:
                self._buckets[account] = (tokens, now)
                raise rate_limited(account, rate)
            self._buckets[account] = (tokens - _ONE, now)


def rate_limited(account: str, rate: Decimal) -> OrderRejected:
    """The refusal of an order over its account's submit rate."""
    return OrderRejected("rate_limit", f"account {account} may submit {plain(rate)} orders "
                         "per second", field="account")  # fmt: skip


def _check_limits(
    request: OrderRequest,
    limits: RiskLimits,
    notional: Decimal,
    quote: str,
    position: Decimal,
    open_orders: OpenOrders,
) -> None:
    most = limits.max_order_quantity
    if most is not None and request.quantity > most:
        raise OrderRejected(
            "max_quantity",
            f"quantity {plain(request.quantity)} is above the maximum {plain(most)}",
            field="quantity",
        )
    cap = limits.max_order_notional
    if cap is not None and notional > cap:
        raise OrderRejected(
            "max_notional",
            f"notional {plain(notional)} {quote} (quantity x price) is above the "
            f"maximum {plain(cap)}",
            field="quantity",
        )
    count = limits.max_open_orders
    if count is None and limits.max_position is None:
        return
    if callable(open_orders):
        open_orders = open_orders()
    if count is not None and len(open_orders) >= count:
        raise OrderRejected(
            "max_open_orders",
            f"account {request.account} already has {len(open_orders)} open orders in "
            f"symbol {request.symbol} (max {count})",
            field="symbol",
        )
    most = limits.max_position
    if most is None:
        return
    with localcontext(EXACT):
        same_side = sum((o.remaining for o in open_orders if o.side == request.side), _ZERO)
        sign = _ONE if request.side == "buy" else -_ONE
        projected = position + sign * (same_side + request.quantity)
    # An order that shrinks the exposure is always allowed, even over the limit.
    if abs(projected) > most and abs(projected) > abs(position):
        raise OrderRejected(
            "max_position",
            f"quantity {plain(request.quantity)} would take the position to "
            f"{plain(projected)} (with open {request.side} orders), beyond {plain(most)}",
            field="quantity",
        )


def _reduces(side: Side, quantity: Decimal, position: Decimal) -> bool:
    """True if the order shrinks the position without flipping it."""
    if side == "buy":
        return position < _ZERO and quantity <= -position
    return position > _ZERO and quantity <= position
