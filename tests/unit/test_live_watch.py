"""The live watch: a resting live order filled on the exchange between commands
reaches the order log, the ledger and the publisher at the next poll, in this
process or in one that never placed it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from cryptodesk.adapters.exchanges.ccxt_order_stream import CcxtOrderStream
from cryptodesk.services.live_watch import LiveWatch
from cryptodesk.services.order_service import OrderService, default_instruments
from tests.unit._ledger_api import migrated_template
from tests.unit._live_orders import KEY, LIVE, NOW, SECRET, TENANT, D, Env, limit, open_env


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return migrated_template(tmp_path_factory.mktemp("live-watch"))


@pytest.fixture
async def env(tmp_path: Path, template: Path) -> AsyncIterator[Env]:
    async for made in open_env(tmp_path, template):
        yield made


async def test_fills_made_between_commands_arrive_at_the_next_poll(env: Env) -> None:
    api = env.service()
    placed = await api.submit(TENANT, limit("sell", "0.5", "70000"))
    assert placed.order.status == "accepted"
    watch = LiveWatch(env.service(), poll_seconds=0.01)  # the compute role: another process
    assert await watch.poll() == 1  # loads the tenant: an open live order, reconciled
    assert await env.kinds() == ["live_submit", "live_update"]  # nothing new yet
    env.fake.fill(4_000_001, "0.2", time=NOW + 5)
    env.published.clear()
    assert await watch.poll() == 1
    order = await api.order(TENANT, "L822b330000000001")  # the API process catches up
    assert (order.status, order.filled) == ("partially_filled", D("0.2"))
    assert [(f.trade_id, f.quantity, f.price) for f in await api.fills(TENANT)] == [
        ("28457", D("0.2"), D("70000"))]  # fmt: skip
    assert await env.entry_ids() == ["binance:trade:BTCUSDT:28457"]
    assert [(u["event"], u.get("status")) for u in env.published] == [
        ("order", "partially_filled"), ("fill", None)]  # fmt: skip
    env.fake.fill(4_000_001, "0.3", time=NOW + 6)
    assert await watch.poll() == 1
    assert (await api.order(TENANT, "L822b330000000001")).status == "filled"
    assert len(await env.entry_ids()) == 2
    assert await watch.poll() == 0  # nothing open, everything booked: no exchange call
    assert (watch.polls, watch.reconciled) == (4, 3)


async def test_a_service_without_live_venues_cannot_be_watched(env: Env) -> None:
    with pytest.raises(ValueError, match="no live venues"):
        LiveWatch(OrderService(env.store, default_instruments(["BTC/USDT"])))


async def test_run_polls_until_stopped_then_closes_the_exchange_sessions(env: Env) -> None:
    service = env.service()
    await service.submit(TENANT, limit("sell", "0.5", "70000"))
    watch = LiveWatch(service, poll_seconds=0.01)
    stop = asyncio.Event()
    task = asyncio.create_task(watch.run(stop))
    for _ in range(500):
        if watch.polls >= 3:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await task
    assert watch.polls >= 3
    assert watch.reconciled == watch.polls  # the order stays open: every round asks
    assert env.made[-1]._gateways == {}  # closed


def fills_published(env: Env) -> int:
    return sum(1 for update in env.published if update["event"] == "fill")


async def until(check: Callable[[], bool], task: asyncio.Task[None]) -> None:
    for _ in range(2_000):  # ~10 s at most
        if check():
            return
        if task.done():
            task.result()
            raise AssertionError("the watch ended")
        await asyncio.sleep(0.005)
    raise AssertionError("condition never held")


async def test_a_pushed_update_reconciles_at_once_and_a_dropped_stream_catches_up(
    env: Env,
) -> None:
    api = env.service()
    await api.submit(TENANT, limit("sell", "0.5", "70000"))
    exchange = env.fake.exchange

    async def streams(name: str, credentials: Any, account: str) -> CcxtOrderStream:
        return CcxtOrderStream(name, credentials, account=account, http_url=exchange.base_url,
                               ws_url=exchange.ws_url)  # fmt: skip

    # No poll but the first: whatever follows comes through the stream.
    watch = LiveWatch(env.service(), poll_seconds=3600, streams=streams, retry_delay=0.01)
    stop = asyncio.Event()
    task = asyncio.create_task(watch.run(stop))
    try:
        # The first poll's reconcile, then the one after the subscribe: then idle.
        await until(lambda: watch.subscribes == 1 and watch.reconciled == 2, task)
        assert watch.listening == [(TENANT, LIVE, "main")]
        env.fake.fill(4_000_001, "0.2", time=NOW + 5)  # the fake pushes an executionReport
        await until(lambda: fills_published(env) == 1, task)
        order = await api.order(TENANT, "L822b330000000001")
        assert (order.status, order.filled) == ("partially_filled", D("0.2"))
        assert watch.pushes >= 1
        # The stream drops; a fill while nobody listens is read over REST after the
        # resubscribe.
        await exchange.drop_websockets()
        env.fake.fill(4_000_001, time=NOW + 6)
        await until(lambda: watch.subscribes == 2 and fills_published(env) == 2, task)
        assert (await api.order(TENANT, "L822b330000000001")).status == "filled"
        await until(lambda: watch.listening == [], task)  # nothing open: the stream closes
        assert watch.polls == 1
    finally:
        stop.set()
        await task


async def test_the_compute_role_s_streams_dial_the_configured_hosts(env: Env) -> None:
    from cryptodesk.config import Settings
    from cryptodesk.portfolio.accounts import ExchangeCredentials
    from cryptodesk.trading_wiring import _order_streams

    exchange = env.fake.exchange
    settings = Settings(exchange_config={"binance": {"http_url": exchange.base_url,
                                                     "ws_url": exchange.ws_url}})  # fmt: skip
    stream = await _order_streams(settings)("binance", ExchangeCredentials(KEY, SECRET), "main")
    try:
        await stream.subscribe()
        assert env.user is not None
        await env.user.wait_subscribed()
    finally:
        await stream.close()
