"""The order service over a real SQLite order log: acknowledged only once stored,
rebuilt exactly by replay, and never losing an acknowledged order."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest

from cryptodesk.adapters.cache.memory import MemoryCache
from cryptodesk.adapters.db.engine import StorageError, create_engine
from cryptodesk.adapters.db.order_log_store import OrderLogConflict, SqlOrderLog
from cryptodesk.adapters.ratelimit import MemoryRateLimiter
from cryptodesk.analytics.vol_breaker import BreakerState
from cryptodesk.domain.orders import OrderRequest
from cryptodesk.services.circuit_breakers import BreakerStates, cache_key, encode_state
from cryptodesk.services.order_service import (
    OrderLogMismatch,
    OrderNotFound,
    OrderService,
    Placed,
    default_instruments,
    halted_by,
)
from cryptodesk.trading.errors import OrderRejected
from cryptodesk.trading.order_log import Record
from cryptodesk.trading.pretrade import RiskLimits
from tests.unit._ledger_api import migrated_template

NOW = 1_714_564_800_000
INSTRUMENTS = default_instruments(["BTC/USDT", "ETH/USDT"])


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return migrated_template(tmp_path_factory.mktemp("orders"))


class FlakyLog:
    """The real store, whose writes fail while ``failing`` is set (a database outage)."""

    def __init__(self, store: SqlOrderLog) -> None:
        self.store, self.failing, self.writes = store, False, 0

    async def append(self, tenant: str, records: Sequence[Record]) -> None:
        if self.failing:
            raise StorageError("database error on test.db: disk I/O error")
        self.writes += 1
        await self.store.append(tenant, records)

    async def records(self, tenant: str, *, after: int = 0) -> list[Record]:
        return await self.store.records(tenant, after=after)

    async def tenants(self) -> list[str]:
        return await self.store.tenants()


class Env:
    def __init__(self, store: SqlOrderLog, cache: MemoryCache) -> None:
        self.store, self.cache, self.log = store, cache, FlakyLog(store)
        self.published: list[tuple[str, list[dict[str, Any]]]] = []
        self.now = NOW

    def service(self, **kw: Any) -> OrderService:
        async def publish(tenant: str, updates: list[dict[str, Any]]) -> None:
            self.published.append((tenant, updates))

        breakers = BreakerStates(self.cache, exchanges=["sim"], symbols=["BTC/USDT"])
        return OrderService(self.log, INSTRUMENTS, halted=halted_by(breakers, ["sim"]),
                            clock=lambda: self.now, on_updates=publish, **kw)  # fmt: skip


@pytest.fixture
async def env(tmp_path: Path, template: Path) -> AsyncIterator[Env]:
    db = tmp_path / "orders.db"
    shutil.copyfile(template, db)
    engine = create_engine(f"sqlite+aiosqlite:///{db}")
    yield Env(SqlOrderLog(engine), MemoryCache())
    await engine.dispose()


def limit(account: str, side: str, quantity: str, price: str, **kw: Any) -> OrderRequest:
    return OrderRequest(account, "BTC/USDT", side, "limit", D(quantity), price=D(price), **kw)  # type: ignore[arg-type]


async def seed(service: OrderService) -> None:
    await service.deposit("acme", "alice", "USDT", D("100000"))
    await service.deposit("acme", "bob", "BTC", D("2"))


async def state(service: OrderService, tenant: str = "acme") -> dict[str, Any]:
    return {
        "orders": await service.orders(tenant),
        "fills": await service.fills(tenant),
        "positions": [
            (p.account, p.symbol, p.quantity, p.cost, p.realized, p.fees, mark)
            for p, mark in await service.positions(tenant)
        ],
        "balances": [
            await service.balance(tenant, a, x) for a in ("alice", "bob") for x in ("BTC", "USDT")
        ],
        "book": await service.book(tenant, "BTC/USDT"),
    }


async def test_a_trade_is_stored_and_a_new_service_replays_the_same_state(env: Env) -> None:
    service = env.service()
    await seed(service)
    ask = await service.submit("acme", limit("bob", "sell", "0.5", "60000"))
    bid = await service.submit("acme", limit("alice", "buy", "0.2", "60010"))
    rest = await service.submit("acme", limit("alice", "buy", "0.1", "59000"))
    assert (ask.new, ask.order.order_id, ask.order.status) == (True, "O0000000001", "accepted")
    assert (bid.order.status, bid.order.filled, bid.order.average_price) == (
        "filled", D("0.2"), D("60000"))  # fmt: skip
    assert rest.order.status == "accepted"
    env.now += 1000
    amended = await service.amend("acme", rest.order.order_id, price=D("59500"))
    assert (amended.price, amended.updated_ts) == (D("59500"), NOW + 1000)
    stored = await env.store.records("acme")
    assert [(r["seq"], r["type"]) for r in stored] == [
        (1, "deposit"), (2, "deposit"), (3, "submit"), (4, "submit"), (5, "submit"), (6, "amend"),
    ]  # fmt: skip
    before = await state(service)
    fills = before["fills"]
    assert [(f.trade_id, f.order_id, f.account, f.side, f.price, f.quantity, f.fee,
             f.liquidity) for f in fills] == [
        ("T0000000001", "O0000000001", "bob", "sell", D("60000"), D("0.2"), D("12"), "maker"),
        ("T0000000001", "O0000000002", "alice", "buy", D("60000"), D("0.2"), D("12"), "taker"),
    ]  # fmt: skip
    # alice paid 12000 + 12 fee; 59500 x 0.1 x 1.001 stays reserved for her resting bid.
    # bob holds 0.3 BTC for the rest of his ask and got 12000 - 12 fee.
    assert before["balances"] == [
        (D("0.2"), D(0)), (D("82032.05"), D("5955.95")),
        (D("1.5"), D("0.3")), (D("11988"), D(0)),
    ]  # fmt: skip
    book = {"symbol": "BTC/USDT", "bids": [["59500.00", "0.10000"]],
            "asks": [["60000.00", "0.30000"]], "last_price": "60000.00"}  # fmt: skip
    assert before["book"] == book
    restarted = env.service()
    assert await state(restarted) == before
    again = await restarted.submit("acme", limit("alice", "buy", "0.1", "59000"))
    assert again.order.order_id == "O0000000004"  # the sequence goes on after the replay


async def test_a_failed_write_acknowledges_nothing_and_loses_nothing(env: Env) -> None:
    service = env.service()
    await seed(service)
    first = await service.submit("acme", limit("alice", "buy", "0.1", "59000"))
    env.log.failing = True
    with pytest.raises(StorageError):
        await service.submit("acme", limit("alice", "buy", "0.1", "58000"))
    with pytest.raises(StorageError):
        await service.cancel("acme", first.order.order_id)
    env.log.failing = False
    # Rebuilt from the database: the first order is open, the refused ones never were.
    orders = await service.orders("acme")
    assert [(o.order_id, o.price, o.status) for o in orders] == [
        ("O0000000001", D("59000"), "accepted")]  # fmt: skip
    second = await service.submit("acme", limit("alice", "buy", "0.1", "57000"))
    assert second.order.order_id == "O0000000002"
    assert await service.balance("acme", "alice", "USDT") == (
        D("100000") - D("5905.9") - D("5705.7"), D("5905.9") + D("5705.7"))  # fmt: skip
    assert [o.order_id for o in await env.service().orders("acme")] == [
        "O0000000001", "O0000000002"]  # fmt: skip


async def test_records_another_process_appended_are_applied_before_the_next_command(
    env: Env,
) -> None:
    here, there = env.service(), env.service()
    await seed(here)
    await here.submit("acme", limit("bob", "sell", "0.5", "60000"))
    # "there" built its manager before; it catches up, so its order trades with bob's.
    placed = await there.submit("acme", limit("alice", "buy", "0.5", "60000"))
    assert (placed.order.order_id, placed.order.status) == ("O0000000002", "filled")
    assert [o.status for o in await here.orders("acme")] == ["filled", "filled"]
    with pytest.raises(OrderLogConflict):  # a seq taken meanwhile is refused, not overwritten
        await env.store.append("acme", [{"seq": 4, "ts": NOW, "type": "revive", "account": None}])


async def test_idempotent_client_order_id_and_updates_published_after_the_write(
    env: Env,
) -> None:
    service = env.service()
    await seed(service)
    env.published.clear()
    first = await service.submit("acme", limit("alice", "buy", "0.1", "59000",
                                               client_order_id="c-1"))  # fmt: skip
    repeat = await service.submit("acme", limit("alice", "buy", "0.3", "58000",
                                                client_order_id="c-1"))  # fmt: skip
    assert (first.new, repeat.new, repeat.order) == (True, False, first.order)
    assert len(await env.store.records("acme")) == 3
    assert [(t, [(u["event"], u["status"]) for u in ups]) for t, ups in env.published] == [
        ("acme", [("order", "accepted")])]  # fmt: skip


async def test_halted_kill_switch_and_unknown_orders(env: Env) -> None:
    service = env.service()
    await seed(service)
    halted = BreakerState("sim", "BTC/USDT", "halted", NOW, 0.02, 0.004, 5.0, "volatile")
    await env.cache.set(cache_key("sim", "BTC/USDT"), encode_state(halted, None))
    refused = await service.submit("acme", limit("alice", "buy", "0.1", "59000"))
    assert (refused.order.status, refused.order.reject_rule) == ("rejected", "halted")
    eth = OrderRequest("alice", "ETH/USDT", "buy", "limit", D("1"), price=D("3000"))
    assert (await service.submit("acme", eth)).order.status == "accepted"  # other symbols trade
    assert [o.order_id for o in await service.kill("acme", "alice")] == ["O0000000001"]
    killed = await service.submit("acme", eth)
    assert (killed.order.reject_rule, killed.order.order_id) == ("kill_switch", "")
    await service.revive("acme", "alice")
    assert (await service.submit("acme", eth)).order.status == "accepted"
    with pytest.raises(OrderNotFound):
        await service.cancel("other", "O0000000001")  # another tenant's id is unknown
    with pytest.raises(OrderRejected) as refused_amend:
        await service.amend("acme", "O0000000001", price=D("2900"))
    assert refused_amend.value.rule == "order_closed"
    assert [r["type"] for r in await env.store.records("acme")][-3:] == [
        "kill", "revive", "submit"]  # fmt: skip


async def outcome(service: OrderService, request: OrderRequest) -> str:
    """The order's status, or the rule that refused it."""
    order = (await service.submit("acme", request)).order
    return order.reject_rule or order.status


