"""``cryptodesk orders ...`` as a user runs them, on a SQLite file named by
CRYPTODESK_DATABASE_URL, and the order service the API builds over the same file."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from typer.testing import CliRunner

from cryptodesk.adapters.bus.memory import MemoryBus
from cryptodesk.adapters.cache.memory import MemoryCache
from cryptodesk.adapters.db.engine import create_engine
from cryptodesk.cli import app
from cryptodesk.config import load_settings
from cryptodesk.domain.orders import OrderRequest
from cryptodesk.observability.logging import configure_logging
from cryptodesk.services.order_service import OrderService
from cryptodesk.trading_wiring import order_service
from tests.unit._ledger_api import migrated_template

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("clean_env")
T = ["--tenant", "acme"]
ASK = ["--account", "bob", "--symbol", "BTC/USDT", "--side", "sell", "--type", "limit"]
BID = ["--account", "alice", "--symbol", "BTC/USDT", "--side", "buy", "--type", "limit"]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return migrated_template(tmp_path_factory.mktemp("orders-cli"))


@pytest.fixture(autouse=True)
def quiet_logging() -> None:
    configure_logging("json", "WARNING")


@pytest.fixture
def db(tmp_path: Path, template: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    path = data / "orders.db"
    shutil.copyfile(template, path)
    monkeypatch.setenv("CRYPTODESK_DATA_DIR", str(data))
    monkeypatch.setenv("CRYPTODESK_DATABASE_URL", f"sqlite+aiosqlite:///{path}")
    return path


def cli(*args: str) -> Result:
    return runner.invoke(app, ["orders", *args])


def ok(*args: str) -> Any:
    result = cli(*args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def refused(*args: str) -> str:
    result = cli(*args)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    return result.stderr


def funded() -> None:
    ok("deposit", *T, "--account", "alice", "--asset", "USDT", "--amount", "100000")
    ok("deposit", *T, "--account", "bob", "--asset", "BTC", "--amount", "2")


@pytest.fixture
def traded(db: Path) -> Path:
    """bob offers 0.5 BTC at 60000; alice takes 0.2 of it."""
    funded()
    ok("place", *T, *ASK, "--quantity", "0.5", "--price", "60000")
    ok("place", *T, *BID, "--quantity", "0.2", "--price", "60010", "--client-id", "c1")
    return db


def pick(body: dict[str, Any], *keys: str) -> tuple[Any, ...]:
    return tuple(body[k] for k in keys)


def test_deposit_prints_the_paper_balance(db: Path) -> None:
    body = ok("deposit", *T, "--account", "alice", "--asset", "USDT", "--amount", "100000")
    assert body == {"account": "alice", "asset": "USDT", "amount": "100000",
                    "available": "100000", "reserved": "0"}  # fmt: skip
    again = ok("deposit", *T, "--account", "alice", "--asset", "USDT", "--amount", "0.5")
    assert (again["available"], again["reserved"]) == ("100000.5", "0")


def test_crossing_orders_trade_and_show_in_list_fills_and_positions(db: Path) -> None:
    funded()
    ask = ok("place", *T, *ASK, "--quantity", "0.5", "--price", "60000")
    assert pick(ask, "order_id", "account", "side", "price", "quantity", "status", "filled") == (
        "O0000000001", "bob", "sell", "60000", "0.5", "accepted", "0")  # fmt: skip
    bid = ok("place", *T, *BID, "--quantity", "0.2", "--price", "60010", "--client-id", "c1")
    keys = ("order_id", "client_order_id", "status", "filled", "average_price", "fees")
    assert pick(bid, *keys) == (
        "O0000000002", "c1", "filled", "0.20000", "60000.00", "12.0000000000")  # fmt: skip
    assert bid["created_at"].endswith("Z")
    assert bid["reject_rule"] is None
    # The same client id again is the same order: nothing new is placed.
    again = ok("place", *T, *BID, "--quantity", "0.2", "--price", "60010", "--client-id", "c1")
    assert again == bid

    listed = ok("list", *T)
    assert [pick(o, "order_id", "status", "filled") for o in listed] == [
        ("O0000000001", "partially_filled", "0.20000"),
        ("O0000000002", "filled", "0.20000"),
    ]
    assert listed[1] == bid
    assert [o["order_id"] for o in ok("list", *T, "--account", "bob")] == ["O0000000001"]
    assert [o["order_id"] for o in ok("list", *T, "--status", "filled")] == ["O0000000002"]
    assert ok("list", *T, "--symbol", "ETH/USDT") == []
    table = cli("list", *T, "--format", "table")
    assert table.exit_code == 0, table.output
    assert table.stdout.splitlines() == [
        "ORDER_ID     VENUE     ACCOUNT  SYMBOL    SIDE  TYPE   PRICE  QUANTITY  FILLED   STATUS",
        "O0000000001  internal  bob      BTC/USDT  sell  limit  60000  0.5       0.20000  "
        "partially_filled",
        "O0000000002  internal  alice    BTC/USDT  buy   limit  60010  0.2       0.20000  filled",
    ]

    fills = ok("fills", *T)
    assert [pick(f, "trade_id", "order_id", "account", "side", "price", "quantity", "fee",
                 "fee_asset", "liquidity") for f in fills] == [
        ("T0000000001", "O0000000001", "bob", "sell", "60000.00", "0.20000", "12.0000000000",
         "USDT", "maker"),
        ("T0000000001", "O0000000002", "alice", "buy", "60000.00", "0.20000", "12.0000000000",
         "USDT", "taker"),
    ]  # fmt: skip
    assert [f["order_id"] for f in ok("fills", *T, "--account", "alice")] == ["O0000000002"]

    positions = ok("positions", *T)
    assert positions == [
        {"account": "alice", "symbol": "BTC/USDT", "quantity": "0.20000",
         "average_price": "60000.00", "realized": "0", "fees": "12.0000000000",
         "mark": "60000.00", "unrealized": "0E-7"},
        {"account": "bob", "symbol": "BTC/USDT", "quantity": "-0.20000",
         "average_price": "60000.00", "realized": "0", "fees": "12.0000000000",
         "mark": "60000.00", "unrealized": "0E-7"},
    ]  # fmt: skip
    assert ok("positions", *T, "--account", "bob") == positions[1:]


def test_amend_then_cancel_a_resting_order(traded: Path) -> None:
    amended = ok("amend", *T, "--account", "bob", "O0000000001", "--price", "60100",
                 "--quantity", "0.4")  # fmt: skip
    assert pick(amended, "order_id", "price", "quantity", "filled", "status") == (
        "O0000000001", "60100", "0.4", "0.20000", "partially_filled")  # fmt: skip
    cancelled = ok("cancel", *T, "--account", "bob", "O0000000001")
    assert pick(cancelled, "status", "close_reason", "price") == ("cancelled", "client", "60100")
    # Cancelling a final order returns it unchanged.
    assert ok("cancel", *T, "--account", "bob", "O0000000001") == cancelled
    assert refused("amend", *T, "--account", "bob", "O0000000001", "--price", "60200") == (
        "cryptodesk: error: order rejected: order_closed: order O0000000001 is cancelled\n"
    )


def test_an_order_of_another_account_or_tenant_is_not_found(traded: Path) -> None:
    assert refused("cancel", *T, "--account", "alice", "O0000000001") == (
        "cryptodesk: error: no order 'O0000000001'\n"
    )
    assert refused("amend", "--tenant", "other", "--account", "bob", "O0000000001",
                   "--price", "1") == "cryptodesk: error: no order 'O0000000001'\n"  # fmt: skip
    assert ok("list", *T, "--status", "partially_filled")[0]["order_id"] == "O0000000001"


def test_a_rejected_order_exits_2_naming_its_rule_and_is_not_kept(traded: Path) -> None:
    too_big = refused("place", *T, *BID, "--quantity", "5", "--price", "60000")
    assert too_big == (
        "cryptodesk: error: order rejected: insufficient_balance: quantity needs 300300 USDT "
        "but alice has 87988 available\n"
    )
    off_grid = refused("place", *T, *BID, "--quantity", "0.1", "--price", "60000.001")
    assert off_grid == (
        "cryptodesk: error: order rejected: tick_size: price 60000.001 is not a multiple of "
        "the tick size 0.01 for BTC/USDT\n"
    )
    unknown = refused("place", *T, *BID[:2], "--symbol", "DOGE/USDT", *BID[4:],
                      "--quantity", "1", "--price", "1")  # fmt: skip
    assert unknown.startswith("cryptodesk: error: order rejected: unknown_symbol: ")
    assert [o["order_id"] for o in ok("list", *T)] == ["O0000000001", "O0000000002"]


def test_the_settings_order_limits_apply_to_every_order(
    traded: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The last trade is 60000: a 1 % band refuses 60700; BTC/USDT's own table caps size.
    monkeypatch.setenv("CRYPTODESK_ORDER_LIMITS__PRICE_BAND", "0.01")
    monkeypatch.setenv("CRYPTODESK_SYMBOL_ORDER_LIMITS",
                       '{"BTC/USDT": {"max_order_quantity": "0.25"}}')  # fmt: skip
    band = refused("place", *T, *ASK, "--quantity", "0.1", "--price", "60700")
    assert band.startswith("cryptodesk: error: order rejected: price_band: ")
    size = refused("place", *T, *ASK, "--quantity", "0.3", "--price", "60100")
    assert size.startswith("cryptodesk: error: order rejected: max_quantity: ")
    assert ok("place", *T, *ASK, "--quantity", "0.25", "--price", "60100")["status"] == "accepted"


def test_self_trade_prevention_is_a_setting(traded: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bob_bid = ["--account", "bob", *BID[2:]]
    expired = ok("place", *T, *bob_bid, "--quantity", "0.1", "--price", "60000")
    assert pick(expired, "status", "close_reason") == ("expired", "self_trade")  # cancel_incoming
    monkeypatch.setenv("CRYPTODESK_SELF_TRADE_PREVENTION", "cancel_resting")
    rests = ok("place", *T, *bob_bid, "--quantity", "0.1", "--price", "60000")
    assert pick(rests, "status", "filled") == ("accepted", "0")
    ask = next(o for o in ok("list", *T) if o["order_id"] == "O0000000001")
    assert pick(ask, "status", "close_reason") == ("cancelled", "self_trade")


def test_the_internal_grid_is_a_setting(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    funded()
    monkeypatch.setenv("CRYPTODESK_INSTRUMENTS", '{"BTC/USDT": {"tick_size": "0.5"}}')
    off = refused("place", *T, *ASK, "--quantity", "0.1", "--price", "60000.25")
    assert off.startswith("cryptodesk: error: order rejected: tick_size: price 60000.25 is not ")
    on = ok("place", *T, *ASK, "--quantity", "0.1", "--price", "60000.5")
    assert (on["status"], on["price"]) == ("accepted", "60000.5")


def test_paper_venue_orders_rest_or_need_a_live_book(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    funded()
    paper = ("--venue", "paper:sim")
    # sim's own rates: a resting buy holds price x quantity x (1 + the larger one).
    monkeypatch.setenv("CRYPTODESK_VENUE_FEES", '{"sim": {"taker": "0.003", "maker": "0.001"}}')
    resting = ok("place", *T, *BID, "--quantity", "0.1", "--price", "59000", *paper)
    assert pick(resting, "order_id", "venue", "status") == ("O0000000001", "paper:sim", "accepted")
    cash = ok("deposit", *T, "--account", "alice", "--asset", "USDT", "--amount", "1")
    assert Decimal(cash["reserved"]) == Decimal("5917.7")  # 5900 x 1.003
    market = refused("place", *T, *BID[:6], "--type", "market", "--quantity", "0.1", *paper)
    assert market.startswith("cryptodesk: error: order rejected: no_book: no order book of ")
    assert [o["venue"] for o in ok("list", *T)] == ["paper:sim"]


def test_kill_cancels_open_orders_and_refuses_new_ones_until_revived(traded: Path) -> None:
    killed = ok("kill", *T, "--account", "bob")
    assert (killed["account"], killed["active"]) == ("bob", True)
    assert [pick(o, "order_id", "status", "close_reason") for o in killed["cancelled"]] == [
        ("O0000000001", "cancelled", "kill_switch")]  # fmt: skip
    stopped = refused("place", *T, *ASK, "--quantity", "0.1", "--price", "61000")
    assert stopped.startswith("cryptodesk: error: order rejected: kill_switch: ")
    # Another account still trades.
    assert ok("place", *T, *BID, "--quantity", "0.1", "--price", "59000")["status"] == "accepted"
    assert ok("revive", *T, "--account", "bob") == {
        "account": "bob", "active": False, "cancelled": []}  # fmt: skip
    again = ok("place", *T, *ASK, "--quantity", "0.1", "--price", "61000")
    assert pick(again, "order_id", "status") == ("O0000000004", "accepted")
    whole = ok("kill", *T)
    assert [o["order_id"] for o in whole["cancelled"]] == ["O0000000003", "O0000000004"]
    assert refused("place", *T, *BID, "--quantity", "0.1", "--price", "59000").startswith(
        "cryptodesk: error: order rejected: kill_switch: "
    )


BAD = [
    (["--quantity", "abc", "--price", "1"],
     "--quantity 'abc' is not a positive decimal number such as 0.5"),
    (["--quantity", "1e3", "--price", "1"],
     "--quantity '1e3' is not a positive decimal number such as 0.5"),
    (["--quantity", "0", "--price", "1"], "--quantity '0' must be above zero"),
    (["--quantity", "1", "--price", "-5"],
     "--price '-5' is not a positive decimal number such as 0.5"),
    (["--quantity", "1", "--side", "hold", "--price", "1"],
     "--side 'hold' is not one of buy, sell"),
    (["--quantity", "1"], "--price is required for a limit order"),
    (["--quantity", "1", "--type", "market", "--price", "1"],
     "--price is not allowed on a market order"),
    (["--quantity", "1", "--type", "stop_limit", "--price", "1"],
     "--stop-price is required for a stop_limit order"),
    (["--quantity", "1", "--type", "twap"],
     "--type 'twap' is not one of limit, market, stop_market, stop_limit"),
    (["--quantity", "1", "--price", "1", "--tif", "day"],
     "--tif 'day' is not one of gtc, ioc, fok"),
    (["--quantity", "1", "--price", "1", "--symbol", "btcusdt"],
     "--symbol 'btcusdt' is not a symbol such as BTC/USDT"),
    (["--quantity", "1", "--price", "1", "--account", "a b"],
     "--account 'a b' is not an account: 1-64 of A-Z, a-z, 0-9, _.:-"),
    (["--quantity", "1", "--price", "1", "--venue", "live:"],
     "--venue 'live:' is not internal, best, paper:EXCHANGE or live:EXCHANGE"),
]  # fmt: skip


@pytest.fixture
def no_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A data directory that opening the database would create."""
    data = tmp_path / "never"
    monkeypatch.setenv("CRYPTODESK_DATA_DIR", str(data))
    monkeypatch.setenv("CRYPTODESK_DATABASE_URL", f"sqlite+aiosqlite:///{data / 'o.db'}")
    yield data
    assert not data.exists()


