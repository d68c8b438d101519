"""Reference prices of assets no configured exchange lists, from a price source
(CoinGecko: ``adapters/prices``).

``refresh`` (a scheduled job) fetches the latest price of every configured
asset in one call and writes each to the cache with the source's as-of time,
under a TTL: the API answers from there with ``read_latest`` and never calls
upstream on a request. When the source is down the cached price is served
with its age until the TTL drops it. ``daily_history`` fetches daily prices on
demand.

Assets are configured as ``SYMBOL`` or ``SYMBOL=coin-id``. Symbols are not
unique on CoinGecko (dozens of coins call themselves ``ETH``), so a bare
symbol is resolved through the source's coin list only when exactly one coin
has it; otherwise the error lists the candidates and asks for the id.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

import msgspec
import structlog

from cryptodesk.adapters.cache.base import Cache
from cryptodesk.adapters.prices import CoinListing, PriceSource, UnknownCoinError
from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.timeutil import now_ms

log = structlog.get_logger(__name__)

DEFAULT_TTL = 24 * 3600.0  # a price not refreshed for a day is not served at all
ASSETS_FIELD = "coingecko_assets"
_SYMBOL = re.compile(r"^[A-Z0-9][A-Z0-9.\-]{0,19}$")
_COIN_ID = re.compile(r"^[a-z0-9][a-z0-9._\-]{0,99}$")
_MAX_CANDIDATES = 5  # named in an ambiguity error


class ReferencePriceError(DomainError):
    """A reference asset that cannot be priced as configured."""


class UnknownAssetError(ReferencePriceError):
    """An asset that is not configured, or whose coin the source does not know."""


class AmbiguousAssetError(ReferencePriceError):
    """A bare symbol several of the source's coins share."""


@dataclass(frozen=True, slots=True)
class ReferencePrice:
    """The latest price of ``asset`` (``coin_id`` at ``source``) in ``vs_currency``."""

    asset: str
    coin_id: str
    vs_currency: str
    price: Decimal
    as_of: int  # the source's last update, epoch ms
    fetched_at: int  # when it was read from the source, epoch ms
    source: str


@dataclass(frozen=True, slots=True)
class CachedPrice:
    """A cached reference price and how old it is (``now - as_of``, never negative)."""

    price: ReferencePrice
    age_ms: int


@dataclass(frozen=True, slots=True)
class DailyPrice:
    """The price of ``asset`` at 00:00 UTC of ``day`` (epoch ms), with the day's
    market cap and 24 h volume when the source gives them."""

    asset: str
    coin_id: str
    vs_currency: str
    day: int
    price: Decimal
    market_cap: Decimal | None
    volume: Decimal | None
    source: str


@dataclass(frozen=True, slots=True)
class RefreshReport:
    """Assets whose price was written, and those skipped for a malformed entry."""

    written: tuple[str, ...]
    malformed: tuple[str, ...]


# ---- configuration ----------------------------------------------------------------------


def parse_asset_map(items: Iterable[str]) -> dict[str, str | None]:
    """``["ATOM", "XMR=monero"]`` -> ``{"ATOM": None, "XMR": "monero"}`` (symbol
    upper-cased; ``None``: resolve the symbol through the coin list)."""
    assets: dict[str, str | None] = {}
    for item in items:
        symbol, sep, coin_id = (part.strip() for part in item.partition("="))
        symbol = symbol.upper()
        if not _SYMBOL.match(symbol):
            raise ReferencePriceError(
                f"{item!r} is not an asset: use SYMBOL or SYMBOL=coingecko-id", field=ASSETS_FIELD
            )
        if sep and not _COIN_ID.match(coin_id):
            raise ReferencePriceError(
                f"{coin_id!r} is not a CoinGecko id (lower case, like bitcoin or usd-coin)",
                field=ASSETS_FIELD,
            )
        if symbol in assets:
            raise ReferencePriceError(f"asset {symbol} is listed twice", field=ASSETS_FIELD)
        assets[symbol] = coin_id or None
    return assets


def resolve_coin_ids(
    assets: Mapping[str, str | None], listings: Sequence[CoinListing], *, source: str
) -> dict[str, str]:
    """Each asset's coin id: the configured one (checked against ``listings``) or
    the only coin with the asset's symbol."""
    known = {coin.id for coin in listings}
    by_symbol: dict[str, list[CoinListing]] = {}
    for coin in listings:
        by_symbol.setdefault(coin.symbol.lower(), []).append(coin)
    resolved: dict[str, str] = {}
    for asset, coin_id in assets.items():
        if coin_id is not None:
            if coin_id not in known:
                raise UnknownAssetError(
                    f"asset {asset}: {source} has no coin with id {coin_id!r}", field=ASSETS_FIELD
                )
            resolved[asset] = coin_id
            continue
        candidates = by_symbol.get(asset.lower(), [])
        if not candidates:
            raise UnknownAssetError(
                f"asset {asset}: no {source} coin has the symbol {asset.lower()!r}; "
                f"configure its id as {asset}=<id>",
                field=ASSETS_FIELD,
            )
        if len(candidates) > 1:
            named = ", ".join(f"{c.id} ({c.name})" for c in candidates[:_MAX_CANDIDATES])
            more = len(candidates) - _MAX_CANDIDATES
            raise AmbiguousAssetError(
                f"asset {asset}: {len(candidates)} {source} coins have the symbol "
                f"{asset.lower()!r}: {named}{f' and {more} more' if more > 0 else ''}; "
                f"configure the one meant as {asset}=<id>",
                field=ASSETS_FIELD,
            )
        resolved[asset] = candidates[0].id
    return resolved


