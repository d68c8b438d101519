"""MarketQueries: validation, cache-first reads, cursor pagination and freshness."""

from __future__ import annotations

import base64

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cryptodesk.domain import codec
from cryptodesk.domain.market import Candle, Market, OrderBook, Ticker
from cryptodesk.observability.metrics import Metrics
from cryptodesk.services import cache_keys
from cryptodesk.services.feed_status import FeedStatus, Freshness, Served
from cryptodesk.services.market_queries import (
    CandlePage,
    InvalidParameter,
    MarketQueries,
    NotFound,
    Unavailable,
)
from tests.unit._fakes import (
    MINUTE,
    T0,
    BrokenCache,
    DictCache,
    ListStore,
    make_candle,
    seed_series,
)

N = 2500
RECENT = 1000
SERIES = [make_candle(i) for i in range(N)]
# 5 s after the newest candle of SERIES closed.
NOW = SERIES[-1].open_time + MINUTE + 5_000


def build(
    cache: DictCache | None = None,
    store: ListStore | None = None,
    *,
    recent: int = RECENT,
    status: FeedStatus | None = None,
    now: int = NOW,
) -> tuple[MarketQueries, DictCache, ListStore, Metrics]:
    cache = cache if cache is not None else DictCache()
    store = store if store is not None else ListStore()
    metrics = Metrics()
    q = MarketQueries(
        cache, store, metrics,
        exchanges=["sim", "kraken"], symbols=["BTC/USDT", "ETH/USDT"], intervals=["1m", "1h"],
        cache_recent_candles=recent, status=status, stale_after=60, clock=lambda: now,
    )  # fmt: skip
    return q, cache, store, metrics


async def seeded(*, recent: int = RECENT) -> tuple[MarketQueries, DictCache, ListStore, Metrics]:
    q, cache, store, metrics = build(recent=recent)
    await seed_series(cache, store, SERIES, recent=recent)
    return q, cache, store, metrics


def count(metrics: Metrics, name: str, kind: str) -> float:
    value = metrics.registry.get_sample_value(f"cryptodesk_{name}_total", {"kind": kind})
    return value or 0.0


# ---- validation -----------------------------------------------------------------------


async def test_unknown_exchange_and_symbol_are_not_found_naming_the_parameter():
    q, *_ = build()
    with pytest.raises(NotFound) as exc:
        await q.candles("binance", "BTC/USDT", "1m")
    assert (exc.value.field, exc.value.code) == ("exchange", "unknown-exchange")
    with pytest.raises(NotFound) as exc:
        await q.candles("sim", "DOGE/USDT", "1m")
    assert (exc.value.field, exc.value.code) == ("symbol", "unknown-symbol")
    assert "DOGE/USDT" in str(exc.value)


@pytest.mark.parametrize(
    ("kwargs", "field", "code"),
    [
        ({"interval": "5m"}, "interval", "unknown-interval"),
        ({"interval": "banana"}, "interval", "unknown-interval"),
        ({"symbol": "BTCUSDT"}, "symbol", "invalid-parameter"),
        ({"limit": 0}, "limit", "invalid-parameter"),
        ({"limit": 1001}, "limit", "invalid-parameter"),
        ({"start": T0 + MINUTE, "end": T0}, "end", "invalid-parameter"),
        ({"cursor": "!!!"}, "cursor", "invalid-cursor"),
    ],
)
async def test_bad_candle_parameters_are_invalid(kwargs, field, code):
    q, *_ = build()
    args = {"exchange": "sim", "symbol": "BTC/USDT", "interval": "1m", **kwargs}
    with pytest.raises(InvalidParameter) as exc:
        await q.candles(args.pop("exchange"), args.pop("symbol"), args.pop("interval"), **args)
    assert (exc.value.field, exc.value.code) == (field, code)


async def test_symbol_and_exchange_are_normalised():
    q, *_ = await seeded()
    page = await q.candles(" SIM ", "btc-usdt", "1m", limit=2)
    assert [c.open_time for c in page.candles] == [SERIES[-2].open_time, SERIES[-1].open_time]


# ---- cache-only reads -----------------------------------------------------------------


def fresh(*values: object, age_ms: int | None = None, stale: bool = False) -> list[Served]:
    return [Served(v, Freshness(stale, age_ms)) for v in values]


