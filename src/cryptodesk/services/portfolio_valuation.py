"""Portfolio valuation at live prices, daily snapshots and returns over a period.

Prices never come from an exchange call: live prices are read from the cache
(what ingest and the reference price job wrote), past prices from stored
candles. An asset is priced in the report currency by the first of:

1. the currency itself: exactly 1;
2. the cached ticker of ``ASSET/Q`` for each quote ``Q`` of ``quotes`` in
   order (the currency first, then its *par quotes*), on each configured
   exchange in order: the last trade price;
3. the cached CoinGecko reference price of the asset in the currency;
4. for a par quote itself (holding USDT when the currency is USD): 1, at par.

**Par quotes** are the stablecoins treated as worth exactly one unit of the
currency, so ``BTC/USDT`` prices BTC in USD. The default for USD is
``USDT, USDC`` and for any other currency none; the list is a setting. A
depeg therefore shows up only through ticker 2 or reference 3 of the coin
itself (when one exists), never in the quotes: that is the convention.

Each price carries its source and its age, so a stale price is visible.
Past closes (for snapshots and the daily report) use the same order over
stored candles: the candle of ``ASSET/Q`` that closes exactly at the day's
end, on the first of ``intervals`` (``1d``, ``1h``, ``1m``) that has one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, timedelta
from decimal import Decimal
from typing import Any, Final, Protocol

import structlog

from cryptodesk.adapters.cache.base import Cache
from cryptodesk.adapters.db.base import MarketStore
from cryptodesk.domain import codec
from cryptodesk.domain.interval import Interval
from cryptodesk.domain.timeutil import now_ms
from cryptodesk.portfolio import performance as perf
from cryptodesk.portfolio import valuation
from cryptodesk.portfolio.ledger import LedgerEntry
from cryptodesk.portfolio.tax_lots import CostBasisResult
from cryptodesk.services import cache_keys
from cryptodesk.services.reference_prices import read_latest

log = structlog.get_logger(__name__)

EntriesSource = Callable[[str], Awaitable[list[LedgerEntry]]]
CostBasisFn = Callable[..., CostBasisResult]
DEFAULT_PAR_QUOTES: Final[Mapping[str, tuple[str, ...]]] = {"USD": ("USDT", "USDC")}
DEFAULT_CLOSE_INTERVALS: Final = ("1d", "1h", "1m")
REFERENCE_SOURCE: Final = "coingecko"


@dataclass(frozen=True, slots=True)
class Quote:
    """A price in the report currency, where it came from and how old it is.

    ``source``: ``currency``, ``par``, ``ticker:<exchange>:<symbol>``,
    ``coingecko`` or ``candle:<exchange>:<symbol>:<interval>``.
    """

    asset: str
    price: Decimal
    source: str
    as_of: int | None  # epoch ms the price was true
    age_ms: int | None


def par_quotes(currency: str, configured: Sequence[str] | None = None) -> tuple[str, ...]:
    """The stablecoins taken at par for ``currency`` (``configured`` overrides the default)."""
    if configured is not None:
        return tuple(q for q in configured if q != currency)
    return DEFAULT_PAR_QUOTES.get(currency, ())


def _decimal(x: float) -> Decimal:
    # repr is the shortest text that reads back as the same float: 65000.1, not 65000.0999...
    return Decimal(repr(x))


class LivePrices:
    """Latest prices from the cache (see the module docstring)."""

    def __init__(
        self,
        cache: Cache,
        *,
        exchanges: Sequence[str],
        currency: str,
        par: Sequence[str] | None = None,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._cache = cache
        self._exchanges = list(exchanges)
        self.currency = currency
        self._par = par_quotes(currency, par)
        self._quotes = (currency, *self._par)
        self._clock = clock

    async def quotes(self, assets: Iterable[str]) -> dict[str, Quote | None]:
        wanted = sorted(set(assets))
        now = self._clock()
        candidates = [
            (asset, ex, f"{asset}/{q}")
            for asset in wanted
            if asset != self.currency
            for q in self._quotes
            if q != asset
            for ex in self._exchanges
        ]
        raws = await self._cache.get_many([cache_keys.ticker(ex, s) for _, ex, s in candidates])
        out: dict[str, Quote | None] = {}
        for (asset, ex, symbol), raw in zip(candidates, raws, strict=True):
            if raw is None or out.get(asset) is not None:
                continue
            ticker = codec.decode_ticker(raw)
            out[asset] = Quote(asset, _decimal(ticker.last), f"ticker:{ex}:{symbol}", ticker.ts,
                               max(0, now - ticker.ts))  # fmt: skip
        for asset in wanted:
            if asset == self.currency:
                out[asset] = Quote(asset, Decimal(1), "currency", None, None)
            elif out.get(asset) is None:
                out[asset] = await self._reference(asset, now)
        return out

    async def _reference(self, asset: str, now: int) -> Quote | None:
        cached = await read_latest(
            self._cache, asset, vs_currency=self.currency.lower(), source=REFERENCE_SOURCE, now=now
        )
        if cached is not None:
            return Quote(asset, cached.price.price, REFERENCE_SOURCE, cached.price.as_of,
                         cached.age_ms)  # fmt: skip
        return Quote(asset, Decimal(1), "par", None, None) if asset in self._par else None


class ClosePrices:
    """Closing prices of past UTC days from stored candles (see the module docstring)."""

    def __init__(
        self,
        store: MarketStore,
        *,
        exchanges: Sequence[str],
        currency: str,
        par: Sequence[str] | None = None,
        intervals: Sequence[str] = DEFAULT_CLOSE_INTERVALS,
    ) -> None:
        self._store = store
        self._exchanges = list(exchanges)
        self.currency = currency
        self._par = par_quotes(currency, par)
        self._quotes = (currency, *self._par)
        self._intervals = [(iv, Interval.parse(iv).ms) for iv in intervals]

    async def at_close(self, assets: Iterable[str], day: date) -> dict[str, Quote | None]:
        end = perf.day_start(day + timedelta(days=1))
        out: dict[str, Quote | None] = {}
        for asset in sorted(set(assets)):
            out[asset] = await self._close(asset, end)
        return out

    async def _close(self, asset: str, end: int) -> Quote | None:
        if asset == self.currency:
            return Quote(asset, Decimal(1), "currency", None, None)
        for q in self._quotes:
            if q == asset:
                continue
            symbol = f"{asset}/{q}"
            for ex in self._exchanges:
                for iv, ms in self._intervals:
                    found = await self._store.get_candles(
                        ex, symbol, iv, start=end - ms, end=end - ms + 1, limit=1
                    )
                    if found:
                        return Quote(asset, _decimal(found[0].close),
                                     f"candle:{ex}:{symbol}:{iv}", end, None)  # fmt: skip
        return Quote(asset, Decimal(1), "par", None, None) if asset in self._par else None


class SnapshotStore(Protocol):
    async def save_day(self, tenant: str, day: str, rows: Sequence[valuation.Snapshot]) -> None: ...

    async def between(self, tenant: str, start: str, end: str) -> list[valuation.Snapshot]: ...


@dataclass(frozen=True, slots=True)
class PortfolioView:
    """A valuation with the quote behind each price."""

    valuation: valuation.Valuation
    quotes: dict[str, Quote | None]


def default_cost_basis() -> CostBasisFn:
    from cryptodesk.portfolio.cost_basis import compute

    return compute


def quotes_to_dict(quotes: Mapping[str, Quote | None]) -> dict[str, Any]:
    return {
        asset: None if q is None else {
            "price": format(q.price, "f"), "source": q.source, "as_of": q.as_of, "age_ms": q.age_ms,
        }
        for asset, q in sorted(quotes.items())
    }  # fmt: skip


class PortfolioValuation:
    """Positions at live prices, the daily snapshot, and returns from snapshots.

    Positions are per (account, asset): the cost basis runs per wallet, except
    for ``uk``, which pools across accounts by law and gives positions per
    asset (account ``*``).
    """

    def __init__(
        self,
        entries: EntriesSource,
        prices: LivePrices,
        closes: ClosePrices,
        snapshots: SnapshotStore,
        *,
        currency: str,
        method: str,
        long_term_days: int = 365,
        cost_basis: CostBasisFn | None = None,
    ) -> None:
        self._entries = entries
        self._prices = prices
        self._closes = closes
        self._snapshots = snapshots
        self.currency = currency
        self.method = method
        self._long_term_days = long_term_days
        self._compute = cost_basis

    async def cost_basis(self, tenant: str, *, before: int | None = None) -> CostBasisResult:
        """The cost basis of ``tenant``'s entries (those before ``before`` when given)."""
        entries = await self._entries(tenant)
        if before is not None:
            entries = [e for e in entries if e.timestamp < before]
        compute = self._compute or default_cost_basis()
        return await asyncio.to_thread(
            compute, entries, method=self.method, currency=self.currency,
            per_wallet=self.method != "uk", long_term_days=self._long_term_days,
        )  # fmt: skip

    async def value(self, tenant: str) -> PortfolioView:
        """``tenant``'s positions at the latest cached prices."""
        result = await self.cost_basis(tenant)
        quotes = await self._prices.quotes(_assets(result))
        prices = {a: None if q is None else q.price for a, q in quotes.items()}
        return PortfolioView(valuation.value(result, prices), quotes)

    async def record_snapshot(self, tenant: str, day: date) -> list[valuation.Snapshot]:
        """Value ``tenant``'s positions at the close of ``day`` and store them (idempotent)."""
        result = await self.cost_basis(tenant, before=perf.day_start(day + timedelta(days=1)))
        quotes = await self._closes.at_close(_assets(result), day)
        prices = {a: None if q is None else q.price for a, q in quotes.items()}
        rows = valuation.snapshots(valuation.value(result, prices), day.isoformat())
        await self._snapshots.save_day(tenant, day.isoformat(), rows)
        return rows

    async def performance(self, tenant: str, start: date, end: date) -> perf.Performance:
        """TWR and MWR from the close of ``start`` to the close of ``end``, over the
        stored snapshots and the ledger's flows (``portfolio.performance``)."""
        rows = await self._snapshots.between(tenant, start.isoformat(), end.isoformat())
        totals: dict[date, Decimal] = {}
        unknown: set[date] = set()  # a position had no price: the day's total is unknown
        day_prices: dict[tuple[date, str], Decimal] = {}
        for r in rows:
            d = date.fromisoformat(r.day)
            if r.market_value is None:
                unknown.add(d)
            else:
                totals[d] = valuation.EXACT.add(totals.get(d, Decimal(0)), r.market_value)
            if r.price is not None:
                day_prices[(d, r.asset)] = r.price
        values: dict[date, Decimal | None] = {d: totals.get(d, Decimal(0)) for d in totals}
        values.update((d, None) for d in unknown)

        def price_at(asset: str, ts: int) -> Decimal | None:
            return day_prices.get((perf.utc_day(ts), asset))

        entries = await self._entries(tenant)
        flows = perf.flows(
            entries, self.currency, start=perf.day_start(start + timedelta(days=1)),
            end=perf.day_start(end + timedelta(days=1)), price=price_at,
        )  # fmt: skip
        per_day, unvalued = perf.daily_net_flows(flows)
        result = perf.period_returns(values, per_day, start, end)
        if unvalued:
            ids = ", ".join(sorted({f.entry_id for f in unvalued}))
            note = f"flows without a value or a stored price: {ids}"
            none = perf.Rate(None, note)
            result = replace(result, twr=none, twr_annualized=None, mwr=none,
                             notes=(*result.notes, note))  # fmt: skip
        return result


def _assets(result: CostBasisResult) -> set[str]:
    return {h.asset for h in result.holdings if h.amount != 0}
