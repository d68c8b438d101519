"""Signal rules on closed candles: moving-average crosses, RSI levels, MACD, Bollinger.

Pure: closes in, signal kinds out. The same ``SeriesRules`` runs live (one
per exchange/symbol/interval in the signal service) and can run in a
backtest, so a rule cannot look ahead: it sees a candle only once closed.

Crossing semantics (strict, on consecutive closed candles):

- ``a`` crosses **up** through ``b`` when ``a_prev <= b_prev`` and ``a_now > b_now``;
- ``a`` crosses **down** through ``b`` when ``a_prev >= b_prev`` and ``a_now < b_now``.

Ties: touching (``a == b``) is not a cross; the cross is the candle that
leaves the tie strictly. So ``a`` above, then equal, then above again fires
an up-cross on the third candle (the touch counts as "not above"). Float
series rarely tie exactly. A NaN on either candle (indicator warm-up) never
fires, since every comparison with NaN is false.

Rule types and what they compare (``*_up`` / ``*_down`` signal kinds):

=============  ===========================  ===================================
``ma_cross``    SMA fast vs SMA slow         ``golden_cross`` / ``death_cross``
``ema_cross``   EMA fast vs EMA slow         ``ema_cross_up`` / ``ema_cross_down``
``rsi_levels``  RSI vs upper / lower level   ``rsi_overbought`` (up through upper)
                                             / ``rsi_oversold`` (down through lower)
``macd_cross``  MACD line vs signal line     ``macd_cross_up`` / ``macd_cross_down``
``bb_break``    close vs upper / lower band  ``bb_break_upper`` / ``bb_break_lower``
=============  ===========================  ===================================

Windows: after a restart the streaming indicators are rebuilt from the last
closes (``window``). SMA and Bollinger Bands forget everything older than
their period, so a window of exactly that many closes rebuilds them (equal up
to float rounding). EMA, RSI and MACD are recursive and never forget, so they
are rebuilt from ``RECURSIVE_WINDOW_FACTOR`` times their longest period: the
weight left on the seed is then below (1 - 1/N)^(30 N) < 1e-13 (Wilder's
smoothing, the slowest of them), TA-Lib's "unstable period" advice taken far.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from cryptodesk.analytics.indicators import IndicatorError, IndicatorSpec, parse_spec
from cryptodesk.analytics.indicators.base import Streaming
from cryptodesk.domain.signals import SignalKind

RuleType = Literal["ma_cross", "ema_cross", "rsi_levels", "macd_cross", "bb_break"]
RULE_TYPES: tuple[str, ...] = get_args(RuleType)
RECURSIVE_WINDOW_FACTOR = 30

# Parameter names in order, with defaults (the classic settings of each signal).
PARAMS: dict[str, tuple[tuple[str, float], ...]] = {
    "ma_cross": (("fast", 50), ("slow", 200)),
    "ema_cross": (("fast", 12), ("slow", 26)),
    "rsi_levels": (("period", 14), ("upper", 70.0), ("lower", 30.0)),
    "macd_cross": (("fast", 12), ("slow", 26), ("signal", 9)),
    "bb_break": (("period", 20), ("k", 2.0)),
}
_KINDS: dict[str, tuple[SignalKind, SignalKind]] = {
    "ma_cross": ("golden_cross", "death_cross"),
    "ema_cross": ("ema_cross_up", "ema_cross_down"),
    "rsi_levels": ("rsi_overbought", "rsi_oversold"),
    "macd_cross": ("macd_cross_up", "macd_cross_down"),
    "bb_break": ("bb_break_upper", "bb_break_lower"),
}


class RuleError(ValueError):
    """A rule with bad parameters; ``field`` names the parameter."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


def crossed_up(a_prev: float, b_prev: float, a_now: float, b_now: float) -> bool:
    return a_prev <= b_prev and a_now > b_now


def crossed_down(a_prev: float, b_prev: float, a_now: float, b_now: float) -> bool:
    return a_prev >= b_prev and a_now < b_now


def _text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