@pytest.mark.parametrize(("args", "message"), BAD)
def test_bad_place_options_exit_2_before_the_database(
    no_database: Path, args: list[str], message: str
) -> None:
    base = {"--account": "alice", "--symbol": "BTC/USDT", "--side": "buy", "--type": "limit"}
    given = dict(zip(args[::2], args[1::2], strict=True))
    flat = [x for k, v in {**base, **given}.items() for x in (k, v)]
    assert refused("place", *T, *flat) == f"cryptodesk: error: {message}\n"


def test_other_bad_options_exit_2_before_the_database(no_database: Path) -> None:
    assert refused("deposit", *T, "--account", "a", "--asset", "USDT", "--amount", "ten") == (
        "cryptodesk: error: --amount 'ten' is not a positive decimal number such as 0.5\n"
    )
    assert refused("deposit", *T, "--account", "a", "--asset", "usdt", "--amount", "1") == (
        "cryptodesk: error: --asset 'usdt' is not an asset such as USDT\n"
    )
    assert refused("amend", *T, "--account", "a", "O1") == (
        "cryptodesk: error: amend needs --price and/or --quantity\n"
    )
    assert refused("list", *T, "--status", "open") == (
        "cryptodesk: error: --status 'open' is not one of new, accepted, partially_filled, "
        "filled, cancelled, rejected, expired\n"
    )
    assert refused("list", *T, "--format", "csv") == (
        "cryptodesk: error: --format 'csv' is not one of json, table\n"
    )
    assert refused("fills", "--tenant", "Bad Tenant").startswith(
        "cryptodesk: error: --tenant 'Bad Tenant' is not a tenant id"
    )


