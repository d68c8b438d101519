"""Replay candles through a strategy, as it would have traded them.

Candle by candle, oldest first, each closed candle goes through the same
``StrategyRunner`` (streaming indicators, then ``on_candle``) that runs live.
There is no look-ahead by construction: the strategy only ever receives the
candle that just closed, and a decision taken on candle ``i`` is filled at the
open of candle ``i + 1``, the first price anyone could have traded at after it.

The fill rules, which the report repeats:

- Market orders (signal entries and exits) fill at the next open, pay the
  taker fee, and move the price against the order by the slippage: ``bps`` of
  the price, plus ``slippage_volume * qty / candle volume`` (our share of the
  fill candle's volume), capped at ``MAX_SLIPPAGE``. With volume slippage the
  quantity is sized at the bps-only price first, which slightly overstates the
  impact (conservative).
- Sizing: ``fraction`` of equity, fee included (``fraction:1`` is all in), or
  a ``notional`` in quote currency, capped at what the cash pays for. ``lot``
  rounds quantities down to the exchange's amount increment. No leverage.
- Stop-loss and take-profit are set from the entry fill price and checked
  against each candle's high and low, the entry candle included (the entry is
  at its open). A stop is a stop-market order: it fills at the stop price, or
  at the open when the candle gaps through it, then slippage and taker fee. A
  take-profit is a resting limit order: it fills at its price (or the better
  open), pays the maker fee and no slippage. When one candle reaches both, we
  cannot know which came first and assume the stop-loss did (the conservative
  choice).
- ``allow_short=False`` (the default) is long-only: ``SHORT`` then only closes
  a long. A position still open after the last candle is closed at its close;
  a short whose loss takes equity to zero is closed at that close (exit reason
  ``ruined``) and trading stops.
- Equity is marked at every close; the curve has one point per candle.
"""

from __future__ import annotations

import math
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from cryptodesk.analytics.backtest_metrics import Metrics, compute_metrics
from cryptodesk.analytics.strategy import LONG, SHORT, Position, Strategy, StrategyRunner
from cryptodesk.domain.errors import DomainError
from cryptodesk.domain.interval import Interval
from cryptodesk.domain.market import Candle
from cryptodesk.domain.timeutil import to_iso

MAX_SLIPPAGE = 0.1  # no fill is modelled worse than 10% off the reference price
ExitReason = Literal["signal", "stop_loss", "take_profit", "end", "ruined"]
Progress = Callable[[int, int], None]


class BacktestError(Exception):
    """The strategy raised; ``traceback`` is the formatted traceback text."""

    def __init__(self, message: str, traceback_text: str) -> None:
        super().__init__(message)
        self.traceback = traceback_text


@dataclass(frozen=True, slots=True)
class Sizing:
    """``fraction`` of equity (fee included) or a ``notional`` in quote currency."""

    kind: Literal["fraction", "notional"] = "fraction"
    value: float = 1.0

    def __post_init__(self) -> None:
        if self.kind == "fraction" and not 0 < self.value <= 1:
            raise DomainError(f"size fraction {self.value!r} is not in (0, 1]", field="size")
        if self.kind == "notional" and not 0 < self.value < math.inf:
            raise DomainError(f"size notional {self.value!r} is not positive", field="size")
        if self.kind not in ("fraction", "notional"):
            raise DomainError(f"size kind {self.kind!r} is not fraction or notional", field="size")

    @classmethod
    def parse(cls, text: str) -> Sizing:
        """``fraction:0.5`` or ``notional:1000``."""
        kind, sep, value = text.strip().partition(":")
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not sep or kind not in ("fraction", "notional") or not math.isfinite(number):
            raise DomainError(
                f"size {text!r} is not fraction:F (0 < F <= 1) or notional:AMOUNT", field="size"
            )
        return cls("fraction" if kind == "fraction" else "notional", number)

    def __str__(self) -> str:
        return f"{self.kind}:{self.value:g}"


