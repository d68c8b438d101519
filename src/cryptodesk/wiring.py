"""Which adapter serves each setting: the factories of the composition root.

``runtime`` decides what runs; this module builds the pieces it runs with,
importing an optional engine's client (Redis, Kafka, ccxt) only when a setting
selects it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cryptodesk.adapters.bus.base import Bus
from cryptodesk.adapters.bus.memory import MemoryBus
from cryptodesk.adapters.cache.base import Cache
from cryptodesk.adapters.cache.memory import MemoryCache
from cryptodesk.adapters.exchanges.base import MarketDataSource
from cryptodesk.adapters.exchanges.simulator import SimulatedExchange
from cryptodesk.adapters.locks.base import JobLock
from cryptodesk.config import Settings
from cryptodesk.domain.timeutil import now_ms, parse_time

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from sqlalchemy.ext.asyncio import AsyncEngine

    from cryptodesk.services.reference_prices import ReferencePrices

# The embedded bus keeps at most this many messages per topic nobody consumes,
# and makes publishers wait while a consumer group is this far behind.
MEMORY_BUS_RETENTION = 100_000
MEMORY_BUS_MAX_LAG = 20_000


class StartupError(Exception):
    """A start-up problem the user must fix; printed as one line, exit code 2."""


def make_cache(settings: Settings) -> Cache:
    url = settings.cache_url
    if url.startswith("memory://"):
        return MemoryCache()
    from cryptodesk.adapters.cache.redis import RedisCache

    return RedisCache.from_url(url, key_prefix=settings.cache_key_prefix)


def make_bus(settings: Settings) -> Bus:
    url = settings.bus_url
    if url.startswith("memory://"):
        return MemoryBus(max_retained=MEMORY_BUS_RETENTION, max_lag=MEMORY_BUS_MAX_LAG)
    if url.startswith("kafka://"):
        from cryptodesk.adapters.bus.kafka import KafkaBus

        return KafkaBus.from_url(
            url,
            topic_prefix=settings.bus_topic_prefix,
            partitions=settings.bus_partitions,
            replication=settings.bus_replication,
            compression=None if settings.bus_compression == "none" else settings.bus_compression,
            session_timeout_ms=settings.bus_session_timeout_ms,
            heartbeat_interval_ms=settings.bus_heartbeat_interval_ms,
            rebalance_timeout_ms=settings.bus_rebalance_timeout_ms,
        )
    from cryptodesk.adapters.bus.redis_streams import RedisStreamsBus

    return RedisStreamsBus.from_url(
        url,
        stream_prefix=settings.bus_topic_prefix,
        maxlen=settings.bus_stream_maxlen,
        claim_idle_ms=settings.bus_claim_idle_ms,
    )


def make_source(
    exchange: str,
    settings: Settings,
    *,
    last_ts: int | None,
    metrics_registry: CollectorRegistry | None = None,
) -> MarketDataSource:
    """``last_ts``: the newest stored trade of ``exchange``, where a restart resumes.

    ``sim`` and ``replay`` are built in; any other id is a ccxt exchange
    (UnknownExchangeError when ccxt has none by that name).
    """
    if exchange == "sim":
        if settings.sim_start:
            # A fixed timeline: regenerate it and continue after what is stored.
            start, resume = parse_time(settings.sim_start, field="sim_start"), last_ts
        else:
            # A new timeline from now, after anything stored (ids never collide).
            start, resume = max(now_ms(), (last_ts or 0) + 1), None
        return SimulatedExchange(
            settings.symbols,
            seed=settings.sim_seed,
            speed=settings.sim_speed,
            start_ms=start,
            book_interval_ms=settings.sim_book_interval_ms,
            resume_after_ms=resume,
        )
    if exchange == "replay":
        from cryptodesk.adapters.exchanges.replay import ReplayExchange, parse_speed
        from cryptodesk.adapters.files.parsing import DataFileError

        replay = ReplayExchange(
            settings.replay_path,
            symbol=settings.replay_symbol or settings.symbols[0],
            speed=parse_speed(settings.replay_speed),
            interval=settings.replay_interval or None,
            resume_after_ms=last_ts,
        )
        try:
            replay.load()  # a bad file fails the start with its line number
        except DataFileError as exc:
            raise StartupError(f"CRYPTODESK_EXCHANGES: replay: {exc}") from None
        return replay
    from cryptodesk.services.sources import make_ccxt_source

    # No symbols to insist on: the ingest streams those the exchange lists and
    # reports the others, rather than failing the whole feed.
    return make_ccxt_source(exchange, settings, metrics_registry=metrics_registry)


def make_job_lock(settings: Settings, engine: AsyncEngine) -> JobLock:
    """Where scheduled jobs take their cross-process lock: Redis when the cache is
    Redis, else PostgreSQL advisory locks, else (one embedded process) memory."""
    if settings.cache_url.startswith(("redis://", "rediss://")):
        from cryptodesk.adapters.locks.redis import RedisJobLock

        return RedisJobLock.from_url(settings.cache_url, key_prefix=settings.cache_key_prefix)
    if engine.dialect.name == "postgresql":
        from cryptodesk.adapters.locks.postgres import PostgresJobLock

        return PostgresJobLock(engine)
    from cryptodesk.adapters.locks.memory import MemoryJobLock

    return MemoryJobLock()


def make_reference_prices(
    settings: Settings, cache: Cache, *, metrics_registry: CollectorRegistry | None = None
) -> ReferencePrices | None:
    """CoinGecko prices of ``COINGECKO_ASSETS`` (None when none is configured),
    behind the ``coingecko`` guard: its limiter is shared through Redis when the
    cache is Redis, like an exchange's."""
    if not settings.coingecko_assets:
        return None
    from cryptodesk.adapters.exchanges.limiter import limiter_redis_url
    from cryptodesk.adapters.prices.coingecko import CoinGeckoClient, coingecko_guard
    from cryptodesk.services.reference_prices import ReferencePrices, parse_asset_map

    key = settings.coingecko_api_key.get_secret_value() or None
    guard = coingecko_guard(
        plan=settings.coingecko_api_key_type if key else "public",
        calls_per_minute=settings.coingecko_calls_per_minute or None,
        redis_url=limiter_redis_url(settings.cache_url),
        key_prefix=settings.cache_key_prefix,
        metrics_registry=metrics_registry,
        failure_threshold=settings.exchange_breaker_failures,
        cool_down=settings.exchange_breaker_cooldown_seconds,
        max_wait=settings.exchange_max_wait_seconds,
    )
    client = CoinGeckoClient(
        api_key=key,
        key_type=settings.coingecko_api_key_type,
        base_url=settings.coingecko_base_url or None,
        guard=guard,
        metrics_registry=metrics_registry,
        close_guard=True,
    )
    return ReferencePrices(
        client,
        cache,
        assets=parse_asset_map(settings.coingecko_assets),
        vs_currency=settings.coingecko_vs_currency,
    )
