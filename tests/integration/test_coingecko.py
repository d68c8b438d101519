"""CoinGeckoClient and the reference price service against a local fake CoinGecko
(tests/fakes/coingecko.py) in CoinGecko's documented wire format.

The guard runs on a fake clock whose sleeps return at once and move time, so
rate-limit pauses, backoff and the breaker's cool-down are checked exactly
without waiting; the HTTP is real (aiohttp to the fake on loopback).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry

from cryptodesk.adapters.cache.memory import MemoryCache
from cryptodesk.adapters.exchanges.breaker import BreakerState, CircuitOpenError
from cryptodesk.adapters.prices import ChartPoint, SpotPrice
from cryptodesk.adapters.prices.coingecko import (
    PRO_BASE_URL,
    PUBLIC_BASE_URL,
    CoinGeckoAuthError,
    CoinGeckoClient,
    CoinGeckoHTTPError,
    MalformedPayloadError,
    coingecko_guard,
)
from cryptodesk.services.reference_prices import (
    AmbiguousAssetError,
    CachedPrice,
    DailyPrice,
    ReferencePrice,
    ReferencePrices,
    RefreshReport,
    UnknownAssetError,
    cache_key,
)
from tests.fakes.coingecko import NOW_S, FakeCoinGecko

UPDATED_S = 1_711_356_300  # the documented simple/price example's last_updated_at
BTC = "67187.3358936566"
SHIB = "0.00001234567890123456789"  # more digits than a float holds
DAY1, DAY2 = 1_711_843_200_000, 1_711_929_600_000  # 2024-03-31 and 04-01, 00:00 UTC


class AutoClock:
    """Guard clock: each sleep returns at once and moves time forward by its length."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return NOW_S + self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeCoinGecko]:
    server = FakeCoinGecko(keys={"demo-key": "demo", "pro-key": "pro"})
    server.set_price("bitcoin", "usd", BTC, updated_s=UPDATED_S)
    server.set_price("shiba-inu", "usd", SHIB, updated_s=UPDATED_S + 60)
    server.set_price("cosmos", "usd", "8.91", updated_s=UPDATED_S + 5)
    server.add_daily("bitcoin", "usd", [
        (DAY1 - 86_400_000 * 5, "60000.5", "1200000000000", "15000000000"),  # outside days=2
        (DAY1, "69702.3087473573", "1370247487960.09", "16408802301.8374"),
        (DAY2, "71246.9514406015", "1401370211582.37", "19723005998.215"),
    ])  # fmt: skip
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def clock() -> AutoClock:
    return AutoClock()


@pytest_asyncio.fixture
async def make(
    fake: FakeCoinGecko, registry: CollectorRegistry, clock: AutoClock
) -> AsyncIterator[Callable[..., CoinGeckoClient]]:
    made: list[CoinGeckoClient] = []

    def make(
        *, api_key: str | None = None, key_type: Any = "demo", **guard: Any
    ) -> CoinGeckoClient:
        plan = key_type if api_key else "public"
        client = CoinGeckoClient(
            api_key=api_key, key_type=key_type, base_url=fake.api_url, metrics_registry=registry,
            guard=coingecko_guard(plan=plan, metrics_registry=registry, clock=clock,
                                  rng=random.Random(7), **guard),
        )  # fmt: skip
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()
        await client.guard.close()


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, {"exchange": "coingecko", **labels}) or 0.0


def bad_payloads(registry: CollectorRegistry, endpoint: str) -> float:
    return sample(registry, "cryptodesk_exchange_bad_payloads_total", endpoint=endpoint)


# -- prices and history ---------------------------------------------------------------


async def test_spot_prices_are_the_exact_decimals_and_times_sent(make, fake) -> None:
    client = make()
    got = await client.simple_price(["bitcoin", "shiba-inu"], "USD")
    assert got.prices == {
        "bitcoin": SpotPrice("bitcoin", "usd", Decimal(BTC), UPDATED_S * 1000),
        "shiba-inu": SpotPrice("shiba-inu", "usd", Decimal(SHIB), (UPDATED_S + 60) * 1000),
    }
    assert str(got.prices["shiba-inu"].price) == SHIB
    assert (got.missing, got.malformed) == (frozenset(), frozenset())
    assert fake.calls("/simple/price") == [
        {"ids": "bitcoin,shiba-inu", "vs_currencies": "usd", "include_last_updated_at": "true"}
    ]
    assert await client.ping() == "(V3) To the Moon!"