def _rate(name: str, value: float | None, top: float) -> None:
    if value is not None and not 0 <= value < top:
        raise DomainError(f"{name} {value!r} is not in [0, {top:g})", field=name)


@dataclass(frozen=True, slots=True)
class BacktestConfig:
    """Costs, sizing and risk rules; fees and slippage are fractions (0.001 = 0.1%)."""

    initial_cash: float = 10_000.0
    fee: float = 0.001  # taker: market orders and stops
    maker_fee: float | None = None  # take-profit limit orders; None: same as ``fee``
    slippage_bps: float = 0.0
    slippage_volume: float = 0.0
    sizing: Sizing = field(default_factory=Sizing)
    lot: float = 0.0
    stop_loss: float | None = None
    take_profit: float | None = None
    allow_short: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.initial_cash < math.inf:
            raise DomainError(f"initial cash {self.initial_cash!r} is not positive", field="cash")
        _rate("fee", self.fee, 0.1)
        _rate("maker_fee", self.maker_fee, 0.1)
        _rate("slippage_bps", self.slippage_bps, 1000)
        _rate("slippage_volume", self.slippage_volume, 100)
        _rate("lot", self.lot, math.inf)
        _rate("stop_loss", self.stop_loss, 1)
        _rate("take_profit", self.take_profit, math.inf)
        if self.stop_loss == 0 or self.take_profit == 0:
            raise DomainError("stop_loss and take_profit must be above 0", field="stop_loss")


@dataclass(frozen=True, slots=True)
class CandleArrays:
    """A series as columns: ``ts`` open times (epoch ms, ascending) and float OHLCV."""

    ts: npt.NDArray[np.int64]
    open: npt.NDArray[np.float64]
    high: npt.NDArray[np.float64]
    low: npt.NDArray[np.float64]
    close: npt.NDArray[np.float64]
    volume: npt.NDArray[np.float64]

    @classmethod
    def of(cls, candles: Sequence[Candle]) -> CandleArrays:
        def col(name: str) -> npt.NDArray[np.float64]:
            return np.fromiter((getattr(c, name) for c in candles), np.float64, len(candles))

        ts = np.fromiter((c.open_time for c in candles), np.int64, len(candles))
        return cls(ts, col("open"), col("high"), col("low"), col("close"), col("volume"))

    def check(self) -> None:
        """Raise DomainError unless times ascend and prices are positive and finite."""
        n = len(self.ts)
        if any(len(a) != n for a in (self.open, self.high, self.low, self.close, self.volume)):
            raise DomainError("candle columns differ in length", field="candles")
        if n and not bool(np.all(np.diff(self.ts) > 0)):
            raise DomainError("candle open times are not strictly ascending", field="candles")
        prices = np.concatenate([self.open, self.high, self.low, self.close])
        if not bool(np.all(np.isfinite(prices) & (prices > 0))):
            raise DomainError("candle prices must be positive finite numbers", field="candles")
        if not bool(np.all(np.isfinite(self.volume) & (self.volume >= 0))):
            raise DomainError("candle volumes must be non-negative numbers", field="candles")


@dataclass(frozen=True, slots=True)
class BacktestTrade:
    """One round trip; ``pnl`` is net of both fees, ``ret`` is pnl over entry notional."""

    side: Literal["long", "short"]
    qty: float
    entry_ts: int
    entry_price: float
    exit_ts: int
    exit_price: float
    fees: float
    pnl: float
    ret: float
    exit_reason: ExitReason
    bars: int  # candles from the entry candle to the exit candle, both included


@dataclass(frozen=True, slots=True)
class BacktestResult:
    strategy: str
    params: dict[str, int | float | bool]
    config: BacktestConfig
    interval_ms: int
    ts: npt.NDArray[np.int64]
    equity: npt.NDArray[np.float64]
    trades: list[BacktestTrade]
    metrics: Metrics


