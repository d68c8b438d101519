"""The portfolio routes over the real services: ledger on SQLite, prices from the cache."""

from __future__ import annotations

import csv
import io
import shutil
from collections.abc import AsyncIterator
from datetime import date
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from cryptodesk.adapters.cache.memory import MemoryCache
from cryptodesk.adapters.db.engine import create_engine
from cryptodesk.adapters.db.sql_store import SqlMarketStore
from cryptodesk.api.app import create_app
from cryptodesk.api.routes.ledger import ledger_router
from cryptodesk.config import load_settings
from cryptodesk.domain import codec
from cryptodesk.domain.market import Candle, Ticker
from cryptodesk.portfolio_wiring import Portfolio, build_portfolio
from cryptodesk.services import cache_keys
from tests.unit._auth import Logins, auth_service
from tests.unit._fakes import Harness
from tests.unit._ledger_api import CSV, import_csv, migrated_template, problem

T_PRICE = 1_714_564_800_000  # 2024-05-01T12:00:00Z


def num(*values: str | None) -> tuple[Decimal | None, ...]:
    """Decimal strings compared by value: splits carry the engine's 8 places."""
    return tuple(None if v is None else Decimal(v) for v in values)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return migrated_template(tmp_path_factory.mktemp("portfolio-api"))


class Env:
    def __init__(
        self, app: object, portfolio: Portfolio, cache: MemoryCache, logins: Logins
    ) -> None:
        self.app, self.portfolio, self.cache, self.logins = app, portfolio, cache, logins

    def client(self, tenant: str = "acme") -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)  # type: ignore[arg-type]
        return httpx.AsyncClient(
            transport=transport, base_url="http://t", auth=self.logins.bearer(tenant, "admin")
        )


@pytest.fixture
async def env(tmp_path: Path, template: Path) -> AsyncIterator[Env]:
    db = tmp_path / "p.db"
    shutil.copyfile(template, db)
    settings = load_settings(
        data_dir=tmp_path, database_url=f"sqlite+aiosqlite:///{db}", exchanges=["sim"]
    )
    store = SqlMarketStore(create_engine(settings.database_url))
    cache = MemoryCache()
    portfolio = build_portfolio(settings, store.engine, cache, store)
    h = Harness()
    logins = Logins(auth_service(store.engine))
    app = create_app(
        h.queries, h.metrics, h.health,
        routers=[ledger_router(portfolio.ledger), portfolio.router()], auth=logins.auth,
    )  # fmt: skip
    yield Env(app, portfolio, cache, logins)
    await portfolio.close()
    await store.close()


async def test_portfolio_values_positions_at_cached_prices_and_names_missing_ones(env: Env) -> None:
    async with env.client() as c:
        assert (await import_csv(c, CSV)).json() == {"added": 5, "skipped": 0}
        ticker = Ticker("sim", "BTC/USDT", T_PRICE, 60000.0)
        await env.cache.set(cache_keys.ticker("sim", "BTC/USDT"), codec.encode_ticker(ticker))
        r = await c.get("/api/v1/portfolio")
        assert r.status_code == 200, r.text
        body = r.json()
        # Per wallet (FIFO): kraken keeps 0.1499 of b2 after the transfer's fee and
        # the sale; cold holds the whole b1 lot and the staked ETH.
        positions = {(p["account"], p["asset"]): p for p in body["positions"]}
        kraken = positions[("kraken", "BTC")]
        assert num(kraken["amount"], kraken["cost_basis"]) == num("0.1499", "6595.6")
        assert num(kraken["market_value"], kraken["unrealized"]) == num("8994", "2398.4")
        assert num(kraken["realized"]) == num("2095.6")  # 2100 on the sale, -4.4 on the fee
        cold = positions[("cold", "BTC")]
        assert num(cold["amount"], cold["cost_basis"], cold["market_value"]) == num(
            "0.5", "20010", "30000"
        )
        eth = positions[("cold", "ETH")]
        assert (eth["price"], eth["market_value"], eth["unrealized"]) == (None, None, None)
        assert body["missing_prices"] == [{"account": "cold", "asset": "ETH", "amount": "0.01"}]
        assert body["total"]["complete"] is False
        assert body["quotes"]["BTC"]["source"] == "ticker:sim:BTC/USDT"
        assert body["quotes"]["ETH"] is None
        only = (await c.get("/api/v1/portfolio/positions")).json()
        assert only["positions"] == body["positions"]
        async with env.client("other") as other:
            empty = (await other.get("/api/v1/portfolio")).json()
        assert empty["positions"] == []