async def test_daily_chart_keeps_the_midnight_points_only(make, fake) -> None:
    client = make()
    points = await client.daily_chart("bitcoin", "usd", 2)
    assert points == [
        ChartPoint(DAY1, Decimal("69702.3087473573"), Decimal("1370247487960.09"),
                   Decimal("16408802301.8374")),
        ChartPoint(DAY2, Decimal("71246.9514406015"), Decimal("1401370211582.37"),
                   Decimal("19723005998.215")),
    ]  # fmt: skip
    assert fake.calls("/coins/bitcoin/market_chart") == [
        {"vs_currency": "usd", "days": "2", "interval": "daily"}
    ]


async def test_daily_history_maps_to_daily_price_rows(make) -> None:
    service = ReferencePrices(make(), MemoryCache(), assets={"BTC": "bitcoin"})
    rows = await service.daily_history("btc", days=2)
    assert rows == [
        DailyPrice("BTC", "bitcoin", "usd", DAY1, Decimal("69702.3087473573"),
                   Decimal("1370247487960.09"), Decimal("16408802301.8374"), "coingecko"),
        DailyPrice("BTC", "bitcoin", "usd", DAY2, Decimal("71246.9514406015"),
                   Decimal("1401370211582.37"), Decimal("19723005998.215"), "coingecko"),
    ]  # fmt: skip


# -- keys and root URLs -----------------------------------------------------------------


async def test_keyless_calls_send_no_key_at_the_public_rate(make, fake, clock) -> None:
    keyless = CoinGeckoClient()
    assert (keyless.base_url, keyless.plan) == (PUBLIC_BASE_URL, "public")
    await keyless.close()
    client = make()
    for _ in range(3):
        await client.ping()
    assert clock.sleeps == [2.0, 2.0]  # 30 calls a minute: the first goes at once
    assert not any(k.lower().startswith("x-cg-") for h in fake.headers for k in h)


async def test_demo_key_goes_in_its_header_to_the_public_host(make, fake) -> None:
    demo = CoinGeckoClient(api_key="demo-key", key_type="demo")
    assert (demo.base_url, demo.plan) == (PUBLIC_BASE_URL, "demo")
    await demo.close()
    await make(api_key="demo-key", key_type="demo").ping()
    assert fake.headers[-1]["x-cg-demo-api-key"] == "demo-key"
    assert "x-cg-pro-api-key" not in fake.headers[-1]


async def test_pro_key_uses_the_pro_root_url_and_header(make, fake) -> None:
    pro = CoinGeckoClient(api_key="pro-key", key_type="pro")
    assert (pro.base_url, pro.plan) == (PRO_BASE_URL, "pro")
    assert pro.guard.limiter._local.rate == 120.0  # 500 calls a minute
    await pro.close()
    fake.host = "pro"
    got = await make(api_key="pro-key", key_type="pro").simple_price(["bitcoin"], "usd")
    assert got.prices["bitcoin"].price == Decimal(BTC)
    assert fake.headers[-1]["x-cg-pro-api-key"] == "pro-key"
    assert "x-cg-demo-api-key" not in fake.headers[-1]


async def test_a_bad_key_is_a_clear_error_and_not_retried(make, fake) -> None:
    client = make(api_key="wrong", key_type="demo")
    with pytest.raises(CoinGeckoAuthError) as caught:
        await client.ping()
    err = caught.value
    assert (err.status, err.error_code) == (401, 10002)
    assert "HTTP 401, error code 10002: Invalid API Key" in str(err)
    assert "check the demo API key" in str(err)
    assert len(fake.calls("/ping")) == 1
    assert client.guard.breaker.state is BreakerState.CLOSED
    assert client.guard.breaker.failures == 0


