"""Account sync on real ccxt kraken against the fake's private endpoints, into the
real LedgerService on a SQLite file, and the reconciliation of the result.

Every figure follows from ``history``; the fake moves its balances as Kraken
does (fees in the quote asset, deposits credit ``amount - fee``, withdrawals
take ``amount + fee``).
"""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import structlog

from cryptodesk.adapters.db import migrate
from cryptodesk.adapters.db.engine import create_engine
from cryptodesk.adapters.exchanges.ccxt_account import CcxtAccountClient, ExchangeAuthError
from cryptodesk.adapters.secrets import SecretBox, generate_key
from cryptodesk.portfolio.accounts import AccountSpec, ExchangeCredentials
from cryptodesk.portfolio.ledger import LedgerEntry
from cryptodesk.portfolio.reconcile import ReconLine
from cryptodesk.services.ledger_service import LedgerService
from cryptodesk.services.portfolio_sync import SyncResult, SyncService
from tests.fakes.kraken import FakeKraken
from tests.fakes.kraken_account import FakeKrakenAccount

D = Decimal
KEY = "kQH5HW/8p1uGOVjbgWA7FunAmGO8lsSUXNsu3eow76sz84Q18fWxnyRzBHCd3pd5nE9qa99HAZtuZuj6F1huXg=="
SECRET = base64.b64encode(b"kraken private key: 64 bytes of entropy, base64 as issued").decode()
S0 = 1_717_200_000  # 2024-06-01T00:00:00Z, in Kraken's seconds
T0 = S0 * 1000
DAY = 86_400_000
NOW = T0 + 30 * DAY
START = T0 - DAY
TENANT = "acme"


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeKrakenAccount]:
    exchange = FakeKraken()
    account = FakeKrakenAccount(exchange, api_key=KEY, secret=SECRET)
    history(account)
    await exchange.start()
    try:
        yield account
    finally:
        await exchange.stop()


def history(a: FakeKrakenAccount) -> None:
    a.add_deposit("ZUSD", "250000.0000", time=S0, txid="wire-1")
    a.add_deposit("XXBT", "1.0000000000", time=S0 + 10, txid="btc-tx-1", fee="0.0001000000")
    a.add_deposit("XETH", "1.0000000000", time=S0 + 20, txid="eth-tx-0", status="Settled")
    a.add_deposit("XETH", "10.0000000000", time=S0 + 30, txid="eth-tx-1")
    a.add_trade(
        "XXBTZUSD",
        side="buy",
        price="67000.1",
        vol="2.00000000",
        cost="134000.20000",
        fee="348.40052",
        time=S0 + 3600.1234,
    )
    a.add_trade(
        "XETHZUSD",
        side="sell",
        price="3800.55",
        vol="4.50000000",
        cost="17102.47500",
        fee="27.36396",
        time=S0 + 7200.5,
    )
    a.add_withdrawal("XXBT", "0.5000000000", "0.0001500000", time=S0 + 86400, txid="btc-out-1")
    a.add_withdrawal("XXBT", "0.2500000000", "0.0001500000", time=S0 + 86500,
                     status="Failure")  # fmt: skip


BALANCES = {
    "BTC": D("2.49975"),  # 1 - 0.0001 + 2 - 0.5 - 0.00015
    "ETH": D("5.5"),  # 10 - 4.5 (the settled deposit still waits)
    "USD": D("132726.51052"),  # 250000 - 134000.2 - 348.40052 + 17102.475 - 27.36396
}
ENTRIES = [
    LedgerEntry(id="kraken:deposit:wire-1", timestamp=T0, kind="deposit", account="main",
                asset="USD", amount=D("250000"), external_id="wire-1"),
    LedgerEntry(id="kraken:deposit:btc-tx-1", timestamp=T0 + 10_000, kind="deposit",
                account="main", asset="BTC", amount=D("1"), fee_asset="BTC",
                fee_amount=D("0.0001"), external_id="btc-tx-1"),
    LedgerEntry(id="kraken:deposit:eth-tx-1", timestamp=T0 + 30_000, kind="deposit",
                account="main", asset="ETH", amount=D("10"), external_id="eth-tx-1"),
    LedgerEntry(id="kraken:trade:TC00005-FL4SZ-3FKGH6", timestamp=T0 + 3_600_123, kind="buy",
                account="main", asset="BTC", amount=D("2"), counter_asset="USD",
                counter_amount=D("134000.2"), fee_asset="USD", fee_amount=D("348.40052"),
                external_id="TC00005-FL4SZ-3FKGH6"),
    LedgerEntry(id="kraken:trade:TC00007-FL4SZ-3FKGH6", timestamp=T0 + 7_200_500, kind="sell",
                account="main", asset="ETH", amount=D("4.5"), counter_asset="USD",
                counter_amount=D("17102.475"), fee_asset="USD", fee_amount=D("27.36396"),
                external_id="TC00007-FL4SZ-3FKGH6"),
    LedgerEntry(id="kraken:withdrawal:AGBSO00009-FL4SZ-3FKGH6", timestamp=T0 + DAY,
                kind="withdrawal", account="main", asset="BTC", amount=D("0.5"),
                fee_asset="BTC", fee_amount=D("0.00015"), external_id="AGBSO00009-FL4SZ-3FKGH6"),
]  # fmt: skip