async def test_markets_are_configured_symbols_in_configured_order():
    q, cache, _, metrics = build()
    btc = Market("sim", "BTC/USDT", "BTC", "USDT", 0.01, 1e-05, 1e-05, 5.0)
    eth = Market("sim", "ETH/USDT", "ETH", "USDT", 0.01, 0.0001)
    doge = Market("sim", "DOGE/USDT", "DOGE", "USDT", 1e-05, 1.0)
    await cache.set(cache_keys.markets("sim"), codec.encode_markets([eth, doge, btc]))
    # Markets carry no exchange time: no age, and stale only while upstream fails.
    assert await q.markets("sim") == fresh(btc, eth)
    assert await q.markets() == fresh(btc, eth)  # kraken has nothing cached yet
    assert count(metrics, "cache_hits", "markets") == 2
    assert count(metrics, "cache_misses", "markets") == 1
    with pytest.raises(NotFound):
        await q.markets("binance")


async def test_tickers_filter_and_skip_markets_without_a_ticker():
    q, cache, *_ = build(now=T0 + 1_500)
    a = Ticker("sim", "BTC/USDT", T0, 100.0, 99.5, 100.5)
    b = Ticker("kraken", "ETH/USDT", T0, 10.0)
    for t in (a, b):
        await cache.set(cache_keys.ticker(t.exchange, t.symbol), codec.encode_ticker(t))
    assert await q.tickers() == [*fresh(a, age_ms=1_500), *fresh(b, age_ms=1_500)]
    assert await q.tickers(exchange="kraken") == fresh(b, age_ms=1_500)
    assert await q.tickers(symbol="btc/usdt") == fresh(a, age_ms=1_500)
    assert await q.tickers("sim", "ETH/USDT") == []


async def test_orderbook_is_cut_to_depth_and_none_before_the_first():
    q, cache, *_ = build(now=T0 + 1_500)
    assert await q.orderbook("sim", "BTC/USDT", 5) is None
    book = OrderBook(
        "sim", "BTC/USDT", T0, ((100.0, 1.0), (99.0, 2.0), (98.0, 3.0)), ((101.0, 1.0),), 7
    )
    await cache.set(cache_keys.book("sim", "BTC/USDT"), codec.encode_book(book))
    top = await q.orderbook("sim", "BTC/USDT", 2)
    assert top == Served(
        OrderBook("sim", "BTC/USDT", T0, ((100.0, 1.0), (99.0, 2.0)), ((101.0, 1.0),), 7),
        Freshness(False, 1_500),
    )
    with pytest.raises(InvalidParameter) as exc:
        await q.orderbook("sim", "BTC/USDT", 101)
    assert exc.value.field == "depth"


async def test_cache_outage_is_unavailable_for_cache_only_reads():
    q, *_ = build(cache=BrokenCache())
    with pytest.raises(Unavailable):
        await q.tickers()


# ---- candles: cache vs store ----------------------------------------------------------


async def test_newest_page_comes_from_the_cache_and_older_from_the_store():
    q, _cache, store, metrics = await seeded()
    page = await q.candles("sim", "BTC/USDT", "1m", limit=500)
    assert page.candles == SERIES[-500:]
    assert (count(metrics, "cache_hits", "candles"), store.candle_queries) == (1, 0)

    page = await q.candles("sim", "BTC/USDT", "1m", end=SERIES[1200].open_time, limit=100)
    assert page.candles == SERIES[1100:1200]
    assert count(metrics, "cache_misses", "candles") == 1
    assert store.candle_queries == 1


async def test_a_page_needing_the_whole_cached_list_goes_to_the_store():
    # 1000 cached candles cannot prove an older page exists for limit=1000.
    q, _, store, metrics = await seeded()
    page = await q.candles("sim", "BTC/USDT", "1m", limit=1000)
    assert page.candles == SERIES[-1000:]
    assert page.next_cursor is not None
    assert store.candle_queries == 1
    assert count(metrics, "cache_misses", "candles") == 1


async def test_broken_cache_falls_back_to_the_store():
    store = ListStore(SERIES)
    q, *_ = build(cache=BrokenCache(), store=store)
    page = await q.candles("sim", "BTC/USDT", "1m", limit=3, include_open=True)
    assert page.candles == SERIES[-3:]


async def test_a_cached_tail_with_a_repeated_candle_is_not_trusted():
    # A push retried after its reply was lost can leave a candle twice in the list.
    q, cache, store, metrics = await seeded()
    key = cache_keys.recent_candles("sim", "BTC/USDT", "1m")
    await cache.push_capped(key, [codec.encode_candle(SERIES[-1])], maxlen=RECENT)
    page = await q.candles("sim", "BTC/USDT", "1m", limit=10)
    assert page.candles == SERIES[-10:]
    assert store.candle_queries == 1
    assert count(metrics, "cache_hits", "candles") == 0
    assert not q.cache_degraded  # the cache answered; it was only not usable