def _interval_of(candles: Sequence[Candle] | CandleArrays, given: int | None) -> int:
    if given is not None:
        return given
    if not isinstance(candles, CandleArrays) and candles:
        return Interval.parse(candles[0].interval).ms
    ts = candles.ts if isinstance(candles, CandleArrays) else np.array([], np.int64)
    gaps = np.diff(ts)
    if len(gaps) == 0:
        raise DomainError(
            "give interval_ms: one candle does not tell the interval", field="interval"
        )
    return int(gaps.min())


def run_backtest(
    candles: Sequence[Candle] | CandleArrays,
    strategy: Strategy,
    config: BacktestConfig | None = None,
    *,
    interval_ms: int | None = None,
    on_progress: Progress | None = None,
    progress_every: int = 2000,
) -> BacktestResult:
    """Replay ``candles`` (ascending open times) through ``strategy``.

    Raises DomainError for unusable candles, BacktestError when the strategy raises.
    """
    cfg = config or BacktestConfig()
    arrays = candles if isinstance(candles, CandleArrays) else CandleArrays.of(candles)
    arrays.check()
    n = len(arrays.ts)
    if n == 0:
        raise DomainError("no candles to replay", field="candles")
    interval = _interval_of(candles, interval_ms)
    runner = StrategyRunner(strategy)
    sim = _Simulator(cfg)
    ts_l = arrays.ts.tolist()
    o_l, h_l, l_l = arrays.open.tolist(), arrays.high.tolist(), arrays.low.tolist()
    c_l, v_l = arrays.close.tolist(), arrays.volume.tolist()
    equity = [0.0] * n
    on_candle = runner.on_candle
    pending: str | None = None
    exposed = 0
    for i in range(n):
        ts, o, h, lo, c, v = ts_l[i], o_l[i], h_l[i], l_l[i], c_l[i], v_l[i]
        if pending is not None:
            sim.fill(pending, i, ts, o, v)
            pending = None
        if sim.side:
            if sim.stop is not None or sim.target is not None:
                sim.check_exits(i, ts, o, h, lo, v)
            if sim.side:
                exposed += 1
        equity[i] = value = sim.cash + sim.signed_qty * c
        if value <= 0 and sim.side:  # ruined (a short that ran away): stop trading
            sim.close(i, ts, c, v, "ruined")
            equity[i:] = [sim.cash] * (n - i)
            break
        try:
            pending = on_candle(ts, o, h, lo, c, v, sim.position)
        except Exception as exc:
            raise BacktestError(
                f"strategy {strategy.name} raised on the candle of {to_iso(ts)} "
                f"({i + 1} of {n}): {type(exc).__name__}: {exc}",
                traceback.format_exc(),
            ) from exc
        if on_progress is not None and (i + 1) % progress_every == 0:
            on_progress(i + 1, n)
    if sim.side:
        sim.close(n - 1, ts_l[-1], c_l[-1], v_l[-1], "end")
        equity[-1] = sim.cash
    if on_progress is not None:
        on_progress(n, n)
    curve = np.array(equity, dtype=np.float64)
    metrics = compute_metrics(
        curve,
        cfg.initial_cash,
        sim.trades,
        exposed_bars=exposed,
        ts=arrays.ts,
        interval_ms=interval,
    )
    return BacktestResult(
        strategy.name, strategy.values, cfg, interval, arrays.ts, curve, sim.trades, metrics
    )


