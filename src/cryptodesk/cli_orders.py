"""``cryptodesk orders ...``: orders from the shell, on the internal paper venue, a
paper venue ``paper:EXCHANGE`` or a live venue ``live:EXCHANGE`` (the tenant's
ledger account ``--account`` on that exchange).

The commands run the order service the API runs (``trading_wiring.order_service``)
on the configured database: each command catches up with the stored order log
first and is written to it before the answer is printed, so they are safe while
``serve`` runs. Nothing is published: a running server's WebSocket ``orders``
channel does not show what the command line did (its REST reads do).

Options are checked before the database is opened. Exit codes: 0 done; 2 a bad
option, a rejected order (``order rejected: RULE: message``), an unknown order or
an unusable database, one line on stderr. Money is printed as decimal strings.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, Final, NoReturn, TypeVar, cast, get_args

import typer

from cryptodesk.domain.orders import ORDER_TYPES, SIDES, TIMES_IN_FORCE, OrderRequest, OrderStatus

if TYPE_CHECKING:
    from cryptodesk.services.order_service import OrderService
    from cryptodesk.trading.order_state import Order
    from cryptodesk.trading.positions import Position

T = TypeVar("T")
orders_app = typer.Typer(help="Orders on the internal, paper and live venues.",
                         no_args_is_help=True)  # fmt: skip

# The same shapes the API accepts (api/routes/orders.py).
_MONEY: Final = re.compile(r"[0-9]{1,20}(\.[0-9]{1,18})?")
_ACCOUNT: Final = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_SYMBOL: Final = re.compile(r"[A-Z0-9]{1,16}/[A-Z0-9]{1,16}")
_VENUE: Final = re.compile(r"internal|best|(paper|live):[a-z0-9][a-z0-9_.-]{0,31}")
_ASSET: Final = re.compile(r"[A-Z0-9]{1,16}")
_STATUSES: Final[tuple[str, ...]] = get_args(OrderStatus)
_PRICED: Final = ("limit", "stop_limit")
_STOPS: Final = ("stop_market", "stop_limit")

TenantOpt = Annotated[str, typer.Option("--tenant", help="Tenant id.")]
AccountOpt = Annotated[
    str, typer.Option("--account", help="Paper account, or the ledger account of a live order.")
]
AccountFilter = Annotated[str | None, typer.Option("--account", help="Only this account.")]
OrderIdArg = Annotated[
    str, typer.Argument(metavar="ORDER_ID", help="The order's id (O..., or L... if live).")
]


def register(app: typer.Typer) -> None:
    app.add_typer(orders_app, name="orders")


def fail(message: str) -> NoReturn:
    from cryptodesk.cli import fail as cli_fail

    cli_fail(message)


def _tenant(text: str) -> str:
    from cryptodesk.cli_ledger import _tenant as check

    return check(text)


def _matching(option: str, value: str, pattern: re.Pattern[str], what: str) -> str:
    if pattern.fullmatch(value) is None:
        fail(f"{option} {value[:80]!r} is not {what}")
    return value


def _account(value: str | None) -> str | None:
    if value is None:
        return None
    return _matching("--account", value, _ACCOUNT, "an account: 1-64 of A-Z, a-z, 0-9, _.:-")


def _money(option: str, value: str | None) -> Decimal | None:
    """A positive decimal such as ``0.5`` (no sign, exponent or thousands separator)."""
    if value is None:
        return None
    amount = Decimal(_matching(option, value, _MONEY, "a positive decimal number such as 0.5"))
    if amount <= 0:
        fail(f"{option} {value!r} must be above zero")
    return amount


def _choice(option: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        fail(f"{option} {value[:80]!r} is not one of {', '.join(choices)}")
    return value


def _with_service(work: Callable[[OrderService], Awaitable[T]]) -> T:
    """Run ``work`` on the configured order service; user-facing failures exit 2."""
    from cryptodesk.adapters.db.engine import StorageError
    from cryptodesk.cli_ledger import _settings, migrated_engine
    from cryptodesk.domain.errors import DomainError
    from cryptodesk.services.order_service import OrderNotFound
    from cryptodesk.trading.errors import OrderRejected
    from cryptodesk.trading_wiring import order_service
    from cryptodesk.wiring import StartupError, make_cache

    settings = _settings()

    async def run() -> T:
        engine = await migrated_engine(settings)
        cache = make_cache(settings)  # the circuit breakers' states, as the API reads them
        service = order_service(settings, engine, cache, None)
        try:
            return await work(service)
        finally:
            await service.close()  # waits for a live reconcile this run started
            await cache.close()
            await engine.dispose()

    try:
        return asyncio.run(run())
    except OrderRejected as exc:
        fail(f"order rejected: {exc.rule}: {exc.message}")
    except (OrderNotFound, DomainError, StorageError, StartupError) as exc:
        fail(str(exc))


def _order(order: Order) -> dict[str, Any]:
    from cryptodesk.domain.timeutil import to_iso
    from cryptodesk.trading.order_state import order_dict

    return {**order_dict(order), "created_at": to_iso(order.created_ts),
            "updated_at": to_iso(order.updated_ts)}  # fmt: skip


def _position(position: Position, mark: Decimal | None) -> dict[str, Any]:
    body: dict[str, Any] = position.snapshot(mark)
    return {**body, "mark": body.get("mark"), "unrealized": body.get("unrealized")}


def _print(body: object) -> None:
    typer.echo(json.dumps(body, indent=2))


@orders_app.command("place")
def place(
    tenant: TenantOpt,
    account: AccountOpt,
    symbol: Annotated[str, typer.Option("--symbol", help="BASE/QUOTE, e.g. BTC/USDT.")],
    side: Annotated[str, typer.Option("--side", help="buy or sell.")],
    order_type: Annotated[
        str, typer.Option("--type", help="limit, market, stop_market or stop_limit.")
    ],
    quantity: Annotated[str, typer.Option("--quantity", help="Base quantity, e.g. 0.5.")],
    price: Annotated[str | None, typer.Option("--price", help="Limit price.")] = None,
    stop_price: Annotated[
        str | None, typer.Option("--stop-price", help="Trigger on the last trade price.")
    ] = None,
    tif: Annotated[str, typer.Option("--tif", help="gtc, ioc or fok.")] = "gtc",
    post_only: Annotated[bool, typer.Option("--post-only", help="Never take.")] = False,
    reduce_only: Annotated[bool, typer.Option("--reduce-only", help="Only reduce.")] = False,
    client_id: Annotated[
        str | None, typer.Option("--client-id", help="Your id; placing it again is a no-op.")
    ] = None,
    venue: Annotated[
        str,
        typer.Option(
            "--venue",
            help="internal, paper:EXCHANGE (its live book), "
            "live:EXCHANGE (a real order on the ledger account) or best.",
        ),
    ] = "internal",
) -> None:
    """Place an order; prints it as JSON (a rejection exits 2 naming its rule)."""
    name = _tenant(tenant)
    _matching("--venue", venue, _VENUE, "internal, best, paper:EXCHANGE or live:EXCHANGE")
    kind = _choice("--type", order_type, ORDER_TYPES)
    if kind in _PRICED and price is None:
        fail(f"--price is required for a {kind} order")
    if kind not in _PRICED and price is not None:
        fail(f"--price is not allowed on a {kind} order")
    if kind in _STOPS and stop_price is None:
        fail(f"--stop-price is required for a {kind} order")
    if kind not in _STOPS and stop_price is not None:
        fail(f"--stop-price is not allowed on a {kind} order")
    if client_id is not None and not 1 <= len(client_id) <= 64:
        fail("--client-id must be 1-64 characters")
    amount = _money("--quantity", quantity)
    assert amount is not None
    request = OrderRequest(
        cast(str, _account(account)),
        _matching("--symbol", symbol, _SYMBOL, "a symbol such as BTC/USDT"),
        cast(Any, _choice("--side", side, SIDES)), cast(Any, kind), amount,
        price=_money("--price", price), stop_price=_money("--stop-price", stop_price),
        time_in_force=cast(Any, _choice("--tif", tif, TIMES_IN_FORCE)),
        post_only=post_only, reduce_only=reduce_only, client_order_id=client_id, venue=venue,
    )  # fmt: skip

    async def work(service: OrderService) -> Order:
        return (await service.submit(name, request)).order

    order = _with_service(work)
    if order.status == "rejected":
        fail(f"order rejected: {order.reject_rule}: {order.reject_reason}")
    _print(_order(order))


@orders_app.command("cancel")
def cancel(tenant: TenantOpt, account: AccountOpt, order_id: OrderIdArg) -> None:
    """Cancel an open order of the account; prints it (a final order comes back unchanged)."""
    name, owner = _tenant(tenant), _account(account)

    async def work(service: OrderService) -> Order:
        await _owned(service, name, owner, order_id)
        return await service.cancel(name, order_id)

    _print(_order(_with_service(work)))


@orders_app.command("amend")
def amend(
    tenant: TenantOpt,
    account: AccountOpt,
    order_id: OrderIdArg,
    price: Annotated[str | None, typer.Option("--price", help="New limit price.")] = None,
    quantity: Annotated[
        str | None, typer.Option("--quantity", help="New total, above what is filled.")
    ] = None,
) -> None:
    """Change a resting order's price and/or quantity; prints the order."""
    name, owner = _tenant(tenant), _account(account)
    new_price, new_quantity = _money("--price", price), _money("--quantity", quantity)
    if new_price is None and new_quantity is None:
        fail("amend needs --price and/or --quantity")

    async def work(service: OrderService) -> Order:
        await _owned(service, name, owner, order_id)
        return await service.amend(name, order_id, price=new_price, quantity=new_quantity)

    _print(_order(_with_service(work)))


