"""Whether a live order may go to its exchange: the live venue's own rules, then the
tenant's pre-trade risk with every rule but the balance (``PreTradeRisk``
``check_rules``): the exchange holds the funds and refuses what the account
cannot pay, so nothing is reserved here."""

from __future__ import annotations

from decimal import Decimal

from cryptodesk.domain.market import OrderBook
from cryptodesk.domain.orders import OrderRequest
from cryptodesk.services.live_blotter import LiveBlotter
from cryptodesk.trading.errors import OrderRejected
from cryptodesk.trading.oms import OrderManager


def admit(manager: OrderManager, blotter: LiveBlotter, request: OrderRequest,
          book: OrderBook | None, ts: int, max_age_ms: int) -> None:  # fmt: skip
    """Raise ``OrderRejected`` naming the first rule ``request`` breaks. The reference
    price (price band, a market order's notional) is the best opposite price of the
    exchange's ``book`` if it is no older than ``max_age_ms`` at ``ts``; a market
    order needs one (``no_book``). Open orders and the position count the account's
    live orders and fills and, for a name that also trades on other venues, those."""
    m = manager
    if request.type not in ("limit", "market"):
        raise OrderRejected("order_type", f"{request.venue} takes limit and market orders, "
                            f"not {request.type}", field="type")  # fmt: skip
    instrument = m.instruments.get(request.symbol)
    if instrument is None:
        raise OrderRejected("unknown_symbol", f"symbol {request.symbol} is not traded here",
                            field="symbol")  # fmt: skip
    reference = best_opposite(book, request.side, ts, max_age_ms)
    if reference is None and request.type == "market":
        raise OrderRejected("no_book", f"no order book of {request.symbol} on "
                            f"{request.venue} newer than {max_age_ms} ms",
                            field="symbol")  # fmt: skip
    account, symbol = request.account, request.symbol
    position = m.position_of(account, symbol) + blotter.position_of(account, symbol)
    m.risk.check_rules(
        request, instrument, last_price=reference, position=position,
        open_orders=lambda: [*m.open_orders(account, symbol),
                             *blotter.open_orders(account, symbol)],
    )  # fmt: skip


def best_opposite(book: OrderBook | None, side: str, ts: int, max_age_ms: int) -> Decimal | None:
    """The price a new order would meet first, from a book no older than ``max_age_ms``
    (a feed book's floats in their shortest decimal form)."""
    if book is None or ts - book.ts > max_age_ms:
        return None
    levels = book.asks if side == "buy" else book.bids
    return Decimal(str(levels[0][0])) if levels else None
