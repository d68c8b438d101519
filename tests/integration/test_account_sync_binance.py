"""Account sync on real ccxt binance against the fake's SIGNED endpoints, into the
real LedgerService on a SQLite file, and the reconciliation of the result.

Every figure below follows from what the fake holds (``history``); the fake
moves its balances as Binance would, so the ledger-derived balances and the
reported ones are computed independently.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import structlog
from prometheus_client import CollectorRegistry

from cryptodesk.adapters.db import migrate
from cryptodesk.adapters.db.engine import create_engine
from cryptodesk.adapters.exchanges.ccxt_account import CcxtAccountClient, ExchangeAuthError
from cryptodesk.adapters.exchanges.guard import ExchangeGuard
from cryptodesk.adapters.secrets import SecretBox, generate_key
from cryptodesk.portfolio.accounts import AccountSpec, ExchangeCredentials
from cryptodesk.portfolio.ledger import LedgerEntry
from cryptodesk.portfolio.reconcile import ReconLine
from cryptodesk.services.ledger_service import LedgerService
from cryptodesk.services.portfolio_sync import HOUR_MS, SyncResult, SyncService
from tests.fakes.binance import T0, FakeBinance
from tests.fakes.binance_account import DAY, FakeBinanceAccount

D = Decimal
# The example key pair of Binance's request-security documentation.
KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
NOW = T0 + 200 * DAY
START = T0 - DAY  # history start: the 90-day windows are [START, +90d), ... up to NOW
TENANT = "acme"
TRADES, DEPOSITS, WITHDRAWALS = (
    "/api/v3/myTrades", "/sapi/v1/capital/deposit/hisrec", "/sapi/v1/capital/withdraw/history",
)  # fmt: skip


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeBinanceAccount]:
    exchange = FakeBinance()
    account = FakeBinanceAccount(exchange, api_key=KEY, secret=SECRET)
    history(account)
    await exchange.start()
    try:
        yield account
    finally:
        await exchange.stop()


def history(a: FakeBinanceAccount) -> None:
    a.add_deposit("USDT", "250000000.12345679", time=T0, tx_id="0xdep-usdt")
    a.add_deposit("USDT", "5.00000000", time=T0 + 1_000, tx_id="0xpending", status=0)
    a.add_deposit("ETH", "2.00000000", time=T0 + 2_000, tx_id="0xdep-eth")
    a.add_deposit("BNB", "0.50000000", time=T0 + 3_000, tx_id="0xdep-bnb")
    # 67000.17 * 1500.12345678 = 100508526.62524765 USDT: a float would end in ...66.
    a.add_trade(
        "BTCUSDT",
        side="buy",
        price="67000.17",
        qty="1500.12345678",
        commission="1.50012345",
        commission_asset="BTC",
        time=T0 + HOUR_MS,
    )
    a.add_trade(
        "ETHUSDT",
        side="sell",
        price="3800.55",
        qty="1.50000000",
        commission="0.00040000",
        commission_asset="BNB",
        time=T0 + 2 * HOUR_MS,
    )
    a.add_withdrawal(
        "USDT",
        "100.00000000",
        "1.00000000",
        time=T0 + 100 * DAY,
        withdrawal_id="wd-ok",
        tx_id="0xwd",
    )
    a.add_withdrawal(
        "USDT",
        "50.00000000",
        "1.00000000",
        time=T0 + 101 * DAY,
        withdrawal_id="wd-rejected",
        status=3,
    )
    a.add_deposit("BTC", "0.01000000", time=T0 + 150 * DAY, tx_id="0xdep-btc")  # fmt: skip


BALANCES = {
    "BNB": D("0.4996"),
    "BTC": D("1498.63333333"),  # 1500.12345678 - 1.50012345 + 0.01
    "ETH": D("0.5"),
    # 250000000.12345679 - 100508526.62524765 + 5700.825 - 100 - 1 (a float holds ...678)
    "USDT": D("149497073.32320914"),
}
BUY = LedgerEntry(
    id="binance:trade:BTCUSDT:28457", timestamp=T0 + HOUR_MS, kind="buy", account="main",
    asset="BTC", amount=D("1500.12345678"), counter_asset="USDT",
    counter_amount=D("100508526.62524765"), fee_asset="BTC", fee_amount=D("1.50012345"),
    external_id="BTCUSDT:28457",
)  # fmt: skip
SELL = LedgerEntry(
    id="binance:trade:ETHUSDT:28457", timestamp=T0 + 2 * HOUR_MS, kind="sell", account="main",
    asset="ETH", amount=D("1.5"), counter_asset="USDT", counter_amount=D("5700.825"),
    fee_asset="BNB", fee_amount=D("0.0004"), external_id="ETHUSDT:28457",
)  # fmt: skip


def deposit(txid: str, ts: int, asset: str, amount: str) -> LedgerEntry:
    return LedgerEntry(id=f"binance:deposit:{txid}", timestamp=ts, kind="deposit",
                       account="main", asset=asset, amount=D(amount), external_id=txid)  # fmt: skip


DEPOSIT_ENTRIES = [
    deposit("0xdep-usdt", T0, "USDT", "250000000.12345679"),
    deposit("0xdep-eth", T0 + 2_000, "ETH", "2"),
    deposit("0xdep-bnb", T0 + 3_000, "BNB", "0.5"),
    deposit("0xdep-btc", T0 + 150 * DAY, "BTC", "0.01"),
]
WITHDRAWAL = LedgerEntry(
    id="binance:withdrawal:wd-ok", timestamp=T0 + 100 * DAY, kind="withdrawal", account="main",
    asset="USDT", amount=D("100"), fee_asset="USDT", fee_amount=D("1"), external_id="wd-ok",
)  # fmt: skip


@pytest_asyncio.fixture
async def make(fake: FakeBinanceAccount) -> AsyncIterator[Callable[..., CcxtAccountClient]]:
    made: list[CcxtAccountClient] = []

    def make(key: str = KEY, secret: str = SECRET, account: str = "main",
             **options: Any) -> CcxtAccountClient:  # fmt: skip
        client = CcxtAccountClient(
            "binance", ExchangeCredentials(key, secret), account=account,
            http_url=fake.exchange.base_url, config={"enableRateLimit": False},
            clock=lambda: NOW, **options,
        )  # fmt: skip
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


# -- the client ---------------------------------------------------------------------------


async def test_balances_are_exact_totals_of_free_and_locked_with_zeros_dropped(fake, make):
    fake.set_balance("LTC", "0")
    free, _ = fake.balances["BTC"]
    fake.balances["BTC"] = [free - D("2"), D("2")]  # an open order holds 2 BTC
    assert await make().fetch_balances() == BALANCES


async def test_own_trades_map_to_ledger_entries_exactly(fake, make):
    client = make()
    assert await client.symbols_for(["BTC", "ETH", "USDT", "BNB"]) == ["BTC/USDT", "ETH/USDT"]
    assert await client.fetch_trades(START, ["ETH/USDT", "BTC/USDT"]) == [BUY, SELL]
    assert [q["startTime"] for q in fake.calls(TRADES)] == [str(START)] * 2


async def test_own_trades_page_by_from_id_until_the_exchange_has_no_more(fake, make):
    for i in range(1001):
        fake.add_trade("SOLUSDT", side="buy", price="150.00", qty="0.100", commission="0",
                       commission_asset="SOL", time=T0 + i)  # fmt: skip
    entries = await make().fetch_trades(T0, ["SOL/USDT"])
    assert [e.id for e in entries] == [f"binance:trade:SOLUSDT:{28457 + i}" for i in range(1001)]
    assert entries[-1].counter_amount == D("15")
    assert entries[0].fee_asset is None  # a zero commission is no fee
    calls = [{k: q[k] for k in ("startTime", "fromId", "limit") if k in q}
             for q in fake.calls(TRADES)]  # fmt: skip
    assert calls == [{"startTime": str(T0), "limit": "1000"},
                     {"fromId": str(28457 + 1000), "limit": "1000"}]  # fmt: skip


async def test_completed_deposits_and_withdrawals_over_90_day_windows(fake, make):
    client = make()
    assert await client.fetch_deposits(START) == DEPOSIT_ENTRIES  # the pending one waits
    assert await client.fetch_withdrawals(START) == [WITHDRAWAL]  # the rejected one is left out
    window = 90 * DAY - 1
    starts = [START, START + window + 1, START + 2 * (window + 1)]
    for path in (DEPOSITS, WITHDRAWALS):
        assert [(int(q["startTime"]), int(q["endTime"])) for q in fake.calls(path)] == [
            (s, s + window) for s in starts
        ]


async def test_a_full_history_page_is_followed_by_the_next_offset(fake, make):
    for i in range(1000):
        fake.add_deposit("SOL", "1.00000000", time=T0 + 10 + i, tx_id=f"0xsol{i}")
    entries = await make().fetch_deposits(T0)
    assert len(entries) == 1004  # and the USDT, ETH, BNB and BTC ones since T0
    offsets = [q["offset"] for q in fake.calls(DEPOSITS) if int(q["startTime"]) == T0]
    assert offsets == ["0", "1000"]


@pytest.mark.parametrize(
    ("key", "secret", "said"),
    [
        ("wrongkey", SECRET, "Invalid API-key, IP, or permissions for action."),
        (KEY, "wrong-secret-value-0123456789", "Signature for this request is not valid."),
    ],
    ids=["unknown-key", "wrong-secret"],
)
async def test_refused_credentials_fail_clearly_and_are_never_logged(
    fake, make, caplog, key, secret, said
):
    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as logs, pytest.raises(ExchangeAuthError) as caught:
        await make(key=key, secret=secret).fetch_balances()
    message = str(caught.value)
    assert message.startswith("binance refused the API credentials of account 'main'")
    assert said in message
    for text in (message, repr(logs), caplog.text):
        assert SECRET not in text
        assert secret not in text
        assert KEY not in text


async def test_a_rate_limited_request_is_retried_through_the_guard(fake, make):
    registry = CollectorRegistry()
    fake.exchange.server.fail_next(TRADES, 429, {"code": -1003, "msg": "Too many requests."},
                                   headers={"Retry-After": "0"})  # fmt: skip
    client = make(guard=lambda ex: ExchangeGuard.for_exchange(ex, metrics_registry=registry))
    assert await client.fetch_trades(START, ["BTC/USDT"]) == [BUY]
    assert len(fake.calls(TRADES)) == 2
    labels = {"exchange": "binance", "status": "429"}
    assert registry.get_sample_value("cryptodesk_exchange_rejections_total", labels) == 1.0
    # A refused key is the request's fault, not the exchange's: no retry, breaker closed.
    refused = make(key="wrongkey", guard=lambda ex: ExchangeGuard.for_exchange(
        ex, metrics_registry=registry))  # fmt: skip
    with pytest.raises(ExchangeAuthError):
        await refused.fetch_balances()
    assert len(fake.calls("/api/v3/account")) == 1


# -- the service, on the real ledger --------------------------------------------------------


@pytest_asyncio.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[LedgerService]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    migrate.upgrade(url)
    service = LedgerService(create_engine(url), SecretBox(generate_key()), clock=lambda: NOW)
    credentials = ExchangeCredentials(KEY, SECRET)
    spec = AccountSpec("main", "exchange", exchange="binance", credentials=credentials)
    await service.add_account(TENANT, spec)
    try:
        yield service
    finally:
        await service.close()


@pytest.fixture
def sync(fake: FakeBinanceAccount, ledger: LedgerService) -> SyncService:
    def clients(exchange: str, credentials: Any, account: str) -> CcxtAccountClient:
        return CcxtAccountClient(exchange, credentials, account=account,
                                 http_url=fake.exchange.base_url,
                                 config={"enableRateLimit": False}, clock=lambda: NOW)  # fmt: skip

    return SyncService(ledger, clients, history_start_ms=START, clock=lambda: NOW)


async def test_sync_is_idempotent_and_reconciles_until_the_exchange_differs(fake, ledger, sync):
    first = await sync.sync_account(TENANT, "main")
    assert first == SyncResult("main", trades=2, deposits=4, withdrawals=1, added=7, skipped=0,
                               balances=BALANCES)  # fmt: skip
    stored = await ledger.entries(TENANT)
    assert sorted(stored, key=lambda e: e.id) == sorted(
        [BUY, SELL, *DEPOSIT_ENTRIES, WITHDRAWAL], key=lambda e: e.id
    )
    again = await sync.sync_account(TENANT, "main")
    # From a week before the newest deposit and withdrawal: 2 trades, 1 deposit, 1 withdrawal.
    assert (again.added, again.skipped) == (0, 4)
    assert len(await ledger.entries(TENANT)) == 7

    report = await sync.reconciliation(TENANT)
    assert report.ok
    assert [(line.asset, line.ledger, line.status) for line in report.lines] == [
        (asset, amount, "ok") for asset, amount in BALANCES.items()
    ]

    fake.set_balance("ETH", "0.49")  # 0.01 ETH gone with no record of it
    await sync.sync_account(TENANT, "main")
    report = await sync.reconciliation(TENANT)
    assert not report.ok
    assert report.differences == (
        ReconLine("main", "ETH", D("0.5"), D("0.49"), D("-0.01"), "mismatch"),
    )


async def test_the_next_sync_starts_where_the_last_one_got_to(fake, ledger, sync):
    await sync.sync_account(TENANT, "main")
    before = {path: len(fake.calls(path)) for path in (TRADES, DEPOSITS)}
    fake.add_trade("BTCUSDT", side="sell", price="70000.00", qty="1.00000000",
                   commission="70.00000000", commission_asset="USDT",
                   time=T0 + 160 * DAY)  # fmt: skip
    result = await sync.sync_account(TENANT, "main")
    assert (result.trades, result.added, result.skipped) == (3, 1, 4)
    trade_starts = {q["symbol"]: int(q["startTime"])
                    for q in fake.calls(TRADES)[before[TRADES]:] if "startTime" in q}  # fmt: skip
    assert trade_starts == {
        "BTCUSDT": T0 + HOUR_MS - HOUR_MS,
        "ETHUSDT": T0 + 2 * HOUR_MS - HOUR_MS,
    }
    deposit_starts = [int(q["startTime"]) for q in fake.calls(DEPOSITS)[before[DEPOSITS] :]]
    assert deposit_starts == [T0 + 150 * DAY - 7 * DAY]  # one window from the newest, less a week
    report = await sync.reconciliation(TENANT)
    assert report.ok
    assert {line.asset: line.ledger for line in report.lines}["USDT"] == BALANCES["USDT"] + 69930
