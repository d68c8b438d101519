"""``/api/v1`` orders of the requesting tenant, on the internal venue (its own
matching engine), a paper venue ``paper:EXCHANGE`` (fills against that
exchange's live book) or a live venue ``live:EXCHANGE`` (real orders on the
tenant's ledger account on that exchange), chosen per order by ``venue``.

- ``POST /orders`` (201; 200 when ``client_order_id`` names an order placed
  before), ``GET /orders/{id}``, ``PATCH /orders/{id}`` (price and/or
  quantity), ``DELETE /orders/{id}`` (cancel);
- ``GET /orders``, ``GET /fills``: cursor-paginated, filtered by account,
  symbol (and status);
- ``GET /positions``: per account and symbol, marked at the venue's last trade
  (a live position: at its last fill);
- ``POST /kill-switch``: stop (or allow again) new orders of an account or of
  the whole tenant; stopping cancels the open orders;
- ``POST /paper/deposits``: paper money for an account.

An order is answered only once its command is stored (``services/order_service.py``):
a 503 means it was not placed. A refused order is 422 ``order-rejected`` with the
``rule`` it broke (docs/trading.md lists them). Money is decimal strings.
Live orders (``L`` + sequence) and their fills list after the others.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Coroutine
from decimal import Decimal
from typing import Annotated, Any, Final

import structlog
from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field

from cryptodesk.adapters.db.engine import StorageError
from cryptodesk.api.ledger_problems import LedgerProblem
from cryptodesk.api.routes.ledger import _decode_cursor, _encode_cursor
from cryptodesk.api.routes.market import problem_responses
from cryptodesk.api.security import requires
from cryptodesk.api.tenancy import Tenant
from cryptodesk.domain.orders import Fill, OrderRequest, OrderStatus, OrderType, Side, TimeInForce
from cryptodesk.domain.timeutil import to_iso
from cryptodesk.services.order_service import OrderNotFound, OrderService
from cryptodesk.trading.errors import OrderRejected
from cryptodesk.trading.order_state import Order, fill_dict, order_dict
from cryptodesk.trading.positions import Position

log = structlog.get_logger(__name__)
MAX_PAGE: Final = 1000
# Live orders and fills page after the others: their keys start here.
LIVE_KEYS: Final = 1 << 62
_DECIMAL = r"^[0-9]{1,20}(\.[0-9]{1,18})?$"
Money = Annotated[str, Field(pattern=_DECIMAL, max_length=40, examples=["0.5"])]
Account = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
SymbolText = Annotated[str, Field(pattern=r"^[A-Z0-9]{1,16}/[A-Z0-9]{1,16}$")]

ORDER_IN: dict[str, Any] = {
    "account": "paper", "symbol": "BTC/USDT", "side": "buy", "type": "limit",
    "quantity": "0.5", "price": "60000", "time_in_force": "gtc", "client_order_id": "my-1",
}  # fmt: skip
ORDER: dict[str, Any] = {
    "order_id": "O0000000002", "client_order_id": "my-1", "account": "paper",
    "symbol": "BTC/USDT", "side": "buy", "type": "limit", "time_in_force": "gtc",
    "post_only": False, "reduce_only": False, "price": "60000", "stop_price": None,
    "quantity": "0.5", "status": "partially_filled", "created_ts": 1714564800000,
    "updated_ts": 1714564800000, "created_at": "2024-05-01T12:00:00.000Z",
    "updated_at": "2024-05-01T12:00:00.000Z", "filled": "0.2", "average_price": "59990",
    "fees": "11.998", "reject_rule": None, "reject_reason": None, "close_reason": None,
    "venue": "internal",
}  # fmt: skip
FILL: dict[str, Any] = {
    "trade_id": "T0000000001", "order_id": "O0000000002", "account": "paper",
    "symbol": "BTC/USDT", "side": "buy", "price": "59990", "quantity": "0.2",
    "fee": "11.998", "fee_asset": "USDT", "liquidity": "taker", "ts": 1714564800000,
    "time": "2024-05-01T12:00:00.000Z", "venue": "internal",
}  # fmt: skip
POSITION: dict[str, Any] = {
    "account": "paper", "symbol": "BTC/USDT", "quantity": "0.2", "average_price": "59990",
    "realized": "0", "fees": "11.998", "mark": "59990", "unrealized": "0",
}  # fmt: skip
KILL_IN: dict[str, Any] = {"account": "paper", "active": True}
DEPOSIT_IN: dict[str, Any] = {"account": "paper", "asset": "USDT", "amount": "100000"}
KILLED: dict[str, Any] = {**ORDER, "status": "cancelled", "close_reason": "kill_switch"}
DEPOSIT: dict[str, Any] = {**DEPOSIT_IN, "available": "100000", "reserved": "0"}


def _shown(example: dict[str, Any], *, closed: bool = False) -> ConfigDict:
    """A model's config with its one documented example (``closed``: no unknown field)."""
    return ConfigDict(json_schema_extra={"examples": [example]}, extra="forbid" if closed else None)


