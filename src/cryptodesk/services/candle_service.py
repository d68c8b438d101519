"""Compute: trades from the bus -> stored trades -> finalized candles -> db, cache, bus.

Order matters for exactly-once results on an at-least-once bus: trades are
written first, and only the trades the store reports as *new* feed the candle
builder, so a redelivered trade is never counted twice. A finalized candle is
therefore always made of stored trades, and after a crash ``recover`` rebuilds
the builder's open state by replaying stored trades since the last stored
candle of each series.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Sequence

import structlog

from cryptodesk.adapters.bus.base import Bus, Consumer, Message
from cryptodesk.adapters.cache.base import Cache
from cryptodesk.adapters.db.base import MarketStore
from cryptodesk.analytics.symbol_clocks import PerSymbolCandleBuilder
from cryptodesk.analytics.ticker_stats import RollingTickerStats
from cryptodesk.domain import codec
from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.interval import DAY_MS, Interval
from cryptodesk.domain.market import Candle, Ticker, Trade, stream_key
from cryptodesk.domain.timeutil import now_ms
from cryptodesk.observability.health import HealthRegistry
from cryptodesk.observability.metrics import Metrics
from cryptodesk.services import cache_keys
from cryptodesk.services.dead_letter import DeadLetters
from cryptodesk.services.retry import retry_forever

log = structlog.get_logger(__name__)
COMPONENT = "compute"
LINGER_SECONDS = 0.05
SMALL_BATCH = 32  # below this, per-trade updates beat building numpy arrays


class CandleService:
    def __init__(
        self,
        bus: Bus,
        store: MarketStore,
        cache: Cache,
        metrics: Metrics,
        health: HealthRegistry,
        *,
        exchanges: Sequence[str],
        symbols: Sequence[str],
        intervals: Sequence[Interval],
        grace_ms: int,
        batch_size: int,
        recent_candles: int,
        group: str = "compute",
    ) -> None:
        self._bus = bus
        self._store = store
        self._cache = cache
        self._metrics = metrics
        self._health = health
        self._symbols = set(symbols)
        self._intervals = list(intervals)
        self._batch_size = batch_size
        self._recent = recent_candles
        self._group = group
        self._builders = {
            ex: PerSymbolCandleBuilder(ex, intervals, grace_ms=grace_ms) for ex in exchanges
        }
        self._stats: dict[tuple[str, str], RollingTickerStats] = {}
        self._ignored: set[str] = set()
        self._dead = DeadLetters(bus, metrics)
        self._cache_stale = False  # a cache update failed: the recent lists lost candles
        self.processed = 0

    # ---- start-up -------------------------------------------------------------------

    async def recover(self) -> None:
        """Seed builders from stored candles and replay stored trades after them."""
        for exchange, builder in self._builders.items():
            last_ts = await self._store.last_trade_ts(exchange)
            replay_from: int | None = None
            for symbol in sorted(self._symbols):
                for interval in self._intervals:
                    last = await self._store.last_candle(exchange, symbol, interval.name)
                    if last is not None:
                        builder.seed(symbol, interval, last)
                        nxt = last.open_time + interval.ms
                    else:
                        nxt = 0
                    replay_from = nxt if replay_from is None else min(replay_from, nxt)
            await self._prime_cache(exchange)
            if last_ts is None or replay_from is None:
                continue
            # 24 h more so the rolling ticker statistics are whole again.
            replay_from = max(0, min(replay_from, last_ts - DAY_MS))
            replayed = finalized = 0
            async for batch in self._store.iter_trades(exchange, start=replay_from):
                batch = [t for t in batch if t.symbol in self._symbols]
                result = builder.add_trades(batch)  # trades of stored candles come back "late"
                self._add_stats(batch)
                if result.finalized:
                    await self._store.upsert_candles(result.finalized)
                    await self._cache_finalized(result.finalized)
                replayed += len(batch)
                finalized += len(result.finalized)
            await self._cache_open_state(exchange, builder)
            log.info(
                "candle state recovered",
                exchange=exchange,
                replayed_trades=replayed,
                finalized=finalized,
                replay_from=replay_from,
            )

    async def _prime_cache(self, exchange: str) -> None:
        if self._recent <= 0:
            return
        for symbol in sorted(self._symbols):
            for interval in self._intervals:
                key = cache_keys.recent_candles(exchange, symbol, interval.name)
                recent = await self._store.get_candles(
                    exchange, symbol, interval.name, limit=self._recent, newest_first=True
                )
                await self._cache.delete(key)
                if recent:
                    values = [codec.encode_candle(c) for c in reversed(recent)]
                    await self._cache.push_capped(key, values, maxlen=self._recent)

    # ---- the loop -------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Consume ``trades`` until ``stop`` is set and the topic is drained."""
        consumer = self._bus.consumer("trades", group=self._group, name=f"{self._group}-1")
        self._health.set_status(COMPONENT, True, "running")
        try:
            while True:
                messages = await self._fetch_batch(consumer)
                if not messages:
                    if stop.is_set():
                        break
                    continue
                await self.process(messages)
                await consumer.ack(messages)
        finally:
            await consumer.close()

    async def _fetch_batch(self, consumer: Consumer) -> list[Message]:
        """Up to ``batch_size`` messages, lingering briefly to fill the batch.

        Like Kafka's ``fetch.max.wait``: one database transaction per 2,000
        trades costs far less than one per handful, for at most LINGER of latency.
        """
        messages = await consumer.fetch(self._batch_size, timeout=0.2)
        if not messages:
            return messages
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LINGER_SECONDS
        while len(messages) < self._batch_size:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            more = await consumer.fetch(self._batch_size - len(messages), timeout=remaining)
            if not more:
                break
            messages.extend(more)
        return messages

    async def process(self, messages: Sequence[Message]) -> None:
        trades = self._decode(messages)
        await retry_forever(self._dead.flush, what="publish dead letters")
        self._metrics.events_consumed.labels("trades", self._group).inc(len(messages))
        new = await retry_forever(
            lambda: self._timed_insert(trades),
            what="store trades",
            on_failure=self._degraded,
            on_success=self._recovered,
        )
        finalized: list[Candle] = []
        by_exchange: dict[str, list[Trade]] = defaultdict(list)
        for t in new:
            by_exchange[t.exchange].append(t)
        for exchange, ex_trades in by_exchange.items():
            result = self._builders[exchange].add_trades(ex_trades)
            finalized.extend(result.finalized)
            self._metrics.trades_stored.labels(exchange).inc(len(ex_trades))
            for late in result.late:
                self._metrics.late_trades.labels(late.exchange, late.symbol).inc()
                log.warning(
                    "late trade: its candle was already finalized",
                    exchange=late.exchange,
                    symbol=late.symbol,
                    trade_id=late.id,
                    ts=late.ts,
                    watermark=self._builders[exchange].watermark(late.symbol),
                )
        if len(new) < len(trades):
            seen = Counter(t.exchange for t in trades)
            seen.subtract(t.exchange for t in new)
            for exchange, duplicates in seen.items():
                self._metrics.trades_duplicate.labels(exchange).inc(duplicates)
        if finalized:
            await retry_forever(
                lambda: self._timed_upsert(finalized),
                what="store candles",
                on_failure=self._degraded,
                on_success=self._recovered,
            )
            for c in finalized:
                self._metrics.candles_finalized.labels(c.exchange, c.interval).inc()
        self._add_stats(new)
        await self._update_cache(by_exchange, finalized)
        if finalized:
            items = [(stream_key(c.exchange, c.symbol), codec.encode_candle(c)) for c in finalized]
            await retry_forever(
                lambda: self._bus.publish_many("candles", items), what="publish candles"
            )
        if new:
            newest = max(t.ts for t in new)
            self._metrics.ingest_lag_seconds.labels(new[-1].exchange).set(
                (now_ms() - newest) / 1000
            )
        self.processed += len(messages)

    def _decode(self, messages: Sequence[Message]) -> list[Trade]:
        trades: list[Trade] = []
        for m in messages:
            try:
                t = codec.decode_trade(m.value)
            except (DomainError, ValueError, KeyError, TypeError) as exc:
                self._dead.add(m, f"undecodable trade: {exc}")
                continue
            if t.exchange not in self._builders or t.symbol not in self._symbols:
                if m.key not in self._ignored:
                    self._ignored.add(m.key)
                    log.warning("trades of an unconfigured market ignored", key=m.key)
                continue
            trades.append(t)
        return trades

    async def _timed_insert(self, trades: list[Trade]) -> list[Trade]:
        with self._metrics.db_write_seconds.labels("trades").time():
            return await self._store.insert_trades(trades)

    async def _timed_upsert(self, candles: list[Candle]) -> None:
        with self._metrics.db_write_seconds.labels("candles").time():
            await self._store.upsert_candles(candles)

    def _degraded(self, detail: str) -> None:
        self._health.set_status(COMPONENT, False, detail)

    def _recovered(self) -> None:
        self._health.set_status(COMPONENT, True, "running")

    # ---- cache ----------------------------------------------------------------------

    def _add_stats(self, trades: Sequence[Trade]) -> None:
        groups: dict[tuple[str, str], list[Trade]] = defaultdict(list)
        for t in trades:
            groups[(t.exchange, t.symbol)].append(t)
        for key, group in groups.items():
            stats = self._stats.get(key)
            if stats is None:
                stats = self._stats[key] = RollingTickerStats()
            if len(group) < SMALL_BATCH:
                for t in group:
                    stats.add(t.ts, t.price, t.amount)
            else:
                stats.add_arrays(
                    [t.ts for t in group], [t.price for t in group], [t.amount for t in group]
                )

    async def _update_cache(
        self, by_exchange: dict[str, list[Trade]], finalized: list[Candle]
    ) -> None:
        """Best effort: the cache may be down; the db already has everything."""
        try:
            if self._cache_stale:
                # Updates were lost while the cache was down: rewrite the recent
                # candles from the store (which already holds ``finalized``).
                for exchange in self._builders:
                    await self._prime_cache(exchange)
                self._cache_stale = False
            else:
                await self._cache_finalized(finalized)
            for exchange, trades in by_exchange.items():
                await self._cache_open_state(exchange, self._builders[exchange])
                await self._cache_tickers(exchange, trades)
        except Exception as exc:
            self._cache_stale = True
            log.warning("cache update failed", error=str(exc))

    async def _cache_finalized(self, finalized: Sequence[Candle]) -> None:
        if self._recent <= 0 or not finalized:
            return
        series: dict[str, list[bytes]] = defaultdict(list)
        for c in finalized:
            series[cache_keys.recent_candles(c.exchange, c.symbol, c.interval)].append(
                codec.encode_candle(c)
            )
        for key, values in series.items():
            await self._cache.push_capped(key, values, maxlen=self._recent)

    async def _cache_open_state(self, exchange: str, builder: PerSymbolCandleBuilder) -> None:
        items: dict[str, bytes] = {}
        for c in builder.open_candles():
            key = cache_keys.open_candle(exchange, c.symbol, c.interval)
            current = items.get(key)
            if current is None or codec.decode_candle(current).open_time < c.open_time:
                items[key] = codec.encode_candle(c)
        if items:
            await self._cache.set_many(items)

    async def _cache_tickers(self, exchange: str, trades: Sequence[Trade]) -> None:
        last: dict[str, Trade] = {}
        for t in trades:
            prev = last.get(t.symbol)
            if prev is None or t.ts >= prev.ts:
                last[t.symbol] = t
        symbols = sorted(last)
        books = await self._cache.get_many([cache_keys.book(exchange, s) for s in symbols])
        items: dict[str, bytes] = {}
        for symbol, raw_book in zip(symbols, books, strict=True):
            t = last[symbol]
            bid = ask = None
            if raw_book is not None:
                book = codec.decode_book(raw_book)
                bid, ask = book.best_bid(), book.best_ask()
            snap = self._stats[(exchange, symbol)].snapshot(t.ts)
            o, h, lo, v, qv = snap if snap is not None else (None, None, None, 0.0, 0.0)
            ticker = Ticker(exchange, symbol, t.ts, t.price, bid, ask, o, h, lo, v, qv)
            items[cache_keys.ticker(exchange, symbol)] = codec.encode_ticker(ticker)
        if items:
            await self._cache.set_many(items)
