"""The replay exchange: a candle or trade file played back as a live trade feed.

A trade file (``timestamp,price,amount,side[,id]``) is replayed as it is. A
candle file (any format ``candle_files`` reads) becomes four synthetic trades
per candle, chosen so that our ``CandleBuilder`` rebuilds the file's candles
exactly (open, high, low, close and volume, bit for bit):

- times: the open at the candle's open time, the two extremes at one and two
  thirds of the interval, the close on the last millisecond of the interval;
  so the first trade sets the open and the last the close, whatever the batching.
- the extremes come in the order of the shorter path: low then high for a
  rising candle (close >= open), high then low for a falling one, as the price
  most plausibly moved.
- amounts: the volume split in four, each part a whole multiple of the volume's
  unit in the last place. Every partial sum is then a multiple of that unit no
  larger than the volume, hence exactly representable, so float addition in
  any order (the builder's scalar loop or numpy's ``reduceat``) gives back the
  volume exactly.
- a zero-volume candle gives no trade at all (a trade needs a positive
  amount); the builder then emits its flat gap-filler at the previous close,
  which is what such candles are in the files we know. A zero-volume candle
  that is *not* flat at the previous close cannot be reproduced.

The quote volume and trade count the builder computes from these trades are
synthetic, not the file's. Trade ids are ``<open_time>-<n>`` (trade files: the
``id`` column or the line number), so replaying a file again after a restart
republishes the same ids and the store deduplicates them.

Pacing: ``speed`` is replay seconds per real second (``math.inf``, or ``max``
to ``parse_speed``, plays as fast as the consumer reads). Time starts at the
first trade, or at ``resume_after_ms`` when continuing after a restart.
Timestamps are the file's, not shifted to now. At the end of the file the
stream stays open and silent, like a quiet market, unless ``end_when_done``;
the last candle therefore stays open in the builder until another trade comes.

Every iterator replays the file independently from the start; ``watch_all``
is the one ingest reads (one ordered stream, as from the simulator).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from bisect import bisect_left, bisect_right
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path

from cryptodesk.adapters.files.parsing import DataFileError, csv_rows, open_error
from cryptodesk.adapters.files.trade_files import is_trade_header, read_trades
from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.interval import Interval
from cryptodesk.domain.market import Candle, Market, OrderBook, Side, Trade
from cryptodesk.domain.symbol import Symbol

TRADES_PER_CANDLE = 4
BATCH_SIZE = 1000  # trades per yielded batch at most (caps one catch-up burst)
_MAX_DECIMALS = 12

Step = tuple[list[Trade], list[OrderBook]]


def parse_speed(text: str) -> float:
    """``max`` (as fast as possible) or replay seconds per real second (> 0)."""
    raw = text.strip().lower()
    if raw == "max":
        return math.inf
    try:
        speed = float(raw)
    except ValueError:
        raise DomainError(
            f"replay speed {text!r} is neither max nor a number", field="speed"
        ) from None
    if not (speed > 0 and math.isfinite(speed)):
        raise DomainError(f"replay speed must be > 0 (or max), got {text!r}", field="speed")
    return speed


def split_volume(volume: float, parts: int) -> list[float]:
    """``parts`` positive amounts whose float sum is exactly ``volume``, in any order."""
    unit = math.ulp(volume)
    units = int(volume / unit)  # exact: dividing by a power of two
    if units < parts:
        raise DomainError(f"volume {volume!r} is too small to split", field="volume")
    each, rest = divmod(units, parts)
    return [each * unit] * (parts - 1) + [(each + rest) * unit]


def candle_trades(candle: Candle, interval_ms: int, *, exchange: str) -> list[Trade]:
    """Trades from which the candle builder rebuilds ``candle`` (see the module doc)."""
    if candle.volume == 0:
        return []
    rising = candle.close >= candle.open
    path = (
        (candle.open, candle.low, candle.high, candle.close)
        if rising
        else (candle.open, candle.high, candle.low, candle.close)
    )
    offsets = (0, interval_ms // 3, 2 * interval_ms // 3, interval_ms - 1)
    amounts = split_volume(candle.volume, TRADES_PER_CANDLE)
    trades: list[Trade] = []
    side: Side = "buy" if rising else "sell"
    previous = candle.open
    for n, (price, offset, amount) in enumerate(zip(path, offsets, amounts, strict=True)):
        if price != previous:  # buyers lift the price, sellers push it down
            side = "buy" if price > previous else "sell"
        previous = price
        trades.append(
            Trade(
                exchange,
                candle.symbol,
                f"{candle.open_time}-{n}",
                candle.open_time + offset,
                price,
                amount,
                side,
            )
        )
    return trades


def _decimals(value: float) -> int:
    """Decimal places of the shortest text of ``value`` (``8056.83`` -> 2)."""
    exponent = Decimal(repr(value)).normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


class ReplayExchange:
    """A ``MarketDataSource`` over one file of one symbol; also offers ``watch_all``.

    ``interval`` names a candle file's interval (default: inferred from the
    spacing of its candles). ``clock`` and ``sleep`` default to the event loop's
    clock and a sleep that ``close`` cuts short; tests replace them.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        symbol: str,
        speed: float = 1.0,
        exchange: str = "replay",
        interval: str | None = None,
        resume_after_ms: int | None = None,
        end_when_done: bool = False,
        batch_size: int = BATCH_SIZE,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        if not speed > 0:  # also rejects NaN
            raise ValueError(f"speed must be > 0 replay seconds per real second, got {speed}")
        if not exchange:
            raise ValueError("exchange must not be empty")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self._path = path
        self._symbol = str(Symbol.parse(symbol))
        self._speed = float(speed)
        self._exchange = exchange
        self._interval = Interval.parse(interval) if interval is not None else None
        self._resume = resume_after_ms
        self._end_when_done = end_when_done
        self._batch = batch_size
        self._clock = clock
        self._sleep = sleep or self._pause
        self._trades: list[Trade] | None = None
        self._times: list[int] = []
        self._price_increment = 1e-8
        self._closed = asyncio.Event()

    @property
    def exchange(self) -> str:
        return self._exchange

    @property
    def symbols(self) -> list[str]:
        return [self._symbol]

    @property
    def interval(self) -> Interval | None:
        """A candle file's interval (after ``load``); None for a trade file."""
        return self._interval

    def load(self) -> list[Trade]:
        """Read and validate the file once (``DataFileError`` names a bad line)."""
        if self._trades is None:
            trades = self._read()
            self._times = [t.ts for t in trades]
            prices = {t.price for t in trades[:100_000]}
            decimals = max((_decimals(p) for p in prices), default=8)
            self._price_increment = 10.0 ** -min(decimals, _MAX_DECIMALS)
            self._trades = trades
        return self._trades

    def _read(self) -> list[Trade]:
        if self._is_trade_file():
            return read_trades(self._path, exchange=self._exchange, symbol=self._symbol)
        # Candle files (and pyarrow, ~25 MB) load here, not wherever settings are
        # validated (config.py checks the replay speed with parse_speed).
        from cryptodesk.adapters.files.candle_files import candle_rows, infer_interval, to_candles

        fmt, lazy_rows = candle_rows(self._path, symbol=self._symbol)
        rows = list(lazy_rows)
        interval = self._interval
        if interval is None:
            interval = infer_interval(sorted(r.open_time for r in rows))
            if interval is None:
                raise DataFileError(
                    self._path, None, "cannot tell the candle interval from the file; name it"
                )
            self._interval = interval
        candles = to_candles(
            self._path, fmt, rows, exchange=self._exchange, symbol=self._symbol, interval=interval
        ).candles
        return [t for c in candles for t in candle_trades(c, interval.ms, exchange=self._exchange)]

    def _is_trade_file(self) -> bool:
        try:
            with open(self._path, "rb") as handle:
                if handle.read(4) == b"PAR1":
                    return False
        except OSError as exc:
            raise open_error(self._path, exc) from None
        first = next(csv_rows(self._path), None)
        return first is not None and is_trade_header(first[1])

    async def _loaded(self) -> list[Trade]:
        if self._trades is not None:
            return self._trades
        return await asyncio.to_thread(self.load)

    async def load_markets(self) -> list[Market]:
        await self._loaded()
        sym = Symbol.parse(self._symbol)
        return [
            Market(
                self._exchange,
                self._symbol,
                sym.base,
                sym.quote,
                price_increment=self._price_increment,
                amount_increment=1e-8,
            )
        ]

    def watch_trades(self, symbol: str) -> AsyncIterator[list[Trade]]:
        self._known(symbol)
        return self._play()

    def watch_order_book(self, symbol: str) -> AsyncIterator[OrderBook]:
        """Files carry no books: a subscription that stays silent until ``close``."""
        self._known(symbol)
        return self._no_books()

    async def watch_all(self) -> AsyncIterator[Step]:
        """The file's trades in time order, in paced batches; never any books."""
        async with contextlib.aclosing(self._play()) as batches:
            async for batch in batches:
                yield batch, []

    async def close(self) -> None:
        """End every iterator; safe to call twice."""
        self._closed.set()

    def _known(self, symbol: str) -> None:
        if str(Symbol.parse(symbol)) != self._symbol:
            raise ValueError(f"symbol {symbol!r} is not replayed here; replaying {self._symbol}")

    async def _no_books(self) -> AsyncIterator[OrderBook]:
        await self._closed.wait()
        return
        yield  # pragma: no cover - makes this an async generator

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closed.wait(), seconds)

    async def _play(self) -> AsyncGenerator[list[Trade], None]:
        trades = await self._loaded()
        times, n = self._times, len(trades)
        i = 0 if self._resume is None else bisect_left(times, self._resume)
        clock = self._clock or asyncio.get_running_loop().time
        rate = self._speed * 1000.0  # replay milliseconds per real second
        origin_real = clock()
        origin_ts = times[i] if i < n else 0
        while i < n and not self._closed.is_set():
            end = min(n, i + self._batch)
            if not math.isinf(rate):
                now_ts = origin_ts + (clock() - origin_real) * rate
                if times[i] > now_ts:  # the next trade is still in the future
                    await self._sleep((times[i] - now_ts) / rate)
                    continue
                end = bisect_right(times, now_ts, i, end)
            yield trades[i:end]
            i = end
            await asyncio.sleep(0)  # a burst of due batches must not starve the loop
        if not self._end_when_done:
            await self._closed.wait()