class OrderIn(BaseModel):
    """A new order. ``price``: the limit (limit, stop_limit); ``stop_price``: the trigger
    on the last trade price (stop_market, stop_limit)."""

    model_config = _shown(ORDER_IN, closed=True)

    account: Account
    symbol: SymbolText
    side: Side
    type: OrderType
    quantity: Money
    price: Money | None = None
    stop_price: Money | None = None
    time_in_force: TimeInForce = "gtc"
    post_only: bool = False
    reduce_only: bool = False
    client_order_id: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    venue: Annotated[str, Field(
        pattern=r"^(internal|best|(paper|live):[a-z0-9][a-z0-9_.-]{0,31})$",
        description="internal (the tenant's matching engine), paper:EXCHANGE (fills "
        "against that exchange's live book; limit and market orders, no amend), "
        "live:EXCHANGE (a real order on `account`, the tenant's ledger account on that "
        "exchange with API credentials; limit and market orders, no amend), or best "
        "(a market order routed to the venue with the best price net of taker fees).",
    )] = "internal"  # fmt: skip

    def request(self) -> OrderRequest:
        return OrderRequest(
            self.account, self.symbol, self.side, self.type, Decimal(self.quantity),
            price=_decimal(self.price), stop_price=_decimal(self.stop_price),
            time_in_force=self.time_in_force, post_only=self.post_only,
            reduce_only=self.reduce_only, client_order_id=self.client_order_id,
            venue=self.venue,
        )  # fmt: skip


class AmendIn(BaseModel):
    model_config = _shown({"price": "59900"}, closed=True)

    price: Money | None = None
    quantity: Money | None = Field(None, description="The new total, above what is filled.")


class KillIn(BaseModel):
    """``active: true`` stops new orders of ``account`` (absent: of the whole tenant) and
    cancels its open orders; ``false`` allows them again."""

    model_config = _shown(KILL_IN, closed=True)

    account: Account | None = None
    active: bool


class DepositIn(BaseModel):
    model_config = _shown(DEPOSIT_IN, closed=True)

    account: Account
    asset: Annotated[str, Field(pattern=r"^[A-Z0-9]{1,16}$")]
    amount: Money


class OrderOut(BaseModel):
    model_config = _shown(ORDER)

    order_id: str
    client_order_id: str | None
    account: str
    symbol: str
    side: Side
    type: OrderType
    time_in_force: TimeInForce
    post_only: bool
    reduce_only: bool
    price: str | None
    stop_price: str | None
    quantity: str
    status: OrderStatus
    created_ts: int
    updated_ts: int
    created_at: str
    updated_at: str
    filled: str
    average_price: str | None
    fees: str
    reject_rule: str | None
    reject_reason: str | None
    close_reason: str | None
    venue: str

    @classmethod
    def of(cls, order: Order) -> OrderOut:
        body = order_dict(order)
        return cls(**body, created_at=to_iso(order.created_ts), updated_at=to_iso(order.updated_ts))


class FillOut(BaseModel):
    model_config = _shown(FILL)

    trade_id: str
    order_id: str
    account: str
    symbol: str
    side: Side
    price: str
    quantity: str
    fee: str
    fee_asset: str
    liquidity: str
    ts: int
    time: str
    venue: str

    @classmethod
    def of(cls, fill: Fill) -> FillOut:
        return cls(**fill_dict(fill), time=to_iso(fill.ts))


class PositionOut(BaseModel):
    model_config = _shown(POSITION)

    account: str
    symbol: str
    quantity: str
    average_price: str
    realized: str
    fees: str
    mark: str | None = Field(
        description="The venue's last trade price (null: no trade); "
        "a live position's last fill price."
    )
    unrealized: str | None

    @classmethod
    def of(cls, position: Position, mark: Decimal | None) -> PositionOut:
        body = position.snapshot(mark)
        keys = ("account", "symbol", "quantity", "average_price", "realized", "fees")
        return cls(**{k: body[k] for k in keys}, mark=body.get("mark"),
                   unrealized=body.get("unrealized"))  # fmt: skip