# ---- the cache ----------------------------------------------------------------------------


def cache_key(source: str, asset: str, vs_currency: str) -> str:
    return f"refprice:{source}:{asset.upper()}:{vs_currency.lower()}"


class _Cached(msgspec.Struct, frozen=True):
    a: str  # asset
    i: str  # coin id
    q: str  # vs currency
    p: str  # price, the exact decimal text
    t: int  # as of, epoch ms
    f: int  # fetched at, epoch ms
    s: str  # source


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(_Cached).decode


def encode_price(price: ReferencePrice) -> bytes:
    return _encode(
        _Cached(price.asset, price.coin_id, price.vs_currency, str(price.price),
                price.as_of, price.fetched_at, price.source)
    )  # fmt: skip


def decode_price(raw: bytes) -> ReferencePrice:
    d = _decode(raw)
    return ReferencePrice(d.a, d.i, d.q, Decimal(d.p), d.t, d.f, d.s)


async def read_latest(
    cache: Cache, asset: str, *, vs_currency: str, source: str, now: int | None = None
) -> CachedPrice | None:
    """The cached price of ``asset`` and its age, or None: never calls the source."""
    raw = await cache.get(cache_key(source, asset, vs_currency))
    if raw is None:
        return None
    try:
        price = decode_price(raw)
    except (msgspec.DecodeError, ArithmeticError) as exc:  # written by another version
        log.warning("unreadable cached reference price", asset=asset, error=str(exc))
        return None
    age = (now_ms() if now is None else now) - price.as_of
    return CachedPrice(price, max(0, age))


# ---- the service ----------------------------------------------------------------------------


class ReferencePrices:
    """Refresh, read and history of the configured reference assets."""

    def __init__(
        self,
        source: PriceSource,
        cache: Cache,
        *,
        assets: Mapping[str, str | None],
        vs_currency: str = "usd",
        ttl: float = DEFAULT_TTL,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        if not ttl > 0:
            raise ValueError("ttl must be positive seconds")
        self._source = source
        self._cache = cache
        self._assets = {symbol.upper(): coin_id for symbol, coin_id in assets.items()}
        self.vs_currency = vs_currency.lower()
        self._ttl = ttl
        self._clock = clock
        self._listings: list[CoinListing] | None = None

    @property
    def assets(self) -> list[str]:
        return list(self._assets)

    async def coin_ids(self) -> dict[str, str]:
        """Asset -> coin id. The coin list is fetched only for bare symbols, and once
        per process: it is large, and a coin's id never changes."""
        if all(coin_id is not None for coin_id in self._assets.values()):
            return {a: c for a, c in self._assets.items() if c is not None}
        if self._listings is None:
            self._listings = await self._source.coins_list()
        return resolve_coin_ids(self._assets, self._listings, source=self._source.source)

    async def refresh(self) -> RefreshReport:
        """Fetch every configured asset's price and cache it (see the module docstring).

        Prices that came back are written even when some asset is unknown to
        the source; then ``UnknownAssetError`` names the unknown ones.
        """
        ids = await self.coin_ids()
        if not ids:
            return RefreshReport((), ())
        answer = await self._source.simple_price(list(ids.values()), self.vs_currency)
        fetched_at = self._clock()
        items: dict[str, bytes] = {}
        written: list[str] = []
        for asset, coin_id in ids.items():
            spot = answer.prices.get(coin_id)
            if spot is None:
                continue
            price = ReferencePrice(asset, coin_id, self.vs_currency, spot.price, spot.as_of,
                                   fetched_at, self._source.source)  # fmt: skip
            items[cache_key(price.source, asset, self.vs_currency)] = encode_price(price)
            written.append(asset)
        if items:
            await self._cache.set_many(items, ttl=self._ttl)
        malformed = tuple(a for a, c in ids.items() if c in answer.malformed)
        unknown = [f"{a} ({c})" for a, c in ids.items() if c in answer.missing]
        if unknown:
            raise UnknownAssetError(
                f"{self._source.source} has no {self.vs_currency} price for "
                f"{', '.join(unknown)}; check the ids in {ASSETS_FIELD.upper()}",
                field=ASSETS_FIELD,
            )
        return RefreshReport(tuple(written), malformed)

    async def latest(self, asset: str) -> CachedPrice | None:
        """The cached price of ``asset`` with its age, or None (no upstream call)."""
        return await read_latest(
            self._cache, asset, vs_currency=self.vs_currency, source=self._source.source,
            now=self._clock(),
        )  # fmt: skip

    async def daily_history(self, asset: str, *, days: int) -> list[DailyPrice]:
        """Daily prices of ``asset`` over the last ``days`` days, oldest first."""
        symbol = asset.upper()
        if symbol not in self._assets:
            raise UnknownAssetError(
                f"asset {symbol} is not a configured reference asset "
                f"(configured: {', '.join(self._assets) or 'none'})",
                field="asset",
            )
        coin_id = (await self.coin_ids())[symbol]
        name = self._source.source
        try:
            points = await self._source.daily_chart(coin_id, self.vs_currency, days)
        except UnknownCoinError:
            raise UnknownAssetError(
                f"asset {symbol}: {name} has no coin with id {coin_id!r}", field=ASSETS_FIELD
            ) from None
        return [
            DailyPrice(symbol, coin_id, self.vs_currency, p.ts, p.price, p.market_cap,
                       p.volume, name)
            for p in points
        ]  # fmt: skip

    async def close(self) -> None:
        await self._source.close()
