"""Reference prices without servers: asset configuration, symbol resolution, and the
cached price's exact round trip, age and TTL."""

from __future__ import annotations

from decimal import Decimal

import pytest

from cryptodesk.adapters.cache.memory import MemoryCache
from cryptodesk.adapters.prices import CoinListing
from cryptodesk.services.reference_prices import (
    AmbiguousAssetError,
    CachedPrice,
    ReferencePrice,
    ReferencePriceError,
    ReferencePrices,
    UnknownAssetError,
    cache_key,
    decode_price,
    encode_price,
    parse_asset_map,
    read_latest,
    resolve_coin_ids,
)

AS_OF = 1_711_356_300_000
PRICE = ReferencePrice(
    "TIA", "celestia", "usd", Decimal("0.000012345678901234567890"), AS_OF, AS_OF + 4_000,
    "coingecko",
)  # fmt: skip
LISTINGS = [
    CoinListing("celestia", "tia", "Celestia"),
    CoinListing("monero", "xmr", "Monero"),
    *(CoinListing(f"pepe-{n}", "pepe", f"Pepe {n}") for n in range(7)),
]


def test_asset_map_takes_symbols_and_explicit_ids() -> None:
    assert parse_asset_map([" tia ", "XMR = monero", "wbtc=wrapped-bitcoin"]) == {
        "TIA": None,
        "XMR": "monero",
        "WBTC": "wrapped-bitcoin",
    }
    assert parse_asset_map([]) == {}


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["BTC/USDT"], "'BTC/USDT' is not an asset: use SYMBOL or SYMBOL=coingecko-id"),
        (["XMR=Monero"], "'Monero' is not a CoinGecko id (lower case, like bitcoin or usd-coin)"),
        (["XMR="], "'' is not a CoinGecko id (lower case, like bitcoin or usd-coin)"),
        (["TIA", "tia=celestia"], "asset TIA is listed twice"),
    ],
)
def test_asset_map_rejects_bad_items_naming_them(items: list[str], message: str) -> None:
    with pytest.raises(ReferencePriceError) as caught:
        parse_asset_map(items)
    assert str(caught.value) == message
    assert caught.value.field == "coingecko_assets"


def test_symbols_resolve_when_exactly_one_coin_has_them() -> None:
    got = resolve_coin_ids({"TIA": None, "XMR": "monero"}, LISTINGS, source="coingecko")
    assert got == {"TIA": "celestia", "XMR": "monero"}


def test_unknown_symbols_and_ids_are_named() -> None:
    with pytest.raises(UnknownAssetError) as caught:
        resolve_coin_ids({"ZZZ": None}, LISTINGS, source="coingecko")
    assert str(caught.value) == (
        "asset ZZZ: no coingecko coin has the symbol 'zzz'; configure its id as ZZZ=<id>"
    )
    with pytest.raises(UnknownAssetError) as caught:
        resolve_coin_ids({"XMR": "monero-classic"}, LISTINGS, source="coingecko")
    assert str(caught.value) == "asset XMR: coingecko has no coin with id 'monero-classic'"


def test_an_ambiguous_symbol_lists_candidates_and_asks_for_the_id() -> None:
    with pytest.raises(AmbiguousAssetError) as caught:
        resolve_coin_ids({"PEPE": None}, LISTINGS, source="coingecko")
    assert str(caught.value) == (
        "asset PEPE: 7 coingecko coins have the symbol 'pepe': pepe-0 (Pepe 0), "
        "pepe-1 (Pepe 1), pepe-2 (Pepe 2), pepe-3 (Pepe 3), pepe-4 (Pepe 4) and 2 more; "
        "configure the one meant as PEPE=<id>"
    )


def test_a_cached_price_round_trips_exactly() -> None:
    raw = encode_price(PRICE)
    assert b'"p":"0.000012345678901234567890"' in raw
    back = decode_price(raw)
    assert back == PRICE
    assert str(back.price) == "0.000012345678901234567890"
    assert cache_key("coingecko", "tia", "USD") == "refprice:coingecko:TIA:usd"


async def test_read_latest_gives_the_age_until_the_ttl_drops_it() -> None:
    mono = [0.0]
    cache = MemoryCache(clock=lambda: mono[0])
    key = cache_key("coingecko", "TIA", "usd")
    await cache.set(key, encode_price(PRICE), ttl=300.0)
    now = AS_OF + 95_000
    got = await read_latest(cache, "tia", vs_currency="usd", source="coingecko", now=now)
    assert got == CachedPrice(PRICE, 95_000)
    skewed = await read_latest(cache, "TIA", vs_currency="usd", source="coingecko", now=AS_OF - 5)
    assert skewed == CachedPrice(PRICE, 0)  # a source clock ahead of ours is not a negative age
    assert await read_latest(cache, "TIA", vs_currency="eur", source="coingecko", now=now) is None
    mono[0] = 300.0
    assert await read_latest(cache, "TIA", vs_currency="usd", source="coingecko", now=now) is None


async def test_an_unreadable_cached_value_reads_as_absent() -> None:
    cache = MemoryCache()
    await cache.set(cache_key("coingecko", "TIA", "usd"), b'{"a": 1}')
    assert await read_latest(cache, "TIA", vs_currency="usd", source="coingecko") is None


class NoUpstream:
    """A price source that must not be called: reads are served from the cache."""

    source = "coingecko"

    def __getattr__(self, name: str):
        raise AssertionError(f"the source was called: {name}")


async def test_latest_reads_the_cache_only() -> None:
    cache = MemoryCache()
    await cache.set(cache_key("coingecko", "TIA", "usd"), encode_price(PRICE), ttl=60.0)
    service = ReferencePrices(
        NoUpstream(),
        cache,
        assets={"TIA": "celestia"},
        clock=lambda: AS_OF + 1_500,  # type: ignore[arg-type]
    )
    assert await service.latest("TIA") == CachedPrice(PRICE, 1_500)
    assert await service.latest("XMR") is None
    with pytest.raises(ValueError, match="ttl must be positive seconds"):
        ReferencePrices(NoUpstream(), cache, assets={}, ttl=0)  # type: ignore[arg-type]