async def test_a_demo_key_on_the_pro_host_names_the_mismatch(make, fake) -> None:
    fake.host = "pro"
    with pytest.raises(CoinGeckoAuthError) as caught:
        await make(api_key="demo-key", key_type="demo").ping()
    assert (caught.value.status, caught.value.error_code) == (400, 10011)
    assert "pro keys to https://pro-api.coingecko.com/api/v3 in x-cg-pro-api-key" in str(
        caught.value
    )


async def test_history_beyond_the_plan_says_so(make, fake) -> None:
    text = "Your request exceeds the allowed time range. Public API users are limited to 365 days"
    body = {"error": {"status": {"error_code": 10012, "error_message": text}}}
    fake.fail_next("/coins/bitcoin/market_chart", 401, body)
    with pytest.raises(CoinGeckoAuthError) as caught:
        await make().daily_chart("bitcoin", "usd", 400)
    assert str(caught.value) == (
        f"CoinGecko refused the request (HTTP 401, error code 10012: {text}); "
        "not available on the public plan"
    )


# -- rate limits and the breaker ------------------------------------------------------------


async def test_429_waits_the_retry_after_then_succeeds(make, fake, clock, registry) -> None:
    client = make()
    fake.rate_limit_next("/simple/price", retry_after="30")
    got = await client.simple_price(["bitcoin"], "usd")
    assert got.prices["bitcoin"].price == Decimal(BTC)
    assert clock.sleeps == [30.0]
    assert len(fake.calls("/simple/price")) == 2
    assert sample(registry, "cryptodesk_exchange_rejections_total", status="429") == 1


async def test_failures_open_the_breaker_and_a_probe_closes_it(make, fake, clock, registry) -> None:
    client = make(failure_threshold=2, cool_down=60.0, max_attempts=3)
    fake.fail_next("/ping", 500, {"error": "Internal Server Error"}, times=2)
    with pytest.raises(CoinGeckoHTTPError) as caught:
        await client.ping()
    assert caught.value.status == 500
    assert client.guard.breaker.state is BreakerState.OPEN
    with pytest.raises(CircuitOpenError):
        await client.ping()
    assert len(fake.calls("/ping")) == 2  # refused without a request
    clock.now += 60.0
    assert client.guard.breaker.state is BreakerState.HALF_OPEN
    assert await client.ping() == "(V3) To the Moon!"
    assert client.guard.breaker.state is BreakerState.CLOSED
    moves = "cryptodesk_exchange_breaker_transitions_total"
    for old, new in (("closed", "open"), ("open", "half_open"), ("half_open", "closed")):
        assert sample(registry, moves, from_state=old, to_state=new) == 1
    assert sample(registry, "cryptodesk_exchange_breaker_state") == 0


# -- malformed payloads and unknown assets ------------------------------------------------------


async def test_malformed_price_entries_are_counted_and_skipped(make, fake, registry) -> None:
    client = make()
    fake.answer_next("/simple/price", (
        f'{{"bitcoin": {{"usd": {BTC}, "last_updated_at": {UPDATED_S}}},'
        f' "ethereum": {{"usd": "3500.12", "last_updated_at": {UPDATED_S}}},'
        f' "cosmos": {{"usd": 8.91}}}}'
    ))  # fmt: skip
    got = await client.simple_price(["bitcoin", "ethereum", "cosmos"], "usd")
    assert list(got.prices) == ["bitcoin"]
    assert got.prices["bitcoin"].price == Decimal(BTC)
    assert got.malformed == {"ethereum", "cosmos"}
    assert bad_payloads(registry, "simple/price") == 2
    fake.answer_next("/simple/price", "<html>502 Bad Gateway</html>")
    got = await client.simple_price(["bitcoin"], "usd")
    assert (got.prices, got.malformed) == ({}, {"bitcoin"})
    assert bad_payloads(registry, "simple/price") == 3


