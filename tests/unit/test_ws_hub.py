"""The WebSocket hub and its bus feed, without sockets: channels, sequence numbers,
snapshots, coalescing, slow and idle clients, and what each topic turns into."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import structlog

from cryptodesk.adapters.bus.memory import MemoryBus
from cryptodesk.api.routes.ws import WsRenderer
from cryptodesk.domain import codec
from cryptodesk.domain.market import OrderBook, Ticker, Trade, stream_key
from cryptodesk.domain.signals import Signal, encode_signal
from cryptodesk.observability.metrics import Metrics
from cryptodesk.services import cache_keys
from cryptodesk.services.market_queries import MarketQueries
from cryptodesk.services.ws_feed import WsFeed, publish_tenant_event
from cryptodesk.services.ws_hub import CLOSE_IDLE, CLOSE_TOO_SLOW, ChannelError, WsClient, WsHub
from tests.unit._fakes import T0, DictCache, ListStore, make_candle, seed_series

TICKER = "ticker:sim:BTC/USDT"


def ticker(i: int) -> Ticker:
    return Ticker("sim", "BTC/USDT", T0 + i * 1000, 100.0 + i, 99.5, 100.5, 90.0, 110.0, 80.0,
                  5.0, 500.0)  # fmt: skip


def ticker_data(i: int) -> dict[str, object]:
    return {
        "exchange": "sim", "symbol": "BTC/USDT", "time": f"2024-05-01T00:00:{i:02d}.000Z",
        "last": f"{100 + i}", "bid": "99.5", "ask": "100.5", "open_24h": "90",
        "high_24h": "110", "low_24h": "80", "volume_24h": "5", "quote_volume_24h": "500",
        "change_24h": WsRenderer().ticker(ticker(i))["change_24h"],  # type: ignore[index]
    }  # fmt: skip


@dataclass
class Rig:
    cache: DictCache
    store: ListStore
    bus: MemoryBus
    hub: WsHub

    async def subscribe(self, client: WsClient, *names: str, tenant: str | None = None) -> None:
        for name in names:
            await self.hub.subscribe(client, self.hub.channel(name, tenant))


def make_rig(**options: object) -> Rig:
    cache, store, bus = DictCache(), ListStore(), MemoryBus()
    queries = MarketQueries(
        cache, store, Metrics(), exchanges=["sim"], symbols=["BTC/USDT", "ETH/USDT"],
        intervals=["1m"], cache_recent_candles=100,
    )  # fmt: skip
    return Rig(cache, store, bus, WsHub(bus, queries, WsRenderer(), **options))  # type: ignore[arg-type]


def sent(client: WsClient) -> list[dict[str, object]]:
    """The frames the client's sender would send now, without waiting."""
    out = []
    while (text := _next_now(client)) is not None:
        out.append(json.loads(text))
    return out


def _next_now(client: WsClient) -> str | None:
    """``client.next()`` when it needs no waiting; None when it would wait."""
    coro = client.next()
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    assert not client.queue
    return None


async def test_channel_names_are_validated_and_canonical():
    rig = make_rig()
    hub = rig.hub
    assert hub.channel("ticker:SIM:btc-usdt").name == TICKER
    assert hub.channel("candles:sim:ETH/USDT:1m").key == "candles:sim:ETH/USDT:1m"
    assert hub.channel("portfolio", "acme").key == "portfolio@acme"
    assert hub.channel("signals").kind == "signals"
    cases = {
        "ticker:kraken:BTC/USDT": "unknown-exchange", "ticker:sim:DOGE/USDT": "unknown-symbol",
        "candles:sim:BTC/USDT:5m": "unknown-interval", "book:sim:BTCUSDT": "invalid-parameter",
        "ticker:sim": "unknown-channel", "quotes:sim:BTC/USDT": "unknown-channel",
        "signals:sim": "unknown-channel", "orders": "unauthorized",
    }  # fmt: skip
    for name, code in cases.items():
        with pytest.raises(ChannelError) as caught:
            hub.channel(name, None)
        assert caught.value.code == code, name


async def test_snapshot_then_deltas_serialised_once_for_every_subscriber():
    rig = make_rig()
    await rig.cache.set(cache_keys.ticker("sim", "BTC/USDT"), codec.encode_ticker(ticker(0)))
    a, b = rig.hub.connect(), rig.hub.connect()
    await rig.subscribe(a, TICKER)
    await rig.subscribe(b, TICKER)
    ch = rig.hub.channels[TICKER]
    rig.hub.update(ch, json.dumps(ticker_data(1)))
    assert a.queue[1] is b.queue[1]  # one update object, one text, shared
    expected = [
        {"type": "snapshot", "channel": TICKER, "seq": 0, "data": ticker_data(0)},
        {"type": "delta", "channel": TICKER, "seq": 1, "data": ticker_data(1)},
    ]
    assert sent(a) == expected
    assert sent(b) == expected
    assert rig.hub.stats.updates == 1


