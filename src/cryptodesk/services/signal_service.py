"""Compute: closed candles -> signal rules -> signals in the db, on the bus, in the cache.

The runner is its own consumer group (``signals``) on the ``candles`` topic
rather than a hook inside the candle service: the two then fail, retry and
scale independently, and the bus already carries every candle the candle
service published. The bus is only the trigger, though; the store is the
truth. Exactly once, across crashes and restarts, rests on three things:

1. **Progress per series in the database.** ``SqlSignalStore.commit`` moves a
   series from the candle evaluated last to the next one and stores that
   candle's signals in one transaction, compare-and-set on the progress. A
   redelivered candle (at or before the progress) is skipped; a candle that
   never reached the bus (the candle service crashed between storing and
   publishing it, or an in-memory bus died with the process) is read from
   the store: at start-up every series catches up on stored candles after its
   progress, and a candle arriving after a gap first pulls the gap from the
   store. So every closed candle is evaluated exactly once, in order.
2. **An outbox for publishing.** Signals are stored unpublished, published on
   ``signals`` (key ``exchange:symbol``), then marked published. After a crash
   the unpublished ones of each series are published at start-up.
3. **The latest signal per (rule, exchange, symbol, interval) in the cache**,
   written right after publishing and checked right before: a signal whose
   rule already published one at or after its candle is not published again.
   This closes the window between publishing and marking; only a cache that
   lost its data *and* a crash inside that window can publish a signal twice
   (consumers dedupe on the natural key, which every signal carries).

Indicator state resumes from the close windows in the cache (see
``signal_windows``), else from the store. A series is first evaluated from
the first candle closing after its rules first ran; older candles are history.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

import structlog

from cryptodesk.adapters.bus.base import Bus, Message
from cryptodesk.adapters.cache.base import Cache
from cryptodesk.adapters.db.base import MarketStore
from cryptodesk.adapters.db.signal_store import SqlSignalStore
from cryptodesk.analytics.signals import SeriesRules
from cryptodesk.domain import codec
from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.interval import Interval
from cryptodesk.domain.market import Candle, stream_key
from cryptodesk.domain.signals import Signal, decode_signal, encode_signal
from cryptodesk.domain.timeutil import now_ms
from cryptodesk.observability.health import HealthRegistry
from cryptodesk.observability.metrics import Metrics
from cryptodesk.services import cache_keys, signal_windows
from cryptodesk.services.dead_letter import DeadLetters
from cryptodesk.services.retry import retry_forever
from cryptodesk.services.signal_rules import RuleBook, rules_for

log = structlog.get_logger(__name__)
T = TypeVar("T")
COMPONENT = "signals"
TOPIC = "signals"
CATCH_UP_PAGE = 1000
Series = tuple[str, str, str]


@dataclass
class _State:
    """One series: its rules' indicators, progress and recent closes."""

    series: Series
    interval_ms: int
    rules: SeriesRules
    progress: int | None
    points: deque[tuple[int, float]] = field(default_factory=deque)
    cache_stale: bool = False