async def test_malformed_chart_rows_are_counted_and_skipped(make, fake, registry) -> None:
    client = make()
    fake.answer_next("/coins/bitcoin/market_chart", (
        f'{{"prices": [[{DAY1}], [{DAY2}, null], [{DAY2 + 86_400_000}, 70000.25]],'
        f' "market_caps": [[{DAY2 + 86_400_000}, 0]], "total_volumes": []}}'
    ))  # fmt: skip
    points = await client.daily_chart("bitcoin", "usd", 3)
    assert points == [ChartPoint(DAY2 + 86_400_000, Decimal("70000.25"), Decimal(0), None)]
    assert bad_payloads(registry, "coins/market_chart") == 2
    fake.answer_next("/coins/bitcoin/market_chart", '{"prices": NaN}')
    with pytest.raises(MalformedPayloadError):
        await client.daily_chart("bitcoin", "usd", 3)
    assert bad_payloads(registry, "coins/market_chart") == 3


async def test_refresh_skips_malformed_and_names_unknown_ids(make, fake) -> None:
    cache = MemoryCache()
    service = ReferencePrices(make(), cache, assets={"BTC": "bitcoin", "FOO": "no-such-coin"})
    with pytest.raises(UnknownAssetError, match=r"no usd price for FOO \(no-such-coin\)"):
        await service.refresh()
    assert (await service.latest("BTC")) is not None  # the known one was still written
    with pytest.raises(UnknownAssetError) as caught:
        await service.daily_history("FOO", days=2)
    assert str(caught.value) == "asset FOO: coingecko has no coin with id 'no-such-coin'"
    with pytest.raises(UnknownAssetError, match="asset XYZ is not a configured reference asset"):
        await service.daily_history("XYZ", days=2)


async def test_bare_symbols_resolve_through_the_coin_list(make, fake) -> None:
    service = ReferencePrices(make(), MemoryCache(), assets={"ATOM": None, "BTC": "bitcoin"})
    assert await service.coin_ids() == {"ATOM": "cosmos", "BTC": "bitcoin"}
    assert await service.refresh() == RefreshReport(("ATOM", "BTC"), ())
    assert await service.refresh() == RefreshReport(("ATOM", "BTC"), ())
    assert len(fake.calls("/coins/list")) == 1
    ambiguous = ReferencePrices(make(), MemoryCache(), assets={"ETH": None})
    for _ in range(2):
        with pytest.raises(AmbiguousAssetError) as caught:
            await ambiguous.refresh()
    assert str(caught.value) == (
        "asset ETH: 2 coingecko coins have the symbol 'eth': ethereum (Ethereum), "
        "ethereum-wormhole (Ethereum (Wormhole)); configure the one meant as ETH=<id>"
    )
    explicit = ReferencePrices(make(), MemoryCache(), assets={"ETH": "ethereum"})
    assert await explicit.coin_ids() == {"ETH": "ethereum"}
    assert len(fake.calls("/coins/list")) == 2  # one for the ambiguous; none for explicit ids


# -- the cache ------------------------------------------------------------------------------


async def test_refresh_caches_with_ttl_and_latest_reads_age_without_calling(make, fake) -> None:
    mono = [0.0]
    cache = MemoryCache(clock=lambda: mono[0])
    now = (NOW_S + 10) * 1000
    service = ReferencePrices(
        make(), cache, assets={"BTC": "bitcoin", "SHIB": "shiba-inu"}, ttl=600.0,
        clock=lambda: now,
    )  # fmt: skip
    assert await service.refresh() == RefreshReport(("BTC", "SHIB"), ())
    calls = len(fake.server.requests)
    got = await service.latest("btc")
    assert got == CachedPrice(
        ReferencePrice("BTC", "bitcoin", "usd", Decimal(BTC), UPDATED_S * 1000, now, "coingecko"),
        now - UPDATED_S * 1000,
    )
    shib = await service.latest("SHIB")
    assert shib is not None
    assert str(shib.price.price) == SHIB
    assert await cache.get(cache_key("coingecko", "BTC", "usd")) is not None
    assert len(fake.server.requests) == calls  # reads never go upstream
    mono[0] = 599.0
    assert await service.latest("BTC") is not None
    mono[0] = 600.0
    assert await service.latest("BTC") is None
