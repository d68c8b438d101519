"""Scheduled prefetch for the ``scheduler`` role: candles, tickers and markets over REST.

Three jobs per exchange, on APScheduler interval triggers with jitter (so many
processes and exchanges do not all fire on the same second):

- ``candles:EX`` (default every 55 min): every configured symbol and interval
  continues from its newest stored candle up to the last closed one (a fresh
  series starts ``lookback_candles`` back), upserted like a backfill;
- ``tickers:EX`` (default every 5 s): the configured symbols' tickers into the
  cache, where the API reads them;
- ``markets:EX`` (daily): the exchange's markets into the cache.

Missed runs (the process was suspended, the loop was busy) coalesce into one
if they are at most one interval late, and a job never overlaps itself in a
process (``max_instances=1``). Across processes each run first takes the job's
lock (``adapters/locks``): a process that cannot take it records the run as
``skipped`` and leaves the work to the holder. The lease is renewed while the
run lasts, so a slow backfill does not lose it. Every run, of any outcome, is
recorded in ``job_runs`` with the time of the next one. With a ``FeedStatus``,
each run that reached the exchange also reports its success or failure there
(channel ``prefetch:KIND``), which marks served data stale and ``/readyz``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler  # type: ignore[import-untyped]
from apscheduler.triggers.interval import IntervalTrigger  # type: ignore[import-untyped]

from cryptodesk.adapters.cache.base import Cache
from cryptodesk.adapters.locks.base import JobLock
from cryptodesk.domain import codec
from cryptodesk.domain.interval import Interval
from cryptodesk.domain.jobs import Outcome
from cryptodesk.domain.timeutil import now_ms
from cryptodesk.services import cache_keys
from cryptodesk.services.backfill import CandleStore, backfill
from cryptodesk.services.feed_status import FeedStatus, prefetch_channel
from cryptodesk.services.jobs import job_id, split_job_id
from cryptodesk.services.locked_jobs import LOCK_TTL, LockedJobRunner, RunRecorder, error_text
from cryptodesk.services.sources import ExchangeFetcher

log = structlog.get_logger(__name__)

CANDLES_EVERY = 55 * 60.0
TICKERS_EVERY = 5.0
MARKETS_EVERY = 24 * 3600.0
JITTER_FRACTION = 0.1  # of the interval, at most MAX_JITTER seconds
MAX_JITTER = 60.0
LOOKBACK_CANDLES = 500


@dataclass(frozen=True, slots=True)
class JobSpec:
    job_id: str
    every: float  # seconds between runs
    jitter: float  # each run moves by up to +-jitter seconds


def _jitter(every: float, fraction: float) -> float:
    return min(every * fraction, MAX_JITTER)


class PrefetchScheduler:
    """The prefetch jobs of a set of exchanges; ``run`` them until a stop event."""

    def __init__(
        self,
        fetchers: Sequence[ExchangeFetcher],
        store: CandleStore,
        cache: Cache,
        runs: RunRecorder,
        lock: JobLock,
        *,
        symbols: Sequence[str],
        intervals: Sequence[Interval],
        candles_every: float = CANDLES_EVERY,
        tickers_every: float = TICKERS_EVERY,
        markets_every: float = MARKETS_EVERY,
        jitter_fraction: float = JITTER_FRACTION,
        lookback_candles: int = LOOKBACK_CANDLES,
        lock_ttl: float = LOCK_TTL,
        owner: str | None = None,
        clock: Callable[[], int] = now_ms,
        status: FeedStatus | None = None,
    ) -> None:
        for name, value in (
            ("candles_every", candles_every),
            ("tickers_every", tickers_every),
            ("markets_every", markets_every),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be positive seconds")
        if not 0 <= jitter_fraction < 1:
            raise ValueError("jitter_fraction must be in [0, 1)")
        if lookback_candles < 1:
            raise ValueError("lookback_candles must be >= 1")
        self._fetchers = {f.exchange: f for f in fetchers}
        self._store = store
        self._cache = cache
        self._runner = LockedJobRunner(
            runs, lock, lock_ttl=lock_ttl, owner=owner, clock=clock, next_run=self._next_run
        )
        self._symbols = list(symbols)
        self._intervals = list(intervals)
        self._lookback = lookback_candles
        self._clock = clock
        self._status = status
        self._listed: dict[str, frozenset[str]] = {}
        every = {"candles": candles_every, "tickers": tickers_every, "markets": markets_every}
        self.specs = [
            JobSpec(job_id(kind, ex), seconds, _jitter(seconds, jitter_fraction))
            for ex in self._fetchers
            for kind, seconds in every.items()
        ]
        self._work: Mapping[str, Callable[[str], Awaitable[None]]] = {
            "candles": self._refresh_candles,
            "tickers": self._refresh_tickers,
            "markets": self._refresh_markets,
        }
        self._scheduler: AsyncIOScheduler | None = None
        self._running: set[asyncio.Task[object]] = set()
        self._stopping = False

    # ---- one run ------------------------------------------------------------------

    async def run_job(self, name: str) -> Outcome:
        """Run job ``name`` once under its lock and record how it went."""
        kind, exchange = split_job_id(name)
        if exchange not in self._fetchers:
            raise ValueError(f"unknown job {name!r}")
        status = self._status
        channel = prefetch_channel(kind)
        return await self._runner.run(
            name,
            lambda: self._work[kind](exchange),
            on_success=None if status is None else lambda: status.succeeded(exchange, channel),
            on_error=None if status is None else lambda e: status.failed(exchange, channel, e),
        )

    def _next_run(self, name: str) -> int | None:
        if self._scheduler is None:
            return None
        job = self._scheduler.get_job(name)
        when: datetime | None = None if job is None else job.next_run_time
        return None if when is None else int(when.timestamp() * 1000)

    # ---- the jobs ---------------------------------------------------------------------

    async def _refresh_markets(self, exchange: str) -> None:
        markets = await self._fetchers[exchange].load_markets()
        listed = frozenset(m.symbol for m in markets)
        if exchange not in self._listed and (missing := set(self._symbols) - listed):
            log.warning("symbols not listed, not prefetched", exchange=exchange,
                        symbols=sorted(missing))  # fmt: skip
        self._listed[exchange] = listed
        await self._cache.set(cache_keys.markets(exchange), codec.encode_markets(markets))

    async def _symbols_on(self, exchange: str) -> list[str]:
        """The configured symbols the exchange lists (markets loaded on first need)."""
        if exchange not in self._listed:
            await self._refresh_markets(exchange)
        listed = self._listed[exchange]
        return [s for s in self._symbols if s in listed]

    async def _refresh_tickers(self, exchange: str) -> None:
        symbols = await self._symbols_on(exchange)
        if not symbols:
            return
        tickers = await self._fetchers[exchange].fetch_tickers(symbols)
        wanted = set(symbols)
        items = {
            cache_keys.ticker(t.exchange, t.symbol): codec.encode_ticker(t)
            for t in tickers
            if t.symbol in wanted
        }
        if items:
            await self._cache.set_many(items)

    async def _refresh_candles(self, exchange: str) -> None:
        """Every series of the exchange; one failing series does not stop the others."""
        fetcher = self._fetchers[exchange]
        timeframes = fetcher.timeframes
        failures: list[str] = []
        for symbol in await self._symbols_on(exchange):
            for interval in self._intervals:
                if timeframes is not None and interval.name not in timeframes:
                    continue
                try:
                    await self._refresh_series(fetcher, symbol, interval)
                except Exception as exc:
                    failures.append(f"{symbol} {interval.name}: {error_text(exc)}")
        if failures:
            raise PrefetchError(f"{len(failures)} series failed: " + "; ".join(failures))

    async def _refresh_series(
        self, fetcher: ExchangeFetcher, symbol: str, interval: Interval
    ) -> None:
        newest = await self._store.get_candles(
            fetcher.exchange, symbol, interval.name, limit=1, newest_first=True
        )
        # From the newest stored candle however old (a long outage is filled
        # in), else a fixed look-back for a series never fetched.
        since = (
            newest[0].open_time
            if newest
            else interval.bucket(self._clock()) - self._lookback * interval.ms
        )
        await backfill(
            fetcher, self._store, symbol=symbol, interval=interval, since=since,
            limit=fetcher.ohlcv_limit, clock=self._clock,
        )  # fmt: skip

    # ---- scheduling -------------------------------------------------------------------

    def start(self) -> None:
        """Schedule every job; each runs once right away, then every interval.

        The first runs are not spread: other processes starting at the same
        time are skipped by the lock, and the exchange's limiter paces the calls.
        """
        if self._scheduler is not None:
            raise RuntimeError("already started")
        # APScheduler logs every run at INFO (every few seconds for tickers);
        # job_runs and our own log lines already say what matters.
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
        scheduler = AsyncIOScheduler(timezone=UTC)
        now = datetime.now(UTC)
        for spec in self.specs:
            scheduler.add_job(
                self._scheduled,
                trigger=IntervalTrigger(
                    seconds=spec.every, jitter=spec.jitter or None, timezone=UTC
                ),
                args=[spec.job_id],
                id=spec.job_id,
                name=spec.job_id,
                coalesce=True,
                max_instances=1,
                misfire_grace_time=max(1, math.ceil(spec.every)),
                next_run_time=now,
            )
        scheduler.start()
        self._scheduler = scheduler
        log.info(
            "prefetch scheduled", jobs=[s.job_id for s in self.specs], owner=self._runner.owner
        )

    @property
    def scheduler(self) -> AsyncIOScheduler | None:
        return self._scheduler

    async def _scheduled(self, name: str) -> None:
        if self._stopping:
            return
        task = asyncio.current_task()
        if task is not None:
            self._running.add(task)
        try:
            await self.run_job(name)
        finally:
            if task is not None:
                self._running.discard(task)

    async def stop(self, timeout: float = 10.0) -> None:
        """Let running jobs finish (up to ``timeout``), then stop scheduling."""
        self._stopping = True
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is None:
            return
        scheduler.pause()
        if self._running:
            await asyncio.wait(set(self._running), timeout=timeout)
        # shutdown() cancels what is still running and takes effect on the loop.
        scheduler.shutdown(wait=False)
        await asyncio.sleep(0)

    async def run(self, stop: asyncio.Event) -> None:
        """The scheduler role's task: prefetch until ``stop`` is set."""
        self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()

    async def close(self) -> None:
        """Stop, then close the fetchers and the lock."""
        await self.stop()
        for fetcher in self._fetchers.values():
            with contextlib.suppress(Exception):
                await fetcher.close()
        with contextlib.suppress(Exception):
            await self._runner.lock.close()


class PrefetchError(Exception):
    """Some series of a candles job failed; the message names each."""
