"""A simple smart router: which venue fills a market order best, fees included.

Each venue's book side is walked for the whole quantity (asks for a buy, bids
for a sell); the average price is then made net of the venue's taker fee (a
buy pays price x (1 + fee), a sell receives price x (1 - fee)). A venue whose
book cannot fill the whole quantity is not a candidate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, localcontext

from cryptodesk.domain.orders import Side
from cryptodesk.trading.errors import OrderRejected
from cryptodesk.trading.instruments import EXACT

Level = tuple[Decimal, Decimal]  # (price, quantity)
_ZERO = Decimal(0)
_ONE = Decimal(1)


@dataclass(frozen=True, slots=True)
class Quote:
    """What filling the whole quantity on ``venue`` would cost or bring, per unit."""

    venue: str
    average_price: Decimal
    net_price: Decimal


def average_price(side: Side, quantity: Decimal, levels: Sequence[Level]) -> Decimal | None:
    """The average price of taking ``quantity`` from ``levels`` (the side a ``side``
    order takes), best price first; None if the levels hold less."""
    if quantity <= _ZERO:
        raise ValueError("quantity must be positive")
    ordered = sorted(levels, key=lambda level: level[0], reverse=side == "sell")
    left, notional = quantity, _ZERO
    with localcontext(EXACT):
        for price, size in ordered:
            take = min(left, size)
            notional += price * take
            left -= take
            if left == _ZERO:
                return notional / quantity
    return None


def quotes(side: Side, quantity: Decimal, books: Mapping[str, Sequence[Level]],
           fees: Mapping[str, Decimal]) -> list[Quote]:  # fmt: skip
    """Every venue that can fill ``quantity``, best net price first (ties by name)."""
    out: list[Quote] = []
    for venue in sorted(books):
        if venue not in fees:
            raise ValueError(f"no taker fee for venue {venue!r}")
        average = average_price(side, quantity, books[venue])
        if average is None:
            continue
        with localcontext(EXACT):
            net = average * (_ONE + fees[venue] if side == "buy" else _ONE - fees[venue])
        out.append(Quote(venue, average, net))
    # sorted is stable: equal net prices keep the venues' name order.
    return sorted(out, key=lambda q: q.net_price, reverse=side == "sell")


def best_venue(side: Side, quantity: Decimal, books: Mapping[str, Sequence[Level]],
               fees: Mapping[str, Decimal]) -> str:  # fmt: skip
    """The venue with the best average price net of taker fee for the whole quantity."""
    ranked = quotes(side, quantity, books, fees)
    if not ranked:
        raise OrderRejected("no_liquidity", f"no venue can {side} {quantity} at once",
                            field="quantity")  # fmt: skip
    return ranked[0].venue