@pytest_asyncio.fixture
async def make(fake: FakeKrakenAccount) -> AsyncIterator[Callable[..., CcxtAccountClient]]:
    made: list[CcxtAccountClient] = []

    def make(key: str = KEY, secret: str = SECRET) -> CcxtAccountClient:
        client = CcxtAccountClient(
            "kraken", ExchangeCredentials(key, secret), account="main",
            http_url=fake.exchange.base_url, config={"enableRateLimit": False},
            clock=lambda: NOW,
        )  # fmt: skip
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


async def test_balances_trades_and_transfers_map_exactly(fake, make):
    client = make()
    assert not client.needs_symbols
    assert await client.fetch_balances() == BALANCES
    trades = await client.fetch_trades(START)
    deposits = await client.fetch_deposits(START)
    withdrawals = await client.fetch_withdrawals(START)
    assert [*deposits, *trades, *withdrawals] == [*ENTRIES[:3], *ENTRIES[3:5], ENTRIES[5]]
    (form,) = fake.calls("TradesHistory")
    assert (form["start"], form["ofs"]) == (str(START // 1000 - 1), "0")
    assert [f["start"] for f in fake.calls("DepositStatus")] == [str(START // 1000)]


async def test_trade_history_pages_by_offset_until_a_short_page(fake, make):
    for i in range(50):
        fake.add_trade("SOLUSD", side="buy", price="150.00", vol="1.00000000", cost="150.00000",
                       fee="0.39000", time=S0 + 10_000 + i)  # fmt: skip
    trades = await make().fetch_trades(START)
    assert len(trades) == 52
    assert len({t.id for t in trades}) == 52
    assert [f["ofs"] for f in fake.calls("TradesHistory")] == ["0", "50"]
    assert len({f["end"] for f in fake.calls("TradesHistory")}) == 1  # one fixed end


@pytest.mark.parametrize(
    ("key", "secret", "said"),
    [
        ("not-the-key", SECRET, "EAPI:Invalid key"),
        (KEY, base64.b64encode(b"some other secret").decode(), "EAPI:Invalid signature"),
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
    assert message.startswith("kraken refused the API credentials of account 'main'")
    assert said in message
    assert "API-Key" in caplog.text  # ccxt logged the request, key blanked
    for text in (message, repr(logs), caplog.text):
        for credential in (KEY, SECRET, key, secret):
            assert credential not in text


# -- the service, on the real ledger --------------------------------------------------------


@pytest_asyncio.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[LedgerService]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    migrate.upgrade(url)
    service = LedgerService(create_engine(url), SecretBox(generate_key()), clock=lambda: NOW)
    credentials = ExchangeCredentials(KEY, SECRET)
    spec = AccountSpec("main", "exchange", exchange="kraken", credentials=credentials)
    await service.add_account(TENANT, spec)
    try:
        yield service
    finally:
        await service.close()


@pytest.fixture
def sync(fake: FakeKrakenAccount, ledger: LedgerService) -> SyncService:
    def clients(exchange: str, credentials: Any, account: str) -> CcxtAccountClient:
        return CcxtAccountClient(exchange, credentials, account=account,
                                 http_url=fake.exchange.base_url,
                                 config={"enableRateLimit": False}, clock=lambda: NOW)  # fmt: skip

    return SyncService(ledger, clients, history_start_ms=START, clock=lambda: NOW)


async def test_sync_twice_then_reconcile_and_flag_what_the_exchange_changed(
    fake, ledger, sync, caplog
):
    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as logs:
        first = await sync.sync_account(TENANT, "main")
    assert first == SyncResult("main", trades=2, deposits=3, withdrawals=1, added=6, skipped=0,
                               balances=BALANCES)  # fmt: skip
    for text in (repr(logs), caplog.text):
        assert KEY not in text
        assert SECRET not in text
    assert sorted(await ledger.entries(TENANT), key=lambda e: e.id) == sorted(
        ENTRIES, key=lambda e: e.id
    )
    again = await sync.sync_account(TENANT, "main")
    assert (again.added, again.skipped) == (0, 6)  # all within the overlap: nothing new

    report = await sync.reconciliation(TENANT)
    assert report.ok
    assert [(line.asset, line.ledger) for line in report.lines] == list(BALANCES.items())

    fake.set_balance("XETH", "5.4")
    fake.set_balance("SOL", "3")
    fake.add_trade("XXBTZUSD", side="sell", price="70000.0", vol="0.10000000", cost="7000.00000",
                   fee="18.20000", time=S0 + 10 * 86400)  # fmt: skip
    third = await sync.sync_account(TENANT, "main")
    assert (third.trades, third.added) == (3, 1)
    report = await sync.reconciliation(TENANT)
    assert report.differences == (
        ReconLine("main", "ETH", D("5.5"), D("5.4"), D("-0.1"), "mismatch"),
        ReconLine("main", "SOL", D("0"), D("3"), D("3"), "missing_in_ledger"),
    )
    assert {line.asset: line.status for line in report.lines} == {
        "BTC": "ok", "ETH": "mismatch", "SOL": "missing_in_ledger", "USD": "ok",
    }  # fmt: skip
