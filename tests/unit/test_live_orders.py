"""Live orders through the order service: real ccxt binance against the fake, the
order log and the ledger on SQLite. Write-ahead records, replay, reconcile after a
crash, risk, and every fill in the ledger exactly once.

Every figure follows from the fake's book and fee (0.1% of what is received).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cryptodesk.analytics.vol_breaker import BreakerState
from cryptodesk.domain.orders import OrderRequest
from cryptodesk.services import cache_keys
from cryptodesk.services.circuit_breakers import cache_key, encode_state
from cryptodesk.services.order_service import OrderNotFound
from cryptodesk.trading.errors import OrderRejected
from cryptodesk.trading.pretrade import RiskLimits
from tests.unit._ledger_api import migrated_template
from tests.unit._live_orders import (
    LIVE,
    NOW,
    ORDER_PATH,
    TENANT,
    Crash,
    D,
    Env,
    RacingLog,
    limit,
    market,
    open_env,
)

TRADE_IDS = ["binance:trade:BTCUSDT:28457", "binance:trade:BTCUSDT:28458"]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return migrated_template(tmp_path_factory.mktemp("live-orders"))


@pytest.fixture
async def env(tmp_path: Path, template: Path) -> AsyncIterator[Env]:
    async for made in open_env(tmp_path, template):
        yield made


def exchange_calls(env: Env, method: str, path: str = ORDER_PATH) -> int:
    return sum(1 for m, p, _ in env.fake.exchange.server.requests if (m, p) == (method, path))


async def test_market_order_fills_and_each_fill_is_one_ledger_entry(env: Env) -> None:
    service = env.service()
    placed = await service.submit(TENANT, market("buy", "0.02"))
    order = placed.order
    assert placed.new
    assert (order.order_id, order.client_order_id, order.venue, order.status) == (
        "L822b330000000001", None, LIVE, "filled")  # fmt: skip
    assert (order.filled, order.average_price) == (D("0.02"), D("67005"))
    assert env.fake.orders[4_000_001]["clientOrderId"] == "L822b330000000001"
    fills = await service.fills(TENANT)
    assert [(f.trade_id, f.order_id, f.account, f.price, f.quantity, f.fee, f.fee_asset,
             f.venue) for f in fills] == [
        ("28457", "L822b330000000001", "main", D("67000"), D("0.01"), D("0.00001"), "BTC", LIVE),
        ("28458", "L822b330000000001", "main", D("67010"), D("0.01"), D("0.00001"), "BTC", LIVE),
    ]  # fmt: skip
    assert await env.kinds() == ["live_submit", "live_update", "live_update"]
    records = await env.records()
    assert records[0]["order_id"] == "L822b330000000001"
    assert records[2]["booked"] == [["BTC/USDT", "28457"], ["BTC/USDT", "28458"]]
    entries = {e.id: e for e in await env.ledger.entries(TENANT)}
    assert sorted(entries) == TRADE_IDS
    first = entries[TRADE_IDS[0]]
    assert (first.kind, first.account, first.asset, first.amount, first.counter_asset,
            first.counter_amount, first.fee_asset, first.fee_amount) == (
        "buy", "main", "BTC", D("0.01"), "USDT", D("670"), "BTC", D("0.00001"))  # fmt: skip
    ((position, mark),) = await service.positions(TENANT)
    assert (position.account, position.quantity, position.fees, mark) == (
        "main", D("0.01998"), D("1.3401"), D("67010"))  # fmt: skip
    # The account sync meets the same trades: it adds nothing.
    result = await env.sync().sync_account(TENANT, "main")
    assert (result.trades, result.added, result.skipped) == (2, 0, 2)
    assert await env.entry_ids() == TRADE_IDS


async def test_limit_order_fills_in_part_is_cancelled_and_cannot_be_amended(env: Env) -> None:
    service = env.service()
    placed = await service.submit(TENANT, limit("sell", "0.5", "70000", client_order_id="mine-1"))
    assert (placed.order.order_id, placed.order.client_order_id, placed.order.status) == (
        "L822b330000000001", "mine-1", "accepted")  # fmt: skip
    again = await service.submit(TENANT, limit("sell", "0.5", "70000", client_order_id="mine-1"))
    assert (again.new, again.order) == (False, placed.order)
    assert list(env.fake.orders) == [4_000_001]
    env.fake.fill(4_000_001, "0.2", time=NOW + 5)
    cancelled = await service.cancel(TENANT, "L822b330000000001")
    assert (cancelled.status, cancelled.filled, cancelled.close_reason) == (
        "cancelled", D("0.2"), "client")  # fmt: skip
    assert env.fake.orders[4_000_001]["status"] == "CANCELED"
    fills = await service.fills(TENANT, account="main")
    assert [(f.trade_id, f.side, f.price, f.quantity, f.fee, f.fee_asset, f.liquidity)
            for f in fills] == [
        ("28457", "sell", D("70000"), D("0.2"), D("14"), "USDT", "maker")]  # fmt: skip
    assert cancelled.fees == D("14")
    assert await env.entry_ids() == ["binance:trade:BTCUSDT:28457"]
    deletes = exchange_calls(env, "DELETE")
    assert await service.cancel(TENANT, "L822b330000000001") == cancelled  # final: unchanged
    assert exchange_calls(env, "DELETE") == deletes
    with pytest.raises(OrderRejected) as refused:
        await service.amend(TENANT, "L822b330000000001", price=D("71000"))
    assert refused.value.rule == "not_amendable"
    assert [o.order_id for o in await service.orders(TENANT, status="cancelled")] == [
        "L822b330000000001"
    ]
    # Another tenant sees none of it and cannot cancel it.
    assert await service.orders("other") == []
    assert await service.fills("other") == []
    for attempt in (
        service.order("other", "L822b330000000001"),
        service.cancel("other", "L822b330000000001"),
    ):
        with pytest.raises(OrderNotFound):
            await attempt


async def test_risk_and_the_account_refuse_before_the_exchange_is_called(env: Env) -> None:
    service = env.service(limits=RiskLimits(max_order_quantity=D("1")))

    async def rule(request: OrderRequest) -> str | None:
        return (await service.submit(TENANT, request)).order.reject_rule

    assert await rule(limit("sell", "2", "70000")) == "max_quantity"
    assert await rule(limit("buy", "0.1", "60000", account="ghost")) == "unknown_venue"
    assert await rule(limit("buy", "0.1", "60000", account="krak")) == "unknown_venue"
    assert await rule(limit("buy", "0.1", "60000", venue="live:kraken")) == "unknown_venue"
    assert await rule(limit("buy", "0.1", "60000", account="nokey")) == "no_credentials"
    stop = OrderRequest("main", "BTC/USDT", "buy", "stop_market", D("0.1"), stop_price=D("70000"),
                        venue=LIVE)  # fmt: skip
    assert await rule(stop) == "order_type"
    halted = BreakerState("binance", "BTC/USDT", "halted", NOW, 0.02, 0.004, 5.0, "volatile")
    await env.cache.set(cache_key("binance", "BTC/USDT"), encode_state(halted, None))
    assert await rule(limit("sell", "0.1", "70000")) == "halted"
    await env.cache.delete(cache_key("binance", "BTC/USDT"))
    await env.cache.delete(cache_keys.book("binance", "BTC/USDT"))
    assert await rule(market("buy", "0.01")) == "no_book"
    assert env.fake.orders == {}
    assert await env.kinds() == []  # a refusal before the exchange writes nothing


async def test_kill_switch_cancels_live_orders_on_the_exchange(env: Env) -> None:
    service = env.service()
    await service.submit(TENANT, limit("sell", "0.1", "80000"))
    await service.submit(TENANT, limit("buy", "0.1", "60000"))
    killed = await service.kill(TENANT, "main")
    assert [(o.order_id, o.status, o.close_reason) for o in killed] == [
        ("L822b330000000001", "cancelled", "kill_switch"),
        ("L822b330000000002", "cancelled", "kill_switch"),
    ]
    assert [o["status"] for o in env.fake.orders.values()] == ["CANCELED", "CANCELED"]
    again = await service.submit(TENANT, limit("sell", "0.1", "80000"))
    assert again.order.reject_rule == "kill_switch"
    assert len(env.fake.orders) == 2
    await service.revive(TENANT, "main")
    assert (await service.submit(TENANT, limit("sell", "0.1", "80000"))).order.status == "accepted"


async def test_an_exchange_refusal_is_not_kept_even_after_replay(env: Env) -> None:
    service = env.service()
    placed = await service.submit(TENANT, limit("buy", "1", "60000"))  # 60000 USDT > 10000
    assert (placed.order.status, placed.order.reject_rule) == ("rejected", "insufficient_balance")
    assert await service.orders(TENANT) == []
    records = await env.records()
    assert [r["type"] for r in records] == ["live_submit", "live_update"]
    assert (records[1]["removed"], records[1]["state_seq"]) == (["L822b330000000001"], 1)
    assert await env.service().orders(TENANT) == []
    accepted = await service.submit(TENANT, limit("buy", "0.1", "60000"))
    assert accepted.order.order_id == "L822b330000000002"  # numbers are never reused


async def test_a_crash_between_submit_and_answer_is_settled_once_at_restart(env: Env) -> None:
    crashing = env.service(gateways=env.crashing)
    with pytest.raises(Crash):
        await crashing.submit(TENANT, market("buy", "0.02"))
    assert env.fake.orders[4_000_001]["status"] == "FILLED"
    assert await env.kinds() == ["live_submit"]

    restarted = env.service()
    (order,) = await restarted.orders(TENANT)  # the log alone: sent, outcome unknown
    assert (order.order_id, order.status) == ("L822b330000000001", "new")
    await env.made[-1].idle()  # the reconcile started by the first use
    (order,) = await restarted.orders(TENANT)
    assert (order.status, order.filled, order.average_price) == ("filled", D("0.02"), D("67005"))
    assert [f.trade_id for f in await restarted.fills(TENANT)] == ["28457", "28458"]
    assert await env.kinds() == ["live_submit", "live_update", "live_update"]
    assert await env.entry_ids() == TRADE_IDS

    again = env.service()
    assert (await again.orders(TENANT)) == [order]
    await env.made[-1].idle()
    assert await env.kinds() == ["live_submit", "live_update", "live_update"]
    assert len(env.fake.orders) == 1


async def test_a_create_without_answer_is_new_until_the_next_command_reconciles(env: Env) -> None:
    service = env.service()
    env.fake.exchange.server.fail_next(ORDER_PATH, 503, {"code": -1001, "msg": "Internal error."})
    placed = await service.submit(TENANT, limit("sell", "0.1", "80000"))
    assert (placed.new, placed.order.order_id, placed.order.status) == (
        True,
        "L822b330000000001",
        "new",
    )
    assert env.fake.orders == {}
    second = await service.submit(TENANT, limit("sell", "0.1", "81000"))
    assert second.order.status == "accepted"
    first = await service.order(TENANT, "L822b330000000001")
    assert (first.status, first.reject_rule) == ("rejected", "unknown_order")
    assert [o["clientOrderId"] for o in env.fake.orders.values()] == ["L822b330000000002"]


async def test_replay_rebuilds_every_live_state_exactly(env: Env) -> None:
    service = env.service()
    await service.submit(TENANT, market("buy", "0.02"))
    await service.submit(TENANT, limit("sell", "0.5", "70000", client_order_id="mine-1"))
    await service.submit(TENANT, limit("buy", "1", "60000"))  # refused by the exchange
    env.fake.fill(4_000_002, "0.2", time=NOW + 5)
    await service.cancel(TENANT, "L822b330000000002")
    await service.submit(TENANT, limit("buy", "0.01", "65000"))  # rests
    live = env.made[-1]
    states = await live.states(service, TENANT)
    assert list(states) == ["live:binance main"]
    assert states["live:binance main"]["seq"] == 4

    replayed = env.service()
    assert await env.made[-1].states(replayed, TENANT) == states
    assert await replayed.orders(TENANT) == await service.orders(TENANT)
    assert await replayed.fills(TENANT) == await service.fills(TENANT)
    assert await replayed.positions(TENANT) == await service.positions(TENANT)
    known = await replayed.submit(TENANT, limit("sell", "0.5", "70000", client_order_id="mine-1"))
    assert (known.new, known.order.order_id) == (False, "L822b330000000002")


async def test_a_ledger_failure_keeps_fills_until_a_later_command(env: Env) -> None:
    service = env.service()
    env.flaky.failing = True
    await service.submit(TENANT, market("buy", "0.02"))
    assert await env.entry_ids() == []
    assert await env.kinds() == ["live_submit", "live_update"]
    env.flaky.failing = False
    await service.submit(TENANT, limit("sell", "0.1", "80000"))
    assert await env.entry_ids() == TRADE_IDS
    assert await env.kinds() == ["live_submit", "live_update", "live_update", "live_submit",
                                 "live_update"]  # fmt: skip
    imports = env.flaky.imports
    await env.made[-1].reconcile(service, TENANT)
    assert (env.flaky.imports, await env.entry_ids()) == (imports, TRADE_IDS)


async def test_a_trade_the_sync_imported_first_is_not_imported_twice(env: Env) -> None:
    service = env.service()
    await service.submit(TENANT, limit("sell", "0.5", "70000"))
    env.fake.fill(4_000_001, time=NOW + 5)
    result = await env.sync().sync_account(TENANT, "main")
    assert (result.trades, result.added) == (1, 1)
    await env.made[-1].reconcile(service, TENANT)  # learns the fill
    (order,) = await service.orders(TENANT)
    assert (order.status, order.filled) == ("filled", D("0.5"))
    assert await env.entry_ids() == ["binance:trade:BTCUSDT:28457"]
    assert (await env.records())[-1]["booked"] == [["BTC/USDT", "28457"]]


async def test_another_process_s_live_records_are_applied_before_the_next_command(
    env: Env,
) -> None:
    here, there = env.service(), env.service()
    assert await there.orders(TENANT) == []  # loaded before "here" places anything
    await here.submit(TENANT, limit("sell", "0.1", "80000"))
    placed = await there.submit(TENANT, limit("sell", "0.1", "81000"))
    assert placed.order.order_id == "L822b330000000002"
    cancelled = await there.cancel(TENANT, "L822b330000000001")  # placed by the other process
    assert (cancelled.status, cancelled.close_reason) == ("cancelled", "client")
    assert [(o.order_id, o.status) for o in await here.orders(TENANT)] == [
        ("L822b330000000001", "cancelled"), ("L822b330000000002", "accepted")]  # fmt: skip
    assert await env.made[0].states(here, TENANT) == await env.made[1].states(there, TENANT)


async def test_a_seq_taken_meanwhile_decides_a_submit_again_but_never_resends(env: Env) -> None:
    env.log = RacingLog(env.store, race={1})  # before the live_submit
    service = env.service()
    placed = await service.submit(TENANT, limit("sell", "0.1", "80000"))
    assert (placed.order.order_id, placed.order.status) == ("L822b330000000001", "accepted")
    assert await env.kinds() == ["revive", "live_submit", "live_update"]

    env.log = RacingLog(env.store, race={2})  # before the live_update: the answer is kept
    racing = env.service()
    second = await racing.submit(TENANT, limit("sell", "0.1", "81000"))
    assert (second.order.order_id, second.order.status) == ("L822b330000000002", "accepted")
    assert (await env.kinds())[3:] == ["live_submit", "revive", "live_update"]
    assert [o["clientOrderId"] for o in env.fake.orders.values()] == [
        "L822b330000000001", "L822b330000000002"]  # fmt: skip
    replayed = env.service()
    assert await replayed.orders(TENANT) == await racing.orders(TENANT)
    assert [o.status for o in await replayed.orders(TENANT)] == ["accepted", "accepted"]