@dataclass(frozen=True, slots=True)
class Rule:
    """One configured rule: an id unique in its rule set, a type, its parameters.

    ``params`` follow ``PARAMS[type]`` order; ``Rule.of`` fills in defaults.
    """

    id: str
    type: str
    params: tuple[float, ...]
    specs: tuple[IndicatorSpec, ...] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.type not in PARAMS:
            raise RuleError(
                f"unknown rule type {self.type!r}; known: {', '.join(RULE_TYPES)}", field="type"
            )
        names = [name for name, _ in PARAMS[self.type]]
        if len(self.params) != len(names):
            raise RuleError(f"{self.type} takes {', '.join(names)}", field="params")
        object.__setattr__(self, "specs", self._specs())

    @classmethod
    def of(cls, id: str, type: str, **params: float) -> Rule:
        """A rule from keyword parameters; missing ones take their defaults."""
        if type not in PARAMS:
            raise RuleError(
                f"unknown rule type {type!r}; known: {', '.join(RULE_TYPES)}", field="type"
            )
        known = dict(PARAMS[type])
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise RuleError(f"{type} has no parameter {unknown[0]!r}", field=unknown[0])
        return cls(id, type, tuple(params.get(name, default) for name, default in known.items()))

    def _specs(self) -> tuple[IndicatorSpec, ...]:
        p = self.params
        if self.type in ("ma_cross", "ema_cross"):
            if not p[0] < p[1]:
                raise RuleError(f"fast ({_text(p[0])}) must be below slow ({_text(p[1])})",
                                field="fast")  # fmt: skip
            name = "sma" if self.type == "ma_cross" else "ema"
            texts = [f"{name}:{_text(p[0])}", f"{name}:{_text(p[1])}"]
        elif self.type == "rsi_levels":
            if not 0 < p[2] < p[1] < 100:
                raise RuleError(
                    f"levels must satisfy 0 < lower < upper < 100, got lower {_text(p[2])} "
                    f"and upper {_text(p[1])}",
                    field="upper",
                )
            texts = [f"rsi:{_text(p[0])}"]
        elif self.type == "macd_cross":
            texts = [f"macd:{_text(p[0])}:{_text(p[1])}:{_text(p[2])}"]
        else:
            texts = [f"bbands:{_text(p[0])}:{_text(p[1])}"]
        try:
            specs = tuple(parse_spec(text) for text in texts)
        except IndicatorError as exc:
            raise RuleError(str(exc), field="params") from None
        for spec in specs:
            if spec.definition.inputs != ("close",):  # windows hold closes only
                raise RuleError(f"{spec.text} reads more than closes", field="type")
        return specs

    @property
    def kinds(self) -> tuple[SignalKind, SignalKind]:
        """The (up, down) signal kinds."""
        return _KINDS[self.type]

    @property
    def columns(self) -> tuple[str, ...]:
        """The indicator values the rule reads, as stored beside its signals."""
        return tuple(column for spec in self.specs for column in spec.columns)

    def decide(self, prev: Reading, now: Reading) -> SignalKind | None:
        """The signal this candle (``now``) fires after ``prev``, or None."""
        up_prev, up_now = self._up(prev), self._up(now)
        if crossed_up(*up_prev, *up_now):
            return self.kinds[0]
        down_prev, down_now = self._down(prev), self._down(now)
        if crossed_down(*down_prev, *down_now):
            return self.kinds[1]
        return None

    def _up(self, r: Reading) -> tuple[float, float]:
        cols = self.columns
        if self.type == "rsi_levels":
            return r.values[cols[0]], self.params[1]
        if self.type == "bb_break":
            return r.close, r.values[cols[0]]  # upper band
        return r.values[cols[0]], r.values[cols[1]]  # fast/slow, or MACD line/signal

    def _down(self, r: Reading) -> tuple[float, float]:
        cols = self.columns
        if self.type == "rsi_levels":
            return r.values[cols[0]], self.params[2]
        if self.type == "bb_break":
            return r.close, r.values[cols[2]]  # lower band
        return r.values[cols[0]], r.values[cols[1]]


