"""Trading strategies: the interface a user writes, and how candles reach it.

A strategy is a small class with typed parameters, the indicators it needs as
specs (``sma:50``, ``macd:12:26:9``) and ``on_candle(ctx)``, called once per
closed candle. It answers with a decision about the position it wants:

- ``LONG``: be long (opens a long; a short is closed first);
- ``SHORT``: be short (where shorting is off, as in a long-only backtest,
  this only closes a long);
- ``FLAT``: hold nothing;
- ``None``: keep whatever is held.

Decisions are events: return ``LONG`` on the candle where you want in, not on
every candle you want to stay in (a stop-loss exit would otherwise be undone
on the next candle). ``ctx.position`` says what is held.

``StrategyRunner`` feeds closed candles through the strategy's streaming
indicators and calls ``on_candle``; the backtester and a live runner both use
it, so a strategy sees exactly the same values in both and only ever the
candle that just closed and those before it: it cannot look ahead.

Example::

    class Dip(Strategy):
        name = "dip"
        params = (StrategyParam("period", int, 14, 2), StrategyParam("level", float, 30, 0, 100))
        period: int
        level: float

        def indicators(self) -> tuple[str, ...]:
            return (f"rsi:{self.period}",)

        def on_candle(self, ctx: Context) -> Decision | None:
            if ctx.crossed_below(f"rsi:{self.period}", self.level):
                return LONG
            if ctx.position.side and ctx.close > ctx.position.entry_price * 1.02:
                return FLAT
            return None
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Final, Literal

from cryptodesk.analytics.indicators import IndicatorError, StreamingSet, parse_spec
from cryptodesk.domain.errors import DomainError

Decision = Literal["long", "short", "flat"]
LONG: Final = "long"
SHORT: Final = "short"
FLAT: Final = "flat"
DECISIONS: Final = frozenset((LONG, SHORT, FLAT))
CANDLE_FIELDS: Final = ("open", "high", "low", "close", "volume")
_NAN = math.nan
ParamValue = int | float | bool


class StrategyError(DomainError):
    """An unknown strategy or a bad parameter; the message is one line naming it."""


@dataclass(frozen=True, slots=True)
class StrategyParam:
    """One typed parameter: ``kind`` int, float or bool; inclusive bounds for numbers."""

    name: str
    kind: type
    default: ParamValue
    minimum: float = -math.inf
    maximum: float = math.inf
    help: str = ""

    def convert(self, strategy: str, raw: object) -> ParamValue:
        """``raw`` (text from the command line, or a JSON value) as this parameter's kind."""
        where = f"{strategy} parameter {self.name}"
        if self.kind is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("true", "1", "yes", "on"):
                return True
            if text in ("false", "0", "no", "off"):
                return False
            raise StrategyError(f"{where} {raw!r} is not true or false", field="params")
        value: float
        try:
            if isinstance(raw, bool):
                raise ValueError
            if self.kind is int:
                if isinstance(raw, float) and not raw.is_integer():
                    raise ValueError
                value = int(raw) if isinstance(raw, int | float) else int(str(raw).strip())
            else:
                value = float(raw) if isinstance(raw, int | float) else float(str(raw).strip())
        except ValueError:
            kind = "an integer" if self.kind is int else "a number"
            raise StrategyError(f"{where} {raw!r} is not {kind}", field="params") from None
        if not (self.minimum <= value <= self.maximum):  # also rejects NaN
            raise StrategyError(
                f"{where} {raw!r} is out of range {_num(self.minimum)}..{_num(self.maximum)}",
                field="params",
            )
        return value


def _num(value: float) -> str:
    return str(int(value)) if math.isfinite(value) and float(value).is_integer() else str(value)


@dataclass(frozen=True, slots=True)
class Position:
    """What is held: ``side`` 1 long, -1 short, 0 flat; ``qty`` in the base currency."""

    side: int = 0
    qty: float = 0.0
    entry_price: float = _NAN
    entry_ts: int | None = None


NO_POSITION: Final = Position()


