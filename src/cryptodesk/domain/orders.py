"""Orders and fills as the rest of the system sees them: decimal prices and quantities.

The matching engine (``trading/matching.py``) works in integer ticks and lots;
an ``Instrument`` (``trading/instruments.py``) converts at the edge, so a price
off the tick grid or a quantity below the lot is rejected before it reaches a
book. Money stays ``Decimal`` everywhere outside the engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Final, Literal, get_args

Side = Literal["buy", "sell"]
OrderType = Literal["limit", "market", "stop_market", "stop_limit"]
TimeInForce = Literal["gtc", "ioc", "fok"]
OrderStatus = Literal[
    "new", "accepted", "partially_filled", "filled", "cancelled", "rejected", "expired"
]
Liquidity = Literal["maker", "taker"]
SIDES: Final[tuple[Side, ...]] = get_args(Side)
ORDER_TYPES: Final[tuple[OrderType, ...]] = get_args(OrderType)
TIMES_IN_FORCE: Final[tuple[TimeInForce, ...]] = get_args(TimeInForce)
FINAL_STATUSES: Final[frozenset[OrderStatus]] = frozenset(
    {"filled", "cancelled", "rejected", "expired"}
)


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """What a client asks for. ``price`` is the limit price (limit and stop-limit),
    ``stop_price`` the trigger (stop orders, on the last trade price)."""

    account: str
    symbol: str
    side: Side
    type: OrderType
    quantity: Decimal
    price: Decimal | None = None
    stop_price: Decimal | None = None
    time_in_force: TimeInForce = "gtc"
    post_only: bool = False
    reduce_only: bool = False
    client_order_id: str | None = None
    venue: str = "internal"  # or "paper:EXCHANGE"


@dataclass(frozen=True, slots=True)
class Fill:
    """One side of a trade: what ``account`` bought or sold, at what price, for what fee."""

    trade_id: str
    order_id: str
    account: str
    symbol: str
    side: Side
    price: Decimal
    quantity: Decimal
    fee: Decimal
    fee_asset: str
    liquidity: Liquidity
    ts: int
    venue: str = "internal"