async def _owned(service: OrderService, tenant: str, account: str | None, order_id: str) -> None:
    """Refuse an order of another account as unknown, as the API does across tenants."""
    from cryptodesk.services.order_service import OrderNotFound

    if (await service.order(tenant, order_id)).account != account:
        raise OrderNotFound(order_id)


@orders_app.command("list")
def list_orders(
    tenant: TenantOpt,
    account: AccountFilter = None,
    symbol: Annotated[str | None, typer.Option("--symbol", help="Only this symbol.")] = None,
    status: Annotated[str | None, typer.Option("--status", help="Only this status.")] = None,
    out: Annotated[str, typer.Option("--format", help="json or table.")] = "json",
) -> None:
    """The tenant's orders by id (rejections are not kept)."""
    name, owner = _tenant(tenant), _account(account)
    if symbol is not None:
        _matching("--symbol", symbol, _SYMBOL, "a symbol such as BTC/USDT")
    state = None if status is None else cast(OrderStatus, _choice("--status", status, _STATUSES))
    shape = _choice("--format", out, ("json", "table"))

    async def work(service: OrderService) -> list[Order]:
        return await service.orders(name, account=owner, symbol=symbol, status=state)

    found = _with_service(work)
    if shape == "json":
        _print([_order(o) for o in found])
        return
    head = ("ORDER_ID", "VENUE", "ACCOUNT", "SYMBOL", "SIDE", "TYPE", "PRICE", "QUANTITY",
            "FILLED", "STATUS")  # fmt: skip
    rows = [head] + [
        (o.order_id, o.venue, o.account, o.symbol, o.side, o.type,
         "-" if o.price is None else str(o.price), str(o.quantity), str(o.filled), o.status)
        for o in found
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    for row in rows:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


@orders_app.command("fills")
def fills(tenant: TenantOpt, account: AccountFilter = None) -> None:
    """The tenant's fills by trade, as JSON (a trade between two accounts is two fills)."""
    from cryptodesk.domain.timeutil import to_iso
    from cryptodesk.trading.order_state import fill_dict

    name, owner = _tenant(tenant), _account(account)
    found = _with_service(lambda service: service.fills(name, account=owner))
    _print([{**fill_dict(f), "time": to_iso(f.ts)} for f in found])


@orders_app.command("positions")
def positions(tenant: TenantOpt, account: AccountFilter = None) -> None:
    """Positions per account and symbol, marked at the venue's last trade price, as JSON."""
    name, owner = _tenant(tenant), _account(account)
    found = _with_service(lambda service: service.positions(name, account=owner))
    _print([_position(p, mark) for p, mark in found])


@orders_app.command("deposit")
def deposit(
    tenant: TenantOpt,
    account: AccountOpt,
    asset: Annotated[str, typer.Option("--asset", help="Asset, e.g. USDT.")],
    amount: Annotated[str, typer.Option("--amount", help="Paper money to credit.")],
) -> None:
    """Credit paper money to an account; prints its balance of the asset."""
    name, owner = _tenant(tenant), cast(str, _account(account))
    coin = _matching("--asset", asset, _ASSET, "an asset such as USDT")
    credit = _money("--amount", amount)
    assert credit is not None

    async def work(service: OrderService) -> tuple[Decimal, Decimal]:
        await service.deposit(name, owner, coin, credit)
        return await service.balance(name, owner, coin)

    available, reserved = _with_service(work)
    _print({"account": owner, "asset": coin, "amount": str(credit),
            "available": str(available), "reserved": str(reserved)})  # fmt: skip


@orders_app.command("kill")
def kill(tenant: TenantOpt, account: AccountFilter = None) -> None:
    """Stop new orders of the account (none given: the whole tenant), cancelling its open
    orders; prints the orders cancelled."""
    name, owner = _tenant(tenant), _account(account)
    cancelled = _with_service(lambda service: service.kill(name, owner))
    _print({"account": owner, "active": True, "cancelled": [_order(o) for o in cancelled]})


@orders_app.command("revive")
def revive(tenant: TenantOpt, account: AccountFilter = None) -> None:
    """Allow new orders of the account (none given: the whole tenant) again."""
    name, owner = _tenant(tenant), _account(account)
    _with_service(lambda service: service.revive(name, owner))
    _print({"account": owner, "active": False, "cancelled": []})