class Context:
    """What ``on_candle`` sees: the candle that just closed, indicator values, the position.

    ``ctx["sma:50"]`` is the newest value of a declared indicator (also by its
    column name, ``sma_50``; an indicator with several outputs gives a tuple in
    output order, or one output by column name: ``macd_signal_12_26_9``);
    ``ctx["close"]`` the candle's close. ``ctx.prev(key)`` is the value one
    candle earlier. Values are NaN while an indicator warms up.
    """

    __slots__ = ("_multi", "_prev", "_scalar", "_values", "index", "position", "ts")

    def __init__(self, index: dict[str, int | slice]) -> None:
        # Scalar keys apart from multi-output ones: the crossing helpers run on
        # every candle and then need one dict lookup per operand, nothing more.
        self._scalar = {k: v for k, v in index.items() if isinstance(v, int)}
        self._multi = {k: v for k, v in index.items() if isinstance(v, slice)}
        width = max((k.stop if isinstance(k, slice) else k + 1 for k in index.values()), default=0)
        self._values: tuple[float, ...] = (_NAN,) * width
        self._prev: tuple[float, ...] = self._values
        self.ts = 0
        self.index = -1  # candles seen before this one
        self.position: Position = NO_POSITION

    @property
    def open(self) -> float:
        return self._values[0]

    @property
    def high(self) -> float:
        return self._values[1]

    @property
    def low(self) -> float:
        return self._values[2]

    @property
    def close(self) -> float:
        return self._values[3]

    @property
    def volume(self) -> float:
        """In the base currency."""
        return self._values[4]

    def _unknown(self, key: object) -> KeyError:
        if key in self._multi:
            return KeyError(f"{key!r} has several outputs; name one by its column")
        known = ", ".join([*self._scalar, *self._multi])
        return KeyError(f"{key!r} is not a declared indicator or candle field; known: {known}")

    def _get(self, values: tuple[float, ...], key: str) -> float | tuple[float, ...]:
        at = self._scalar.get(key)
        if at is not None:
            return values[at]
        many = self._multi.get(key)
        if many is None:
            raise self._unknown(key)
        return values[many]

    def __getitem__(self, key: str) -> float | tuple[float, ...]:
        return self._get(self._values, key)

    def prev(self, key: str) -> float | tuple[float, ...]:
        """The value of ``key`` on the candle before this one (NaN on the first)."""
        return self._get(self._prev, key)

    def crossed_above(self, a: str | float, b: str | float) -> bool:
        """``a`` was below ``b`` on the previous candle and is above it now.

        Keys of one value each, or numbers (``ctx.crossed_above("rsi:14", 30)``).
        Touching is not crossing: equal on either candle is no cross, and NaN
        never crosses.
        """
        prev, now = self._prev, self._values
        try:
            if isinstance(a, str):
                i = self._scalar[a]
                a0, a1 = prev[i], now[i]
            else:
                a0 = a1 = a
            if isinstance(b, str):
                j = self._scalar[b]
                b0, b1 = prev[j], now[j]
            else:
                b0 = b1 = b
        except KeyError as exc:
            raise self._unknown(exc.args[0]) from None
        return a0 < b0 and a1 > b1

    def crossed_below(self, a: str | float, b: str | float) -> bool:
        """``a`` was above ``b`` on the previous candle and is below it now."""
        return self.crossed_above(b, a)


class Strategy:
    """Base of every strategy: subclass it, set ``name`` and ``params``, declare each
    parameter as a class annotation, and implement ``indicators`` and ``on_candle``.

    Parameters arrive checked and converted to their kind as attributes
    (``self.fast``); ``check`` validates them together.
    """

    name: ClassVar[str] = "custom"
    summary: ClassVar[str] = ""
    params: ClassVar[tuple[StrategyParam, ...]] = ()

    def __init__(self, **values: object) -> None:
        by_name = {p.name: p for p in self.params}
        unknown = [k for k in values if k not in by_name]
        if unknown:
            known = ", ".join(by_name) or "none"
            raise StrategyError(
                f"{self.name} has no parameter {unknown[0]!r}; its parameters: {known}",
                field="params",
            )
        for param in self.params:
            raw = values.get(param.name, param.default)
            setattr(self, param.name, param.convert(self.name, raw))
        problem = self.check()
        if problem is not None:
            raise StrategyError(f"{self.name}: {problem}", field="params")

    def check(self) -> str | None:
        """A problem with the parameters taken together, or None."""
        return None

    @property
    def values(self) -> dict[str, ParamValue]:
        """The parameters as used, defaults included."""
        return {p.name: getattr(self, p.name) for p in self.params}

    def indicators(self) -> Sequence[str]:
        """Specs of the indicators ``on_candle`` reads (``"sma:50"``)."""
        return ()

    def on_candle(self, ctx: Context) -> Decision | None:
        """Called once per closed candle; return LONG, SHORT, FLAT or None."""
        raise NotImplementedError


class StrategyRunner:
    """Feeds closed candles to one strategy through its streaming indicators.

    Not thread-safe and one series only: the indicators hold that series' state.
    """

    def __init__(self, strategy: Strategy) -> None:
        self.strategy = strategy
        declared = list(strategy.indicators())
        try:
            specs = [parse_spec(text) for text in declared]
            self.indicators = StreamingSet(specs)
        except IndicatorError as exc:
            raise StrategyError(f"{strategy.name}: {exc}", field="params") from None
        index: dict[str, int | slice] = {name: i for i, name in enumerate(CANDLE_FIELDS)}
        at = len(CANDLE_FIELDS)
        for text, spec in zip(declared, specs, strict=True):
            width = len(spec.columns)
            whole: int | slice = at if width == 1 else slice(at, at + width)
            index[text.strip()] = index[spec.text] = whole
            for k, column in enumerate(spec.columns):
                index[column] = at + k
            at += width
        self.context = Context(index)
        self._update = self.indicators.update
        self._decide = strategy.on_candle

    def on_candle(
        self,
        ts: int,
        open: float,
        high: float,
        low: float,
        close: float,
        volume: float,
        position: Position = NO_POSITION,
    ) -> Decision | None:
        """One closed candle (``ts`` = open time, epoch ms) -> the strategy's decision."""
        ctx = self.context
        ctx._prev = ctx._values
        ctx._values = (
            open,
            high,
            low,
            close,
            volume,
            *self._update(ts, open, high, low, close, volume),
        )
        ctx.ts = ts
        ctx.index += 1
        ctx.position = position
        decision = self._decide(ctx)
        if decision is not None and decision not in DECISIONS:
            raise ValueError(
                f"{self.strategy.name}.on_candle returned {decision!r}; "
                "expected 'long', 'short', 'flat' or None"
            )
        return decision