async def test_a_shared_rate_limiter_counts_an_accounts_orders_across_processes(
    env: Env,
) -> None:
    # Two services over one log are two API processes; the limiter stands for Redis.
    limits = RiskLimits(submit_rate=D("0.01"), submit_burst=2)
    shared = MemoryRateLimiter()
    here, there = (env.service(limits=limits, rate_limiter=shared) for _ in range(2))
    await seed(here)
    assert await outcome(here, limit("alice", "buy", "0.1", "59000")) == "accepted"
    keyed = limit("alice", "buy", "0.1", "58000", client_order_id="k1")
    first = await there.submit("acme", keyed)
    assert first.order.status == "accepted"
    env.published.clear()
    refused = await there.submit("acme", limit("alice", "buy", "0.1", "57000"))
    assert (refused.new, refused.order.status, refused.order.reject_rule) == (
        True, "rejected", "rate_limit")  # fmt: skip
    assert refused.order.reject_reason == "account alice may submit 0.01 orders per second"
    assert [u["reject_rule"] for _, ups in env.published for u in ups] == ["rate_limit"]
    # A repeated client order id is still answered with its order; bob has his own bucket.
    assert await here.submit("acme", keyed) == Placed(first.order, new=False)
    assert await outcome(there, limit("bob", "sell", "0.1", "61000")) == "accepted"
    assert [r["type"] for r in await env.store.records("acme")] == [
        "deposit", "deposit", "submit", "submit", "submit"]  # fmt: skip
    # Without it each process keeps its own bucket: a third process has two tokens more.
    alone = env.service(limits=limits)
    assert [await outcome(alone, limit("alice", "buy", "0.1", p)) for p in ("57000", "56000",
            "55000")] == ["accepted", "accepted", "rate_limit"]  # fmt: skip