async def test_latest_state_coalesces_for_a_client_behind_and_says_what_it_skipped():
    rig = make_rig()
    behind, current = rig.hub.connect(), rig.hub.connect()
    await rig.subscribe(behind, TICKER, "trades:sim:BTC/USDT")
    await rig.subscribe(current, TICKER)
    assert [f["data"] for f in sent(behind)] == [None, []]  # no ticker cached yet
    sent(current)
    ch, trades = rig.hub.channels[TICKER], rig.hub.channels["trades:sim:BTC/USDT"]
    rig.hub.update(ch, '{"n":1}')
    assert sent(current) == [{"type": "delta", "channel": TICKER, "seq": 1, "data": {"n": 1}}]
    for i in range(2, 6):
        rig.hub.update(ch, f'{{"n":{i}}}')
        rig.hub.add_items(trades, [f'{{"t":{i}}}'])
    assert len(behind.queue) == 5  # one ticker entry, four trade batches
    assert sent(behind) == [
        {"type": "delta", "channel": TICKER, "seq": 5, "skipped": 4, "data": {"n": 5}},
        *[{"type": "delta", "channel": "trades:sim:BTC/USDT", "seq": i - 1, "data": [{"t": i}]}
          for i in range(2, 6)],
    ]  # fmt: skip
    rig.hub.update(ch, '{"n":6}')
    assert sent(behind) == [{"type": "delta", "channel": TICKER, "seq": 6, "data": {"n": 6}}]


async def test_a_full_queue_closes_only_that_client():
    rig = make_rig(queue_size=3)
    slow, fast = rig.hub.connect(), rig.hub.connect()
    await rig.subscribe(slow, "trades:sim:BTC/USDT")
    await rig.subscribe(fast, "trades:sim:BTC/USDT")
    ch = rig.hub.channels["trades:sim:BTC/USDT"]
    got = []
    with structlog.testing.capture_logs() as logs:
        for i in range(5):
            rig.hub.add_items(ch, [str(i)])
            got.extend(f["data"] for f in sent(fast))
    assert got == [[], [0], [1], [2], [3], [4]]
    assert [(e["event"], e["log_level"], e["code"]) for e in logs] == [
        ("websocket client too slow, closed", "warning", CLOSE_TOO_SLOW)]  # fmt: skip
    assert (slow.close_code, slow.close_reason) == (
        CLOSE_TOO_SLOW, "too slow: the outbound queue overflowed")  # fmt: skip
    assert not slow.queue
    assert await slow.next() is None
    assert rig.hub.stats.closed_too_slow == 1
    assert fast.close_code is None


async def test_unsubscribe_drops_a_queued_coalesced_update_and_resubscribe_resyncs():
    rig = make_rig()
    client = rig.hub.connect()
    await rig.subscribe(client, TICKER, "trades:sim:BTC/USDT")
    sent(client)
    rig.hub.update(rig.hub.channels[TICKER], '{"n":1}')
    spec = rig.hub.channel(TICKER)
    rig.hub.unsubscribe(client, spec)
    assert TICKER not in rig.hub.channels  # nobody left: the channel is gone
    assert sent(client) == []
    await rig.hub.subscribe(client, spec)
    rig.hub.update(rig.hub.channels[TICKER], '{"n":2}')
    assert sent(client) == [
        {"type": "snapshot", "channel": TICKER, "seq": 0, "data": None},
        {"type": "delta", "channel": TICKER, "seq": 1, "data": {"n": 2}},
    ]
    rig.hub.disconnect(client)
    assert rig.hub.channels == {}
    assert rig.hub.stats.clients == 0


async def test_heartbeat_pings_and_closes_an_idle_client():
    rig = make_rig(idle_timeout=30.0)
    idle, alive = rig.hub.connect(), rig.hub.connect()
    idle.last_seen -= 31
    with structlog.testing.capture_logs() as logs:
        rig.hub.heartbeat()
    assert [(e["event"], e["code"]) for e in logs] == [
        ("websocket client idle, closed", CLOSE_IDLE)
    ]
    assert (idle.close_code, await idle.next()) == (CLOSE_IDLE, None)
    assert [f["type"] for f in sent(alive)] == ["ping"]
    assert rig.hub.stats.closed_idle == 1


async def test_drain_close_sends_what_is_queued_first():
    client = make_rig().hub.connect()
    client.send('{"type":"error"}')
    client.close(4001, "unauthorized", drain=True)
    client.send('{"type":"late"}')
    assert [await client.next(), await client.next()] == ['{"type":"error"}', None]