class _Simulator:
    """Cash, the open position and its exits; every fill goes through here."""

    def __init__(self, cfg: BacktestConfig) -> None:
        self.cfg = cfg
        self.cash = cfg.initial_cash
        self.side = 0
        self.qty = 0.0
        self.signed_qty = 0.0
        self.entry_price = 0.0
        self.entry_fee = 0.0
        self.entry_ts = 0
        self.entry_index = 0
        self.stop: float | None = None
        self.target: float | None = None
        self.position = Position()
        self.trades: list[BacktestTrade] = []
        self._maker = cfg.fee if cfg.maker_fee is None else cfg.maker_fee
        self._bps = cfg.slippage_bps / 10_000

    def _slip(self, qty: float, volume: float) -> float:
        impact = self.cfg.slippage_volume
        if impact == 0:
            return self._bps
        extra = impact * qty / volume if volume > 0 else MAX_SLIPPAGE
        return min(self._bps + extra, MAX_SLIPPAGE)

    def fill(self, decision: str, i: int, ts: int, price: float, volume: float) -> None:
        """Act on the previous candle's decision at this candle's open."""
        want = 1 if decision == LONG else -1 if decision == SHORT else 0
        if want < 0 and not self.cfg.allow_short:
            want = 0
        if want == self.side:
            return
        if self.side:
            self.close(i, ts, price, volume, "signal")
        if want:
            self._open(want, i, ts, price, volume)

    def _quantity(self, side: int, price: float) -> float:
        cfg, fee = self.cfg, self.cfg.fee
        affordable = self.cash / (price * (1 + fee))
        if cfg.sizing.kind == "fraction":
            qty = cfg.sizing.value * affordable
        else:
            qty = min(cfg.sizing.value / price, affordable)
        if cfg.lot > 0:
            qty = (qty // cfg.lot) * cfg.lot
        return qty

    def _open(self, side: int, i: int, ts: int, open_price: float, volume: float) -> None:
        if self.cash <= 0:
            return
        slip = self._bps
        price = open_price * (1 + side * slip)
        qty = self._quantity(side, price)
        if self.cfg.slippage_volume:
            slip = self._slip(qty, volume)
            price = open_price * (1 + side * slip)
            qty = self._quantity(side, price)
        if qty <= 0:
            return
        fee = qty * price * self.cfg.fee
        self.cash -= side * qty * price + fee
        self.side, self.qty, self.signed_qty = side, qty, side * qty
        self.entry_price, self.entry_fee, self.entry_ts, self.entry_index = price, fee, ts, i
        sl, tp = self.cfg.stop_loss, self.cfg.take_profit
        self.stop = None if sl is None else price * (1 - side * sl)
        self.target = None if tp is None else price * (1 + side * tp)
        self.position = Position(side, qty, price, ts)

    def close(
        self,
        i: int,
        ts: int,
        price: float,
        volume: float,
        reason: ExitReason,
        *,
        maker: bool = False,
    ) -> None:
        """Close the whole position at ``price`` (before slippage unless ``maker``)."""
        side, qty = self.side, self.qty
        if maker:
            fill, rate = price, self._maker
        else:
            fill, rate = price * (1 - side * self._slip(qty, volume)), self.cfg.fee
        fee = qty * fill * rate
        self.cash += side * qty * fill - fee
        fees = self.entry_fee + fee
        pnl = side * qty * (fill - self.entry_price) - fees
        self.trades.append(
            BacktestTrade(
                "long" if side > 0 else "short", qty, self.entry_ts, self.entry_price, ts, fill,
                fees, pnl, pnl / (qty * self.entry_price), reason,
                i - self.entry_index + 1,
            )
        )  # fmt: skip
        self.side, self.qty, self.signed_qty = 0, 0.0, 0.0
        self.stop = self.target = None
        self.position = Position()

    def check_exits(self, i: int, ts: int, o: float, h: float, lo: float, v: float) -> None:
        """Stop-loss, then take-profit, inside this candle's range (stop first if both)."""
        stop, target = self.stop, self.target
        if self.side > 0:
            if stop is not None and lo <= stop:
                self.close(i, ts, min(o, stop), v, "stop_loss")
            elif target is not None and h >= target:
                self.close(i, ts, max(o, target), v, "take_profit", maker=True)
        else:
            if stop is not None and h >= stop:
                self.close(i, ts, max(o, stop), v, "stop_loss")
            elif target is not None and lo <= target:
                self.close(i, ts, min(o, target), v, "take_profit", maker=True)