class RestartingCache(DictCache):
    """A cache whose server goes away and comes back (``down``)."""

    down = False

    async def list_range(self, key: str, start: int = 0, end: int = -1) -> list[bytes]:
        if self.down:
            raise ConnectionError("cache down")
        return await super().list_range(key, start, end)


async def test_degraded_while_the_cache_fails_and_not_once_it_answers_again():
    cache = RestartingCache()
    q, _, store, _ = build(cache=cache)
    await seed_series(cache, store, SERIES, recent=RECENT)
    cache.down = True
    assert (await q.candles("sim", "BTC/USDT", "1m", limit=3)).candles == SERIES[-3:]
    assert q.cache_degraded
    assert store.candle_queries == 1
    cache.down = False
    assert (await q.candles("sim", "BTC/USDT", "1m", limit=3)).candles == SERIES[-3:]
    assert not q.cache_degraded
    assert store.candle_queries == 1  # served by the cache again


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    start=st.none() | st.integers(-5, N + 5),
    end=st.none() | st.integers(-5, N + 5),
    limit=st.integers(1, 1000),
    pages=st.integers(1, 3),
)
async def test_cache_and_store_give_identical_pages(start, end, limit, pages):
    if start is not None and end is not None and start >= end:
        return
    cached, *_, _metrics = await seeded()
    uncached, *_ = await seeded(recent=0)
    kwargs = {
        "start": None if start is None else T0 + start * MINUTE,
        "end": None if end is None else T0 + end * MINUTE,
        "limit": limit,
        "include_open": True,
    }
    cursor_a = cursor_b = None
    for _ in range(pages):
        a = await cached.candles("sim", "BTC/USDT", "1m", cursor=cursor_a, **kwargs)
        b = await uncached.candles("sim", "BTC/USDT", "1m", cursor=cursor_b, **kwargs)
        assert a == b
        if a.next_cursor is None:
            break
        cursor_a = cursor_b = a.next_cursor


async def test_identical_pages_include_cache_hits():
    """Guard for the test above: the cached side really is served from the cache."""
    cached, *_, metrics = await seeded()
    uncached, *_ = await seeded(recent=0)
    for kwargs in ({"limit": 10}, {"start": SERIES[2000].open_time, "limit": 50}):
        assert await cached.candles("sim", "BTC/USDT", "1m", **kwargs) == await uncached.candles(
            "sim", "BTC/USDT", "1m", **kwargs
        )
    assert count(metrics, "cache_hits", "candles") == 2


# ---- candles: pagination --------------------------------------------------------------


async def walk(q: MarketQueries, **kwargs: object) -> list[CandlePage]:
    pages = []
    cursor = None
    while True:
        page = await q.candles("sim", "BTC/USDT", "1m", cursor=cursor, **kwargs)  # type: ignore[arg-type]
        pages.append(page)
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor


async def test_walking_backwards_visits_every_candle_once():
    q, _, _, metrics = await seeded()
    pages = await walk(q, limit=300)
    assert len(pages) == 9
    for page in pages:
        times = [c.open_time for c in page.candles]
        assert times == sorted(times)
    visited = [c for page in reversed(pages) for c in page.candles]
    assert visited == SERIES
    assert count(metrics, "cache_hits", "candles") == 3  # 900 of the cached 1000 + proof of more
    assert count(metrics, "cache_misses", "candles") == 6


async def test_walking_forwards_visits_every_candle_once():
    q, *_ = await seeded()
    pages = await walk(q, start=SERIES[0].open_time, limit=300)
    assert len(pages) == 9
    assert [c for page in pages for c in page.candles] == SERIES


async def test_forward_walk_stops_at_end():
    q, *_ = await seeded()
    pages = await walk(q, start=SERIES[10].open_time, end=SERIES[35].open_time, limit=10)
    assert [c for p in pages for c in p.candles] == SERIES[10:35]
    assert [len(p.candles) for p in pages] == [10, 10, 5]


async def test_limit_may_change_between_pages():
    q, *_ = await seeded()
    first = await q.candles("sim", "BTC/USDT", "1m", limit=5)
    second = await q.candles("sim", "BTC/USDT", "1m", limit=7, cursor=first.next_cursor)
    assert second.candles == SERIES[-12:-5]


async def test_empty_series_has_no_cursor():
    q, *_ = build()
    assert await q.candles("sim", "ETH/USDT", "1h") == CandlePage([], None)


# ---- include_open ---------------------------------------------------------------------