@pytest.fixture
async def fed() -> AsyncIterator[Rig]:
    rig = make_rig(book_depth=1)
    feed = WsFeed(rig.hub, instance="t", ticker_poll_seconds=60.0, ticker_settle_seconds=0)
    stop = asyncio.Event()
    task = asyncio.create_task(feed.run(stop))
    yield rig
    stop.set()
    await task


async def frame(client: WsClient) -> dict[str, object]:
    text = await asyncio.wait_for(client.next(), 10)
    assert text is not None
    return json.loads(text)  # type: ignore[no-any-return]


def trade(i: int) -> Trade:
    return Trade("sim", "BTC/USDT", f"t{i}", T0 + i, 100.0 + i, 0.5, "buy")


async def test_feed_relays_new_trades_and_refreshes_the_ticker_they_move():
    rig = make_rig()
    key = stream_key("sim", "BTC/USDT")
    await rig.bus.publish("trades", key, codec.encode_trade(trade(0)))  # before the feed
    feed = WsFeed(rig.hub, instance="t", ticker_poll_seconds=60.0, ticker_settle_seconds=0)
    stop = asyncio.Event()
    task = asyncio.create_task(feed.run(stop))
    client = rig.hub.connect()
    await rig.subscribe(client, "trades:sim:BTC/USDT", TICKER)
    assert [(await frame(client))["data"] for _ in range(2)] == [[], None]
    await rig.cache.set(cache_keys.ticker("sim", "BTC/USDT"), codec.encode_ticker(ticker(2)))
    await rig.bus.publish_many("trades", [(key, codec.encode_trade(trade(i))) for i in (1, 2)])
    first = await frame(client)
    assert first == {"type": "delta", "channel": "trades:sim:BTC/USDT", "seq": 1, "data": [
        {"id": f"t{i}", "time": f"2024-05-01T00:00:00.00{i}Z", "price": f"{100 + i}",
         "amount": "0.5", "side": "buy"} for i in (1, 2)]}  # fmt: skip
    assert await frame(client) == {"type": "delta", "channel": TICKER, "seq": 1,
                                   "data": ticker_data(2)}  # fmt: skip
    stop.set()
    await task
    assert await client.next() is None  # the hub closes its clients when the feed stops
    assert client.close_code == 1001


async def test_feed_starts_at_the_end_of_the_bus_and_deletes_its_groups_when_it_stops():
    rig = make_rig()
    behind = rig.bus.consumer("trades", group="audit")  # keeps every trade retained
    key = stream_key("sim", "BTC/USDT")
    old, new = codec.encode_trade(trade(0)), codec.encode_trade(trade(1))
    await rig.bus.publish("trades", key, old)  # before the feed: old news
    feed = WsFeed(rig.hub, instance="t", ticker_poll_seconds=60.0, ticker_settle_seconds=0)
    stop = asyncio.Event()
    task = asyncio.create_task(feed.run(stop))
    client = rig.hub.connect()
    await rig.subscribe(client, "trades:sim:BTC/USDT")
    assert await frame(client) == {"type": "snapshot", "channel": "trades:sim:BTC/USDT",
                                   "seq": 0, "data": []}  # fmt: skip
    await rig.bus.publish("trades", key, new)
    delta = await frame(client)
    assert (delta["seq"], [t["id"] for t in delta["data"]]) == (1, ["t1"])  # type: ignore[union-attr]
    stop.set()
    await task
    # The feed's group is gone: a new one of that name starts afresh, at the oldest.
    again = rig.bus.consumer("trades", group="ws-t")
    assert [m.value for m in await again.fetch(10, timeout=0)] == [old, new]
    await behind.close()


async def test_feed_relays_the_newest_book_cut_to_depth(fed: Rig):
    client = fed.hub.connect()
    await fed.subscribe(client, "book:sim:ETH/USDT")
    assert (await frame(client))["data"] is None
    key = stream_key("sim", "ETH/USDT")
    books = [OrderBook("sim", "ETH/USDT", T0 + i, ((10.0 + i, 1.0), (9.0, 2.0)),
                       ((11.0 + i, 1.0), (12.0 + i, 3.0)), i) for i in (1, 3, 2)]  # fmt: skip
    await fed.bus.publish_many("orderbooks", [(key, codec.encode_book(b)) for b in books])
    assert await frame(client) == {"type": "delta", "channel": "book:sim:ETH/USDT", "seq": 1,
        "data": {"exchange": "sim", "symbol": "ETH/USDT", "time": "2024-05-01T00:00:00.003Z",
                 "sequence": 3, "bids": [["13", "1"]], "asks": [["14", "1"]]}}  # fmt: skip
    await fed.bus.publish("orderbooks", key, codec.encode_book(books[2]))  # older: no news
    await fed.bus.publish("orderbooks", key, codec.encode_book(books[1]))  # a repeat
    newer = OrderBook("sim", "ETH/USDT", T0 + 9, ((1.0, 1.0),), ((2.0, 1.0),), 9)
    await fed.bus.publish("orderbooks", key, codec.encode_book(newer))
    assert (await frame(client))["seq"] == 2


