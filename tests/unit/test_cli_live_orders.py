"""``cryptodesk orders ... --venue live:binance`` as a user runs it: the service the
command line builds from Settings (``trading_wiring``: ccxt at the configured host,
through the exchange's guard, with the ledger account's decrypted key) against the
Binance fake, served from a thread of its own while each command runs."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cryptodesk.adapters.db.engine import create_engine
from cryptodesk.adapters.secrets import SecretBox, generate_key
from cryptodesk.cli import app
from cryptodesk.domain.timeutil import now_ms
from cryptodesk.observability.logging import configure_logging
from cryptodesk.portfolio.accounts import AccountSpec, ExchangeCredentials
from cryptodesk.services.ledger_service import LedgerService
from tests.fakes.binance import FakeBinance
from tests.fakes.binance_account import FakeBinanceAccount
from tests.fakes.binance_orders import FakeBinanceOrders
from tests.unit._ledger_api import migrated_template
from tests.unit._live_orders import KEY, SECRET, TENANT

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("clean_env")
T = ["--tenant", TENANT]
SELL = ["--account", "main", "--symbol", "BTC/USDT", "--side", "sell", "--type", "limit",
        "--venue", "live:binance"]  # fmt: skip


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return migrated_template(tmp_path_factory.mktemp("live-orders-cli"))


@pytest.fixture(autouse=True)
def quiet_logging() -> None:
    configure_logging("json", "WARNING")


@pytest.fixture
def fake() -> Iterator[FakeBinanceOrders]:
    """The fake on an event loop in a thread (each command runs its own loop), on the
    wall clock as the command line is: reconcile asks for trades since an order's time."""
    exchange = FakeBinance(now=now_ms())
    account = FakeBinanceAccount(exchange, api_key=KEY, secret=SECRET)
    account.set_balance("USDT", "10000")
    account.set_balance("BTC", "1")
    orders = FakeBinanceOrders(account)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(exchange.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield orders
    finally:
        asyncio.run_coroutine_threadsafe(exchange.stop(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()


@pytest.fixture
def ledger_db(tmp_path: Path, template: Path, fake: FakeBinanceOrders,
              monkeypatch: pytest.MonkeyPatch) -> str:  # fmt: skip
    data = tmp_path / "data"
    data.mkdir()
    shutil.copyfile(template, data / "orders.db")
    url = f"sqlite+aiosqlite:///{data / 'orders.db'}"
    key = generate_key()
    host = fake.exchange.base_url
    for name, value in (("DATA_DIR", str(data)), ("DATABASE_URL", url), ("ACCOUNTS_KEY", key),
                        ("EXCHANGE_CONFIG__BINANCE__HTTP_URL", host)):  # fmt: skip
        monkeypatch.setenv(f"CRYPTODESK_{name}", value)

    async def add_account() -> None:
        engine = create_engine(url)
        spec = AccountSpec("main", "exchange", exchange="binance",
                           credentials=ExchangeCredentials(KEY, SECRET))  # fmt: skip
        await LedgerService(engine, SecretBox(key)).add_account(TENANT, spec)
        await engine.dispose()

    asyncio.run(add_account())
    return url


def ok(*args: str) -> Any:
    result = runner.invoke(app, ["orders", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def ledger_ids(url: str) -> list[str]:
    async def read() -> list[str]:
        engine = create_engine(url)
        entries = await LedgerService(engine, None).entries(TENANT)
        await engine.dispose()
        return sorted(e.id for e in entries)

    return asyncio.run(read())


def test_place_list_cancel_fills_and_positions_of_a_live_order(
    fake: FakeBinanceOrders, ledger_db: str
) -> None:
    placed = ok("place", *T, *SELL, "--quantity", "0.5", "--price", "70000", "--client-id", "c1")
    assert (placed["order_id"], placed["client_order_id"], placed["status"], placed["venue"]) == (
        "L822b330000000001", "c1", "accepted", "live:binance")  # fmt: skip
    assert fake.orders[4_000_001]["clientOrderId"] == "L822b330000000001"
    listed = ok("list", *T)
    assert [(o["order_id"], o["status"], o["venue"]) for o in listed] == [
        ("L822b330000000001", "accepted", "live:binance")]  # fmt: skip

    fake.fill(4_000_001, "0.2", time=now_ms())
    cancelled = ok("cancel", *T, "--account", "main", "L822b330000000001")
    assert (cancelled["status"], cancelled["filled"], cancelled["close_reason"]) == (
        "cancelled", "0.20000000", "client")  # fmt: skip
    assert fake.orders[4_000_001]["status"] == "CANCELED"
    fills = ok("fills", *T)
    assert [(f["trade_id"], f["order_id"], f["price"], f["quantity"], f["venue"])
            for f in fills] == [
        ("28457", "L822b330000000001", "70000.00000000", "0.20000000", "live:binance")]  # fmt: skip
    positions = ok("positions", *T, "--account", "main")
    assert [(p["account"], p["quantity"], p["mark"]) for p in positions] == [
        ("main", "-0.20000000", "70000.00000000")]  # fmt: skip
    assert ledger_ids(ledger_db) == ["binance:trade:BTCUSDT:28457"]

    ghost = ["--account" if arg == "--account" else "ghost" if arg == "main" else arg
             for arg in SELL]  # fmt: skip
    result = runner.invoke(app, ["orders", "place", *T, *ghost, "--quantity", "0.1",
                                 "--price", "80000"])  # fmt: skip
    assert result.exit_code == 2
    assert result.stderr.startswith("cryptodesk: error: order rejected: unknown_venue: ")