class OrdersPage(BaseModel):
    model_config = _shown({"orders": [ORDER], "next_cursor": None})

    orders: list[OrderOut]
    next_cursor: str | None


class FillsPage(BaseModel):
    model_config = _shown({"fills": [FILL], "next_cursor": None})

    fills: list[FillOut]
    next_cursor: str | None


class PositionsOut(BaseModel):
    model_config = _shown({"positions": [POSITION]})

    positions: list[PositionOut]


class KillOut(BaseModel):
    model_config = _shown({**KILL_IN, "cancelled": [KILLED]})

    account: str | None
    active: bool
    cancelled: list[OrderOut]


class DepositOut(BaseModel):
    model_config = _shown(DEPOSIT)

    account: str
    asset: str
    amount: str
    available: str
    reserved: str


class OrderRoute(APIRoute):
    """Maps the order service's failures to problem+json; the app maps the rest."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def run(request: Request) -> Response:
            path = request.url.path
            try:
                return await handler(request)
            except LedgerProblem as exc:
                return exc.response(path)
            except OrderRejected as exc:
                rejected = LedgerProblem(422, "order-rejected", exc.message,
                                         name=exc.field, extra={"rule": exc.rule})  # fmt: skip
                return rejected.response(path)
            except OrderNotFound as exc:
                return LedgerProblem(404, "unknown-order", str(exc), name="order_id").response(path)
            except StorageError as exc:
                # Not stored, so not placed: the message names the database, so log it only.
                log.warning("order log storage failed", path=path, error=str(exc))
                detail = "the order database cannot be used right now; nothing was changed"
                return LedgerProblem(503, "service-unavailable", detail).response(path)

        return run


def _problem(status: int, description: str) -> dict[int | str, dict[str, Any]]:
    return {status: {**problem_responses(status)[status], "description": description}}


def _decimal(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


def _page(
    keys: list[int], cursor: str | None, query: list[Any], limit: int
) -> tuple[slice, str | None]:
    """The page of ``keys`` (ascending) after the cursor's key, and the next page's cursor."""
    after = None if cursor is None else _decode_cursor(cursor, query)
    start = 0 if after is None else bisect.bisect_right(keys, after)
    end = start + limit
    return slice(start, end), _encode_cursor(keys[end - 1], query) if end < len(keys) else None


def _order_key(order: Order) -> int:
    number = int(order.order_id[-10:])  # ids end in their ten-digit sequence
    return LIVE_KEYS + number if order.venue.startswith("live:") else number


def _fill_keys(fills: list[Fill]) -> list[int]:
    """Fills in trade order, the two sides of a trade by order id; then live fills (their
    trade ids are the exchanges') by order, each order's in the order they were learnt."""
    keys: list[int] = []
    seen: dict[str, int] = {}
    for fill in fills:
        if fill.venue.startswith("live:"):
            n = seen[fill.order_id] = seen.get(fill.order_id, -1) + 1
            keys.append(LIVE_KEYS + int(fill.order_id[-10:]) * 10**4 + n)
        else:
            keys.append(int(fill.trade_id[1:]) * 10**10 + int(fill.order_id[1:]))
    return keys


AccountQ = Annotated[str | None, Query(max_length=64, description="Only this account.")]
SymbolQ = Annotated[str | None, Query(max_length=40, description="Only this symbol.")]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]
Cursor = Annotated[str | None, Query(max_length=1024, description="`next_cursor` of a page.")]
OrderId = Annotated[str, Path(max_length=64, description="The order's id.")]


def orders_router(service: OrderService) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["orders"], route_class=OrderRoute)
    rejected = _problem(422, "A body field is invalid, or the order is refused "
                        "(`order-rejected`, with the `rule` it broke).")  # fmt: skip
    unknown = _problem(404, "No order of that id (another tenant's ids are not found).")
    failures = problem_responses(400, 503)

    @router.post("/orders", status_code=201, response_model=OrderOut,
                 dependencies=[requires("orders:write")], summary="Place an order",
                 description="201: placed (and stored). 200: `client_order_id` names an order "
                 "placed before; it comes back as it stands, nothing new happens.",
                 responses={200: {"model": OrderOut, "description": "Placed before."},
                            **rejected, **failures})  # fmt: skip
    async def place(body: OrderIn, tenant: Tenant, response: Response) -> OrderOut:
        placed = await service.submit(tenant, body.request())
        order = placed.order
        if order.status == "rejected":
            raise OrderRejected(order.reject_rule or "rejected", order.reject_reason or "")
        if not placed.new:
            response.status_code = 200
        response.headers["Location"] = f"/api/v1/orders/{order.order_id}"
        return OrderOut.of(order)

    @router.get("/orders", response_model=OrdersPage, dependencies=[requires("orders:read")],
                summary="Orders by id, cursor-paginated", responses=failures)  # fmt: skip
    async def list_orders(tenant: Tenant, account: AccountQ = None, symbol: SymbolQ = None,
                          status: OrderStatus | None = None, limit: Limit = 100,
                          cursor: Cursor = None) -> OrdersPage:  # fmt: skip
        query: list[Any] = [account, symbol, status]
        found = await service.orders(tenant, account=account, symbol=symbol, status=status)
        part, more = _page([_order_key(o) for o in found], cursor, query, limit)
        return OrdersPage(orders=[OrderOut.of(o) for o in found[part]], next_cursor=more)

    @router.get("/orders/{order_id}", response_model=OrderOut, summary="One order",
                dependencies=[requires("orders:read")],
                responses={**unknown, **failures})  # fmt: skip
    async def get_order(order_id: OrderId, tenant: Tenant) -> OrderOut:
        return OrderOut.of(await service.order(tenant, order_id))

    @router.patch("/orders/{order_id}", response_model=OrderOut, summary="Amend an order",
                  description="A smaller quantity keeps the order's place in the queue; a new "
                  "price or a larger quantity re-queues it. Paper and live orders are not "
                  "amended (`not_amendable`).",
                  dependencies=[requires("orders:write")],
                  responses={**unknown, **rejected, **failures})  # fmt: skip
    async def amend(order_id: OrderId, body: AmendIn, tenant: Tenant) -> OrderOut:
        order = await service.amend(tenant, order_id, price=_decimal(body.price),
                                    quantity=_decimal(body.quantity))  # fmt: skip
        return OrderOut.of(order)

    @router.delete("/orders/{order_id}", response_model=OrderOut, summary="Cancel an order",
                   description="An order already final comes back unchanged. A live order "
                   "is cancelled on its exchange (503: the exchange did not answer).",
                   dependencies=[requires("orders:write")],
                   responses={**unknown, **failures})  # fmt: skip
    async def cancel(order_id: OrderId, tenant: Tenant) -> OrderOut:
        return OrderOut.of(await service.cancel(tenant, order_id))

    @router.get("/fills", response_model=FillsPage, dependencies=[requires("orders:read")],
                summary="Fills by trade, cursor-paginated", responses=failures)  # fmt: skip
    async def list_fills(tenant: Tenant, account: AccountQ = None, symbol: SymbolQ = None,
                         limit: Limit = 100, cursor: Cursor = None) -> FillsPage:  # fmt: skip
        query: list[Any] = [account, symbol]
        found = await service.fills(tenant, account=account, symbol=symbol)
        part, more = _page(_fill_keys(found), cursor, query, limit)
        return FillsPage(fills=[FillOut.of(f) for f in found[part]], next_cursor=more)

    @router.get("/positions", response_model=PositionsOut, summary="Positions",
                dependencies=[requires("orders:read")], responses=failures)  # fmt: skip
    async def positions(tenant: Tenant, account: AccountQ = None) -> PositionsOut:
        found = await service.positions(tenant, account=account)
        return PositionsOut(positions=[PositionOut.of(p, mark) for p, mark in found])

    @router.post("/kill-switch", response_model=KillOut, summary="Stop or allow new orders",
                 dependencies=[requires("orders:kill")], responses=failures)  # fmt: skip
    async def kill_switch(body: KillIn, tenant: Tenant) -> KillOut:
        cancelled: list[Order] = []
        if body.active:
            cancelled = await service.kill(tenant, body.account)
        else:
            await service.revive(tenant, body.account)
        return KillOut(account=body.account, active=body.active,
                       cancelled=[OrderOut.of(o) for o in cancelled])  # fmt: skip

    @router.post("/paper/deposits", status_code=201, response_model=DepositOut,
                 summary="Paper money for an account", dependencies=[requires("orders:write")],
                 responses=problem_responses(400, 422, 503))  # fmt: skip
    async def deposit(body: DepositIn, tenant: Tenant) -> DepositOut:
        amount = Decimal(body.amount)
        await service.deposit(tenant, body.account, body.asset, amount)
        available, reserved = await service.balance(tenant, body.account, body.asset)
        return DepositOut(account=body.account, asset=body.asset, amount=str(amount),
                          available=str(available), reserved=str(reserved))  # fmt: skip

    return router