async def test_feed_relays_finalized_candles_after_the_cached_ones_once(fed: Rig):
    await seed_series(fed.cache, fed.store, [make_candle(i) for i in range(3)], recent=100)
    client = fed.hub.connect()
    await fed.subscribe(client, "candles:sim:BTC/USDT:1m")
    snapshot = await frame(client)
    assert [c["open_time_ms"] for c in snapshot["data"]] == [T0, T0 + 60_000, T0 + 120_000]  # type: ignore[union-attr]
    key = stream_key("sim", "BTC/USDT")
    news = [make_candle(2), make_candle(3, closed=False), make_candle(3), make_candle(3)]
    await fed.bus.publish_many("candles", [(key, codec.encode_candle(c)) for c in news])
    await fed.bus.publish("candles", key, codec.encode_candle(make_candle(4)))
    assert [(f["seq"], [c["open_time_ms"] for c in f["data"]])  # type: ignore[union-attr]
            for f in [await frame(client), await frame(client)]] == [
        (1, [T0 + 180_000]), (2, [T0 + 240_000])]  # fmt: skip


async def test_feed_relays_signals_after_the_recent_ones():
    def signal(i: int) -> Signal:
        return Signal("golden", "golden_cross", "sim", "BTC/USDT", "1m", T0 + i, 100.5,
                      {"sma_50": 1.5}, T0 + i + 5)  # fmt: skip

    async def recent() -> list[Signal]:
        return [signal(0)]

    rig = make_rig(recent_signals=recent)
    feed = WsFeed(rig.hub, instance="t")
    stop = asyncio.Event()
    task = asyncio.create_task(feed.run(stop))
    client = rig.hub.connect()
    await rig.subscribe(client, "signals")
    assert [s["open_time_ms"] for s in (await frame(client))["data"]] == [T0]  # type: ignore[union-attr]
    await rig.bus.publish("signals", "sim:BTC/USDT", encode_signal(signal(1)))
    assert (await frame(client))["data"] == [{
        "rule": "golden", "kind": "golden_cross", "exchange": "sim", "symbol": "BTC/USDT",
        "interval": "1m", "open_time": "2024-05-01T00:00:00.001Z", "open_time_ms": T0 + 1,
        "close": "100.5", "values": {"sma_50": 1.5},
        "detected_at": "2024-05-01T00:00:00.006Z"}]  # fmt: skip
    stop.set()
    await task


async def test_tenant_events_reach_only_that_tenant_and_portfolio_is_polled():
    valuations = {"acme": {"total": "1"}, "other": {"total": "9"}}

    async def portfolio(tenant: str) -> object:
        return valuations[tenant]

    async def alerts(tenant: str) -> object:
        return [{"alert": "old"}]

    rig = make_rig(tenant_sources={"portfolio": portfolio, "alerts": alerts})
    feed = WsFeed(rig.hub, instance="t", tenant_poll_seconds=0.01)
    stop = asyncio.Event()
    task = asyncio.create_task(feed.run(stop))
    acme, other = rig.hub.connect(), rig.hub.connect()
    await rig.subscribe(acme, "portfolio", "alerts", tenant="acme")
    await rig.subscribe(other, "alerts", tenant="other")
    assert [(await frame(acme))["data"] for _ in range(2)] == [{"total": "1"}, [{"alert": "old"}]]
    assert (await frame(other))["data"] == [{"alert": "old"}]
    await publish_tenant_event(rig.bus, "acme", "alerts", {"alert": "new"})
    assert await frame(acme) == {"type": "delta", "channel": "alerts", "seq": 1,
                                 "data": [{"alert": "new"}]}  # fmt: skip
    valuations["acme"] = {"total": "2"}
    assert await frame(acme) == {"type": "delta", "channel": "portfolio", "seq": 1,
                                 "data": {"total": "2"}}  # fmt: skip
    await rig.hub.publish_tenant("other", "alerts", {"alert": "theirs"})
    assert (await frame(other))["data"] == [{"alert": "theirs"}]
    assert not acme.queue
    with pytest.raises(ValueError, match="not a tenant channel"):
        await publish_tenant_event(rig.bus, "acme", "ticker", {})
    stop.set()
    await task