@dataclass(frozen=True, slots=True)
class Reading:
    """A closed candle's close and every indicator value of its series, by column."""

    close: float
    values: Mapping[str, float]


def window(spec: IndicatorSpec) -> int:
    """Closes that rebuild ``spec``'s streaming value (see the module doc)."""
    periods = [int(p) for p, param in zip(spec.params, spec.definition.params, strict=True)
               if param.kind is int]  # fmt: skip
    if spec.name in ("sma", "bbands", "wma"):
        return periods[0]
    longest = periods[1] + periods[2] if spec.name == "macd" else max(periods)
    return RECURSIVE_WINDOW_FACTOR * longest


@dataclass(frozen=True, slots=True)
class Fired:
    """A rule that fired on a candle, with the values it read."""

    rule: Rule
    kind: SignalKind
    values: dict[str, float]


class SeriesRules:
    """Every rule of one series over shared streaming indicators.

    Each distinct indicator runs once per candle however many rules read it.
    ``warm`` rebuilds the indicators from the last closes of the series,
    ``update`` feeds one closed candle and says which rules fire.
    """

    def __init__(self, rules: Sequence[Rule]) -> None:
        ids = [r.id for r in rules]
        if len(set(ids)) != len(ids):
            raise RuleError("rule ids must be unique within a series", field="id")
        self.rules = tuple(rules)
        specs: dict[str, IndicatorSpec] = {}
        for rule in self.rules:
            for spec in rule.specs:
                specs.setdefault(spec.text, spec)
        self.specs = tuple(specs.values())
        self.windows = {spec.text: window(spec) for spec in self.specs}
        self._indicators: list[tuple[IndicatorSpec, Streaming]] = []
        self.prev: Reading | None = None
        self.warm_windows({})

    @property
    def lengths(self) -> tuple[int, ...]:
        """The distinct window lengths, ascending."""
        return tuple(sorted(set(self.windows.values())))

    @property
    def longest(self) -> int:
        return max(self.windows.values(), default=0)

    def warm(self, closes: Sequence[float]) -> None:
        """Start over from ``closes`` (oldest first, ending at the last candle seen)."""
        self.warm_windows({length: closes[-length:] for length in self.lengths})

    def warm_windows(self, windows: Mapping[int, Sequence[float]]) -> None:
        """Start over from one window of closes per length in ``lengths`` (oldest
        first, all ending at the last candle seen).

        Each indicator is fed only its own window, so the result depends on the
        window, not on how much history was at hand.
        """
        self._indicators = [(spec, spec.streaming()) for spec in self.specs]
        self.prev = None
        values: dict[str, float] = {}
        last: float | None = None
        for spec, indicator in self._indicators:
            out: Any = math.nan
            for close in windows.get(self.windows[spec.text], ())[-self.windows[spec.text] :]:
                out = indicator.update(close)
                last = close
            values.update(_named(spec, out))
        if last is not None:
            self.prev = Reading(last, values)

    def update(self, close: float) -> list[Fired]:
        """Feed one closed candle; the rules that fire on it, in rule order."""
        values: dict[str, float] = {}
        for spec, indicator in self._indicators:
            values.update(_named(spec, indicator.update(close)))
        now = Reading(close, values)
        prev, self.prev = self.prev, now
        if prev is None:
            return []
        fired: list[Fired] = []
        for rule in self.rules:
            kind = rule.decide(prev, now)
            if kind is not None:
                fired.append(Fired(rule, kind, {c: values[c] for c in rule.columns}))
        return fired


def _named(spec: IndicatorSpec, out: Any) -> Iterable[tuple[str, float]]:
    """An indicator's output(s) paired with its column names."""
    if spec.definition.multi:
        if not isinstance(out, tuple):  # not fed yet: every output is warming up
            out = (math.nan,) * len(spec.columns)
        return zip(spec.columns, (float(v) for v in out), strict=True)
    return ((spec.columns[0], float(out)),)