async def _api_service(db: Path) -> tuple[OrderService, Any]:
    """The order service as the API builds it over the same file."""
    engine = create_engine(f"sqlite+aiosqlite:///{db}")
    return order_service(load_settings(), engine, MemoryCache(), MemoryBus()), engine


def test_cli_orders_are_seen_by_the_api_service_and_the_other_way_round(traded: Path) -> None:
    async def check() -> None:
        service, engine = await _api_service(traded)
        try:
            orders = await service.orders("acme")
            assert [(o.order_id, o.status, o.filled) for o in orders] == [
                ("O0000000001", "partially_filled", Decimal("0.20000")),
                ("O0000000002", "filled", Decimal("0.20000")),
            ]
            assert await service.balance("acme", "alice", "USDT") == (
                Decimal("87988.0000000000"), Decimal(0))  # fmt: skip
            # A running service catches up with what the command line writes meanwhile.
            await asyncio.to_thread(ok, "place", *T, *BID, "--quantity", "0.1", "--price", "59000")
            assert [o.order_id for o in await service.orders("acme", status="accepted")] == [
                "O0000000003"]  # fmt: skip
            request = OrderRequest("alice", "BTC/USDT", "buy", "limit", Decimal("0.1"),
                                   price=Decimal("59500"))  # fmt: skip
            placed = await service.submit("acme", request)
            assert (placed.order.order_id, placed.order.status) == ("O0000000004", "accepted")
        finally:
            await engine.dispose()

    asyncio.run(check())
    listed = ok("list", *T, "--account", "alice", "--status", "accepted")
    assert [pick(o, "order_id", "price") for o in listed] == [
        ("O0000000003", "59000"), ("O0000000004", "59500")]  # fmt: skip