async def test_tax_report_json_and_form_8949_csv_from_the_stored_ledger(env: Env) -> None:
    async with env.client() as c:
        await import_csv(c, CSV)
        r = await c.get("/api/v1/reports/tax", params={"method": "fifo", "year": 2024})
        assert r.status_code == 200, r.text
        report = r.json()
        # Universal FIFO: the transfer moves nothing; its 0.0001 BTC fee and the
        # sale both come out of b1 (cost 20010 for 0.5 BTC).
        assert [(d["disposal_id"], *num(d["amount"], d["cost_basis"], d["proceeds"]))
                for d in report["disposals"]] == [
            ("t1:fee", *num("0.0001", "4.002", "0")),
            ("s1", *num("0.1", "4002", "6500")),
        ]  # fmt: skip
        assert num(report["summary"]["gain"], report["summary"]["income"]) == num("2493.998", "30")
        r = await c.get("/api/v1/reports/tax", params={"method": "fifo", "format": "csv"})
        assert r.headers["content-type"].startswith("text/csv")
        assert 'filename="tax-fifo.csv"' in r.headers["content-disposition"]
        rows = list(csv.reader(io.StringIO(r.text)))
        assert len(rows) == 3
        pdf = await c.get("/api/v1/reports/tax", params={"method": "hifo", "format": "pdf"})
        assert pdf.content.startswith(b"%PDF")
        bad = await c.get("/api/v1/reports/tax", params={"method": "nope"})
        problem(bad, 400, "invalid-parameter")
        uk_wallets = {"method": "uk", "per_wallet": "true"}
        per_wallet_uk = await c.get("/api/v1/reports/tax", params=uk_wallets)
        assert per_wallet_uk.status_code == 400, per_wallet_uk.text


async def test_reconciliation_flags_every_difference_against_entered_balances(env: Env) -> None:
    async with env.client() as c:
        await import_csv(c, CSV)
        put = await c.put(
            "/api/v1/accounts/cold/balances", json={"balances": {"BTC": "0.5", "ETH": "0.02"}}
        )
        assert put.status_code == 200, put.text
        report = (await c.get("/api/v1/portfolio/reconciliation",
                              params={"account": "cold"})).json()  # fmt: skip
        lines = {(x["asset"], x["status"], *num(x["difference"])) for x in report["lines"]}
        assert lines == {("BTC", "ok", Decimal(0)), ("ETH", "mismatch", Decimal("0.01"))}
        assert report["ok"] is False
        bad = await c.get("/api/v1/portfolio/reconciliation", params={"tolerance": "-1"})
        problem(bad, 400, "invalid-parameter")


