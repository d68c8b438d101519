"""The simulated exchange ``sim``: the pure ``SimModel`` paced in real time.

One engine task drives the whole model (returns are correlated across
symbols, so they must come from one model) and fans each step out to bounded
per-subscriber queues. Pacing: the engine sleeps until real time has caught up
with the end of the next simulated step, then generates every step that is due,
so at high speeds one wake-up produces many steps. ``speed=math.inf`` generates
as fast as consumers take it, yielding to the event loop between small bursts.

Subscriptions behave like a live websocket: an iterator receives the steps
generated after it started. The engine runs only while someone is
subscribed and waits (it never drops or buffers without bound) when a queue
is full, so a slow consumer slows the simulation rather than growing memory.
Every open iterator must therefore be read or closed; an abandoned ``async
for`` (``break``) unsubscribes when its generator is closed.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Generic, TypeVar

import structlog

from cryptodesk.adapters.exchanges.sim_model import SimModel
from cryptodesk.domain.market import Market, OrderBook, Trade
from cryptodesk.domain.symbol import Symbol
from cryptodesk.domain.timeutil import now_ms

log = structlog.get_logger(__name__)

T = TypeVar("T")
Step = tuple[list[Trade], list[OrderBook]]

_MAX_STEPS_PER_WAKE = 64  # then yield to the loop, so a fast engine never starves it


class _Feed(Generic[T]):
    """One subscriber's bounded queue; ``None`` marks the end of the stream."""

    def __init__(self, maxsize: int) -> None:
        self.queue: asyncio.Queue[T | None] = asyncio.Queue(maxsize)
        self.closed = False

    def end(self, *, wake: bool = True) -> None:
        """Drop what is buffered (unblocking a waiting engine); ``wake`` the reader."""
        self.closed = True
        while not self.queue.empty():
            self.queue.get_nowait()
        if wake:
            self.queue.put_nowait(None)