async def with_open_candle(open_time_index: int = N) -> tuple[MarketQueries, Candle]:
    q, cache, *_ = await seeded()
    current = make_candle(open_time_index, closed=False)
    await cache.set(cache_keys.open_candle("sim", "BTC/USDT", "1m"), codec.encode_candle(current))
    return q, current


async def test_include_open_appends_to_the_newest_page_only():
    q, current = await with_open_candle()
    newest = await q.candles("sim", "BTC/USDT", "1m", limit=3, include_open=True)
    assert newest.candles == [*SERIES[-3:], current]
    older = await q.candles(
        "sim", "BTC/USDT", "1m", limit=3, include_open=True, cursor=newest.next_cursor
    )
    assert older.candles == SERIES[-6:-3]
    without = await q.candles("sim", "BTC/USDT", "1m", limit=3)
    assert without.candles == SERIES[-3:]


async def test_include_open_on_forward_pages_only_at_the_end():
    q, current = await with_open_candle()
    first = await q.candles(
        "sim", "BTC/USDT", "1m", start=SERIES[-4].open_time, limit=2, include_open=True
    )
    assert first.candles == SERIES[-4:-2]
    last = await q.candles(
        "sim", "BTC/USDT", "1m", start=SERIES[-4].open_time, limit=2, include_open=True,
        cursor=first.next_cursor,
    )  # fmt: skip
    assert last.candles == [*SERIES[-2:], current]
    assert last.next_cursor is None


async def test_include_open_respects_end_and_skips_a_stale_open_candle():
    q, current = await with_open_candle()
    bounded = await q.candles(
        "sim", "BTC/USDT", "1m", start=SERIES[-2].open_time, end=current.open_time,
        include_open=True,
    )  # fmt: skip
    assert bounded.candles == SERIES[-2:]
    stale_q, _ = await with_open_candle(open_time_index=N - 1)  # already finalized
    page = await stale_q.candles("sim", "BTC/USDT", "1m", limit=2, include_open=True)
    assert page.candles == SERIES[-2:]


# ---- cursors --------------------------------------------------------------------------


def forge(body: object) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(body)).decode().rstrip("=")


async def test_cursor_from_another_series_or_query_is_rejected():
    q, *_ = await seeded()
    page = await q.candles("sim", "BTC/USDT", "1m", limit=5)
    assert page.next_cursor is not None
    for kwargs in (
        {"symbol": "ETH/USDT"},
        {"interval": "1h"},
        {"exchange": "kraken"},
        {"end": SERIES[5].open_time},
        {"start": SERIES[5].open_time},
    ):
        args = {"exchange": "sim", "symbol": "BTC/USDT", "interval": "1m", **kwargs}
        with pytest.raises(InvalidParameter) as exc:
            await q.candles(
                args.pop("exchange"), args.pop("symbol"), args.pop("interval"),
                cursor=page.next_cursor, **args,
            )  # fmt: skip
        assert exc.value.field == "cursor"


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "not base64 at all",
        forge([1, 2]),
        forge({"v": 2, "d": "b", "b": T0, "q": ["sim", "BTC/USDT", "1m", None, None]}),
        forge({"v": 1, "d": "x", "b": T0, "q": ["sim", "BTC/USDT", "1m", None, None]}),
        forge({"v": 1, "d": "b", "b": "soon", "q": ["sim", "BTC/USDT", "1m", None, None]}),
        forge({"v": 1, "d": "b", "b": True, "q": ["sim", "BTC/USDT", "1m", None, None]}),
        forge({"v": 1, "d": "b", "b": -1, "q": ["sim", "BTC/USDT", "1m", None, None]}),
        forge({"v": 1, "d": "b", "b": T0, "q": ["sim", "BTC/USDT", "1m"]}),
        forge({"v": 1, "d": "f", "b": T0, "q": ["sim", "BTC/USDT", "1m", None, None]}),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    ],
)
async def test_malformed_cursors_are_rejected(cursor):
    q, *_ = await seeded()
    with pytest.raises(InvalidParameter) as exc:
        await q.candles("sim", "BTC/USDT", "1m", cursor=cursor)
    assert (exc.value.field, exc.value.code) == ("cursor", "invalid-cursor")


async def test_a_cursor_may_be_sent_with_the_same_start_and_end():
    q, *_ = await seeded()
    kwargs = {"start": SERIES[0].open_time, "end": SERIES[100].open_time, "limit": 60}
    first = await q.candles("sim", "BTC/USDT", "1m", **kwargs)
    second = await q.candles("sim", "BTC/USDT", "1m", cursor=first.next_cursor, **kwargs)
    assert second.candles == SERIES[60:100]
    assert second.next_cursor is None