async def test_daily_pnl_from_stored_closes_and_performance_from_snapshots(
    env: Env, tmp_path: Path
) -> None:
    async with env.client() as c:
        await import_csv(c, CSV)
        day = 1_713_139_200_000  # 2024-04-15T00:00:00Z
        store = env.portfolio.valuation._closes._store  # the market store behind the closes
        candles = [
            Candle("sim", "BTC/USDT", "1d", day - 86_400_000, 61000, 61000, 60000, 60000, 1,
                   trades=1, closed=True),
            Candle("sim", "BTC/USDT", "1d", day, 60000, 62000, 59000, 62000, 1, trades=1,
                   closed=True),
            Candle("sim", "ETH/USDT", "1d", day, 3000, 3000, 3000, 3000, 1, trades=1,
                   closed=True),
        ]  # fmt: skip
        await store.upsert_candles(candles)
        r = await c.get("/api/v1/reports/pnl", params={"date": "2024-04-15"})
        assert r.status_code == 200, r.text
        report = r.json()
        btc = {p["account"]: p for p in report["positions"] if p["asset"] == "BTC"}
        assert num(btc["cold"]["price"], btc["cold"]["day_pnl"]) == num("62000", "1000")
        bad = await c.get("/api/v1/reports/pnl", params={"date": "15/04/2024"})
        problem(bad, 400, "invalid-parameter")
        written = await env.portfolio.daily_report(
            date(2024, 4, 15), tenants=["acme"], formats=["csv"], directory=tmp_path
        )
        assert written == {"acme": [tmp_path / "acme" / "pnl-2024-04-15.csv"]}
        await env.portfolio.valuation.record_snapshot("acme", date(2024, 4, 14))
        perf = await c.get("/api/v1/portfolio/performance",
                           params={"start": "2024-04-14", "end": "2024-04-15"})  # fmt: skip
        assert perf.status_code == 200, perf.text
        result = perf.json()
        # 0.6499 BTC at 60000, then at 62000 plus the 30 of staked ETH (income is
        # return, not a flow): (40293.8 + 30) / 38994 - 1.
        assert num(result["start_value"], result["end_value"], result["net_flows"]) == num(
            "38994", "40323.8", "0"
        )
        assert result["twr"] == "0.0341026825"
        # One day with no flows: the money-weighted rate is that day's return, annualised.
        assert float(result["mwr"]) == pytest.approx((40323.8 / 38994) ** 365 - 1, rel=1e-6)


async def test_scheduled_jobs_report_yesterday_for_every_tenant_and_sync_accounts(
    env: Env, tmp_path: Path
) -> None:
    from cryptodesk.domain.timeutil import now_ms
    from cryptodesk.portfolio_wiring import PNL_JOB, SYNC_JOB
    from cryptodesk.services.pnl_reports import previous_day

    settings = env.portfolio.settings.model_copy(
        update={"portfolio_sync_seconds": 60.0, "pnl_report_dir": tmp_path / "out"}
    )
    env.portfolio.settings = settings
    async with env.client() as c:
        await import_csv(c, CSV)
    jobs = {job.job_id: job for job in env.portfolio.jobs(None)}
    assert (jobs[PNL_JOB].at, jobs[SYNC_JOB].every) == ("00:05", 60.0)
    day = previous_day(now_ms()).isoformat()
    await jobs[PNL_JOB].work()
    assert sorted(p.name for p in (tmp_path / "out" / "acme").iterdir()) == [
        f"pnl-{day}.csv", f"pnl-{day}.html", f"pnl-{day}.xlsx",
    ]  # fmt: skip
    # Only exchange accounts with credentials are synced; this tenant has none.
    assert await jobs[SYNC_JOB].work() == {}


async def test_account_clients_use_the_configured_exchange_host(tmp_path: Path) -> None:
    from cryptodesk.adapters.exchanges.ccxt_account import CcxtAccountClient
    from cryptodesk.portfolio.accounts import ExchangeCredentials
    from cryptodesk.portfolio_wiring import account_clients

    settings = load_settings(
        data_dir=tmp_path,
        exchange_config={"binance": {"http_url": "http://127.0.0.1:9"}},
    )
    make = account_clients(settings)
    client = make("binance", ExchangeCredentials("k", "s"), "main")
    try:
        assert isinstance(client, CcxtAccountClient)
        urls = client._exchange.urls["api"]
        assert urls["public"].startswith("http://127.0.0.1:9/")
    finally:
        await client.close()