class SignalService:
    """Signal rules over every configured exchange x symbol x interval."""

    def __init__(
        self,
        bus: Bus,
        cache: Cache,
        store: MarketStore,
        signals: SqlSignalStore,
        rules: RuleBook,
        metrics: Metrics,
        health: HealthRegistry,
        *,
        exchanges: Sequence[str],
        symbols: Sequence[str],
        intervals: Sequence[Interval],
        refresh_seconds: float = 5.0,
        group: str = "signals",
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._bus = bus
        self._cache = cache
        self._store = store
        self._signals = signals
        self._book = rules
        self._metrics = metrics
        self._health = health
        self._intervals = {i.name: i for i in intervals}
        self._series = [
            (e, s, i.name) for e in exchanges for s in symbols for i in intervals
        ]  # fmt: skip
        self._refresh = refresh_seconds
        self._group = group
        self._clock = clock
        self._dead = DeadLetters(bus, metrics)
        self._states: dict[Series, _State] = {}
        self._revision: int | None = None
        self.published = 0

    # ---- start-up and rule changes --------------------------------------------------

    async def recover(self) -> None:
        """Load the rules, resume every series, publish what a crash left
        unpublished and evaluate stored candles not evaluated yet."""
        current = await self._retry(self._book.current, "load signal rules")
        self._revision = current.revision
        states: dict[Series, _State] = {}
        for series in self._series:
            rules = rules_for(current.rules, *series)
            if not rules:
                forget = partial(self._signals.forget_progress, series)
                await self._retry(forget, "forget progress")
                continue
            interval_ms = self._intervals[series[2]].ms
            states[series] = _State(series, interval_ms, SeriesRules(rules), None)
        self._states = states
        for state in states.values():
            await self._resume(state)
        log.info("signal rules loaded", revision=current.revision, series=len(states),
                 source=current.source)  # fmt: skip

    async def _resume(self, state: _State) -> None:
        """Progress from the db, indicators from the windows, then catch up."""
        series = state.series
        progress = await self._retry(lambda: self._signals.progress(series), "read progress")
        if progress is None:
            last = await self._retry(lambda: self._store.last_candle(*series), "read candles")
            if last is None:  # nothing stored: the first candle starts the series
                self._reset(state, None, [])
                return
            # First run on this series: what is stored is history, not news.
            if not await self._retry(
                lambda: self._signals.commit(series, last.open_time, after=None, fired=[]),
                "store progress",
            ):
                return await self._resume(state)  # another worker started it meanwhile
            progress = last.open_time
        await self._load_windows(state, progress)
        await self._publish_outbox(series)
        await self._catch_up(state, until=None)

    async def _load_windows(self, state: _State, progress: int) -> None:
        lengths = state.rules.lengths
        windows = None
        try:
            windows = await signal_windows.read(
                self._cache, self._store, state.series, lengths, progress
            )
        except Exception as exc:  # the store has it all
            log.warning("cached close windows unreadable", series=_name(state.series),
                        error=repr(exc))  # fmt: skip
        if windows is not None:
            points = max(windows.values(), key=len)
            state.rules.warm_windows(signal_windows.closes(windows))
            self._reset(state, progress, points, warm=False)
            return
        points = await self._retry(
            lambda: signal_windows.from_store(
                self._store, state.series, state.rules.longest, progress
            ),
            "read candles",
        )
        self._reset(state, progress, points)
        state.cache_stale = True  # rewritten from memory with the next candle
        await self._sync_cache(state)

    def _reset(
        self, state: _State, progress: int | None, points: list[tuple[int, float]],
        *, warm: bool = True,
    ) -> None:  # fmt: skip
        state.progress = progress
        state.points = deque(points, maxlen=max(state.rules.longest, 1))
        if warm:
            state.rules.warm([c for _, c in points])

    async def _reload_if_changed(self) -> None:
        revision = await self._book.revision()
        if revision != self._revision:
            log.info("signal rules changed", revision=revision)
            await self.recover()

    # ---- the loop -------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Consume ``candles`` until ``stop`` is set and the topic is drained."""
        consumer = self._bus.consumer("candles", group=self._group, name=f"{self._group}-1")
        self._health.set_status(COMPONENT, True, "running")
        loop = asyncio.get_running_loop()
        next_check = loop.time() + self._refresh
        try:
            while True:
                messages = await consumer.fetch(500, timeout=0.2)
                if loop.time() >= next_check:
                    next_check = loop.time() + self._refresh
                    try:
                        await self._reload_if_changed()
                    except Exception as exc:  # keep the rules in force; try again later
                        log.warning("signal rules not reloaded", error=str(exc))
                if not messages:
                    if stop.is_set():
                        break
                    continue
                await self.process(messages)
                await consumer.ack(messages)
        finally:
            await consumer.close()

    async def process(self, messages: Sequence[Message]) -> None:
        """Evaluate the candles in ``messages`` (in order per series)."""
        for m in messages:
            try:
                candle = codec.decode_candle(m.value)
            except (DomainError, ValueError, KeyError, TypeError) as exc:
                self._dead.add(m, f"undecodable candle: {exc}")
                continue
            state = self._states.get((candle.exchange, candle.symbol, candle.interval))
            if state is not None and candle.closed:
                await self._advance(state, candle)
        await self._retry(self._dead.flush, "publish dead letters")
        self._metrics.events_consumed.labels("candles", self._group).inc(len(messages))

    async def _advance(self, state: _State, candle: Candle) -> None:
        if state.progress is None:
            # The series' first candle: its stored past is the indicators' history.
            points = await self._retry(
                lambda: signal_windows.from_store(
                    self._store, state.series, state.rules.longest, candle.open_time - 1
                ),
                "read candles",
            )
            self._reset(state, None, points)
        elif candle.open_time <= state.progress:
            return  # evaluated already (a redelivery)
        elif candle.open_time > state.progress + state.interval_ms:
            await self._catch_up(state, until=candle.open_time)
            if state.progress is not None and candle.open_time <= state.progress:
                return
        await self._evaluate(state, candle)

    async def _catch_up(self, state: _State, *, until: int | None) -> None:
        """Evaluate stored candles after the progress and before ``until``."""
        while state.progress is not None:
            start = state.progress + 1
            page = await self._retry(
                partial(
                    self._store.get_candles,
                    *state.series,
                    start=start,
                    end=until,
                    limit=CATCH_UP_PAGE,
                ),
                "read candles",
            )
            for candle in page:
                await self._evaluate(state, candle)
            if len(page) < CATCH_UP_PAGE:
                return

    async def _evaluate(self, state: _State, candle: Candle) -> None:
        series = state.series
        detected = self._clock()
        fired = [
            Signal(f.rule.id, f.kind, *series, candle.open_time, candle.close, f.values, detected)
            for f in state.rules.update(candle.close)
        ]
        after = state.progress
        committed = await self._retry(
            lambda: self._signals.commit(series, candle.open_time, after=after, fired=fired),
            "store signals",
        )
        if not committed:
            # Someone else evaluated it (or our own commit's reply was lost):
            # start over from what the store and cache now say.
            log.info("signal progress moved elsewhere; resuming", series=_name(series))
            await self._resume(state)
            return
        state.progress = candle.open_time
        state.points.append((candle.open_time, candle.close))
        await self._sync_cache(state)
        await self._publish(fired)

    # ---- sinks ----------------------------------------------------------------------

    async def _sync_cache(self, state: _State) -> None:
        """Best effort: a window the cache lost is rebuilt from the store on resume."""
        lengths = state.rules.lengths
        try:
            if state.cache_stale:
                await signal_windows.rewrite(self._cache, state.series, lengths, state.points)
                state.cache_stale = False
            elif state.points:
                await signal_windows.push(self._cache, state.series, lengths, state.points[-1])
        except Exception as exc:
            state.cache_stale = True
            log.warning("close windows not cached", series=_name(state.series), error=str(exc))

    async def _publish_outbox(self, series: Series) -> None:
        pending = await self._retry(lambda: self._signals.unpublished(series), "read signals")
        if pending:
            log.info("publishing signals left unpublished", series=_name(series),
                     count=len(pending))  # fmt: skip
            await self._publish(pending)

    async def _publish(self, fired: Sequence[Signal]) -> None:
        if not fired:
            return
        keys = [cache_keys.latest_signal(s.rule, s.exchange, s.symbol, s.interval) for s in fired]
        try:
            latest = await self._cache.get_many(keys)
        except Exception as exc:  # no record: publish (at-least-once)
            log.warning("latest signals unreadable", error=str(exc))
            latest = [None] * len(keys)
        fresh = {
            k: s
            for k, s, raw in zip(keys, fired, latest, strict=True)
            if raw is None or decode_signal(raw).open_time < s.open_time
        }
        if fresh:
            items = [(stream_key(s.exchange, s.symbol), encode_signal(s)) for s in fresh.values()]
            await self._retry(lambda: self._bus.publish_many(TOPIC, items), "publish signals")
            self.published += len(fresh)
            try:
                await self._cache.set_many({k: encode_signal(s) for k, s in fresh.items()})
            except Exception as exc:
                log.warning("latest signals not cached", error=str(exc))
            for s in fresh.values():
                log.info("signal", rule=s.rule, kind=s.kind, series=_name(s.key[1:4]),
                         open_time=s.open_time, close=s.close)  # fmt: skip
        at = self._clock()
        await self._retry(lambda: self._signals.mark_published(fired, at), "mark signals published")

    async def _retry(self, step: Callable[[], Awaitable[T]], what: str) -> T:
        return await retry_forever(
            step, what=what, on_failure=self._degraded, on_success=self._recovered
        )

    def _degraded(self, detail: str) -> None:
        self._health.set_status(COMPONENT, False, detail)

    def _recovered(self) -> None:
        self._health.set_status(COMPONENT, True, "running")


def _name(series: Sequence[object]) -> str:
    return ":".join(str(part) for part in series)
