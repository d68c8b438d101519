"""Volatility circuit breaker: halt a market whose short-term volatility explodes.

One ``VolatilityBreaker`` per (exchange, symbol) is fed the closes of closed
candles in time order. Realised volatility is the sample standard deviation
(ddof=1) of log returns, per candle (not annualised: only the ratio matters).

- **Windows.** The short window holds the newest ``short_window`` returns; the
  long window holds the ``long_window`` returns *before* them. The baseline
  excludes the burst on purpose: with overlapping windows a burst inflates its
  own baseline, and the ratio can hardly exceed ``sqrt((L-1)/(S-1))`` (about 4.1
  for 15/240), so a multiple above that would never fire. A judgement needs
  both windows full: ``short_window + long_window + 1`` closes.
- **Halt.** While active, ``short_vol > multiple * long_vol`` halts the market.
  A flat baseline (``long_vol == 0``: a market that did not move, e.g. gap
  fillers) makes any movement a halt; the ratio is then None.
- **Resume.** A halted market is checked again ``cooldown_ms`` of candle time
  after the halt. If the condition still holds then (or the windows cannot
  judge yet), it stays halted and the cool-down restarts from that candle;
  otherwise it is active again. So a halt lasts at least one cool-down, and
  a storm that keeps going keeps it halted.

Sums are exact: each return is held as an integer (fixed point, 2**-64) and
the windows keep integer sums of values and squares, so adding and evicting
are O(1) and never drift, however long the series runs and however wild the
regimes it passed through (float running sums lose the small values after a
large one has come and gone).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

State = Literal["active", "halted"]
_SCALE = 2.0**64
_SCALE_SQ = _SCALE * _SCALE


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    """Window lengths in returns (candles), the trigger multiple and the cool-down."""

    short_window: int = 15
    long_window: int = 240
    multiple: float = 3.0
    cooldown_ms: int = 900_000

    def __post_init__(self) -> None:
        if self.short_window < 2:
            raise ValueError(f"short_window must be at least 2, got {self.short_window}")
        if self.long_window <= self.short_window:
            raise ValueError(
                f"long_window ({self.long_window}) must be longer than short_window "
                f"({self.short_window})"
            )
        if not (self.multiple > 1 and math.isfinite(self.multiple)):
            raise ValueError(f"multiple must be a finite number above 1, got {self.multiple}")
        if self.cooldown_ms < 0:
            raise ValueError(f"cooldown_ms must be >= 0, got {self.cooldown_ms}")

    @property
    def closes_needed(self) -> int:
        """Closes before the breaker can judge: one more than the returns."""
        return self.short_window + self.long_window + 1


@dataclass(frozen=True, slots=True)
class BreakerState:
    """Where one market stands: ``since_ms`` is when the current state began;
    the volatilities are those of the latest update (None until the windows
    are full), ``reason`` says why the state was entered."""

    exchange: str
    symbol: str
    state: State
    since_ms: int
    short_vol: float | None
    long_vol: float | None
    ratio: float | None
    reason: str


class _Window:
    """A capped window of fixed-point returns with exact running sums."""

    __slots__ = ("items", "maxlen", "squares", "total")

    def __init__(self, maxlen: int) -> None:
        self.items: deque[int] = deque()
        self.maxlen = maxlen
        self.total = 0
        self.squares = 0

    @property
    def full(self) -> bool:
        return len(self.items) == self.maxlen

    def push(self, x: int) -> int | None:
        """Add ``x``; return the value evicted to make room, if any."""
        self.items.append(x)
        self.total += x
        self.squares += x * x
        if len(self.items) <= self.maxlen:
            return None
        old = self.items.popleft()
        self.total -= old
        self.squares -= old * old
        return old

    def std(self) -> float | None:
        n = len(self.items)
        if n < 2:
            return None
        # n * sum(x^2) - sum(x)^2 is exact in integers and never negative.
        numerator = n * self.squares - self.total * self.total
        return math.sqrt(float(numerator) / _SCALE_SQ / (n * (n - 1)))


def _fixed(r: float) -> int:
    return round(r * _SCALE)


class VolatilityBreaker:
    """The breaker of one market; see the module docstring for the rules."""

    def __init__(
        self,
        exchange: str,
        symbol: str,
        settings: BreakerSettings,
        *,
        since_ms: int,
        state: State = "active",
        reason: str = "watching since the first candle",
        cooldown_until: int | None = None,
    ) -> None:
        """A fresh breaker, or one resumed (``state``, ``since_ms``, ``reason``,
        ``cooldown_until`` as a previous run left them)."""
        if state == "halted" and cooldown_until is None:
            cooldown_until = since_ms + settings.cooldown_ms
        self.exchange = exchange
        self.symbol = symbol
        self.settings = settings
        self._state: State = state
        self._since = since_ms
        self._reason = reason
        self._cooldown_until = cooldown_until if state == "halted" else None
        self._short = _Window(settings.short_window)
        self._long = _Window(settings.long_window)
        self._last_ts: int | None = None
        self._last_close: float | None = None

    @property
    def cooldown_until(self) -> int | None:
        """While halted: the candle time of the next check."""
        return self._cooldown_until

    @property
    def last_ts(self) -> int | None:
        return self._last_ts

    @property
    def state(self) -> BreakerState:
        vols = self._judged()
        short_vol, long_vol = vols if vols is not None else (None, None)
        return BreakerState(self.exchange, self.symbol, self._state, self._since,
                            short_vol, long_vol, _ratio(vols), self._reason)  # fmt: skip

    def warm(self, points: Iterable[tuple[int, float]]) -> None:
        """Fill the windows from past ``(ts_ms, close)`` points, oldest first,
        without judging them: history sets no state."""
        for ts, close in points:
            self._add(ts, close)

    def update(self, ts_ms: int, close: float) -> BreakerState | None:
        """Feed the close of the candle ending at ``ts_ms``; return the new state
        when it changed. A point not after the previous one (a redelivery) is
        ignored."""
        if not self._add(ts_ms, close):
            return None
        vols = self._judged()
        exceeding = vols is not None and vols[0] > self.settings.multiple * vols[1]
        s = self.settings
        if self._state == "active":
            if vols is None or not exceeding:
                return None
            self._state, self._since = "halted", ts_ms
            self._cooldown_until = ts_ms + s.cooldown_ms
            self._reason = _describe(*vols, s.multiple)
            return self.state
        assert self._cooldown_until is not None
        if ts_ms < self._cooldown_until:
            return None
        if vols is None or exceeding:  # still violent, or cannot tell yet
            self._cooldown_until = ts_ms + s.cooldown_ms
            return None
        self._state, self._since, self._cooldown_until = "active", ts_ms, None
        over = f"cool-down of {s.cooldown_ms // 1000} s over and "
        self._reason = over + _describe(*vols, s.multiple)
        return self.state

    def _add(self, ts_ms: int, close: float) -> bool:
        if not (close > 0 and math.isfinite(close)):
            raise ValueError(f"close must be a positive finite number, got {close!r}")
        if self._last_ts is not None and ts_ms <= self._last_ts:
            return False
        previous = self._last_close
        self._last_ts, self._last_close = ts_ms, close
        if previous is not None:
            moved = self._short.push(_fixed(math.log(close / previous)))
            if moved is not None:
                self._long.push(moved)
        return True

    def _judged(self) -> tuple[float, float] | None:
        """(short_vol, long_vol) once both windows are full."""
        if not (self._short.full and self._long.full):
            return None
        short_vol, long_vol = self._short.std(), self._long.std()
        if short_vol is None or long_vol is None:  # windows of one return
            return None
        return short_vol, long_vol


def _ratio(vols: tuple[float, float] | None) -> float | None:
    return None if vols is None or vols[1] == 0 else vols[0] / vols[1]


def _describe(short_vol: float, long_vol: float, multiple: float) -> str:
    ratio = _ratio((short_vol, long_vol))
    if ratio is None:
        flat = "moved" if short_vol > 0 else "is flat"
        return f"short-window volatility {short_vol:.6g} {flat} after a flat long window"
    relation = "above" if ratio > multiple else "within"
    return (
        f"short-window volatility {short_vol:.6g} is {ratio:.4g}x the long-window "
        f"{long_vol:.6g}, {relation} the {multiple:g}x limit"
    )