async def test_a_finer_grid_replays_the_log_a_coarser_one_is_refused_naming_the_tenant(
    env: Env,
) -> None:
    service = env.service()
    await seed(service)
    await service.submit("acme", limit("alice", "buy", "0.1", "59000.01"))
    finer = default_instruments(["BTC/USDT"], grids={"BTC/USDT": {"tick_size": D("0.005")}})
    before, after = await state(service), await state(OrderService(env.log, finer))
    bids = [[D(p) for p, _ in s.pop("book")["bids"]] for s in (before, after)]
    assert bids == [[D("59000.01")]] * 2
    assert after == before
    coarser = default_instruments(["BTC/USDT"], grids={"BTC/USDT": {"tick_size": D("1")}})
    with pytest.raises(OrderLogMismatch, match=r"^tenant acme's order log does not fit the "
                       r"instruments configured now .*: tick_size: price 59000.01 "):  # fmt: skip
        await OrderService(env.log, coarser).orders("acme")


async def test_an_internal_order_keeps_the_fee_rates_it_was_placed_at(env: Env) -> None:
    service = env.service()
    await seed(service)
    await service.submit("acme", limit("bob", "sell", "0.5", "60000"))  # placed at 0.1 %
    rates = {"BTC/USDT": {"taker_fee": D("0.002"), "maker_fee": D(0)}}
    dearer = default_instruments(["BTC/USDT", "ETH/USDT"], grids=rates)
    later = OrderService(env.log, dearer, clock=lambda: env.now)
    placed = await later.submit("acme", limit("alice", "buy", "0.1", "60000"))
    # bob's resting ask pays the maker rate it was placed at, alice the taker rate of now.
    assert [(f.account, f.fee) for f in await later.fills("acme")] == [
        ("bob", D("6.000")), ("alice", D("12.000"))]  # fmt: skip
    assert placed.order.fees == D("12.000")
    assert await state(OrderService(env.log, INSTRUMENTS)) == await state(later)
    # A record from before the rates were recorded was charged the default 0.1 %.
    stored = await env.store.records("acme")
    old = [{k: v for k, v in r.items() if k != "fees"} for r in stored]
    await env.store.append("old", old)  # another tenant holding the old records
    replayed = OrderService(env.log, dearer)
    assert [f.fee for f in await replayed.fills("old")] == [D("6.000"), D("6.000")]
