"""REST access to an exchange for backfill and scheduled prefetch, and its factory.

Live feeds use ``MarketDataSource`` (watch_*); history and periodic refreshes
need the request/response side: candles by time range, tickers, markets. The
protocols here are what backfill and prefetch program against; ``make_fetcher``
builds the ccxt implementation (every call through the exchange's guard), and
tests hand in fakes of their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from cryptodesk.adapters.exchanges.base import UnknownExchangeError
from cryptodesk.domain.market import Candle, Market, Ticker

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from cryptodesk.adapters.exchanges.ccxt_source import CcxtSource
    from cryptodesk.config import Settings

# Candles per request when ccxt does not say (its own conservative default).
DEFAULT_OHLCV_LIMIT = 500


class CandleFetcher(Protocol):
    @property
    def exchange(self) -> str: ...

    async def fetch_ohlcv(
        self, symbol: str, interval: str, *, since: int, until: int, limit: int
    ) -> list[Candle]:
        """Candles of ``symbol`` opening in ``since..until`` (both inclusive, epoch ms),
        at most ``limit``, oldest first. The newest may still be open."""
        ...


class ExchangeFetcher(CandleFetcher, Protocol):
    @property
    def ohlcv_limit(self) -> int:
        """The most candles one request returns (binance 1000, coinbase 300...)."""
        ...

    @property
    def timeframes(self) -> frozenset[str] | None:
        """Candle intervals the exchange serves; None when it does not say."""
        ...

    async def load_markets(self) -> list[Market]: ...

    async def fetch_tickers(self, symbols: Sequence[str]) -> list[Ticker]: ...

    async def close(self) -> None: ...


def ccxt_exchange_ids() -> frozenset[str]:
    import ccxt  # type: ignore[import-untyped]

    return frozenset(ccxt.exchanges)


def ccxt_capabilities(exchange_id: str) -> tuple[int, frozenset[str] | None]:
    """``(ohlcv_limit, timeframes)`` from ccxt's static description of the exchange.

    Reads the class attributes only: nothing connects.
    """
    import ccxt

    exchange: Any = getattr(ccxt, exchange_id)()
    features = exchange.features or {}
    spot = features.get("spot") or {}
    limit = (spot.get("fetchOHLCV") or {}).get("limit")
    timeframes = exchange.timeframes
    return (
        int(limit) if limit else DEFAULT_OHLCV_LIMIT,
        frozenset(timeframes) if timeframes else None,
    )


class CcxtFetcher:
    """``ExchangeFetcher`` over ``CcxtSource``, plus what ccxt knows statically."""

    def __init__(
        self, source: CcxtSource, *, ohlcv_limit: int, timeframes: frozenset[str] | None
    ) -> None:
        self._source = source
        self._ohlcv_limit = ohlcv_limit
        self._timeframes = timeframes

    @property
    def exchange(self) -> str:
        return self._source.exchange

    @property
    def ohlcv_limit(self) -> int:
        return self._ohlcv_limit

    @property
    def timeframes(self) -> frozenset[str] | None:
        return self._timeframes

    async def fetch_ohlcv(
        self, symbol: str, interval: str, *, since: int, until: int, limit: int
    ) -> list[Candle]:
        return await self._source.fetch_ohlcv(
            symbol, interval, since=since, until=until, limit=limit
        )

    async def load_markets(self) -> list[Market]:
        """Fetched now: the source would otherwise answer from its daily cache."""
        return await self._source.load_markets(reload=True)

    async def fetch_tickers(self, symbols: Sequence[str]) -> list[Ticker]:
        return await self._source.fetch_tickers(symbols)

    async def close(self) -> None:
        await self._source.close()


def make_ccxt_source(
    exchange_id: str,
    settings: Settings,
    *,
    symbols: Sequence[str] = (),
    metrics_registry: CollectorRegistry | None = None,
    api_overrides: dict[str, str] | None = None,
) -> CcxtSource:
    """A ccxt source for ``exchange_id`` with its keys and hosts from
    ``settings.exchange_config`` and every request through the exchange's guard
    (weighted limiter, shared through Redis when the cache is Redis, Retry-After,
    breaker), whose metrics land in ``metrics_registry``. ``api_overrides``
    (``{"http": base, "ws": base}``) wins over the configured hosts. Raises
    UnknownExchangeError for an id ccxt does not know; nothing connects yet.
    """
    if exchange_id not in ccxt_exchange_ids():
        raise UnknownExchangeError(
            f"unknown exchange {exchange_id!r}: not an exchange id ccxt knows (e.g. binance)"
        )
    from cryptodesk.adapters.exchanges.ccxt_source import CcxtSource
    from cryptodesk.adapters.exchanges.guard import ExchangeGuard
    from cryptodesk.adapters.exchanges.limiter import limiter_redis_url
    from cryptodesk.config import ExchangeConfig

    access = settings.exchange_config.get(exchange_id, ExchangeConfig())

    def guard(exchange: Any) -> ExchangeGuard:
        return ExchangeGuard.for_exchange(
            exchange,
            redis_url=limiter_redis_url(settings.cache_url),
            key_prefix=settings.cache_key_prefix,
            metrics_registry=metrics_registry,
            failure_threshold=settings.exchange_breaker_failures,
            cool_down=settings.exchange_breaker_cooldown_seconds,
            max_wait=settings.exchange_max_wait_seconds,
        )

    return CcxtSource(
        exchange_id,
        symbols,
        api_overrides=api_overrides or access.api_overrides(),
        config=access.ccxt(),
        metrics_registry=metrics_registry,
        guard=guard,
    )


def make_fetcher(
    exchange_id: str,
    settings: Settings,
    *,
    metrics_registry: CollectorRegistry | None = None,
    api_overrides: dict[str, str] | None = None,
) -> ExchangeFetcher:
    """The REST side of ``exchange_id`` (a ccxt id), built by ``make_ccxt_source``;
    UnknownExchangeError otherwise. Nothing connects until the first call."""
    source = make_ccxt_source(
        exchange_id, settings, metrics_registry=metrics_registry, api_overrides=api_overrides
    )
    limit, timeframes = ccxt_capabilities(exchange_id)
    return CcxtFetcher(source, ohlcv_limit=limit, timeframes=timeframes)