class SimulatedExchange:
    """A ``MarketDataSource`` over ``SimModel``; also offers ``watch_all``.

    ``speed`` is simulated seconds per real second (``math.inf``: as fast as
    possible). ``start_ms`` defaults to now, so simulated timestamps track the
    wall clock at ``speed=1``. ``resume_after_ms`` continues a fixed timeline
    (same seed and ``start_ms``) after a restart instead of starting a new one.
    """

    def __init__(
        self,
        symbols: Sequence[str],
        *,
        seed: int,
        speed: float,
        start_ms: int | None = None,
        book_interval_ms: int = 1000,
        exchange: str = "sim",
        trade_rates: Mapping[str, float] | None = None,
        queue_size: int = 1024,
        resume_after_ms: int | None = None,
    ) -> None:
        if not speed > 0:  # also rejects NaN
            raise ValueError(f"speed must be > 0 simulated seconds per real second, got {speed}")
        if not symbols:
            raise ValueError("symbols must not be empty: give at least one BASE/QUOTE")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self._model = SimModel(
            symbols,
            seed=seed,
            start_ms=now_ms() if start_ms is None else start_ms,
            book_interval_ms=book_interval_ms,
            exchange=exchange,
            trade_rates=trade_rates,
        )
        if resume_after_ms is not None:
            # Regenerate the timeline silently up to the step holding resume_after_ms:
            # the same seed and start give the same trades, so a restarted process
            # continues the stream it was publishing (what it republishes from that
            # step on is deduplicated by the store's natural keys).
            model = self._model
            while model.now_ms + model.step_ms <= resume_after_ms:
                model.step()
        self._speed = float(speed)
        self._queue_size = queue_size
        self._trade_feeds: dict[str, set[_Feed[list[Trade]]]] = {
            s: set() for s in self._model.symbols
        }
        self._book_feeds: dict[str, set[_Feed[OrderBook]]] = {s: set() for s in self._model.symbols}
        self._all_feeds: set[_Feed[Step]] = set()
        self._engine: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        self._closed = False

    @property
    def exchange(self) -> str:
        return self._model.exchange

    @property
    def symbols(self) -> list[str]:
        return list(self._model.symbols)

    @property
    def start_ms(self) -> int:
        return self._model.start_ms

    @property
    def sim_now_ms(self) -> int:
        """The simulated clock: everything before it has been generated."""
        return self._model.now_ms

    async def load_markets(self) -> list[Market]:
        return list(self._model.markets.values())

    def watch_trades(self, symbol: str) -> AsyncIterator[list[Trade]]:
        """Each step's trades of ``symbol`` (steps without trades are skipped)."""
        return self._iterate(self._trade_feeds[self._known(symbol)])

    def watch_order_book(self, symbol: str) -> AsyncIterator[OrderBook]:
        """A 20-level snapshot every ``book_interval_ms`` of simulated time."""
        return self._iterate(self._book_feeds[self._known(symbol)])

    def watch_all(self) -> AsyncIterator[Step]:
        """Per simulated step: every symbol's trades in ts order, and the books.

        Steps with neither trades nor books are skipped. This is the stream to
        read when you want everything: symbols cannot drift apart in time.
        """
        return self._iterate(self._all_feeds)

    async def close(self) -> None:
        """Stop the engine and end every iterator; safe to call twice."""
        self._closed = True
        engine = self._engine
        if engine is not None and not engine.done():
            engine.cancel()
            await asyncio.wait([engine])
        self._end_all()

    def _known(self, symbol: str) -> str:
        name = str(Symbol.parse(symbol))
        if name not in self._trade_feeds:
            raise ValueError(
                f"symbol {symbol!r} is not simulated here; configured: {self._model.symbols}"
            )
        return name

    async def _iterate(self, registry: set[_Feed[T]]) -> AsyncIterator[T]:
        if self._error is not None:
            raise RuntimeError("simulated exchange engine failed") from self._error
        if self._closed:
            return
        feed: _Feed[T] = _Feed(self._queue_size)
        registry.add(feed)
        self._ensure_engine()
        try:
            while True:
                item = await feed.queue.get()
                if item is None:
                    if self._error is not None:
                        raise RuntimeError("simulated exchange engine failed") from self._error
                    return
                yield item
        finally:
            registry.discard(feed)
            feed.end(wake=False)

    def _ensure_engine(self) -> None:
        if self._engine is None or self._engine.done():
            self._engine = asyncio.get_running_loop().create_task(
                self._run(), name=f"sim-engine:{self.exchange}"
            )

    def _subscribed(self) -> bool:
        return bool(
            self._all_feeds or any(self._trade_feeds.values()) or any(self._book_feeds.values())
        )

    async def _run(self) -> None:
        try:
            await self._pace()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # surface in every consumer instead of hanging them
            log.error("sim engine failed", error=repr(exc))
            self._error = exc
            self._end_all()

    async def _pace(self) -> None:
        """Generate steps as real time allows; return when nobody listens."""
        loop = asyncio.get_running_loop()
        model, step_ms = self._model, self._model.step_ms
        rate = self._speed * 1000.0  # simulated ms per real second
        origin_real, origin_sim = loop.time(), model.now_ms
        while self._subscribed():
            due = _MAX_STEPS_PER_WAKE
            if not math.isinf(rate):
                sim_now = origin_sim + (loop.time() - origin_real) * rate
                lag = sim_now - model.now_ms
                if lag < step_ms:  # the next step has not ended in simulated time yet
                    await asyncio.sleep((step_ms - lag) / rate)
                    continue
                due = min(int(lag // step_ms), _MAX_STEPS_PER_WAKE)
            for _ in range(due):
                await self._publish(*model.step_combined())
            await asyncio.sleep(0)

    async def _publish(self, trades: list[Trade], books: list[OrderBook]) -> None:
        if not trades and not books:
            return
        for feed in list(self._all_feeds):
            if not feed.closed:
                await feed.queue.put((trades, books))
        if trades and any(self._trade_feeds.values()):
            by_symbol: dict[str, list[Trade]] = {}
            for t in trades:
                by_symbol.setdefault(t.symbol, []).append(t)
            for symbol, batch in by_symbol.items():
                for trade_feed in list(self._trade_feeds[symbol]):
                    if not trade_feed.closed:
                        await trade_feed.queue.put(batch)
        for book in books:
            for book_feed in list(self._book_feeds[book.symbol]):
                if not book_feed.closed:
                    await book_feed.queue.put(book)

    def _end_all(self) -> None:
        for feed in self._all_feeds:
            feed.end()
        for trade_feeds in self._trade_feeds.values():
            for trade_feed in trade_feeds:
                trade_feed.end()
        for book_feeds in self._book_feeds.values():
            for book_feed in book_feeds:
                book_feed.end()
