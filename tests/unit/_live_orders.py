"""Live orders under test: the order service over a real SQLite order log and ledger,
its live venue on real ccxt binance against the fake's trading endpoints.

The fake account holds 10000 USDT and 1 BTC; the BTCUSDT book bids 0.5 at 66990 and
asks 0.01 at 67000 and 1 at 67010 (the same book is in the cache, as the feed would
have put it). Ledger accounts of tenant ``acme``: ``main`` (binance, with the fake's
key), ``nokey`` (binance, no credentials) and ``krak`` (kraken).
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from cryptodesk.adapters.cache.memory import MemoryCache
from cryptodesk.adapters.db.engine import create_engine
from cryptodesk.adapters.db.order_log_store import SqlOrderLog
from cryptodesk.adapters.exchanges.ccxt_account import CcxtAccountClient
from cryptodesk.adapters.exchanges.ccxt_orders import CcxtOrders
from cryptodesk.adapters.secrets import SecretBox, generate_key
from cryptodesk.domain import codec
from cryptodesk.domain.market import OrderBook
from cryptodesk.domain.orders import OrderRequest
from cryptodesk.portfolio.accounts import AccountSpec, ExchangeCredentials
from cryptodesk.services import cache_keys
from cryptodesk.services.circuit_breakers import BreakerStates
from cryptodesk.services.ledger_service import LedgerService
from cryptodesk.services.live_orders import LiveOrders
from cryptodesk.services.order_service import OrderService, default_instruments, halted_by
from cryptodesk.services.paper_feed import cached_books
from cryptodesk.services.portfolio_sync import SyncService
from cryptodesk.trading.order_log import Record
from cryptodesk.trading.pretrade import RiskLimits
from tests.fakes.binance import T0, FakeBinance
from tests.fakes.binance_account import FakeBinanceAccount
from tests.fakes.binance_orders import FakeBinanceOrders
from tests.fakes.binance_user_stream import FakeBinanceUserStream

D = Decimal
# The example key pair of Binance's request-security documentation.
KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
NOW = T0  # the service's clock: the fake's trades are at or after it
TENANT = "acme"
LIVE = "live:binance"
ORDER_PATH = "/api/v3/order"
Gateways = Callable[[str, Any, str], Any]


class Crash(BaseException):
    """The process dies (here: right after the exchange answered the create)."""


class CrashingGateway:
    """The real gateway, except that the process dies once the create has landed."""

    def __init__(self, inner: CcxtOrders) -> None:
        self.inner, self.venue = inner, inner.venue

    async def create(self, request: OrderRequest, *, client_order_id: str) -> Any:
        await self.inner.create(request, client_order_id=client_order_id)
        raise Crash

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class FlakyLedger:
    """The real ledger service, whose imports fail while ``failing`` is set."""

    def __init__(self, ledger: LedgerService) -> None:
        self.ledger, self.failing, self.imports = ledger, False, 0

    async def import_entries(self, tenant: str, entries: Sequence[Any]) -> Any:
        self.imports += 1
        if self.failing:
            raise RuntimeError("ledger database is down")
        return await self.ledger.import_entries(tenant, entries)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ledger, name)


class RacingLog:
    """The real store, except that before the writes numbered in ``race`` (1: the
    first write) another process appends a record of its own, taking the seq."""

    def __init__(self, store: SqlOrderLog, race: set[int]) -> None:
        self.store, self.race, self.writes = store, race, 0

    async def append(self, tenant: str, records: Sequence[Record]) -> None:
        self.writes += 1
        if self.writes in self.race:
            seq = int(records[0]["seq"])
            await self.store.append(tenant, [{"seq": seq, "ts": NOW, "type": "revive",
                                              "account": None}])  # fmt: skip
        await self.store.append(tenant, records)

    async def records(self, tenant: str, *, after: int = 0) -> list[Record]:
        return await self.store.records(tenant, after=after)

    async def tenants(self) -> list[str]:
        return await self.store.tenants()


class Env:
    """The fake exchange, the database, and services made on demand (each one a
    process: a new one replays the log)."""

    def __init__(self, fake: FakeBinanceOrders, engine: AsyncEngine, ledger: LedgerService) -> None:
        self.fake, self.engine, self.ledger = fake, engine, ledger
        self.flaky = FlakyLedger(ledger)
        self.store = SqlOrderLog(engine)
        self.log: SqlOrderLog | RacingLog = self.store  # what new services write to
        self.cache = MemoryCache()
        self.made: list[LiveOrders] = []
        self.published: list[dict[str, Any]] = []
        self.user: FakeBinanceUserStream | None = None  # the account's user data stream

    @property
    def url(self) -> str:
        return self.fake.exchange.base_url

    async def gateway(self, exchange: str, credentials: Any, account: str) -> Any:
        return CcxtOrders(exchange, credentials, account=account, http_url=self.url,
                          config={"enableRateLimit": False})  # fmt: skip

    async def crashing(self, exchange: str, credentials: Any, account: str) -> Any:
        return CrashingGateway(await self.gateway(exchange, credentials, account))

    def client(self, exchange: str, credentials: Any, account: str) -> CcxtAccountClient:
        return CcxtAccountClient(exchange, credentials, account=account, http_url=self.url,
                                 config={"enableRateLimit": False}, clock=lambda: NOW)  # fmt: skip

    def service(self, *, limits: RiskLimits | None = None,
                gateways: Gateways | None = None) -> OrderService:  # fmt: skip
        live = LiveOrders(self.flaky, gateways or self.gateway, self.client,
                          books=cached_books(self.cache), clock=lambda: NOW)  # fmt: skip
        self.made.append(live)
        breakers = BreakerStates(self.cache, exchanges=["binance"], symbols=["BTC/USDT"])

        async def publish(tenant: str, updates: list[dict[str, Any]]) -> None:
            self.published += updates

        return OrderService(self.log, default_instruments(["BTC/USDT"]), limits=limits,
                            halted=halted_by(breakers, ["binance"]), clock=lambda: NOW,
                            on_updates=publish, live=live)  # fmt: skip

    def sync(self) -> SyncService:
        return SyncService(self.ledger, self.client, history_start_ms=NOW - 86_400_000,
                           clock=lambda: NOW + 1_000)  # fmt: skip

    async def book(self) -> None:
        book = OrderBook("binance", "BTC/USDT", NOW, ((66990.0, 0.5),),
                         ((67000.0, 0.01), (67010.0, 1.0)))  # fmt: skip
        await self.cache.set(cache_keys.book("binance", "BTC/USDT"), codec.encode_book(book))

    async def records(self, tenant: str = TENANT) -> list[Record]:
        return await self.store.records(tenant)

    async def kinds(self, tenant: str = TENANT) -> list[str]:
        return [r["type"] for r in await self.records(tenant)]

    async def entry_ids(self, tenant: str = TENANT) -> list[str]:
        return sorted(e.id for e in await self.ledger.entries(tenant))

    async def close(self) -> None:
        for live in self.made:
            await live.close()


async def open_env(tmp_path: Path, template: Path) -> AsyncIterator[Env]:
    exchange = FakeBinance()
    account = FakeBinanceAccount(exchange, api_key=KEY, secret=SECRET)
    account.set_balance("USDT", "10000")
    account.set_balance("BTC", "1")
    exchange.set_book("BTCUSDT", [("66990.00", "0.5")],
                      [("67000.00", "0.01"), ("67010.00", "1")], last_update_id=1)  # fmt: skip
    fake = FakeBinanceOrders(account)  # routes are mounted before the server starts
    user = FakeBinanceUserStream(fake)
    db = tmp_path / "live.db"
    shutil.copyfile(template, db)
    engine = create_engine(f"sqlite+aiosqlite:///{db}")
    ledger = LedgerService(engine, SecretBox(generate_key()), clock=lambda: NOW)
    specs = [
        AccountSpec("main", "exchange", exchange="binance",
                    credentials=ExchangeCredentials(KEY, SECRET)),
        AccountSpec("nokey", "exchange", exchange="binance"),
        AccountSpec("krak", "exchange", exchange="kraken",
                    credentials=ExchangeCredentials("k", "czM=")),
    ]  # fmt: skip
    for spec in specs:
        await ledger.add_account(TENANT, spec)
    await exchange.start()
    env = Env(fake, engine, ledger)
    env.user = user
    await env.book()
    try:
        yield env
    finally:
        await env.close()
        await exchange.stop()
        await ledger.close()
        await engine.dispose()


def limit(side: str, qty: str, price: str, *, account: str = "main", venue: str = LIVE,
          **kw: Any) -> OrderRequest:  # fmt: skip
    return OrderRequest(account, "BTC/USDT", side, "limit", D(qty), D(price), venue=venue, **kw)  # type: ignore[arg-type]


def market(side: str, qty: str, *, account: str = "main", venue: str = LIVE) -> OrderRequest:
    return OrderRequest(account, "BTC/USDT", side, "market", D(qty), venue=venue)  # type: ignore[arg-type]
